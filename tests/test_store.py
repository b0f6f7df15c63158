"""The store on a real host: Acts copied read-only, Stages built by real uv and real venv + pip, Django's
collectstatic and migrate run for real, kill -9 in the middle of a build, and gc of store paths.

Plans and generation directories are written by hand here (what an artifact of format 2 holds:
acts/<act>/..., stages/<stage>/requirements.txt, apply.json), so these tests do not depend on the
compiler's side of the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from backstage.agent import procfs
from backstage.agent.outcomes import Failed, Refused
from backstage.agent.store import collect, complete, failing_requirement, prepare, referenced
from backstage.contract import (
    CRASH_POINT_ENV,
    MANIFEST,
    PLAN,
    STORE_COMPLETE,
    ActPlan,
    HostPlan,
    Manifest,
    Plan,
    StagePlan,
    StepPlan,
)

BIN = Path(sys.executable).parent
PYTHON = sys.executable
REQUIREMENTS = "Django>=5.2,<6\nsix==1.16.0\n"
# Django and ten small pure-Python distributions, for the uv / pip timing.
TIMED = REQUIREMENTS + "".join(f"{r}\n" for r in (
    "idna==3.7", "attrs==23.2.0", "packaging==24.0", "certifi==2024.2.2", "python-dateutil==2.9.0.post0",
    "pytz==2024.1", "tomli==2.0.1", "typing-extensions==4.11.0", "iniconfig==2.0.0", "pyparsing==3.1.2"))
SETTINGS = """
import os
STATIC_ROOT = os.environ.get("BACKSTAGE_STATIC_ROOT")
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["JAZZCLUB_DB"]}}
"""
PREPARE = """\
import sys
from pathlib import Path
from backstage.agent.store import prepare
from backstage.contract import read_plan
generation = Path(sys.argv[1])
prepare(read_plan(generation), generation, uv=sys.argv[2] or None)
"""


def tool(name: str) -> str:
    """A real component beside the interpreter running the tests; missing is a failure, never a skip."""
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{name} is not installed beside {PYTHON}: pip install -e '.[test]' installs it")
    return str(path)


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@dataclass
class Site:
    """A production's state_dir and one generation directory of it, under a temporary directory."""

    root: Path
    acts: tuple[ActPlan, ...] = ()
    stages: tuple[StagePlan, ...] = ()
    steps: tuple[StepPlan, ...] = ()
    uwsgi: str = field(default_factory=lambda: tool("uwsgi"))
    generation_name: str = "jazz-0123456789abcdef0123456789abcdef"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def store(self) -> Path:
        return self.state / "store"

    @property
    def generation(self) -> Path:
        return self.root / "generations" / self.generation_name

    def plan(self) -> Plan:
        return Plan(production="jazz", state_dir=str(self.state), run_dir=str(self.root / "run"),
                    log_dir=str(self.root / "log"), nginx_link="backstage--jazz.conf",
                    host=HostPlan(vassals_dir=str(self.root / "vassals"), nginx_dir=str(self.root / "sites"),
                                  nginx=("nginx",), nginx_user="www-data", emperor_stats="", uwsgi=self.uwsgi),
                    vassals=(), gigs=(), acts=self.acts, stages=self.stages, steps=self.steps)

    def add_act(self, project: Path, name: str = "jazzclub") -> ActPlan:
        files = self.generation / "acts" / name
        shutil.copytree(project, files, symlinks=True)
        act = ActPlan(name, f"act-{name}-{digest(str(self.root), name)}", f"acts/{name}")
        self.acts += (act,)
        return act

    def add_stage(self, requirements: str, name: str = "main", exact: bool = False,
                  python: str = PYTHON) -> StagePlan:
        rel = f"stages/{name}/requirements.txt"
        (self.generation / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.generation / rel).write_text(requirements)
        stage = StagePlan(name, f"stage-{name}-{digest(str(self.root), requirements, python)}", python, rel, exact)
        self.stages += (stage,)
        return stage

    def add_step(self, kind: str, argv: list[str], cwd: Path, env: dict[str, str], uid: str = "",
                 static: str = "") -> StepPlan:
        step = StepPlan("jazzclub", "jazzclub", kind, tuple(argv), str(cwd),  # type: ignore[arg-type]
                        tuple(sorted(env.items())), uid, "", static)
        self.steps += (step,)
        return step

    def write_plan(self) -> None:
        self.generation.mkdir(parents=True, exist_ok=True)
        (self.generation / PLAN).write_bytes(self.plan().to_json())

    def prepare(self, uv: str | None = "", **kwargs: float) -> list[str]:
        lines: list[str] = []
        prepare(self.plan(), self.generation, lines.append, uv=uv, **kwargs)
        return lines


def entries(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.exists() else []


def tree(path: Path) -> Iterator[tuple[str, os.stat_result]]:
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            full = os.path.join(root, name)
            yield os.path.relpath(full, path), os.lstat(full)


def run_python(venv: Path, code: str) -> str:
    done = subprocess.run([str(venv / "bin/python"), "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def counting_uv(tmp: Path) -> tuple[str, Path]:
    """The real uv behind a wrapper that notes each invocation, to see whether an installer ran at all."""
    calls = tmp / "uv-calls"
    wrapper = tmp / "bin" / "uv"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {tool("uv")} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), calls


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Django project from `django-admin startproject`, its settings reading STATIC_ROOT from
    BACKSTAGE_STATIC_ROOT and its sqlite database's path from JAZZCLUB_DB."""
    where = tmp_path_factory.mktemp("project") / "jazzclub"
    where.mkdir()
    subprocess.run([PYTHON, "-m", "django", "startproject", "jazzclub", str(where)], check=True, timeout=60,
                   cwd=where)
    with (where / "jazzclub" / "settings.py").open("a") as settings:
        settings.write(SETTINGS)
    return where


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, project: Path) -> Site:
    """A site whose Act and Stage (Django, built with uv) are in the store, for the release-step tests."""
    site = Site(tmp_path_factory.mktemp("built"))
    site.add_act(project)
    site.add_stage(REQUIREMENTS)
    site.prepare()
    return site


def django_env(site: Site, db: Path, static: str = "") -> dict[str, str]:
    env = {"DJANGO_SETTINGS_MODULE": "jazzclub.settings", "JAZZCLUB_DB": str(db)}
    if static:
        env["BACKSTAGE_STATIC_ROOT"] = str(site.store / static)
    return env


def manage(site: Site, *args: str) -> tuple[list[str], Path]:
    return [str(site.store / site.stages[0].store / "bin/python"), "manage.py", *args], site.store / site.acts[0].store


# --------------------------------------------------------------------------------------------- acts

def test_an_act_is_installed_read_only_once(tmp_path: Path, project: Path) -> None:
    site = Site(tmp_path)
    act = site.add_act(project)
    lines = site.prepare()
    installed = site.store / act.store
    assert entries(site.store) == [act.store]
    assert lines == [f"store: install {act.store}"]
    found = dict(tree(installed))
    assert sorted(found) == sorted(rel for rel, _ in tree(project))
    for rel, info in found.items():
        assert info.st_uid == os.geteuid() and info.st_nlink >= 1, rel
        if stat.S_ISDIR(info.st_mode):
            assert stat.S_IMODE(info.st_mode) == 0o555, rel
        else:
            assert stat.S_ISREG(info.st_mode), rel
            assert stat.S_IMODE(info.st_mode) == (0o555 if rel == "manage.py" else 0o444), rel
            assert (installed / rel).read_bytes() == (project / rel).read_bytes()
    assert stat.S_IMODE(os.lstat(installed).st_mode) == 0o555
    inode = os.lstat(installed).st_ino
    assert site.prepare() == [f"store: keep    {act.store}"]
    assert os.lstat(installed).st_ino == inode


def test_an_act_holding_a_symlink_is_not_installed(tmp_path: Path, project: Path) -> None:
    site = Site(tmp_path)
    act = site.add_act(project)
    os.symlink("/etc/passwd", site.generation / act.files / "jazzclub" / "passwords")
    with pytest.raises(Failed, match=r"passwords is a symlink; store paths hold regular files"):
        site.prepare()
    assert entries(site.store) == []


# ------------------------------------------------------------------------------------------- stages

def test_a_stage_builds_with_uv_and_a_second_prepare_runs_no_installer(tmp_path: Path) -> None:
    uv, calls = counting_uv(tmp_path)
    site = Site(tmp_path)
    stage = site.add_stage(REQUIREMENTS)
    lines = site.prepare(uv=uv)
    venv = site.store / stage.store
    assert complete(venv)
    assert entries(site.store) == [stage.store]
    assert lines[0] == f"store: build   {stage.store} with uv from {PYTHON}"
    assert run_python(venv, "import django, six; print(django.__version__, six.__version__)").startswith("5.")
    assert run_python(venv, "import importlib.util as u; print(u.find_spec('pip'))") == "None"  # uv seeds nothing
    assert list((venv / "lib").glob("python3*/site-packages/django/__pycache__/*.pyc")), "bytecode is compiled"
    for rel, info in tree(venv):
        assert stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o022, f"{rel} is writable by group or others"
    assert json.loads((venv / STORE_COMPLETE).read_text())["installer"] == "uv"
    invoked = calls.read_text()
    assert "venv" in invoked and "pip install" in invoked
    marker = os.lstat(venv / STORE_COMPLETE).st_mtime_ns

    assert site.prepare(uv=uv) == [f"store: keep    {stage.store}"]
    assert calls.read_text() == invoked, "a second prepare of the same Stage ran the installer"
    assert os.lstat(venv / STORE_COMPLETE).st_mtime_ns == marker


def test_a_stage_builds_with_venv_and_pip_exactly_from_a_lock(tmp_path: Path) -> None:
    source = tmp_path / "requirements.in"
    source.write_text(REQUIREMENTS)
    lock = subprocess.run([tool("uv"), "pip", "compile", "--python", PYTHON, "--quiet", str(source)],
                          capture_output=True, text=True, check=True, timeout=300, cwd=tmp_path).stdout
    site = Site(tmp_path)
    stage = site.add_stage(lock, exact=True)
    started = time.monotonic()
    lines = site.prepare(uv=None)
    took = time.monotonic() - started
    venv = site.store / stage.store
    assert lines[0] == f"store: build   {stage.store} with venv + pip from {PYTHON}"
    assert complete(venv) and json.loads((venv / STORE_COMPLETE).read_text())["installer"] == "pip"
    installed = run_python(venv, "import importlib.metadata as m; "
                                 "print(' '.join(sorted(d.metadata['Name'].lower() for d in m.distributions())))")
    # Exactly the lock: pip and setuptools, which venv seeds, are gone too.
    assert installed.split() == ["asgiref", "django", "six", "sqlparse"]
    for rel, info in tree(venv):
        assert stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o022, f"{rel} is writable by group or others"
    assert site.prepare(uv=None) == [f"store: keep    {stage.store}"]
    print(f"venv + pip build of an exact lock (Django, 4 distributions): {took:.1f} s")


def test_a_stage_whose_python_is_not_uwsgis_is_refused_before_anything_is_built(tmp_path: Path,
                                                                              project: Path) -> None:
    fake = tmp_path / "uwsgi"
    fake.write_text("#!/bin/sh\necho 3.99.0\n")
    fake.chmod(0o755)
    site = Site(tmp_path, uwsgi=str(fake))
    site.add_act(project)
    site.add_stage(REQUIREMENTS)
    with pytest.raises(Refused) as refused:
        site.prepare()
    message = str(refused.value)
    assert f"Python {platform.python_version()}" in message and "Python 3.99.0" in message, message
    assert str(fake) in message and "Stage main" in message
    assert not site.store.exists()  # not even the Act was installed


def test_a_built_stage_whose_python_is_no_longer_uwsgis_is_refused(built: Site, tmp_path: Path) -> None:
    fake = tmp_path / "uwsgi"
    fake.write_text("#!/bin/sh\necho 3.99.0\n")
    fake.chmod(0o755)
    before = entries(built.store)
    with pytest.raises(Refused, match=r"Stage main's virtualenv .* is Python 3\.11\.\d+, but .* runs Python 3\.99\.0"):
        replace(built, uwsgi=str(fake)).prepare()
    assert entries(built.store) == before


@pytest.mark.parametrize("case", ["missing", "broken"])
def test_an_uninstallable_requirement_fails_naming_it_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    if case == "missing":
        culprit, said = "backstage-no-such-package==0.0.1", "backstage-no-such-package"
    else:  # a source distribution whose build fails
        package = tmp_path / "brokenpkg"
        package.mkdir()
        (package / "setup.py").write_text('raise SystemExit("broken on purpose")\n')
        culprit, said = f"brokenpkg @ {package.as_uri()}", "broken on purpose"
    site = Site(tmp_path)
    site.add_stage(f"six==1.16.0\n{culprit}\n")
    with pytest.raises(Failed) as failed:
        site.prepare()
    first, *tail = str(failed.value).splitlines()
    assert first.startswith(f"Stage main: cannot install {culprit} (uv pip install"), first
    assert tail and all(line.startswith("    ") for line in tail)
    assert any(said in line for line in tail), tail
    assert entries(site.store) == []  # no half Stage, no .tmp-


def test_pips_own_words_for_a_missing_requirement_are_understood(tmp_path: Path) -> None:
    done = subprocess.run([PYTHON, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d",
                           str(tmp_path), "backstage-no-such-package==0.0.1"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert failing_requirement(done.stdout + done.stderr) == "backstage-no-such-package==0.0.1"
    # A failure the installers word otherwise is found by the requirement's name on an error line.
    assert failing_requirement("error: something broke while preparing Six_thing\n",
                               "django>=5\nsix-thing==1 \\\n  --hash=sha256:00\n") == "six-thing==1"


@pytest.mark.parametrize("point", ["stage-installing", "stage-building"])
def test_a_stage_build_killed_is_never_used_and_the_next_prepare_converges(tmp_path: Path, point: str) -> None:
    site = Site(tmp_path)
    stage = site.add_stage(REQUIREMENTS)
    site.write_plan()
    env = {**os.environ, CRASH_POINT_ENV: point}
    done = subprocess.run([PYTHON, "-c", PREPARE, str(site.generation), tool("uv")], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == -9, done.stderr
    half = site.store / stage.store
    assert half.is_dir() and not complete(half)
    (half / "left-by-the-killed-run").write_text("")
    lines = site.prepare()
    assert lines[0] == f"store: remove  {stage.store} (unfinished: a build was interrupted)"
    assert complete(half) and not (half / "left-by-the-killed-run").exists()
    # An installer the killed run left working in the half Stage was stopped before it was removed.
    assert not [pid for pid in procfs.pids() if any(arg.startswith(str(half)) for arg in procfs.cmdline(pid))]
    assert run_python(half, "import django; print(django.__version__)").startswith("5.")
    assert entries(site.store) == [stage.store]


# -------------------------------------------------------------------------------------------- steps

def test_collectstatic_and_migrate_run_with_the_sess_environment(built: Site, tmp_path: Path) -> None:
    site = replace(built)
    db = tmp_path / "db.sqlite3"
    static = f"static-jazzclub-{digest(str(tmp_path))}"
    argv, cwd = manage(site, "collectstatic", "--noinput")
    site.add_step("collectstatic", argv, cwd, django_env(site, db, static), static=static)
    argv, cwd = manage(site, "migrate", "--noinput")
    site.add_step("migrate", argv, cwd, django_env(site, db, static))
    lines = site.prepare()
    assert f"store: install {static}" in lines
    # STATIC_ROOT came from BACKSTAGE_STATIC_ROOT: Django's admin files are in the store path.
    css = site.store / static / "admin" / "css" / "base.css"
    assert css.is_file() and stat.S_IMODE(css.stat().st_mode) == 0o444 and css.stat().st_uid == os.geteuid()
    for rel, info in tree(site.store / static):
        assert stat.S_IMODE(info.st_mode) in (0o444, 0o555) and not stat.S_ISLNK(info.st_mode), rel
    with sqlite3.connect(db) as connection:
        applied = connection.execute("SELECT count(*) FROM django_migrations").fetchone()[0]
    assert applied > 10
    assert not [name for name in entries(site.store) if name.startswith(".tmp-")]
    assert not list((site.store / site.acts[0].store).rglob("__pycache__")), "a step wrote into the Act's store path"

    inode = os.lstat(site.store / static).st_ino
    again = site.prepare()
    assert f"store: keep    {static}" in again
    assert any(line.startswith("release: migrate (jazzclub): ") for line in again)  # migrate runs on every apply
    assert os.lstat(site.store / static).st_ino == inode


def test_a_failing_release_step_fails_with_its_output(built: Site, tmp_path: Path) -> None:
    site = replace(built)
    argv, cwd = manage(site, "check", "--deploy", "--fail-level", "WARNING")
    site.add_step("release", argv, cwd, django_env(site, tmp_path / "db.sqlite3"))
    with pytest.raises(Failed) as failed:
        site.prepare()
    first, *tail = str(failed.value).splitlines()
    assert first.startswith("release of Sess jazzclub failed: ") and "manage.py check --deploy" in first, first
    assert "exited with status 1" in first
    assert any("security.W" in line for line in tail), tail


def test_a_release_step_past_its_timeout_is_stopped_and_fails(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.add_step("release", ["/bin/sh", "-c", "sleep 60 & echo child=$!; wait"], tmp_path, {})
    started = time.monotonic()
    with pytest.raises(Failed, match=r"release of Sess jazzclub failed: .* did not finish within 1 s") as failed:
        site.prepare(step_timeout=1.0)
    assert time.monotonic() - started < 15
    child = int(str(failed.value).rpartition("child=")[2].split()[0])
    assert not procfs.alive(child), "the step's own child outlived it"  # its whole session was stopped


def test_a_failing_collectstatic_leaves_no_static_path(built: Site, tmp_path: Path) -> None:
    site = replace(built)
    static = f"static-jazzclub-{digest(str(tmp_path))}"
    code = "import os, sys; open(os.environ['BACKSTAGE_STATIC_ROOT'] + '/half.css', 'w'); sys.exit('no storage')"
    site.add_step("collectstatic", [PYTHON, "-c", code], tmp_path, {}, static=static)
    with pytest.raises(Failed, match=r"(?s)collectstatic of Sess jazzclub failed: .*exited with status 1.*no storage"):
        site.prepare()
    assert static not in entries(site.store)
    assert not [n for n in entries(site.store) if n.startswith(".tmp-")]


def test_a_collectstatic_killed_is_redone_and_its_leftovers_collected(tmp_path: Path, project: Path) -> None:
    site = Site(tmp_path)
    site.add_act(project)
    site.add_stage(REQUIREMENTS)
    site.prepare()
    static = f"static-jazzclub-{digest(str(tmp_path))}"
    argv, cwd = manage(site, "collectstatic", "--noinput")
    site.add_step("collectstatic", argv, cwd, django_env(site, tmp_path / "db.sqlite3", static), static=static)
    site.write_plan()
    done = subprocess.run([PYTHON, "-c", PREPARE, str(site.generation), ""], capture_output=True, text=True,
                          env={**os.environ, CRASH_POINT_ENV: "collectstatic-running"}, timeout=600, cwd=tmp_path)
    assert done.returncode == -9, done.stderr
    assert not (site.store / static).exists()
    site.prepare()
    assert (site.store / static / "admin" / "css" / "base.css").is_file()
    leftovers = [n for n in entries(site.store) if n.startswith(".tmp-")]
    assert leftovers, "the killed run's collectstatic directory is left for gc"
    assert collect(site.store, referenced([site.generation])) == leftovers
    assert entries(site.store) == sorted(site.plan().store_paths())


def test_collectstatic_runs_as_the_stages_user_and_its_output_becomes_roots() -> None:
    # Under a directory others can enter (pytest's own are 0700), so that `nobody` reaches the store.
    base = Path(tempfile.mkdtemp(prefix="backstage-store-"))
    try:
        base.chmod(0o755)
        site = Site(base)
        static = f"static-jazzclub-{digest(str(base))}"
        script = ('id -u > "$BACKSTAGE_STATIC_ROOT/uid"; id -G > "$BACKSTAGE_STATIC_ROOT/groups"; '
                  'stat -c %U "$BACKSTAGE_STATIC_ROOT" > "$BACKSTAGE_STATIC_ROOT/owner"')
        site.add_step("collectstatic", ["/bin/sh", "-c", script], base, {}, uid="nobody", static=static)
        site.prepare()
        out = site.store / static
        nobody = subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True, check=True).stdout.strip()
        groups = subprocess.run(["id", "-G", "nobody"], capture_output=True, text=True, check=True).stdout.strip()
        assert (out / "uid").read_text().strip() == nobody
        assert (out / "groups").read_text().strip() == groups  # nobody's own groups, none of root's
        assert (out / "owner").read_text().strip() == "nobody"
        for rel, info in tree(out):
            assert info.st_uid == 0 and stat.S_IMODE(info.st_mode) in (0o444, 0o555), rel
    finally:
        shutil.rmtree(base)


# ----------------------------------------------------------------------------------------------- gc

def test_collect_removes_exactly_the_store_paths_no_kept_generation_refers_to(tmp_path: Path) -> None:
    store = tmp_path / "store"
    kept = Site(tmp_path / "kept")
    kept.acts = (ActPlan("a", "act-a-" + "1" * 32, "acts/a"),)
    kept.stages = (StagePlan("main", "stage-main-" + "2" * 32, PYTHON, "stages/main/requirements.txt", False),
                   StagePlan("next", "stage-next-" + "5" * 32, PYTHON, "stages/next/requirements.txt", False))
    kept.steps = (StepPlan("a", "a", "collectstatic", ("true",), "/", (), "", "", "static-a-" + "3" * 32),)
    kept.write_plan()
    old = Site(tmp_path / "old")  # a generation of format 1: no store paths, and a plan format 2 cannot read
    old.write_plan()
    plan = json.loads((old.generation / PLAN).read_text())
    del plan["host"]["uwsgi"], plan["acts"], plan["stages"], plan["steps"]
    (old.generation / PLAN).write_text(json.dumps(plan))
    (old.generation / MANIFEST).write_bytes(Manifest("0.1.0", 1, "jazz", "").to_json())

    def store_path(name: str, marker: bool = False) -> None:
        (store / name / "lib").mkdir(parents=True)
        (store / name / "lib" / "file.py").write_text("x = 1\n")
        if marker:
            (store / name / STORE_COMPLETE).write_text("{}\n")
        for path in (store / name / "lib" / "file.py", store / name / "lib", store / name):
            path.chmod(0o444 if path.is_file() else 0o555)

    store_path("act-a-" + "1" * 32)
    store_path("stage-main-" + "2" * 32, marker=True)
    store_path("static-a-" + "3" * 32)
    store_path("stage-next-" + "5" * 32)  # unfinished, but referenced: the next prepare rebuilds it
    store_path("act-a-" + "4" * 32)  # an older Act
    store_path("stage-old-" + "6" * 32, marker=True)
    store_path("stage-old-" + "7" * 32)  # unfinished
    store_path(".tmp-act-b-" + "8" * 32 + ".4242")
    store_path(".tmp-gc-static-a-" + "9" * 32)  # a gc killed half-way
    (store / "lost+found").mkdir()  # not a store name: never touched

    keep = referenced([kept.generation, old.generation])
    assert keep == kept.plan().store_paths()
    removed = collect(store, keep)
    assert removed == [".tmp-act-b-" + "8" * 32 + ".4242", ".tmp-gc-static-a-" + "9" * 32, "act-a-" + "4" * 32,
                       "stage-old-" + "6" * 32, "stage-old-" + "7" * 32]
    assert entries(store) == sorted([*keep, "lost+found"])
    assert collect(store, keep) == []

    (kept.generation / PLAN).write_text("{")
    with pytest.raises(Refused, match="no store path is removed"):
        referenced([kept.generation])
