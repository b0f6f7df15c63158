"""Least trust in the filesystem: apply, as root, against directories and artifacts a local non-root
user (here `nobody`) could have prepared. Real nginx, a compiled uWSGI Emperor and the showcase app.

Each case asserts the refusal (exit 1, one line naming the path, its owner and mode), that a planted
victim outside the production's directories is untouched, and that the host still serves what it
served before (or nothing, when nothing was live).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from harness import TestSandbox

SHOWCASE = REPO / "examples" / "apps" / "showcase"
NOBODY = 65534


@dataclass
class Host:
    sandbox: TestSandbox
    tmp: Path


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    tmp = tmp_path_factory.mktemp("trust")
    with TestSandbox(tmp / "sandbox") as sandbox:
        yield Host(sandbox, tmp)


def production(host: Host, name: str, version: str = "v1", state_dir: Path | None = None,
               dirs: Path | None = None) -> Path:
    """A production of one Sess at `NAME.trust.test`, its directories under `dirs` (a fresh one)."""
    q = json.dumps
    base = dirs or host.tmp / name
    base.mkdir(exist_ok=True)
    h = host.sandbox.host_table()
    text = f"""
[production]
name = {q(name)}
state_dir = {q(str(state_dir or base / "state"))}
run_dir = {q(str(base / "run"))}
log_dir = {q(str(base / "log"))}

[host]
vassals_dir = {q(h["vassals_dir"])}
nginx_dir = {q(h["nginx_dir"])}
nginx = {q(h["nginx"])}
nginx_user = {q(h["nginx_user"])}
emperor_stats = {q(h["emperor_stats"])}
uwsgi = {q(h["uwsgi"])}

[stages.main]
virtualenv = {q(sys.prefix)}

[acts.site]
wsgi = "showcase.wsgi:application"
path = {q(str(SHOWCASE))}
settings = "showcase.settings"
health = "/healthz"
env = {{ SHOWCASE_VERSION = {q(f"{name}-{version}")} }}

[sesses.site]
act = "site"
stage = "main"

[venues.www]
domain = "{name}.trust.test"
listen = {q(host.sandbox.listen)}

[gigs.site]
venue = "www"
sess = "site"
"""
    path = base / f"production-{version}.toml"
    path.write_text(text)
    return path


def build(host: Host, source: Path) -> Path:
    done = run_cli("build", str(source), "-o", str(host.tmp / "build"))
    assert done.code == 0, done.err
    return Path(done.out.strip())


def apply(artifact: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = run_cli("apply", str(artifact), "--ready-timeout=20", "--health-timeout=10",
                   env=None if env is None else os.environ | env)
    assert "Traceback" not in done.err, done.err
    return done.code, done.out + done.err


def serves(host: Host, name: str) -> str:
    return host.sandbox.get(f"{name}.trust.test", "/").text


def links(host: Host, name: str) -> list[str]:
    return sorted(p.name for p in host.sandbox.vassals_dir.iterdir() if p.name.startswith(f"{name}--"))


def victim(host: Host, name: str) -> Path:
    """A root-owned file outside every production directory that a planted link points at."""
    path = host.tmp / f"victim-{name}"
    path.write_text("precious\n")
    os.chmod(path, 0o600)
    return path


def untouched(path: Path) -> bool:
    return path.read_text() == "precious\n" and (path.stat().st_mode & 0o777) == 0o600


def owned_by_nobody(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, NOBODY, NOBODY)


def test_a_state_dir_another_user_owns_is_refused_and_its_links_not_followed(host: Host) -> None:
    name = "tstate"
    source = production(host, name)
    target = victim(host, name)
    state = host.tmp / name / "state"
    owned_by_nobody(state)
    os.symlink(target, state / "history")
    os.lchown(state / "history", NOBODY, NOBODY)
    code, out = apply(build(host, source))
    assert code == 1
    assert f"{state} (state_dir) is owned by another user (owner nobody, mode 0755)" in out, out
    assert untouched(target) and links(host, name) == []
    assert sorted(p.name for p in state.iterdir()) == ["history"]


@pytest.mark.parametrize("which", ["log", "run"])
def test_a_log_or_run_dir_another_user_owns_is_refused_before_anything_starts(which: str, host: Host) -> None:
    name = f"t{which}"
    source = production(host, name)
    target = victim(host, name)
    planted = host.tmp / name / which
    owned_by_nobody(planted)
    os.symlink(target, planted / ("site.log" if which == "log" else f"{name}--site--00000000.sock"))
    code, out = apply(build(host, source))
    assert code == 1
    assert f"{planted} ({which}_dir) is owned by another user (owner nobody" in out, out
    assert untouched(target) and links(host, name) == []
    assert not (host.tmp / name / "state" / "current").exists()


def test_a_generations_symlink_is_refused_and_its_target_left_alone(host: Host) -> None:
    name = "tgen"
    source = production(host, name)
    elsewhere = host.tmp / f"{name}-elsewhere"
    elsewhere.mkdir()
    os.chmod(elsewhere, 0o700)
    state = host.tmp / name / "state"
    state.mkdir()
    os.symlink(elsewhere, state / "generations")
    code, out = apply(build(host, source))
    assert code == 1
    assert f"{state / 'generations'} is a symlink; state_dir/generations must be a real directory" in out, out
    assert list(elsewhere.iterdir()) == [] and (elsewhere.stat().st_mode & 0o777) == 0o700
    assert links(host, name) == []


def test_a_vassals_dir_others_can_write_is_refused(host: Host, tmp_path: Path) -> None:
    name = "tvassals"
    source = production(host, name)
    text = source.read_text().replace(str(host.sandbox.vassals_dir), str(tmp_path / "open-vassals"))
    source.write_text(text)
    (tmp_path / "open-vassals").mkdir()
    os.chmod(tmp_path / "open-vassals", 0o777)
    code, out = apply(build(host, source))
    assert code == 1
    assert f"{tmp_path / 'open-vassals'} ([host].vassals_dir) is writable by other users (owner root, mode 0777)" \
        in out, out
    assert list((tmp_path / "open-vassals").iterdir()) == []


def test_a_second_production_cannot_take_over_a_state_dir(host: Host) -> None:
    first, second = "towner", "tintruder"
    shared = host.tmp / first / "state"
    code, out = apply(build(host, production(host, first)))
    assert code == 0, out
    assert serves(host, first).startswith(f"showcase {first}-v1 ")
    current = os.readlink(shared / "current")
    code, out = apply(build(host, production(host, second, state_dir=shared)))
    assert code == 1
    assert f"state_dir {shared} belongs to production {first}, not {second}" in out, out
    assert os.readlink(shared / "current") == current and links(host, second) == []
    assert serves(host, first).startswith(f"showcase {first}-v1 ")
    assert (shared / "production").read_text() == f"{first}\n"


def test_what_runs_is_the_verified_copy_not_the_original(host: Host) -> None:
    """An artifact with world-writable directories (file hashes intact) is accepted, and what runs is the
    copy: a file swapped in the original after its copy was verified changes nothing."""
    name = "tswap"
    built = build(host, production(host, name))
    original = host.tmp / "loose" / built.name
    shutil.copytree(built, original)
    for directory in (original, original / "uwsgi", original / "nginx"):
        os.chmod(directory, 0o777)  # a local user may rewrite files in here at any time
    marker = host.tmp / f"{name}-ran-the-original"
    evil = f"#!/bin/sh\ntouch {marker}\n"
    swap = (f'chmod 0755 "$1/install.sh" 2>/dev/null; rm -f "$1/install.sh"; printf %s {json.dumps(evil)} '
            f'> "$1/install.sh"; chmod 0555 "$1/install.sh"; '
            f'for f in "$1"/uwsgi/*.ini; do rm -f "$f"; echo "exec-as-root = touch {marker}" > "$f"; done')
    code, out = apply(original, env={"BACKSTAGE_TEST_AFTER_COPY": swap})
    assert code == 0, out
    assert "exec-as-root" in next((original / "uwsgi").iterdir()).read_text()  # the swap did happen
    assert not marker.exists()
    assert serves(host, name).startswith(f"showcase {name}-v1 ")
    (link,) = links(host, name)
    target = Path(os.readlink(host.sandbox.vassals_dir / link))
    assert target.parent.parent.parent == host.tmp / name / "state" / "generations"
    assert "exec-as-root" not in target.read_text()
    for directory in (target.parent, target.parent.parent):
        assert directory.stat().st_mode & 0o777 == 0o555 and directory.stat().st_uid == 0
    assert not (host.tmp / name / "state" / "incoming").exists() or \
        list((host.tmp / name / "state" / "incoming").iterdir()) == []
