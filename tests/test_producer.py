"""The Producer against a real PowerDNS (tests/pdns_server.py: pdns_server, gsqlite3, its HTTP API; answers
read back with dig), with Debian's nginx and a real vassal for the web side.

One PowerDNS, one sandbox and one sequence of generations for the module; each test leaves the zone as
the production's live generation wants it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from backstage.agent.outcomes import SIGNAL_AT_ENV
from backstage.contract import CRASH_POINT_ENV
from conftest import require_binary, sandbox_head
from harness import Run, TestSandbox, backstage, free_port, http_get
from pdns_server import FaultProxy, PowerDNS

APP = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"dns ok"]
'''
ZONE = "shop.test"
GEN1 = ("shop.test", "www.shop.test", "outside.example")
GEN2 = ("shop.test", "new.shop.test", "outside.example")


@dataclass
class Stage:
    sandbox: TestSandbox
    pdns: PowerDNS
    tmp: Path
    port: int
    count: list[int] = field(default_factory=lambda: [0])

    def production(self, names: tuple[str, ...] = GEN1, address: str = "192.0.2.10", api: str | None = None,
                   extra: list[tuple[str, str, str]] | None = None, zone: str = ZONE) -> Path:
        q = json.dumps
        records = extra if extra is not None else [("@", "MX", "10 mail.shop.test.")]
        text = sandbox_head("shop", self.tmp, self.sandbox.host_table())
        text += f'address = "{address}"\naddress6 = "2001:db8::10"\n'
        text += f"""
[producer]
api = {q(api or self.pdns.api)}
api_key_file = {q(str(self.pdns.key_file))}

[producer.zones.{q(zone)}]
records = [{", ".join(f"{{ name = {q(n)}, type = {q(t)}, content = {q(c)} }}" for n, t, c in records)}]

[stages.main]
virtualenv = {q(sys.prefix)}

[acts.site]
wsgi = "dnsapp"
path = {q(str(self.tmp / "app"))}

[sesses.site]
act = "site"
stage = "main"

[venues.shop]
domain = {q(names[0])}
aliases = {q(list(names[1:]))}
listen = "127.0.0.1:{self.port}"

[gigs.shop]
venue = "shop"
sess = "site"
"""
        self.count[0] += 1
        path = self.tmp / f"production-{self.count[0]}.toml"
        path.write_text(text)
        return path

    def apply(self, production: Path, *flags: str, env: dict[str, str] | None = None) -> Run:
        return backstage("apply", str(production), "-o", str(self.tmp / "build"), "--ready-timeout=20", *flags,
                         env=env)

    def current(self) -> str:
        return os.readlink(self.tmp / "state" / "current")

    def answers(self) -> dict[str, list[str]]:
        """What dig answers for every name these tests use."""
        names = ["shop.test", "www.shop.test", "new.shop.test", "foreign.shop.test", "other.shop.test",
                 "taken.shop.test"]
        found = {name: self.pdns.dig(name, "A") for name in names}
        found["shop.test MX"] = self.pdns.dig("shop.test", "MX")
        found["shop.test AAAA"] = self.pdns.dig("shop.test", "AAAA")
        return found

    def web(self) -> int:
        return http_get(self.port, "shop.test").status


GEN1_ANSWERS = {"shop.test": ["192.0.2.10"], "www.shop.test": ["192.0.2.10"], "new.shop.test": [],
                "foreign.shop.test": ["198.51.100.1"], "other.shop.test": ["198.51.100.2"], "taken.shop.test": [],
                "shop.test MX": ["10 mail.shop.test."], "shop.test AAAA": ["2001:db8::10"]}
GEN2_ANSWERS = {**GEN1_ANSWERS, "shop.test": ["192.0.2.20"], "www.shop.test": [], "new.shop.test": ["192.0.2.20"]}


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    for tool in ("pdns_server", "pdnsutil", "dig"):
        require_binary(tool)
    tmp = tmp_path_factory.mktemp("producer")
    (tmp / "app").mkdir()
    (tmp / "app" / "dnsapp.py").write_text(APP)
    with TestSandbox(tmp / "sandbox") as sandbox, PowerDNS(tmp / "pdns") as pdns:
        pdns.create_zone(ZONE)
        pdns.create_zone("bare.test", soa_edit_api=False)
        pdns.add_record(ZONE, "foreign.shop.test.", "A", "198.51.100.1")  # an operator's own, unmarked
        pdns.add_record(ZONE, "other.shop.test.", "A", "198.51.100.2", comment="backstage:other")
        yield Stage(sandbox, pdns, tmp, free_port())


def test_gen1_writes_its_records_and_leaves_the_others_alone(stage: Stage) -> None:
    run = stage.apply(stage.production())
    assert run.code == 0, run.err
    assert "dns   zone shop.test.: 5 RRset(s) changed" in run.out
    assert stage.answers() == GEN1_ANSWERS
    assert stage.web() == 200
    marks = {(r["name"], r["type"]): [c["content"] for c in r["comments"]] for r in stage.pdns.rrsets(ZONE)}
    assert marks[("www.shop.test.", "A")] == ["backstage:shop"]
    assert marks[("foreign.shop.test.", "A")] == []
    assert marks[("other.shop.test.", "A")] == ["backstage:other"]
    run = backstage("generations", str(stage.tmp / "state"))
    assert "dns: shop.test." in run.out.splitlines()[-1]


def test_gen2_adds_moves_and_removes_names_and_the_serial_rises(stage: Stage) -> None:
    production = stage.production(GEN2, address="192.0.2.20")
    serial = stage.pdns.serial(ZONE)
    dry = stage.apply(production, "--dry-run")
    assert dry.code == 0, dry.err
    assert "dns   add    new.shop.test. A 300 192.0.2.20" in dry.out
    assert "dns   change shop.test. A 300 192.0.2.20" in dry.out
    assert "dns   delete www.shop.test. A 300 192.0.2.10" in dry.out
    assert stage.pdns.serial(ZONE) == serial and stage.answers() == GEN1_ANSWERS  # a dry run writes nothing
    run = stage.apply(production)
    assert run.code == 0, run.err
    assert stage.answers() == GEN2_ANSWERS
    assert stage.pdns.serial(ZONE) == serial + 1  # one PATCH
    again = stage.apply(production)
    assert again.code == 0 and "dns   zone" not in again.out
    assert stage.pdns.serial(ZONE) == serial + 1  # nothing to change: no PATCH


def test_rollback_restores_the_previous_answers(stage: Stage) -> None:
    serial = stage.pdns.serial(ZONE)
    run = backstage("rollback", str(stage.tmp / "state"))
    assert run.code == 0, run.err
    assert stage.answers() == GEN1_ANSWERS
    assert stage.pdns.serial(ZONE) > serial


def test_an_unmarked_rrset_in_the_way_is_refused_and_nothing_changes(stage: Stage) -> None:
    stage.pdns.add_record(ZONE, "taken.shop.test.", "A", "198.51.100.3")
    live, serial = stage.current(), stage.pdns.serial(ZONE)
    run = stage.apply(stage.production((*GEN1, "taken.shop.test")))
    assert run.code == 1, run.err
    assert run.line().startswith("refused: zone shop.test.: taken.shop.test. A exists and is not marked"), run.err
    assert (stage.current(), stage.pdns.serial(ZONE)) == (live, serial)
    assert stage.answers() == {**GEN1_ANSWERS, "taken.shop.test": ["198.51.100.3"]}
    assert stage.web() == 200
    status, _ = stage.pdns.request("PATCH", stage.pdns.zone_path(ZONE), {"rrsets": [
        {"name": "taken.shop.test.", "type": "A", "changetype": "DELETE"}]})  # the operator removes it
    assert status == 204


def test_a_zone_without_soa_edit_api_is_refused(stage: Stage) -> None:
    live = stage.current()
    run = stage.apply(stage.production(("shop.test", "www.bare.test"), zone="bare.test", extra=[]))
    assert run.code == 1, run.err
    assert "zone bare.test. has no SOA-EDIT-API" in run.line(), run.err
    assert stage.current() == live


@pytest.mark.parametrize("status", [422, 500])
def test_powerdns_failing_the_patch_undoes_the_web_switch(stage: Stage, status: int) -> None:
    live, serial = stage.current(), stage.pdns.serial(ZONE)
    with FaultProxy(stage.pdns.api) as proxy:
        proxy.fail_patch = (status, '{"error": "injected failure"}')
        run = stage.apply(stage.production(GEN2, address="192.0.2.20", api=proxy.url))
        assert proxy.patches >= 1
    assert run.code == 1, run.err
    assert run.line().startswith("apply failed, rolled back to"), run.err
    assert f"zone shop.test.: PowerDNS answered {status} injected failure" in run.line()
    assert stage.current() == live
    assert stage.answers() == GEN1_ANSWERS and stage.pdns.serial(ZONE) == serial
    assert stage.web() == 200


def test_powerdns_down_mid_apply_undoes_the_web_switch(stage: Stage) -> None:
    live, serial = stage.current(), stage.pdns.serial(ZONE)
    # PowerDNS answered the zone reads, and is killed right before the PATCH.
    run = stage.apply(stage.production(GEN2, address="192.0.2.20"),
                      env={SIGNAL_AT_ENV: f"dns-patching:SIGKILL:{stage.pdns.pid}"})
    stage.pdns.stop()
    stage.pdns.start()
    assert run.code == 1, run.err
    assert run.line().startswith("apply failed, rolled back to"), run.err
    assert "cannot reach PowerDNS" in run.line()
    assert stage.current() == live
    assert stage.answers() == GEN1_ANSWERS and stage.pdns.serial(ZONE) == serial
    assert stage.web() == 200


def test_killed_between_the_web_switch_and_the_patch_the_next_apply_converges(stage: Stage) -> None:
    production = stage.production(GEN2, address="192.0.2.20")
    run = stage.apply(production, env={CRASH_POINT_ENV: "dns-patching"})
    assert run.code != 0
    assert stage.answers() == GEN1_ANSWERS  # the web side switched, DNS not yet
    run = stage.apply(production)
    assert run.code == 0, run.err
    assert stage.answers() == GEN2_ANSWERS
    assert stage.web() == 200


def test_the_guard_wants_force_for_a_large_change(stage: Stage) -> None:
    many = [(f"r{i}", "A", f"198.51.100.{10 + i}") for i in range(12)]
    assert stage.apply(stage.production(GEN2, address="192.0.2.20", extra=many)).code == 0
    moved = [(name, rtype, content.replace("198.51.100.", "203.0.113.")) for name, rtype, content in many[:6]]
    production = stage.production(GEN2, address="192.0.2.20", extra=moved + many[6:])
    serial = stage.pdns.serial(ZONE)
    run = stage.apply(production)
    assert run.code == 1, run.err
    assert "would change or delete 6 of the 16 RRsets" in run.line() and "--force" in run.line(), run.err
    assert stage.pdns.serial(ZONE) == serial and stage.pdns.dig("r0.shop.test") == ["198.51.100.10"]
    run = stage.apply(production, "--force")
    assert run.code == 0, run.err
    assert stage.pdns.dig("r0.shop.test") == ["203.0.113.10"]
    assert stage.pdns.dig("r6.shop.test") == ["198.51.100.16"]


def test_the_key_is_never_written(stage: Stage) -> None:
    key = stage.pdns.key.encode()
    for root in (stage.tmp / "state", stage.tmp / "build", stage.tmp / "log"):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert key not in path.read_bytes(), path
