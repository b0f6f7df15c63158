"""Code, environment and static files in the generation, end to end: a Django project made by
`django-admin startproject` in the test, deployed from `source` with a Stage built by uv from
`requirements`, `collectstatic` and `migrate`, on Debian's nginx and a compiled uWSGI Emperor.

The tests share one sandbox and one project, and each first brings the host to the state it needs,
so each also passes alone.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import run_cli, sandbox_head
from harness import TestSandbox
from loadgen import Load, Target

SETTINGS_TAIL = """
# --- added by the test, as a user deploying with backstage would ---
import os as _os
ALLOWED_HOSTS = _os.environ.get("BACKSTAGE_HOSTS", "").split()
STATIC_ROOT = _os.environ.get("BACKSTAGE_STATIC_ROOT")
STATICFILES_DIRS = [BASE_DIR / "assets"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _os.environ["CLUB_DB"]}}
DEBUG = False
"""

URLS = """
from django.http import HttpResponse
from django.urls import path

def home(request):
    extra = ""
    try:
        import six  # only generation 2's Stage has it
        extra = f" six={six.__version__}"
    except ImportError:
        pass
    return HttpResponse(f"club {VERSION}{extra}")

VERSION = "code-v1"
urlpatterns = [path("", home), path("healthz", lambda request: HttpResponse("ok"))]
"""


@dataclass
class Club:
    sandbox: TestSandbox
    tmp: Path
    project: Path
    db: Path
    built: dict[str, Path] = field(default_factory=dict)


def startproject(tmp: Path) -> Path:
    project = tmp / "project"
    project.mkdir()
    subprocess.run([sys.executable, "-m", "django", "startproject", "club", str(project)], check=True)
    (project / "club" / "settings.py").write_text((project / "club" / "settings.py").read_text() + SETTINGS_TAIL)
    (project / "club" / "urls.py").write_text(URLS)
    (project / "assets").mkdir()
    (project / "assets" / "club.css").write_text("body { color: green; }\n")
    return project


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    tmp = tmp_path_factory.mktemp("release")
    with TestSandbox(tmp / "sandbox") as sandbox:
        yield Club(sandbox, tmp, startproject(tmp), tmp / "data" / "club.sqlite3")


def production(club: Club, label: str, requirements: list[str], code: str = "code-v1",
               css: str = "body { color: green; }\n") -> Path:
    """The project's code as of `label` (a copy per generation, as a user's checkout would change)."""
    source = club.tmp / f"src-{label}"
    if not source.exists():
        subprocess.run(["cp", "-a", str(club.project), str(source)], check=True)
        urls = source / "club" / "urls.py"
        urls.write_text(urls.read_text().replace('VERSION = "code-v1"', f'VERSION = "{code}"'))
        (source / "assets" / "club.css").write_text(css)
    q = json.dumps
    club.db.parent.mkdir(exist_ok=True)
    text = sandbox_head("club", club.tmp, club.sandbox.host_table()) + f"""
[stages.main]
python = {q(sys.executable)}
requirements = {q(requirements)}

[acts.club]
wsgi = "club.wsgi"
source = {q(str(source))}
settings = "club.settings"
env = {{ CLUB_DB = {q(str(club.db))} }}
health = "/healthz"

[acts.club.django]
collectstatic = "/static/"
migrate = true
release = [["manage.py", "check"]]

[stages.steady]
python = {q(sys.executable)}
requirements = ["Django>=5.2,<6"]

[acts.other]
wsgi = "club.wsgi"
source = {q(str(club.project))}
settings = "club.settings"
env = {{ CLUB_DB = {q(str(club.db))} }}
health = "/healthz"

[sesses.club]
act = "club"
stage = "main"

[sesses.other]
act = "other"
stage = "steady"

[venues.www]
domain = "club.test"
listen = {q(club.sandbox.listen)}

[gigs.club]
venue = "www"
sess = "club"

[gigs.other]
venue = "www"
sess = "other"
path = "/other/"
"""
    path = club.tmp / f"production-{label}.toml"
    path.write_text(text)
    return path


GEN1 = ("gen1", ["Django>=5.2,<6"], "code-v1", "body { color: green; }\n")
GEN2 = ("gen2", ["Django>=5.2,<6", "six==1.16.0"], "code-v2", "body { color: blue; }\n")


def build(club: Club, gen: tuple[str, list[str], str, str]) -> Path:
    label = gen[0]
    if label not in club.built:
        done = run_cli("build", str(production(club, *gen)), "-o", str(club.tmp / "build"))
        assert done.code == 0, done.err
        club.built[label] = Path(done.out.strip())
    return club.built[label]


def apply(artifact: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = run_cli("apply", str(artifact), "--ready-timeout=60", "--health-timeout=20",
                   env=None if env is None else os.environ | env)
    assert "Traceback" not in done.err, done.err
    return done.code, done.out + done.err


def store(club: Club) -> set[str]:
    root = club.tmp / "state" / "store"
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def live(club: Club, gen: tuple[str, list[str], str, str]) -> None:
    """Make `gen` the live generation (if it is not), and check that its code, static file and Stage serve."""
    body = club.sandbox.get("club.test", "/").text
    if not body.startswith(f"club {gen[2]}"):
        code, out = apply(build(club, gen))
        assert code == 0, out
    assert_serves(club, gen)


def assert_serves(club: Club, gen: tuple[str, list[str], str, str]) -> None:
    body = club.sandbox.get("club.test", "/").text
    assert body.startswith(f"club {gen[2]}"), body
    assert ("six=" in body) == (len(gen[1]) > 1), body
    css = club.sandbox.get("club.test", "/static/club.css")
    assert (css.status, css.text) == (200, gen[3])


def test_generation_1_serves_code_static_files_and_migrated_database(club: Club) -> None:
    live(club, GEN1)
    names = store(club)
    assert {n.split("-")[0] for n in names} == {"act", "entry", "stage", "static"}, names
    with sqlite3.connect(club.db) as db:
        assert db.execute("select count(*) from django_migrations").fetchone()[0] > 0
    conf = next((club.tmp / "state" / "current" / "nginx").glob("*.conf")).read_text()
    static = next(n for n in names if n.startswith("static-club-"))
    assert f"alias {club.tmp / 'state' / 'store' / static}/;" in conf
    # The store is immutable: no bytecode was written into the code the vassals run.
    for name in names:
        if name.startswith("act-"):
            assert not list((club.tmp / "state" / "store" / name).rglob("__pycache__"))


def test_generation_2_changes_code_static_and_requirements_under_load(club: Club) -> None:
    live(club, GEN1)
    before = store(club)
    other_pid = next(pid for name, pid in club.sandbox.vassal_pids().items() if "--other--" in name)
    build(club, GEN2)  # the build is not what is measured
    targets = [Target("club.test", "/"), Target("club.test", "/static/club.css"), Target("club.test", "/other/")]
    with Load(club.sandbox.http_port, targets, clients=10, duration=8.0) as load:
        code, out = apply(build(club, GEN2))
    assert code == 0, out
    assert load.result.failures == [], load.result.summary()
    assert_serves(club, GEN2)
    assert next(pid for name, pid in club.sandbox.vassal_pids().items() if "--other--" in name) == other_pid
    assert before <= store(club), "the old store paths remain for a rollback"


def test_rollback_restores_the_old_code_static_files_and_environment(club: Club) -> None:
    live(club, GEN1)
    live(club, GEN2)
    done = run_cli("rollback", str(club.tmp / "state"), "--ready-timeout=60")
    assert done.code == 0, done.err
    assert_serves(club, GEN1)


def test_a_requirement_that_cannot_be_installed_changes_nothing(club: Club) -> None:
    live(club, GEN1)
    before = store(club)
    bad = ("bad", ["Django>=5.2,<6", "backstage-no-such-package==0.0.1"], "code-bad", "x\n")
    code, out = apply(build(club, bad))
    assert code == 1
    assert "backstage-no-such-package==0.0.1" in out, out
    assert_serves(club, GEN1)
    after = store(club)
    # No half Stage and no temporary directory; complete Act and entry point paths may stay (gc removes them).
    assert before <= after and not [n for n in after - before if not n.startswith(("act-", "entry-"))], \
        after - before


def test_gc_removes_exactly_the_store_paths_no_kept_generation_refers_to(club: Club) -> None:
    live(club, GEN2)
    live(club, GEN1)
    done = run_cli("gc", str(club.tmp / "state"), "--keep", "1")
    assert done.code == 0, done.err
    kept = [g for g in (club.tmp / "state" / "generations").iterdir() if not g.name.startswith(".")]
    wanted: set[str] = set()
    for generation in kept:
        plan = json.loads((generation / "apply.json").read_text())
        wanted |= {a["store"] for a in plan["acts"]} | {s["store"] for s in plan["stages"]} | \
            {e["store"] for e in plan["entries"]} | {s["static"] for s in plan["steps"] if s["static"]}
    assert len(kept) < len(club.built) and store(club) == wanted
    assert_serves(club, GEN1)


CRASHES = ["stage-installing", "stage-building", "collectstatic-running"]


@pytest.mark.parametrize("point", CRASHES)
def test_kill_9_during_a_build_or_collectstatic_then_apply_converges(point: str, club: Club) -> None:
    live(club, GEN1)
    label = f"crash-{point}"
    # A Stage of its own for each case (six>=1.10, 1.11, 1.12: all met by the same release).
    gen = (label, ["Django>=5.2,<6", f"six>=1.{10 + CRASHES.index(point)}"], f"code-{label}", f"/* {label} */\n")
    artifact = build(club, gen)
    code, _ = apply(artifact, env={"BACKSTAGE_TEST_CRASH_AT": point})
    assert code != 0
    assert_serves(club, GEN1)  # the killed apply never switched anything
    code, out = apply(artifact)
    assert code == 0, out
    assert_serves(club, gen)
