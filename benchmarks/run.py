"""Benchmark `backstage build` against the floor (plain Jinja2) and the peer (Ansible's template module).

    python benchmarks/run.py            # the full benchmark: N = 10, 100, 1,000, 10,000; 5 runs
    python benchmarks/run.py --smoke    # N = 100, one run, no Ansible, no network, no timing asserted

Every measured command is a child process, timed from spawn to exit (interpreter start included)
with its peak RSS from os.wait4. The sides run interleaved, round by round, so drift in the
machine's load hits them all alike. Everything is written under one temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True

import generate  # noqa: E402  (benchmarks/ is not a package)
import peer  # noqa: E402

SIZES = (10, 100, 1_000, 10_000)
MINIMAL = HERE.parent / "examples" / "minimal" / "production.toml"
# Masks the 8-hex content hash in vassal names and socket paths: the floor does not compute it.
_HASH = re.compile(r"--[0-9a-f]{8}(?=\.ini$|\.sock)", re.M)
_STORE_HASH = re.compile(r"(/store/[a-z]+-[a-z0-9-]+?-)[0-9a-f]{32}")  # a store path's hash


@dataclass
class Sample:
    wall: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)  # bytes
    cpu: list[float] = field(default_factory=list)  # user + system seconds, the children it waited for included

    @property
    def median(self) -> float:
        return statistics.median(self.wall)


# Runs each measured command for the harness. A child's ru_maxrss starts at the RSS of the process
# that forked it (Linux records the old mm's peak at exec), so children must come from a process that
# stays small: this one, started before the harness holds any data. It answers one JSON line each.
SPAWNER = """
import json, os, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    with open(job["stderr"], "wb") as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(job["command"], stdout=subprocess.DEVNULL, stderr=stderr, env=job["env"])
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    print(json.dumps([wall, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status),
                      usage.ru_utime + usage.ru_stime]), flush=True)
"""
_spawner = subprocess.Popen([sys.executable, "-c", SPAWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def measure(command: list[str], errors: Path, env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS bytes and CPU seconds of one child (and the descendants it waited for)."""
    assert _spawner.stdin and _spawner.stdout
    job = {"command": command, "stderr": str(errors), "env": env or dict(os.environ)}
    _spawner.stdin.write(json.dumps(job) + "\n")
    _spawner.stdin.flush()
    wall, rss, code, cpu = json.loads(_spawner.stdout.readline())
    if code:
        sys.exit(f"benchmark: {' '.join(command)} exited {code}:\n" + errors.read_text("utf-8", "replace")[-3000:])
    return wall, rss, cpu


def remove_tree(path: Path) -> None:
    # Build artifacts are read-only directories; give write access back before deleting.
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    shutil.rmtree(path, ignore_errors=True)


def rendered(root: Path) -> dict[str, str]:
    """The vassal, nginx and environment files under root, content hashes masked."""
    def masked(text: str) -> str:
        return _STORE_HASH.sub(r"\1HASH", _HASH.sub("--HASH", text))

    paths = [p for sub in ("uwsgi", "nginx") for p in sorted((root / sub).glob("*"))]
    paths += sorted(root.glob("entries/*/environment.json"))
    return {masked(str(p.relative_to(root))): masked(p.read_text("utf-8")) for p in paths}


def same_files(side: str, got: dict[str, str], want: dict[str, str]) -> None:
    if got == want:
        return
    diff = sorted(set(got) ^ set(want)) or [k for k in sorted(want) if got[k] != want[k]]
    sys.exit(f"benchmark: {side} does not write what `backstage build` writes "
             f"({len(diff)} files differ, first {diff[0]}); the comparison would be meaningless")


class Bench:
    def __init__(self, tmp: Path, sizes: list[int], ansible_max_n: int, ansible_venv: Path | None) -> None:
        self.tmp = tmp
        self.sizes = sizes
        self.samples: dict[tuple[str, int], Sample] = {}
        self.files: dict[int, int] = {}
        self.reference: dict[int, dict[str, str]] = {}
        self.runs = 0
        self.ansible: Path | None = None
        self.playbooks: dict[int, Path] = {}
        # The children cache bytecode, as an installed compiler would, but in the temp dir: nothing
        # is written into the repository. The setup below fills the cache before anything is timed.
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        for n in sizes:
            data = generate.generate(n)
            self.files[n] = len(data["sesses"]) + len(data["venues"])
            source = tmp / f"production-{n}.toml"
            source.write_text(generate.to_toml(data), "utf-8")
            check = subprocess.run(self.backstage("check", str(source)), capture_output=True, text=True,
                                   env=self.env)
            if check.returncode:
                sys.exit(f"benchmark: the generated production for N={n} fails `backstage check`:\n"
                         + check.stderr[-3000:])
        # Untimed: compiles the floor's and generator's bytecode, as `check` did the compiler's.
        measure([sys.executable, str(HERE / "floor.py"), "10", str(tmp / "warm-up")], tmp / "stderr", self.env)
        remove_tree(tmp / "warm-up")
        if ansible_venv and any(n <= ansible_max_n for n in sizes):
            self.ansible = peer.ensure_ansible(ansible_venv)
            for n in (n for n in sizes if n <= ansible_max_n):
                self.playbooks[n] = peer.prepare(n, tmp / f"ansible-{n}")

    @staticmethod
    def backstage(*args: str) -> list[str]:
        return [sys.executable, "-m", "backstage.cli", *args]

    def record(self, side: str, n: int, result: tuple[float, int, float]) -> None:
        sample = self.samples.setdefault((side, n), Sample())
        sample.wall.append(result[0])
        sample.rss.append(result[1])
        sample.cpu.append(result[2])

    def build(self, n: int) -> None:
        out = self.tmp / f"build-{n}"
        source = str(self.tmp / f"production-{n}.toml")
        command = self.backstage("build", source, "-o", str(out))
        self.record("full", n, measure(command, self.tmp / "stderr", self.env))
        before = sorted(os.listdir(out))
        self.record("noop", n, measure(command, self.tmp / "stderr", self.env))
        if sorted(os.listdir(out)) != before:
            sys.exit(f"benchmark: the no-op rebuild at N={n} changed {out}")
        if self.runs == 0:
            self.reference[n] = rendered(out / "result")
        # One Gig moved to another path: a real rebuild, into the same OUT (its render memo).
        edited = self.tmp / f"production-{n}-gig.toml"
        edited.write_text(one_gig_moved(Path(source).read_text("utf-8"), self.runs), "utf-8")
        self.record("gig", n, measure(self.backstage("build", str(edited), "-o", str(out)), self.tmp / "stderr",
                                      self.env))
        if len(os.listdir(out)) != len(before) + 1:
            sys.exit(f"benchmark: the one-Gig rebuild at N={n} wrote no new artifact")
        remove_tree(out)

    def minimal(self) -> None:
        out = self.tmp / "minimal"
        self.record("minimal", 0, measure(self.backstage("build", str(MINIMAL), "-o", str(out)),
                                          self.tmp / "stderr", self.env))
        remove_tree(out)

    def floor(self, n: int) -> None:
        out = self.tmp / f"floor-{n}"
        self.record("floor", n, measure([sys.executable, str(HERE / "floor.py"), str(n), str(out)],
                                        self.tmp / "stderr", self.env))
        if self.runs == 0:
            same_files("the floor", rendered(out), self.reference[n])
        remove_tree(out)

    def peer(self, n: int) -> None:
        assert self.ansible
        out = self.tmp / f"ansible-out-{n}"
        for sub in ("uwsgi", "nginx"):
            (out / sub).mkdir(parents=True)
        command = [*peer.command(self.ansible, self.playbooks[n]), "-e", f"out={out}"]
        self.record("ansible", n, measure(command, self.tmp / "stderr", peer.environment(self.tmp / "ansible")))
        if self.runs == 0:
            # Ansible writes the vassal and nginx files, not the environments (which favours it).
            same_files("Ansible", rendered(out), {path: text for path, text in self.reference[n].items()
                                                  if not path.startswith("entries/")})
        remove_tree(out)

    def round(self) -> None:
        self.minimal()
        for n in self.sizes:
            sides: list[Callable[[int], None]] = [self.build, self.floor]
            if n in self.playbooks:
                sides.append(self.peer)
            # The build goes first in the first round: the others are checked against its files.
            turn = 0 if self.runs == 0 else self.runs % len(sides)
            for side in sides[turn:] + sides[:turn]:
                side(n)
            progress(f"round {self.runs + 1}, N={n} done")
        self.runs += 1


def one_gig_moved(text: str, round_number: int) -> str:
    """The production with its first Gig's path changed (to a path no other Gig has)."""
    at = text.index("\n[gigs.")
    line = text.index("\npath = ", at)
    end = text.index("\n", line + 1)
    return text[:line] + f'\npath = "/moved-{round_number}/"' + text[end:]


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def spread(sample: Sample, scale: float = 1.0, fmt: str = "{:.3f}") -> str:
    values = [v * scale for v in sample.wall]
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def rss(sample: Sample) -> str:
    mib = [r / 2**20 for r in sample.rss]
    return f"{statistics.median(mib):.0f} [{min(mib):.0f}-{max(mib):.0f}]"


def report(bench: Bench) -> Iterator[str]:
    s = bench.samples
    yield f"{bench.runs} run(s) per cell; wall seconds and peak RSS MiB as median [min-max]"
    yield ""
    yield ("| N | files | build, full (s) | no-op rebuild (s) | one-Gig rebuild (s) | floor (s) | Ansible (s) "
           "| build RSS (MiB) | floor RSS (MiB) | backstage/floor | Ansible/backstage per file | no-op/full "
           "| one-Gig/full |")
    yield "|" + "---|" * 13
    for n in bench.sizes:
        full, noop, gig, floor = s["full", n], s["noop", n], s["gig", n], s["floor", n]
        peer = s.get(("ansible", n))
        yield (f"| {n:,} | {bench.files[n]:,} | {spread(full)} | {spread(noop)} | {spread(gig)} | {spread(floor)} "
               f"| {spread(peer) if peer else 'not run'} | {rss(full)} | {rss(floor)} "
               f"| {full.median / floor.median:.2f} | {f'{peer.median / full.median:.0f}' if peer else '-'} "
               f"| {noop.median / full.median:.3f} | {gig.median / full.median:.3f} |")
    yield ""
    yield f"minimal example, a fresh build: {spread(s['minimal', 0])} s"
    yield ""
    # A big build renders and writes in two processes (README: "Two processes for a big build"); the
    # floor uses one. The wall times above are what a user waits; this is what the CPUs spent.
    for n in bench.sizes:
        yield (f"CPU seconds (user + system) at N={n:,}: build, full {statistics.median(s['full', n].cpu):.3f}, "
               f"floor {statistics.median(s['floor', n].cpu):.3f}")
    yield ""
    for n in bench.sizes:
        per_file = s["full", n].median / bench.files[n] * 1000
        line = f"per file at N={n:,}: backstage {per_file:.3f} ms"
        if ("ansible", n) in s:
            line += f", Ansible {s['ansible', n].median / bench.files[n] * 1000:.0f} ms"
        yield line
    big = max(bench.sizes)
    if bench.playbooks and 10_000 not in bench.sizes:  # with 10,000, the targets below say it
        largest = max(bench.playbooks)
        ratio = (s["ansible", largest].median / bench.files[largest]) / (s["full", big].median / bench.files[big])
        yield f"Ansible per file at N={largest:,} / backstage per file at N={big:,}: {ratio:.0f}"
    if 1_000 in bench.sizes and 10_000 in bench.sizes:
        yield f"scaling: time(10k)/time(1k) = {s['full', 10_000].median / s['full', 1_000].median:.2f}"
    if 10_000 in bench.sizes:
        yield ""
        yield from targets(bench)


def targets(bench: Bench) -> Iterator[str]:
    s = bench.samples
    checks: list[tuple[str, float, str, float]] = [
        ("backstage/floor at 10k", s["full", 10_000].median / s["floor", 10_000].median, "<=", 1.5),
        ("no-op/full at 10k", s["noop", 10_000].median / s["full", 10_000].median, "<=", 0.05),
        ("one-Gig rebuild/full at 10k", s["gig", 10_000].median / s["full", 10_000].median, "<=", 0.10),
        ("minimal example build (s)", s["minimal", 0].median, "<=", 0.25),
        ("peak RSS at 10k (MB)", statistics.median(s["full", 10_000].rss) / 1e6, "<=", 250),
    ]
    if 1_000 in bench.sizes:  # `--sizes 10000` alone has no scaling to report
        checks.insert(4, ("time(10k)/time(1k)", s["full", 10_000].median / s["full", 1_000].median, "<=", 11))
    if bench.playbooks:
        # Ansible's cost per file hardly depends on N, so its largest N stands for all of them.
        n = max(bench.playbooks)
        ansible = s["ansible", n].median / bench.files[n]
        checks += [(f"Ansible/backstage per file, both at N={n:,}", ansible / (s["full", n].median / bench.files[n]),
                    ">=", 100),
                   (f"Ansible per file at N={n:,} / backstage per file at N=10,000",
                    ansible / (s["full", 10_000].median / bench.files[10_000]), ">=", 100)]
    for name, value, op, limit in checks:
        met = value <= limit if op == "<=" else value >= limit
        yield f"target {name}: {value:.3g} (want {op} {limit:g}) {'met' if met else 'MISSED'}"


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--smoke", action="store_true",
                     help="N=100, one run, no Ansible: checks the harness works; asserts no timing")
    cli.add_argument("--runs", type=int, default=5, help="runs per cell (default 5)")
    cli.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated gig counts")
    cli.add_argument("--ansible-max-n", type=int, default=100,
                     help="run Ansible for N up to this (default 100: at ~1 s per file, one run at "
                          "N=1000 alone takes ~15 minutes on a 2-core machine)")
    cli.add_argument("--tmp", type=Path, default=None,
                     help="where to write (default: $TMPDIR); /dev/shm measures on tmpfs")
    cli.add_argument("--ansible-venv", type=Path, default=Path(tempfile.gettempdir()) / "backstage-bench-ansible",
                     help="venv holding ansible-core, created with pip on first use (default: %(default)s)")
    args = cli.parse_args()
    sizes = [100] if args.smoke else [int(n) for n in args.sizes.split(",")]
    runs = 1 if args.smoke else args.runs
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="backstage-bench-", dir=args.tmp) as tmp:
        bench = Bench(Path(tmp), sizes, args.ansible_max_n, None if args.smoke else args.ansible_venv)
        progress(f"generated and checked N={', '.join(map(str, sizes))}; {runs} round(s) in {tmp}")
        for _ in range(runs):
            bench.round()
    where = args.tmp or tempfile.gettempdir()
    print(f"backstage benchmark, {time.strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, {time.perf_counter() - started:.0f} s in all, in {where}")
    for line in report(bench):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
