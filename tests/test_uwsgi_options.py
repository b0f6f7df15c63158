"""uWSGI pass-through options: an allowlist of options that only tune how the app is served.

A vassal runs under an Emperor that is often root, so an option that runs a command, loads code, writes
a file, opens a socket or changes privileges would run as root (a reviewer showed `file-write` and
`attach-control-daemon` doing so). The schema's `uwsgi` tables (`[stages.X.uwsgi]`, `[sesses.X.uwsgi]`)
accept only the names in their propertyNames' `x-allowed`; everything else is BS116, with a hint.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from backstage.errors import Diagnostic, InputError
from backstage.phases import pipeline, schema
from conftest import EXAMPLES, REPO
from parse_back import parse_uwsgi_ini
from test_fast_paths import same_verdict

BASE = """\
[production]
name = "club"

[stages.main]
virtualenv = "/srv/venvs/main"

[acts.blog]
wsgi = "blog.wsgi"
path = "/srv/apps/blog"

[sesses.blog]
act = "blog"
stage = "main"

[venues.example]
domain = "example.com"

[gigs.blog]
venue = "example"
sess = "blog"
"""

# Named by the defect report: each passed the old denylist, and each runs commands, loads code, writes
# files or changes privileges (file-write and attach-control-daemon were shown to act as root).
REPORTED = ["attach-control-daemon", "unique-cron-legion", "binsh", "build-plugin", "python", "py",
            "python-raw", "dlopen", "symcall", "symcall-post-fork", "post-pymodule-alias", "after-request-call",
            "after-request-hook", "file-write", "xmlconfig", "add-gid", "drop-after-apps", "drop-after-init"]
# Named by the contract (production-format.md, "Rules the compiler enforces"), and other families.
CONTRACT = ["exec-as-root", "exec-asap", "hook-as-root", "hook-pre-app", "call-asap", "master-as-root",
            "attach-daemon", "attach-daemon2", "smart-attach-daemon", "plugin", "plugins", "plugin-dir",
            "chroot", "cap", "unshare", "emperor", "emperor-stats", "include", "inherit", "ini", "json", "yaml",
            "xml", "pyrun", "pyimport", "py-import", "mount", "worker-exec", "mule", "spooler", "cron",
            "legion-cron", "touch-exec", "route", "route-run", "static-map", "check-static", "stats",
            "logger", "req-logger", "pidfile", "safe-pidfile", "daemonize", "logfile-chown", "log-backupname",
            "touch-reload", "set", "declare-option", "for-glob", "if-exists", "py-autoreload", "max-fd",
            "limit-nproc", "http", "fastrouter", "shared-socket"]
# Options backstage writes itself: refused, with the field that sets them in the hint.
RESERVED = ["strict", "master", "workers", "virtualenv", "venv", "home", "chdir", "pythonpath", "wsgi-file",
            "module", "socket", "http-socket", "chmod-socket", "chown-socket", "listen", "vacuum", "die-on-term",
            "need-app", "logto", "uid", "gid", "env"]
REFUSED = REPORTED + CONTRACT + RESERVED

# An allowed option and a value that suits it, written into the vassal as `name = value`.
SAMPLES: dict[str, Any] = {"harakiri": 30, "harakiri-verbose": True, "max-requests": 1000,
                           "max-requests-delta": 10, "reload-on-rss": 512, "evil-reload-on-rss": 768,
                           "buffer-size": 32768, "post-buffering": 8192, "lazy-apps": True, "thunder-lock": True,
                           "single-interpreter": True, "enable-threads": True, "cheaper": 1,
                           "cheaper-algo": "spare", "offload-threads": 2, "disable-logging": True, "log-4xx": True,
                           "log-5xx": True, "memory-report": True, "limit-post": 10485760, "reload-mercy": 10,
                           "worker-reload-mercy": 20, "min-worker-lifetime": 30, "max-worker-lifetime": 3600,
                           "socket-timeout": 10, "http-timeout": 30, "ignore-sigpipe": True,
                           "ignore-write-errors": True, "disable-write-exception": True,
                           "procname-prefix": "club-", "add-header": "X-Served-By: club"}


def rules() -> list[dict[str, Any]]:
    """The BS116 rule of each `uwsgi` table (Stage's, then Sess's)."""
    defs = schema.document()["$defs"]
    return [defs[kind]["properties"]["uwsgi"]["propertyNames"]["allOf"][1] for kind in ("stage", "sess")]


def allowed() -> list[str]:
    return list(rules()[0]["x-allowed"])


@cache
def uwsgi_options() -> frozenset[str]:
    """The option names the installed uWSGI knows (`uwsgi --help`), empty when there is none."""
    binary = Path(sys.executable).parent / "uwsgi"
    found = str(binary) if binary.is_file() else shutil.which("uwsgi")
    if found is None:
        return frozenset()
    text = subprocess.run([found, "--help"], capture_output=True, text=True, timeout=60).stdout
    return frozenset(re.findall(r"^\s+(?:-\w\|)?--([a-z0-9][a-z0-9-]*)\s", text, re.MULTILINE))


def table(where: str, lines: str) -> str:
    """BASE with `lines` in [stages.main.uwsgi] or [sesses.blog.uwsgi]."""
    header = "[stages.main.uwsgi]" if where == "stage" else "[sesses.blog.uwsgi]"
    return f"{BASE}\n{header}\n{lines}\n"


def refused(text: str) -> list[Diagnostic]:
    with pytest.raises(InputError) as caught:
        pipeline.compile_bytes(text.encode())
    return caught.value.diagnostics


def vassal_options(text: str) -> list[tuple[str, str]]:
    files = pipeline.compile_bytes(text.encode()).files
    [ini] = [f.content for path, f in files.items() if path.startswith("uwsgi/") and path.endswith(".ini")]
    return [(o.key, o.value) for o in parse_uwsgi_ini(ini.decode())]


def toml_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else repr(value).replace("'", '"')


# ------------------------------------------------------------------------------------------ the schema


def test_both_tables_hold_the_same_allowlist_and_its_pattern_is_exactly_that_list() -> None:
    stage, sess = rules()
    assert stage == sess
    names = "|".join(re.escape(name) for name in stage["x-allowed"])
    assert stage["pattern"] == f"^(?:{names})$|^(?![a-z][a-z0-9-]{{0,63}}$)"
    assert stage["x-code"] == "BS116"
    assert all(isinstance(why, str) and why and "\n" not in why for why in stage["x-allowed"].values())
    assert not set(stage["x-allowed"]) & set(stage["x-reserved"])


def test_every_allowed_option_exists_in_the_installed_uwsgi() -> None:
    known = uwsgi_options()
    assert known, "no compiled uWSGI found: the suite needs one (`pip install uwsgi`, as scripts/test does)"
    assert len(known) > 900, "uwsgi --help was not parsed"
    assert [name for name in allowed() if name not in known] == []
    assert [name for name in rules()[0]["x-reserved"] if name not in known] == []


def test_of_all_uwsgi_options_only_the_allowlist_passes() -> None:
    """Every other option of the installed uWSGI (941 in 2.0.31) is refused by the rule itself."""
    known = uwsgi_options()
    assert known, "no compiled uWSGI found: the suite needs one (`pip install uwsgi`, as scripts/test does)"
    rule = re.compile(rules()[0]["pattern"])
    assert sorted(name for name in known if rule.search(name)) == sorted(allowed())


def test_the_options_examples_benchmarks_and_tests_use_are_allowed() -> None:
    used: set[str] = set()
    for production in EXAMPLES.glob("**/*.toml"):
        data = tomllib.loads(production.read_text("utf-8"))
        for kind in ("stages", "sesses"):
            for item in data.get(kind, {}).values():
                used |= set(item.get("uwsgi", {}))
    generate = (REPO / "benchmarks" / "generate.py").read_text("utf-8")
    for literal in re.findall(r'"uwsgi"\] = \{([^}]*)\}', generate):
        used |= set(re.findall(r'"([a-z][a-z0-9-]*)":', literal))
    used |= {"cheaper-algo", "procname", "procname-prefix", "single-interpreter", "reload-on-rss",
             "post-buffering", "enable-threads", "thunder-lock"}  # test_properties, test_hostile, strategies
    assert {"harakiri", "max-requests", "buffer-size", "lazy-apps", "processes"} <= used
    assert sorted(used - set(allowed())) == []


def test_the_readme_names_every_allowed_option() -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    assert [name for name in allowed() if f"`{name}`" not in readme] == []


# ------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("where", ["stage", "sess"])
@pytest.mark.parametrize("name", REFUSED)
def test_a_refused_option_is_bs116_at_its_line_and_key(where: str, name: str) -> None:
    text = table(where, f'{name} = "x"')
    found = refused(text)
    key = f"stages.main.uwsgi.{name}" if where == "stage" else f"sesses.blog.uwsgi.{name}"
    assert [(d.code, d.path) for d in found] == [("BS116", key)], "\n".join(map(str, found))
    [d] = found
    assert (d.file, d.line) == ("production.toml", text.splitlines().index(f'{name} = "x"') + 1)
    assert d.message == f'"{name}": uWSGI option not allowed as a pass-through'
    assert d.hint


@pytest.mark.parametrize("name", [*REPORTED, "exec-as-root", "attach-daemon", "plugin", "stats"])
def test_the_hint_of_a_dangerous_option_names_what_is_allowed(name: str) -> None:
    [d] = refused(table("sess", f"{name} = 1"))
    assert d.hint.startswith("only options that tune how the app is served pass through: ") or \
        d.hint.startswith("did you mean `")
    if not d.hint.startswith("did you mean"):
        assert all(option in d.hint for option in allowed())
        assert "Stage's and Act's own fields" in d.hint


@pytest.mark.parametrize(("typo", "meant"), [("max-request", "max-requests"), ("harakiri-verbos", "harakiri-verbose"),
                                              ("lazy-app", "lazy-apps"), ("thunderlock", "thunder-lock"),
                                              ("buffersize", "buffer-size"), ("disable-loging", "disable-logging")])
def test_a_near_miss_gets_did_you_mean(typo: str, meant: str) -> None:
    [d] = refused(table("stage", f"{typo} = 1"))
    assert (d.code, d.hint) == ("BS116", f"did you mean `{meant}`?")


def test_an_unrelated_option_gets_no_misleading_did_you_mean() -> None:
    [d] = refused(table("sess", "after-request-hook = 1"))
    assert "did you mean" not in d.hint  # not a typo of max-requests


@pytest.mark.parametrize(("name", "field"), [("socket", "`port` and `protocol`"), ("uid", "Stage's `uid`"),
                                             ("env", "`env` or `secrets`"), ("workers", "`processes`"),
                                             ("virtualenv", "Stage")])
def test_an_option_backstage_sets_names_the_field_that_sets_it(name: str, field: str) -> None:
    [d] = refused(table("sess", f'{name} = "x"'))
    assert d.hint.startswith(f"backstage sets `{name}` itself: ") and field in d.hint


def test_an_invalid_name_is_reported_once_as_bs115() -> None:
    found = refused(table("sess", '"File_Write" = 1'))
    assert [(d.code, d.path) for d in found] == [("BS115", "sesses.blog.uwsgi.File_Write")]


def test_every_refused_option_is_reported_in_one_run() -> None:
    found = refused(table("sess", "\n".join(f'{name} = "x"' for name in REPORTED)))
    assert sorted(d.path.rsplit(".", 1)[1] for d in found) == sorted(REPORTED)
    assert {d.code for d in found} == {"BS116"}


@pytest.mark.parametrize("where", ["stage", "sess"])
@pytest.mark.parametrize("name", [*REPORTED, "exec-as-root", "socket", "max-request"])
def test_compiled_and_reporting_validators_agree(where: str, name: str) -> None:
    assert same_verdict(table(where, f"{name} = 1").encode())[0] == "refused"


# ------------------------------------------------------------------------------------------ accepted


@pytest.mark.parametrize("where", ["stage", "sess"])
def test_allowed_options_are_accepted_and_written_into_the_vassal(where: str) -> None:
    assert set(SAMPLES) <= set(allowed())
    text = table(where, "\n".join(f"{name} = {toml_value(value)}" for name, value in SAMPLES.items()))
    options = vassal_options(text)
    for name, value in SAMPLES.items():
        assert (name, toml_value(value).strip('"')) in options, name
    assert same_verdict(text.encode())[0] == "built"


def test_every_allowed_option_is_accepted() -> None:
    names = [n for n in allowed() if n not in ("processes", "threads")]
    text = table("sess", "\n".join(f"{name} = 1" for name in names))
    options = dict(vassal_options(text))
    assert [name for name in names if options.get(name) != "1"] == []


def test_the_sess_table_overrides_the_stage_table_and_counts_are_fields() -> None:
    text = (f"{BASE}\n[stages.main.uwsgi]\nharakiri = 30\nprocesses = 3\nmax-requests = 100\n"
            "\n[sesses.blog.uwsgi]\nharakiri = 60\nthreads = 2\n")
    options = vassal_options(text)
    assert ("harakiri", "60") in options and ("harakiri", "30") not in options
    assert ("max-requests", "100") in options
    assert [v for k, v in options if k == "processes"] == ["3"] and [v for k, v in options if k == "threads"] == ["2"]
