"""One production on several hosts, rolled out through real Ansible over real ssh.

Each host is a network + mount + pid namespace of its own (tests/fleet.py) with its own sshd, nginx and
Emperor, and its own /srv/bsfleet: the production names the same paths on every host, as on separate
machines. Ansible reaches the hosts over veth addresses this test made; the connection settings are
Ansible's own environment variables, as an operator would set them in ansible.cfg.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleet import MOUNT_AT, Fleet
from harness import Run, backstage

APP = '''
import os

if os.path.exists("/srv/bsfleet/broken"):  # a marker in one host's own tree breaks it there only
    raise RuntimeError("this host is broken")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%s %s" % (os.environ["ROLE"], os.environ["VERSION"])).encode()]
'''
HOSTS = ("web1", "web2", "web3")


@dataclass
class Stage:
    fleet: Fleet
    tmp: Path
    env: dict[str, str]

    def production(self, version: int, batch: int = 1, max_failed: int = 0) -> Path:
        q = json.dumps
        web1 = self.fleet["web1"]
        text = self.fleet.production_head("fleet", batch, max_failed)
        text += f"""
[stages.main]
virtualenv = {q(sys.prefix)}

[acts.site]
wsgi = "fleetapp"
path = {q(str(self.tmp / "app"))}
env = {{ ROLE = "site", VERSION = "{version}" }}

[acts.admin]
wsgi = "fleetapp"
path = {q(str(self.tmp / "app"))}
env = {{ ROLE = "admin", VERSION = "{version}" }}

[sesses.site]
act = "site"
stage = "main"

[sesses.admin]
act = "admin"
stage = "main"
hosts = ["web2"]

[venues.www]
domain = "www.fleet.test"
listen = "{web1.listen}"

[venues.admin]
domain = "admin.fleet.test"
listen = "{web1.listen}"

[gigs.www]
venue = "www"
sess = "site"

[gigs.admin]
venue = "admin"
sess = "admin"
"""
        path = self.tmp / f"production-{version}-{batch}-{max_failed}.toml"
        path.write_text(text)
        return path

    def backstage(self, *args: str) -> Run:
        return backstage(*args, env=self.env, timeout=600)

    def apply(self, production: Path, *flags: str) -> Run:
        return self.backstage("apply", str(production), "-o", str(self.tmp / "build"), "--ready-timeout=20", *flags)

    def live(self, host: str) -> str:
        """The generation host `host` runs ("" if none)."""
        link = self.fleet[host].real_path(f"{MOUNT_AT}/state/current")
        return os.readlink(link).rsplit("/", 1)[-1] if link.is_symlink() else ""

    def served(self, host: str) -> dict[str, str]:
        """What the host's nginx answers for each Venue it has a server file for."""
        servers = sorted(p.stem for p in self.fleet[host].real_path(f"{MOUNT_AT}/state/current/nginx").glob("*.conf"))
        found = {}
        for venue in servers:
            reply = self.fleet[host].http_get(f"{venue}.fleet.test")
            found[venue] = f"{reply.status} {reply.body.decode()}"
        return found


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    tmp = tmp_path_factory.mktemp("fleet")
    (tmp / "app").mkdir()
    (tmp / "app" / "fleetapp.py").write_text(APP)
    with Fleet(tmp / "hosts", HOSTS) as fleet:
        env = fleet.ansible_env(tmp / "ansible-home")
        yield Stage(fleet, tmp, env)


def test_each_host_serves_exactly_its_venues(stage: Stage) -> None:
    run = stage.apply(stage.production(1))
    assert run.code == 0, run.err[-3000:]
    assert "live on 3 host(s): web1, web2, web3" in run.err
    assert stage.served("web1") == {"www": "200 site 1"}
    assert stage.served("web2") == {"admin": "200 admin 1", "www": "200 site 1"}
    assert stage.served("web3") == {"www": "200 site 1"}
    assert stage.live("web2") != stage.live("web1") == stage.live("web3")  # web2's own artifact differs


def test_a_host_failing_in_batch_2_rolls_itself_back_and_stops_the_rollout(stage: Stage) -> None:
    before = {host: stage.live(host) for host in HOSTS}
    broken = stage.fleet["web2"].root / "broken"
    broken.write_text("yes\n")
    try:
        run = stage.apply(stage.production(2))
        assert run.code == 1, run.err[-3000:]
        assert "rollout stopped: 1 host(s) failed: web2" in run.err and "not started on web3" in run.err, run.err
        assert stage.live("web1") != before["web1"]  # batch 1 switched
        assert stage.served("web1") == {"www": "200 site 2"}
        assert stage.live("web2") == before["web2"]  # it undid its own switch
        assert stage.served("web2") == {"admin": "200 admin 1", "www": "200 site 1"}
        assert stage.live("web3") == before["web3"]  # never touched
        run = stage.apply(stage.production(2), "--atomic")
        assert run.code == 1, run.err[-3000:]
        assert "--atomic: rolled back web1" in run.err, run.err
        assert {host: stage.live(host) for host in HOSTS} == before
        assert stage.served("web1") == {"www": "200 site 1"}
    finally:
        broken.unlink()


def test_a_host_unreachable_stops_the_rollout_before_it_changes_anything_there(stage: Stage) -> None:
    before = {host: stage.live(host) for host in HOSTS}
    stage.fleet.stop_sshd("web2")
    try:
        run = stage.apply(stage.production(3))
    finally:
        stage.fleet.start_sshd("web2")
    assert run.code == 1, run.err[-3000:]
    assert "rollout stopped: 1 host(s) failed: web2" in run.err, run.err
    assert stage.live("web2") == before["web2"] and stage.live("web3") == before["web3"]
    assert stage.served("web1") == {"www": "200 site 3"}


def test_the_whole_fleet_switches_rolls_back_and_collects(stage: Stage) -> None:
    production = stage.production(4, batch=3)
    run = stage.apply(production)
    assert run.code == 0, run.err[-3000:]
    assert all(stage.served(host)["www"] == "200 site 4" for host in HOSTS)
    four = {host: stage.live(host) for host in HOSTS}
    run = stage.backstage("rollback", str(production))
    assert run.code == 0, run.err[-3000:]
    assert all(stage.live(host) != four[host] for host in HOSTS)
    assert stage.served("web2")["admin"].startswith("200 admin")
    run = stage.backstage("generations", str(production))
    assert run.code == 0, run.err[-3000:]
    assert all(f"{host}: " in run.out for host in HOSTS)
    run = stage.backstage("gc", str(production), "--keep", "1")
    assert run.code == 0, run.err[-3000:]
    for host in HOSTS:
        kept = sorted(p.name for p in stage.fleet[host].real_path(f"{MOUNT_AT}/state/generations").iterdir()
                      if not p.name.startswith("."))
        assert stage.live(host) in kept and len(kept) <= 2, (host, kept)  # the live one and the newest
