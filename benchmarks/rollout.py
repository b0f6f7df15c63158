"""Time a one-Sess change rolled out through Ansible to 1, 3 and 10 simulated hosts, and Ansible's part of it.

    python benchmarks/rollout.py            # N = 1, 3, 10 hosts; batch 1 and batch N; 3 runs (median)
    python benchmarks/rollout.py --smoke    # 1 host, 1 run: prints the table, asserts no timing

Needs root: the hosts are tests/fleet.py's network + mount + pid namespaces, each with its own sshd,
nginx and uWSGI Emperor, reached over real ssh at addresses of veth pairs this benchmark makes.

For each N, one production (one Act, one Sess on every host, one Venue, one Gig) is applied once,
untimed. Then each run, for each batch size (1, then N; the order alternates from run to run):
- the Sess's env VERSION changes, and `python -m backstage.cli apply production.toml --keep-ansible`
  is timed from spawn to exit (build, packing, every ansible-playbook batch, the agents' switches);
  every host must then answer the new VERSION;
- Ansible only: the inventory and playbook that apply kept are run again, batch by batch, as apply ran
  them (ship the tar, unpack it, run a command, report back, clean up), with each host's agent command
  replaced by `true`. The sum of those ansible-playbook runs is what the rollout costs when the agent
  takes no time: Ansible's own overhead. The rest (total - Ansible) is backstage's build and packing
  plus the agents' work on the hosts.
Everything is written under one temporary directory, removed at the end; nothing into the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.dont_write_bytecode = True
sys.path.insert(0, str(TESTS))

from backstage.cli.fleet import ansible_playbook  # noqa: E402
from fleet import Fleet  # noqa: E402

APP = '''
import os


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("site %s" % os.environ["VERSION"]).encode()]
'''
DOMAIN = "www.rollout.test"


@dataclass
class Sample:
    total: list[float] = field(default_factory=list)  # `backstage apply`, spawn to exit
    ansible: list[float] = field(default_factory=list)  # the same playbooks with the agent replaced by `true`

    @staticmethod
    def cell(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.2f}"
        return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"

    def row(self, hosts: int, batch: str) -> str:
        total, ansible = statistics.median(self.total), statistics.median(self.ansible)
        rest = statistics.median([t - a for t, a in zip(self.total, self.ansible, strict=True)])
        return (f"| {hosts} | {batch} | {self.cell(self.total)} | {self.cell(self.ansible)} | "
                f"{ansible / total:.0%} | {rest:.2f} | {total / hosts:.2f} |")


def load_conftest() -> ModuleType:
    """tests/conftest.py, for host_table. It gives Hypothesis a home with tempfile.mkdtemp on import: import it
    once tempfile.tempdir is the scratch directory."""
    return importlib.import_module("conftest")


def remove_tree(path: Path) -> None:
    # Build artifacts and generations are read-only directories; give write access back before deleting.
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(path, ignore_errors=True)


class Bench:
    def __init__(self, work: Path, conftest: ModuleType) -> None:
        self.work = work
        self.conftest = conftest
        self.env: dict[str, str] = {}
        self.version = 0
        self.load: list[float] = []  # the 1-minute load average after each measurement
        (work / "app").mkdir()
        (work / "app" / "rolloutapp.py").write_text(APP)
        (work / "tmp").mkdir()
        # backstage's Ansible working directories (kept with --keep-ansible) go to work/tmp; its rollout lock
        # to work/state; bytecode to work/pycache, cached as an installed backstage would have it (the
        # untimed first apply fills it).
        self.base_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.base_env |= {"TMPDIR": str(work / "tmp"), "XDG_STATE_HOME": str(work / "state"),
                          "PYTHONPYCACHEPREFIX": str(work / "pycache"), "ANSIBLE_HOME": str(work / "ansible-home"),
                          "ANSIBLE_NOCOLOR": "1"}
        self.ansible_playbook = ansible_playbook()

    # -- one fleet ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def fleet(self, hosts: int) -> Iterator[Fleet]:
        names = [f"web{i}" for i in range(1, hosts + 1)]
        with Fleet(self.work / f"fleet-{hosts}", names) as fleet:
            # exactly the connection settings of the tests (tests/fleet.py)
            self.env = self.base_env | fleet.ansible_env(self.work / "ansible-home")
            yield fleet

    def production(self, fleet: Fleet, batch: int) -> Path:
        q = json.dumps
        hosts = list(fleet)
        text = fleet.production_head("rollout", batch)
        text += f"""
[stages.main]
virtualenv = {q(sys.prefix)}

[acts.site]
wsgi = "rolloutapp"
path = {q(str(self.work / "app"))}
env = {{ VERSION = "{self.version}" }}

[sesses.site]
act = "site"
stage = "main"

[venues.www]
domain = "{DOMAIN}"
listen = "{hosts[0].listen}"

[gigs.www]
venue = "www"
sess = "site"
"""
        path = self.work / f"production-{len(hosts)}.toml"
        path.write_text(text)
        return path

    # -- measuring ---------------------------------------------------------------------------------

    def run(self, command: list[str], what: str, env: dict[str, str] | None = None) -> tuple[float, str]:
        """Wall seconds of `command` (spawn to exit) and its stderr; exits the benchmark if it fails."""
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env or self.env, stdin=subprocess.DEVNULL,
                              timeout=900, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"rollout benchmark: {what} exited {done.returncode}: {shlex.join(command)}\n"
                     + done.stdout[-3000:] + done.stderr[-3000:])
        return wall, done.stderr

    def apply(self, fleet: Fleet, batch: int, keep: bool) -> tuple[float, Path | None]:
        """One `backstage apply` of a new VERSION with rollout batch `batch`; checks every host serves it."""
        self.version += 1
        hosts = list(fleet)
        production = self.production(fleet, batch)
        command = [sys.executable, "-m", "backstage.cli", "apply", str(production), "-o", str(self.work / "build"),
                   *(["--keep-ansible"] if keep else [])]
        wall, err = self.run(command, f"backstage apply (batch {batch})")
        if f"live on {len(hosts)} host(s)" not in err:
            sys.exit(f"rollout benchmark: apply did not report every host live:\n{err[-3000:]}")
        for host in hosts:
            reply = host.http_get(DOMAIN)
            if (reply.status, reply.body.decode()) != (200, f"site {self.version}"):
                sys.exit(f"rollout benchmark: {host.name} answers {reply.status} {reply.body!r}, "
                         f"not site {self.version}")
        kept = None
        if keep:
            marker = "ansible files kept in "
            kept = Path(next(line for line in err.splitlines() if line.startswith(marker))[len(marker):].strip())
        return wall, kept

    def ansible_only(self, kept: Path, names: list[str], batch: int) -> float:
        """The kept rollout replayed: the same ansible-playbook runs, batch by batch, agent command `true`."""
        inventory = kept / "inventory" / "hosts.json"
        for name in names:
            (kept / "inventory" / "host_vars" / f"{name}.json").write_text(json.dumps({"bs_command": ["true"]}))
            (kept / f"report-{name}.json").unlink(missing_ok=True)
        env = self.env | {"ANSIBLE_RETRY_FILES_ENABLED": "False"}  # as backstage runs it
        total = 0.0
        for i in range(0, len(names), batch):
            limit = ",".join(names[i:i + batch])
            wall, _ = self.run([self.ansible_playbook, "-i", str(inventory), "--limit", limit, str(kept / "apply.yml")],
                               "the replayed playbook", env)
            total += wall
        for name in names:
            report = json.loads((kept / f"report-{name}.json").read_text())
            if report.get("rc") != 0:
                sys.exit(f"rollout benchmark: the replay on {name} reported {report}")
        remove_tree(kept)
        return total

    def measure(self, hosts: int, runs: int) -> dict[int, Sample]:
        batches = [1] if hosts == 1 else [1, hosts]
        samples = {batch: Sample() for batch in batches}
        started = time.monotonic()
        with self.fleet(hosts) as fleet:
            names = [host.name for host in fleet]
            print(f"{hosts} host(s) up in {time.monotonic() - started:.1f} s; first apply (untimed)", flush=True)
            self.apply(fleet, 1, keep=False)
            for run in range(runs):
                for batch in batches if run % 2 == 0 else batches[::-1]:
                    total, kept = self.apply(fleet, batch, keep=True)
                    assert kept is not None
                    ansible = self.ansible_only(kept, names, batch)
                    samples[batch].total.append(total)
                    samples[batch].ansible.append(ansible)
                    self.load.append(os.getloadavg()[0])
                    print(f"  hosts {hosts} batch {batch} run {run + 1}: apply {total:.2f} s, Ansible only "
                          f"{ansible:.2f} s (load average {self.load[-1]:.1f})", flush=True)
        return samples


def table(results: dict[int, dict[int, Sample]]) -> str:
    lines = ["| hosts | batch | `backstage apply` (s) | Ansible only (s) | Ansible / apply | rest (s) "
             "| apply / host (s) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for hosts, samples in results.items():
        for batch, sample in samples.items():
            label = "1 (= all)" if hosts == 1 else ("all" if batch == hosts else str(batch))
            lines.append(sample.row(hosts, label))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="1,3,10", help="fleet sizes, comma-separated (default 1,3,10)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per fleet size and batch (median reported)")
    parser.add_argument("--smoke", action="store_true", help="1 host, 1 run; prints the table, asserts no timing")
    args = parser.parse_args()
    sizes = [1] if args.smoke else [int(n) for n in args.hosts.split(",")]
    runs = 1 if args.smoke else args.runs
    if os.geteuid() != 0:
        sys.exit("rollout benchmark: needs root (it makes network, mount and pid namespaces for its hosts)")
    if runs < 1 or not sizes or min(sizes) < 1 or max(sizes) > 250:
        sys.exit("rollout benchmark: --runs must be >= 1 and --hosts between 1 and 250")
    work = Path(tempfile.mkdtemp(prefix="backstage-rollout-"))
    tempfile.tempdir = str(work)  # conftest's Hypothesis home, and anything else imported, goes here
    started = time.monotonic()
    try:
        bench = Bench(work, load_conftest())
        results = {hosts: bench.measure(hosts, runs) for hosts in sizes}
    finally:
        remove_tree(work)
    rerun = "python benchmarks/rollout.py" + (" --smoke" if args.smoke else "")
    if not args.smoke and (sizes != [1, 3, 10] or runs != 3):
        rerun += f" --hosts {','.join(map(str, sizes))} --runs {runs}"
    print()
    print(table(results))
    print()
    print(f"{runs} run(s), median [min-max]; {time.monotonic() - started:.0f} s in all; 1-minute load average "
          f"{min(bench.load):.1f}-{max(bench.load):.1f} on {os.cpu_count()} CPUs. Rerun: {rerun}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
