"""The Producer on the host: a generation's RRsets in PowerDNS, through its HTTP API (standard library only).

backstage owns exactly the RRsets whose comment is the plan's mark (`backstage:<production>`). For each
zone of the generation (and each zone the live generation wrote into, so that a dropped zone loses its
records) `prepare` reads the zone and works out the change over the owned RRsets; it refuses, before
anything changes, a zone PowerDNS does not have, one without SOA-EDIT-API (backstage never writes the
SOA: PowerDNS raises the serial on each change), an RRset wanted where one exists that is not the
production's own (or a CNAME in the way), and a change of more than 30% of the owned RRsets of a
zone holding 10 or more, unless forced. `send` then PATCHes each zone that changes (one transaction
each), after the web switch succeeded; `undo` PATCHes back what was sent, newest first.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract import ContractError, Plan, ProducerPlan, RRset, read_plan, read_zone
from .outcomes import Failed, Refused, crash_point
from .state import State

TIMEOUT = 15.0  # one API request
GUARD_SHARE = 0.30  # a change of more than this share of a zone's owned RRsets needs --force ...
GUARD_MINIMUM = 10  # ... when the production owns at least this many there (as octoDNS guards)
MAX_KEY = 4096


class ApiError(Exception):
    """PowerDNS could not be reached, or answered with an error; the message says which, never the key.
    `unsent`: the request certainly changed nothing (an error answer: a PATCH is one transaction; or no
    connection at all), as opposed to one that may have arrived (a timeout, a connection cut)."""

    def __init__(self, message: str, unsent: bool = False) -> None:
        super().__init__(message)
        self.unsent = unsent


@dataclass(frozen=True, slots=True)
class Change:
    verb: str  # "add", "change" or "delete"
    before: RRset | None  # the owned RRset as PowerDNS has it (None for an add)
    after: RRset | None  # the RRset wanted (None for a delete)

    @property
    def rrset(self) -> RRset:
        found = self.after or self.before
        assert found is not None
        return found

    def describe(self) -> str:
        shown = self.after if self.after else self.before
        assert shown is not None
        return f"{self.verb:6} {shown.name} {shown.type} {shown.ttl} {' | '.join(shown.records)}"


@dataclass(frozen=True, slots=True)
class ZoneChange:
    zone: str
    changes: tuple[Change, ...]


class Api:
    """PowerDNS's HTTP API for one server, with the key read from its file when first needed."""

    def __init__(self, producer: ProducerPlan) -> None:
        self.producer = producer
        self._key: str | None = None

    def key(self) -> str:
        if self._key is None:
            self._key = read_key(Path(self.producer.api_key_file))
        return self._key

    def url(self, zone: str) -> str:
        server = urllib.parse.quote(self.producer.server, safe="")
        return f"{self.producer.api}/api/v1/servers/{server}/zones/{urllib.parse.quote(zone, safe='.')}"

    def request(self, method: str, zone: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url(zone), data=data, method=method,
                                         headers={"X-API-Key": self.key(), "Accept": "application/json",
                                                  **({"Content-Type": "application/json"} if data else {})})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
                text = reply.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(f"PowerDNS answered {exc.code} {_error_text(exc)}", unsent=True) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise ApiError(f"cannot reach PowerDNS at {self.producer.api}: {reason}",
                           unsent=isinstance(reason, ConnectionRefusedError)) from None
        try:
            return json.loads(text) if text else None
        except ValueError:
            raise ApiError("PowerDNS answered with something that is not JSON") from None

    def zone(self, zone: str) -> dict[str, Any]:
        found = self.request("GET", zone)
        if not isinstance(found, dict) or not isinstance(found.get("rrsets"), list):
            raise ApiError("PowerDNS answered with something that is not a zone")
        return found

    def patch(self, zone: str, rrsets: list[dict[str, Any]]) -> None:
        self.request("PATCH", zone, {"rrsets": rrsets})


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read(2048).decode("utf-8", "replace")
    except OSError:
        body = ""
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            return str(parsed["error"])
    except ValueError:
        pass
    return body.strip().splitlines()[0] if body.strip() else (exc.reason or "")


def read_key(path: Path) -> str:
    """The API key: the file's content without its trailing newline, never through a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise Refused(f"cannot read [producer].api_key_file {path}: {exc.strerror}") from None
    try:
        raw = os.read(fd, MAX_KEY + 1)
    finally:
        os.close(fd)
    key = raw.decode("utf-8", "replace").removesuffix("\n")
    if not key or len(raw) > MAX_KEY or any(c in key for c in "\r\n\x00"):
        raise Refused(f"[producer].api_key_file {path} does not hold one API key on one line")
    return key


def desired(plan: Plan, generation: Path) -> dict[str, tuple[RRset, ...]]:
    """zone -> the RRsets the generation wants there (its dns/<zone>.json files)."""
    if plan.producer is None:
        return {}
    zones = {}
    for item in plan.producer.zones:
        try:
            zone, rrsets = read_zone((generation / item.file).read_bytes())
        except (OSError, ContractError) as exc:
            raise Refused(f"{item.file}: {exc}") from None
        zones[zone] = rrsets
    return zones


def _live_zones(state: State) -> set[str]:
    """The zones the live generation wrote into (a zone dropped since then loses its records)."""
    try:
        plan = read_plan(state.current)
    except ContractError:
        return set()
    return {z.zone for z in plan.producer.zones} if plan.producer else set()


def _records(rrset: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(str(r.get("content")) for r in rrset.get("records", []) if not r.get("disabled")))


def _marks(rrset: dict[str, Any]) -> list[str]:
    return [str(c.get("content")) for c in rrset.get("comments", []) if isinstance(c, dict)]


def zone_change(producer: ProducerPlan, zone: str, found: dict[str, Any], wanted: tuple[RRset, ...],
                force: bool) -> ZoneChange:
    """The change that makes the owned RRsets of `found` (the zone as PowerDNS has it) `wanted`."""
    if not found.get("soa_edit_api"):
        raise Refused(f"zone {zone} has no SOA-EDIT-API, so PowerDNS would not raise its serial on a change: "
                      f"set it (pdnsutil set-meta {zone.rstrip('.')} SOA-EDIT-API DEFAULT); backstage never "
                      "writes the SOA itself")
    existing: dict[tuple[str, str], dict[str, Any]] = {}
    for rrset in found["rrsets"]:
        if isinstance(rrset, dict):
            existing[(str(rrset.get("name")), str(rrset.get("type")))] = rrset
    owned = {key: r for key, r in existing.items() if producer.mark in _marks(r)}
    changes: list[Change] = []
    for want in wanted:
        key = (want.name, want.type)
        blocking = [k for k in existing if k not in owned and k[0] == want.name
                    and (k[1] == want.type or "CNAME" in (k[1], want.type))]
        if blocking:
            name, rtype = blocking[0]
            marks = [m for m in _marks(existing[blocking[0]]) if m.startswith("backstage:")]
            whose = f"marked {marks[0]}, another production's" if marks else "not marked as backstage's"
            raise Refused(f"zone {zone}: {name} {rtype} exists and is {whose}, so backstage will not touch it "
                          f"(it wants {want.name} {want.type}); delete that RRset, or take the name out of "
                          "the production")
        current = owned.get(key)
        if current is None:
            changes.append(Change("add", None, want))
            continue
        before = RRset(want.name, want.type, int(current.get("ttl", 0)), _records(current))
        if before != want:
            changes.append(Change("change", before, want))
    wanted_keys = {(w.name, w.type) for w in wanted}
    for key, current in sorted(owned.items()):
        if key not in wanted_keys:
            changes.append(Change("delete", RRset(key[0], key[1], int(current.get("ttl", 0)), _records(current)),
                                  None))
    touched = sum(1 for c in changes if c.verb != "add")
    if len(owned) >= GUARD_MINIMUM and touched > GUARD_SHARE * len(owned) and not force:
        raise Refused(f"zone {zone}: this would change or delete {touched} of the {len(owned)} RRsets the "
                      f"production owns there (more than {GUARD_SHARE:.0%}); check the plan (--dry-run) "
                      "and pass --force if that is meant")
    return ZoneChange(zone, tuple(changes))


def prepare(state: State, generation: Path, force: bool) -> list[ZoneChange]:
    """Read every zone involved and work out its change; Refused (nothing changed) when one cannot be
    made. Zones that need no change are left out."""
    plan = state.plan
    if plan.producer is None:
        return []
    wanted = desired(plan, generation)
    api = Api(plan.producer)
    found: list[ZoneChange] = []
    for zone in sorted(set(wanted) | _live_zones(state)):
        try:
            current = api.zone(zone)
        except ApiError as exc:
            hint = (f"; create it (pdnsutil create-zone {zone.rstrip('.')}) and set its SOA-EDIT-API"
                    if "404" in str(exc) else "")
            raise Refused(f"zone {zone}: {exc}{hint}") from None
        change = zone_change(plan.producer, zone, current, wanted.get(zone, ()), force)
        if change.changes:
            found.append(change)
    return found


def _replace(producer: ProducerPlan, rrset: RRset) -> dict[str, Any]:
    return {"name": rrset.name, "type": rrset.type, "ttl": rrset.ttl, "changetype": "REPLACE",
            "records": [{"content": c, "disabled": False} for c in rrset.records],
            "comments": [{"content": producer.mark, "account": "backstage"}]}


def _delete(rrset: RRset) -> dict[str, Any]:
    return {"name": rrset.name, "type": rrset.type, "changetype": "DELETE"}


def forward(producer: ProducerPlan, change: ZoneChange) -> list[dict[str, Any]]:
    return [_replace(producer, c.after) if c.after else _delete(c.rrset) for c in change.changes]


def backward(producer: ProducerPlan, change: ZoneChange) -> list[dict[str, Any]]:
    return [_replace(producer, c.before) if c.before else _delete(c.rrset) for c in change.changes]


def send(producer: ProducerPlan | None, changes: list[ZoneChange], sent: list[ZoneChange]) -> None:
    """PATCH each zone's change, recording it in `sent` first (an undo sends it back: PATCHes are
    idempotent, so one that may or may not have arrived is undone all the same)."""
    if producer is None:
        return
    api = Api(producer)
    for index, change in enumerate(changes):
        sent.append(change)
        if index == 0:
            crash_point("dns-patching")
        try:
            api.patch(change.zone, forward(producer, change))
        except ApiError as exc:
            if exc.unsent:
                sent.pop()  # it changed nothing: nothing to send back
            raise Failed(f"zone {change.zone}: {exc}") from None


def undo(producer: ProducerPlan | None, sent: list[ZoneChange]) -> list[str]:
    """PATCH back what `send` sent, newest first; returns what could not be put back."""
    if producer is None or not sent:
        return []
    api = Api(producer)
    notes = []
    for change in reversed(sent):
        try:
            api.patch(change.zone, backward(producer, change))
        except (ApiError, Refused) as exc:
            notes.append(f"zone {change.zone} could not be put back ({exc}); run apply or rollback again")
    return notes
