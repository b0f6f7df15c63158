"""Proof that the real-component infrastructure works: a built artifact, applied to a private
nginx and uWSGI Emperor, serves the showcase Django app, its static files and a path-routed Gig under
load with no failures. Nothing here skips: a missing component fails loudly.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import backstage
import pytest
from backstage.cli.sandbox import find_components
from conftest import run_cli, sandbox_head
from harness import TestSandbox, free_port
from loadgen import Load, Target

REPO = Path(__file__).resolve().parent.parent
SHOWCASE = REPO / "examples" / "apps" / "showcase"


def _require_django_in(prefix: str) -> None:
    """The vassals use this interpreter's prefix as their virtualenv: it must hold Django."""
    try:
        import django  # noqa: F401
    except ImportError:
        pytest.fail(f"Django is not installed in {prefix}; `pip install 'Django>=5,<6'` there (see .ci/run)")


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of plain paths is a valid TOML basic string


def write_production(tmp: Path, sandbox: TestSandbox, http_sess_port: int) -> Path:
    text = sandbox_head("showtest", tmp, sandbox.host_table()) + f"""
[stages.main]
virtualenv = {_toml_string(sys.prefix)}

[acts.site]
wsgi = "showcase.wsgi:application"
path = {_toml_string(str(SHOWCASE))}
settings = "showcase.settings"
env = {{ SHOWCASE_VERSION = "site-v1" }}
static = {{ "/static/" = {_toml_string(str(SHOWCASE / "static") + "/")} }}
health = "/healthz"

[acts.api]
wsgi = "showcase.wsgi"
path = {_toml_string(str(SHOWCASE))}
env = {{ SHOWCASE_VERSION = "api-v1" }}

[acts.plain]
wsgi = "showcase.wsgi"
path = {_toml_string(str(SHOWCASE))}
env = {{ SHOWCASE_VERSION = "plain-v1" }}

[sesses.site]
act = "site"
stage = "main"
processes = 2

[sesses.api]
act = "api"
stage = "main"

[sesses.plain]
act = "plain"
stage = "main"
protocol = "http"
port = {http_sess_port}

[venues.show]
domain = "show.test"
aliases = ["www.show.test"]
listen = {_toml_string(sandbox.listen)}

[venues.other]
domain = "other.test"
listen = {_toml_string(sandbox.listen)}

[venues.shut]
domain = "shut.test"
listen = {_toml_string(sandbox.listen)}

[gigs.site-live]
venue = "show"
sess = "site"

[gigs.api-live]
venue = "show"
sess = "api"
path = "/api/"

[gigs.plain-live]
venue = "other"
sess = "plain"
"""
    path = tmp / "production.toml"
    path.write_text(text)
    return path


def test_artifact_serves_showcase_through_real_nginx_and_emperor(tmp_path: Path) -> None:
    components = find_components()  # raises ComponentMissing with instructions: never a skip
    _require_django_in(sys.prefix)
    assert (SHOWCASE / "showcase" / "wsgi.py").is_file()

    with TestSandbox(tmp_path / "sandbox", components=components) as sandbox:
        production = write_production(tmp_path, sandbox, free_port())
        built = backstage.build(production, tmp_path / "build").path
        applied = run_cli("apply", str(built), "--ready-timeout=60")
        assert applied.code == 0, applied.err
        vassals = sorted(p.name for p in (built / "uwsgi").glob("*.ini"))
        assert sorted(p.name for p in sandbox.vassals_dir.iterdir()) == vassals
        assert len(vassals) == 3 and all(name.startswith("showtest--") for name in vassals), vassals

        root = sandbox.get("show.test", "/")
        assert root.status == 200, root
        assert root.text == "showcase site-v1 script_name= path=/ path_info=/\n"
        assert sandbox.get("www.show.test", "/").text.startswith("showcase site-v1 ")
        assert sandbox.get("show.test", "/healthz").text == "ok\n"

        api = sandbox.get("show.test", "/api/")
        assert api.status == 200, api
        assert api.text == "showcase api-v1 script_name=/api path=/api/ path_info=/\n"

        plain = sandbox.get("other.test", "/")
        assert plain.status == 200, plain
        assert plain.text.startswith("showcase plain-v1 "), plain.text

        static = sandbox.get("show.test", "/static/hello.txt")
        assert static.status == 200, static
        assert static.body == (SHOWCASE / "static" / "hello.txt").read_bytes()
        assert static.headers["content-type"].startswith("text/plain")

        closed = sandbox.get("shut.test", "/")
        assert (closed.status, closed.text) == (503, "closed\n")
        assert sandbox.get("nobody.test", "/").status == 503  # the sandbox's catch-all server

        # Django itself enforces ALLOWED_HOSTS from BACKSTAGE_HOSTS: the Venue's names reach the vassal.
        pids = sandbox.vassal_pids()
        assert sorted(pids) == vassals, pids
        assert all(Path(f"/proc/{pid}").exists() for pid in pids.values())
        sockets = sorted(p.name for p in (tmp_path / "run").iterdir())
        assert sockets == sorted(name.removesuffix(".ini") + ".sock" for name in vassals
                                 if "--plain--" not in name), sockets

        targets = [
            Target("show.test", "/", expect=lambda body: body.startswith(b"showcase site-v1 ")),
            Target("show.test", "/api/", expect=lambda body: b"script_name=/api path=/api/" in body),
            Target("show.test", "/static/hello.txt", expect=lambda body: body.startswith(b"hello")),
            Target("other.test", "/healthz", expect=lambda body: body == b"ok\n"),
        ]
        with Load(sandbox.http_port, targets, clients=20, duration=3.0) as load:
            pass
        result = load.result
        print(result.summary())
        assert result.failures == [], result.summary()
        assert result.total >= 100, result.summary()
        assert all(result.per_target.get((t.host, t.path), 0) > 0 for t in targets), result.per_target

    started = time.monotonic()
    assert sandbox.leftover_pids() == []
    assert not any((tmp_path / "run").iterdir()), "vacuum should remove the vassals' sockets"
    assert time.monotonic() - started < 5


def test_sandbox_stops_everything_even_without_graceful_exit(tmp_path: Path) -> None:
    sandbox = TestSandbox(tmp_path / "sandbox")
    sandbox.start()
    try:
        assert sandbox.get("anything.test", "/").status == 503
        assert sandbox.nginx_worker_pids()
        assert sandbox.stats()["vassals"] == []
    finally:
        sandbox.stop()
    assert sandbox.leftover_pids() == []
    sandbox.stop()  # twice is fine
    assert not os.path.exists(tmp_path / "sandbox" / "nginx" / "nginx.pid")
