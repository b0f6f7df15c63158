"""Vassal names: a content hash that changes exactly when what uWSGI would run changes."""

from __future__ import annotations

from backstage.phases import pipeline

BASE = """\
[production]
name = "club"
[stages.main]
virtualenv = "/srv/venv"
[acts.api]
wsgi = "api.wsgi"
path = "/srv/api"
[acts.web]
wsgi = "web.wsgi"
path = "/srv/web"
[sesses.api]
act = "api"
stage = "main"
port = 8001
[sesses.web]
act = "web"
stage = "main"
needs = ["api"]
[sesses.solo]
act = "web"
stage = "main"
"""


def stems(text: str) -> dict[str, str]:
    files = pipeline.compile_bytes(text.encode(), "p.toml").files
    return {name.split("--")[1]: name for name in files if name.startswith("uwsgi/")}


def test_a_changed_port_is_a_new_vassal_and_so_are_its_needers() -> None:
    before, after = stems(BASE), stems(BASE.replace("port = 8001", "port = 8002"))
    assert before["api"] != after["api"]
    assert before["web"] != after["web"]  # its BACKSTAGE_API_ADDRESS changed
    assert before["solo"] == after["solo"]


def test_an_unchanged_sess_keeps_its_name_when_others_change() -> None:
    changed = stems(BASE.replace('path = "/srv/web"', 'path = "/srv/web2"'))
    assert changed["api"] == stems(BASE)["api"]
    assert changed["web"] != stems(BASE)["web"] and changed["solo"] != stems(BASE)["solo"]


def test_the_socket_path_carries_the_vassal_name() -> None:
    files = pipeline.compile_bytes(BASE.encode(), "p.toml").files
    (web,) = [name for name in files if name.startswith("uwsgi/club--web--")]
    stem = web.removeprefix("uwsgi/").removesuffix(".ini")
    assert f"socket = /run/backstage/club/{stem}.sock" in files[web].content.decode().splitlines()
