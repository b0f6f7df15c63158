"""A rolling switch of a fleet under load: every host keeps answering, 0 requests fail anywhere.

Three simulated hosts (tests/fleet.py) run generation 1; a load generator (tests/loadgen.py) runs INSIDE
each host, against that host's own nginx on its own 127.0.0.1, while `backstage apply` rolls generation 2
out through Ansible one host at a time (rollout batch 1). Each load records which version answered when,
so the test sees every host switch under its load, and the hosts switch one after the other.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from fleet import Fleet, FleetHost
from harness import Run, backstage

APP = '''
import os


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("site %s" % os.environ["VERSION"]).encode()]
'''
HOSTS = ("web1", "web2", "web3")
DOMAIN = "www.fleetload.test"
CLIENTS = 4  # per host: 3 hosts share the machine's cores with Ansible, nginx and the Emperors
PAUSE = 0.01  # seconds each client waits before each request
READY_AFTER = 20  # requests a load makes before it reports ready

# Runs inside a host (its network namespace): tests/loadgen.py's Load against the host's own nginx, until
# its stdin closes; then one JSON line: the totals, the failures, and for each body seen its count and the
# CLOCK_MONOTONIC times (shared by every namespace) of the first and last request that got it.
LOAD = '''\
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
from loadgen import Load, Target

port, host, clients, pause, ready_after = int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), \
    int(sys.argv[6])
bodies = (b"site 1", b"site 2")
seen = {}
lock = threading.Lock()


class Watched(Load):
    def _request(self, target):
        time.sleep(pause)
        return super()._request(target)

    def _record(self, target, status, body, error, began, latency):
        super()._record(target, status, body, error, began, latency)
        if status is not None and not error:
            with lock:
                count, first, last = seen.get(body, (0, began, began))
                seen[body] = (count + 1, min(first, began), max(last, began))


load = Watched(port, [Target(host, "/", expect=lambda body: body in bodies)], clients=clients, timeout=20.0)
load.start()
deadline = time.monotonic() + 60
while load.result.total < ready_after and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"ready": load.result.total}), flush=True)
sys.stdin.read()
result = load.stop()
print(json.dumps({
    "total": result.total,
    "failures": [str(failure) for failure in result.failures],
    "summary": result.summary(),
    "seen": {body.decode(errors="replace"): list(entry) for body, entry in seen.items()},
}), flush=True)
'''


@dataclass
class HostLoad:
    """A load generator running inside one host."""

    host: FleetHost
    process: subprocess.Popen[str]

    @classmethod
    def start(cls, host: FleetHost) -> HostLoad:
        argv = [sys.executable, "-c", LOAD, str(Path(__file__).resolve().parent), str(host.http_port), DOMAIN,
                str(CLIENTS), str(PAUSE), str(READY_AFTER)]
        process = subprocess.Popen(host.command(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        return cls(host, process)

    def wait_ready(self) -> int:
        """The number of requests made when the load reported ready (it answers within a minute)."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(30)
            raise AssertionError(f"load on {self.host.name} exited ({self.process.returncode}) before it was "
                                 f"ready: {self._stderr()}")
        return int(json.loads(line)["ready"])

    def stop(self, timeout: float = 120.0) -> dict[str, Any]:
        """Stop the load (close its stdin) and return its report."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            out = self.process.stdout.read()
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        if self.process.returncode != 0 or not out.strip():
            raise AssertionError(f"load on {self.host.name} exited {self.process.returncode}: {self._stderr()}")
        return dict(json.loads(out.strip().splitlines()[-1]))

    def _stderr(self) -> str:
        stream: IO[str] | None = self.process.stderr
        return stream.read()[-3000:] if stream is not None else ""


@dataclass
class Stage:
    fleet: Fleet
    tmp: Path
    env: dict[str, str]

    def production(self, version: int) -> Path:
        q = json.dumps
        web1 = self.fleet["web1"]
        text = self.fleet.production_head("fleetload")
        text += f"""
[stages.main]
virtualenv = {q(sys.prefix)}

[acts.site]
wsgi = "loadapp"
path = {q(str(self.tmp / "app"))}
env = {{ VERSION = "{version}" }}

[sesses.site]
act = "site"
stage = "main"

[venues.www]
domain = "{DOMAIN}"
listen = "{web1.listen}"

[gigs.www]
venue = "www"
sess = "site"
"""
        path = self.tmp / f"production-{version}.toml"
        path.write_text(text)
        return path

    def apply(self, production: Path) -> Run:
        return backstage("apply", str(production), "-o", str(self.tmp / "build"), "--ready-timeout=60",
                         env=self.env, timeout=900)

    def served(self) -> dict[str, str]:
        found = {}
        for host in self.fleet:
            reply = host.http_get(DOMAIN, timeout=30.0)
            found[host.name] = f"{reply.status} {reply.body.decode(errors='replace')}"
        return found


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    tmp = tmp_path_factory.mktemp("fleetload")
    (tmp / "app").mkdir()
    (tmp / "app" / "loadapp.py").write_text(APP)
    with Fleet(tmp / "hosts", HOSTS, start_timeout=60.0) as fleet:
        env = fleet.ansible_env(tmp / "ansible-home")
        yield Stage(fleet, tmp, env)


def test_a_rolling_switch_under_load_fails_no_request_on_any_host(stage: Stage) -> None:
    run = stage.apply(stage.production(1))
    assert run.code == 0, run.err[-3000:]
    assert stage.served() == dict.fromkeys(HOSTS, "200 site 1")

    loads = [HostLoad.start(host) for host in stage.fleet]
    reports: dict[str, dict[str, Any]] = {}
    try:
        for load in loads:
            load.wait_ready()
        began = time.monotonic()
        run = stage.apply(stage.production(2))
        ended = time.monotonic()
        time.sleep(1.0)  # the loads go on a little after the last switch
    finally:
        problems: list[str] = []
        for load in loads:
            try:
                reports[load.host.name] = load.stop()
            except (AssertionError, subprocess.TimeoutExpired) as error:
                problems.append(f"{load.host.name}: {error}")
    assert not problems, problems

    print(f"\nrolling switch under load: apply took {ended - began:.1f} s")
    for name, report in reports.items():
        print(f"  {name}: {report['summary']}; seen {report['seen']}")
    assert run.code == 0, run.err[-3000:]
    assert "live on 3 host(s): web1, web2, web3" in run.err, run.err[-3000:]
    assert stage.served() == dict.fromkeys(HOSTS, "200 site 2")
    for name, report in reports.items():
        assert report["total"] > 50, (name, report["summary"])
        assert report["failures"] == [], (name, report["summary"])
        seen = report["seen"]
        assert set(seen) == {"site 1", "site 2"}, (name, seen)
        assert sum(count for count, _, _ in seen.values()) == report["total"], (name, seen)
        (_, first_1, last_1), (_, first_2, last_2) = seen["site 1"], seen["site 2"]
        assert first_1 < first_2 and last_1 < last_2, (name, seen)  # version 1, then version 2
        assert began < first_2 < ended, (name, seen)  # switched during the apply
    # a rolling switch: one host after the other, in the order [hosts] declares them
    firsts = [reports[name]["seen"]["site 2"][1] for name in HOSTS]
    assert firsts == sorted(firsts), firsts
