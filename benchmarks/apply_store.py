"""Benchmark `backstage apply` of a code-only change against a requirements change (issue 11).

    python benchmarks/apply_store.py --rounds 3

With real components: a private nginx and uWSGI Emperor on 127.0.0.1 (tests/harness.py's TestSandbox),
a Django project made by `python -m django startproject`, deployed from `source` on a Stage built by
uv from `requirements`, with collectstatic, migrate and `manage.py check` as release steps (as in
tests/test_release.py). Each round applies, with the real CLI (`python -m backstage.cli apply`):

  code          a code-only change of the Act: a new Act store path; the Stage is kept (no installer);
  requirements  a requirements change (`six>=1.0.N`, met by the same cached release): a new Stage, built
                by uv with a warm cache; the code is the same as the apply before.

Every artifact is built before anything is timed; only the apply is timed, from spawn to exit.
Each apply is checked (its Stage kept or built, the new code serving through nginx); no time is
asserted. Everything lives under one temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness import TestSandbox

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.dont_write_bytecode = True

from test_release import SETTINGS_TAIL  # noqa: E402  (the same project settings as the end-to-end test)

PROJECT = "club"  # the Django project's name (not `site`, which would shadow the stdlib module)
HOST = "club.test"
DJANGO = "Django>=5.2,<6"

URLS = """
from django.http import HttpResponse
from django.urls import path

def home(request):
    import six
    return HttpResponse(f"club {VERSION} six={six.__version__}")

VERSION = "code-0"
urlpatterns = [path("", home), path("healthz", lambda request: HttpResponse("ok"))]
"""

_BUILT = re.compile(r"store: built\s+stage-\S+ in ([0-9.]+) s")


@dataclass(frozen=True)
class Generation:
    label: str
    kind: str  # "base", "code" or "requirements"
    code: str
    requirements: tuple[str, ...]
    artifact: Path = Path()


@dataclass
class Bench:
    tmp: Path
    sandbox: TestSandbox
    head: Callable[[str, Path, dict[str, object]], str]  # conftest.sandbox_head (imported in main)
    env: dict[str, str]
    project: Path = Path()
    walls: dict[str, list[float]] = field(default_factory=lambda: {"code": [], "requirements": []})
    uv_seconds: list[float] = field(default_factory=list)


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run(command: list[str], env: dict[str, str], what: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode:
        sys.exit(f"benchmark: {what} exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return done


def startproject(bench: Bench) -> None:
    project = bench.tmp / "project"
    project.mkdir()
    run([sys.executable, "-m", "django", "startproject", PROJECT, str(project)], bench.env, "django startproject")
    settings = project / PROJECT / "settings.py"
    settings.write_text(settings.read_text() + SETTINGS_TAIL)
    (project / PROJECT / "urls.py").write_text(URLS)
    (project / "assets").mkdir()
    (project / "assets" / "club.css").write_text("body { color: green; }\n")
    bench.project = project


def source(bench: Bench, code: str) -> Path:
    """The project as of `code`: a copy per code version, as a user's checkout would change."""
    path = bench.tmp / f"src-{code}"
    if not path.exists():
        shutil.copytree(bench.project, path, symlinks=True)
        urls = path / PROJECT / "urls.py"
        urls.write_text(urls.read_text().replace('VERSION = "code-0"', f'VERSION = "{code}"'))
    return path


def production(bench: Bench, gen: Generation) -> Path:
    q = json.dumps
    db = bench.tmp / "data" / "club.sqlite3"
    db.parent.mkdir(exist_ok=True)
    text = bench.head("bench", bench.tmp, bench.sandbox.host_table()) + f"""
[stages.main]
python = {q(sys.executable)}
requirements = {q(list(gen.requirements))}

[acts.club]
wsgi = "{PROJECT}.wsgi"
source = {q(str(source(bench, gen.code)))}
settings = "{PROJECT}.settings"
env = {{ CLUB_DB = {q(str(db))} }}
health = "/healthz"

[acts.club.django]
collectstatic = "/static/"
migrate = true
release = [["manage.py", "check"]]

[sesses.club]
act = "club"
stage = "main"

[venues.www]
domain = "{HOST}"
listen = {q(bench.sandbox.listen)}

[gigs.club]
venue = "www"
sess = "club"
"""
    path = bench.tmp / f"production-{gen.label}.toml"
    path.write_text(text)
    return path


def build(bench: Bench, gen: Generation) -> Generation:
    done = run([sys.executable, "-m", "backstage.cli", "build", str(production(bench, gen)),
                "-o", str(bench.tmp / "build")], bench.env, f"backstage build ({gen.label})")
    return Generation(gen.label, gen.kind, gen.code, gen.requirements, Path(done.stdout.strip()))


def plan(rounds: int) -> list[Generation]:
    """The base generation, then per round a code-only change and a requirements change."""
    gens = [Generation("base", "base", "code-0", (DJANGO, "six>=1.0.0"))]
    for r in range(1, rounds + 1):
        requirements = gens[-1].requirements
        gens.append(Generation(f"r{r}-code", "code", f"code-{r}", requirements))
        gens.append(Generation(f"r{r}-requirements", "requirements", f"code-{r}", (DJANGO, f"six>=1.0.{r}")))
    return gens


def apply(bench: Bench, gen: Generation) -> None:
    command = [sys.executable, "-m", "backstage.cli", "apply", str(gen.artifact), "--ready-timeout=60",
               "--health-timeout=20"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=bench.env, timeout=600)
    wall = time.perf_counter() - start
    out = done.stdout + done.stderr
    if done.returncode:
        sys.exit(f"benchmark: apply of {gen.label} exited {done.returncode}:\n{out[-3000:]}")
    # What the apply did must be what is being measured (this checks behaviour, not time).
    built = _BUILT.findall(out)
    kept = re.search(r"store: keep\s+stage-", out)
    if gen.kind == "code" and (built or not kept):
        sys.exit(f"benchmark: the code-only apply {gen.label} did not keep its Stage:\n{out[-3000:]}")
    if gen.kind in ("base", "requirements") and not (built and re.search(r"store: build\s+stage-\S+ with uv", out)):
        sys.exit(f"benchmark: the apply {gen.label} did not build its Stage with uv:\n{out[-3000:]}")
    body = bench.sandbox.get(HOST, "/").text
    if not body.startswith(f"club {gen.code} six="):
        sys.exit(f"benchmark: after applying {gen.label}, {HOST}/ answers {body[:200]!r}")
    if gen.kind != "base":
        bench.walls[gen.kind].append(wall)
        if gen.kind == "requirements":
            bench.uv_seconds.append(float(built[0]))
    progress(f"apply {gen.label}: {wall:.2f} s" + (f" (Stage built by uv in {built[0]} s)" if built else ""))


def version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except OSError:
        return "not found"
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "unknown"


def report(bench: Bench, args_line: str, started: float, stamp: str) -> None:
    code, req = bench.walls["code"], bench.walls["requirements"]
    nginx = bench.sandbox.components.nginx
    uwsgi = bench.sandbox.components.uwsgi
    django = version([sys.executable, "-m", "django", "--version"])
    print(f"backstage apply benchmark (issue 11), {stamp}, {time.perf_counter() - started:.0f} s in all")
    print(f"command: {args_line}  (python = {sys.executable})")
    print(f"machine: nproc {len(os.sched_getaffinity(0))}, Python {sys.version.split()[0]}, "
          f"{version(['uv', '--version'])}, Django {django}, uWSGI {version([uwsgi, '--version'])}, "
          f"{version([nginx, '-v'])}")
    print(f"{len(code)} round(s), interleaved (code, then requirements, each round); wall seconds of "
          "`python -m backstage.cli apply ARTIFACT`, spawn to exit")
    print()
    print("| apply | median (s) | all values (s), in round order |")
    print("|---|---|---|")
    print(f"| code-only change (new Act, Stage kept, no installer) | {statistics.median(code):.2f} "
          f"| {', '.join(f'{v:.2f}' for v in code)} |")
    print(f"| requirements change (new Stage built by uv, warm cache) | {statistics.median(req):.2f} "
          f"| {', '.join(f'{v:.2f}' for v in req)} |")
    print("| of which the Stage build (uv venv + uv pip install, the agent's log) "
          f"| {statistics.median(bench.uv_seconds):.1f} "
          f"| {', '.join(f'{v:.1f}' for v in bench.uv_seconds)} |")
    print()
    print(f"ratio requirements / code-only (medians): {statistics.median(req) / statistics.median(code):.2f}")


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--rounds", type=int, default=3, help="rounds of (code-only, requirements) applies (default 3)")
    args = cli.parse_args()
    if args.rounds < 1:
        cli.error("--rounds must be at least 1")
    args_line = shlex.join(["python", *sys.argv])
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="backstage-bench-apply-"))
    try:
        # conftest creates a Hypothesis directory with mkdtemp when imported: put it under tmp too.
        tempfile.tempdir = str(tmp)
        try:
            from conftest import sandbox_head
            from harness import TestSandbox
        finally:
            tempfile.tempdir = None
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")  # no bytecode in the repository
        with TestSandbox(tmp / "sandbox") as sandbox:
            bench = Bench(tmp, sandbox, sandbox_head, env)
            startproject(bench)
            gens = [build(bench, gen) for gen in plan(args.rounds)]
            progress(f"built {len(gens)} artifacts in {tmp}; applying (the base one untimed)")
            for gen in gens:
                apply(bench, gen)
            report(bench, args_line, started, stamp)
    finally:
        _remove(tmp)
    return 0


def _remove(path: Path) -> None:
    # Artifacts, generations and store paths are read-only directories; give write access back first.
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            full = os.path.join(root, d)
            if not os.path.islink(full):  # a link (`current`, a vassal's) is not followed
                with contextlib.suppress(OSError):
                    os.chmod(full, 0o755)
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
