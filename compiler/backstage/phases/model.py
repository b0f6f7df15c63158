"""Phase 6, model: normalised, checked data -> frozen, typed objects. It states no default: normalise did."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

from .. import contract
from . import dns
from .sources import Gathered, SourceTree

Scalar = bool | int | str


@dataclass(frozen=True, slots=True)
class Host:
    vassals_dir: str
    nginx_dir: str
    nginx: tuple[str, ...]
    nginx_user: str
    emperor_stats: str
    uwsgi: str
    acme: Acme | None = None
    address: str | None = None  # what the Venues' A records point at
    address6: str | None = None  # ... and their AAAA records


@dataclass(frozen=True, slots=True)
class Acme:
    directory: str
    email: str | None
    certbot: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Stage:
    """`virtualenv` (managed outside backstage), or built by backstage from `lock` bytes or `requirements`."""

    name: str
    virtualenv: str | None
    requirements: tuple[str, ...]
    lock: bytes | None
    python: str | None
    uid: str | None
    gid: str | None
    uwsgi: Mapping[str, Scalar]

    @property
    def built(self) -> bool:
        return self.virtualenv is None


@dataclass(frozen=True, slots=True)
class Django:
    collectstatic: str | None
    migrate: bool
    manage: str
    release: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Act:
    """`path` (code used in place), or `source`: files copied into the artifact and run from the store."""

    name: str
    module: str
    callable: str
    path: str | None
    source: SourceTree | None
    settings: str | None
    env: tuple[tuple[str, str], ...]
    secrets: tuple[tuple[str, str], ...]  # variable -> a file on the host, read when the vassal starts
    data: str | None
    static: tuple[tuple[str, str], ...]
    health: str
    django: Django | None


@dataclass(frozen=True, slots=True)
class Sess:
    name: str
    act: str
    stage: str
    processes: int
    threads: int
    needs: tuple[str, ...]
    uwsgi: tuple[tuple[str, Scalar], ...]
    protocol: Literal["uwsgi", "http"]
    port: int | None
    on_hosts: tuple[str, ...] = ()  # with [hosts]: where it runs


@dataclass(frozen=True, slots=True)
class Tls:
    """A Venue's certificate files: given, or (`acme`) certbot's under state_dir/certs/."""

    certificate: str
    key: str
    acme: bool = False


@dataclass(frozen=True, slots=True)
class Venue:
    name: str
    domain: str
    aliases: tuple[str, ...]
    listen: str
    tls: Tls | None
    redirect_http: bool  # a TLS Venue's plain-HTTP side answers 301 to https (and ACME challenges)
    http_listen: str | None  # where that side listens
    hsts: int  # Strict-Transport-Security max-age; 0 sends none
    client_max_body_size: str | None
    read_timeout: int | None
    on_hosts: tuple[str, ...] = ()  # with [hosts]: which serve it

    @property
    def hosts(self) -> tuple[str, ...]:
        return (self.domain, *self.aliases)


@dataclass(frozen=True, slots=True)
class Gig:
    name: str
    venue: str
    sess: str
    path: str
    client_max_body_size: str | None  # overrides the Venue's
    read_timeout: int | None


@dataclass(frozen=True, slots=True)
class Production:
    name: str
    state_dir: str
    run_dir: str
    log_dir: str
    host: Host
    stages: Mapping[str, Stage]
    acts: Mapping[str, Act]
    sesses: Mapping[str, Sess]
    venues: Mapping[str, Venue]
    gigs: Mapping[str, Gig]
    producer: Producer | None = None
    fleet: Fleet | None = None


@dataclass(frozen=True, slots=True)
class FleetHost:
    """One of [hosts]: its own [host] (the shared one with this host's keys over it), directories and ssh."""

    name: str
    address: str
    host: Host
    state_dir: str
    run_dir: str
    log_dir: str
    ssh_host: str
    ssh_user: str | None
    ssh_port: int
    become: bool
    python: str | None


@dataclass(frozen=True, slots=True)
class Fleet:
    hosts: tuple[FleetHost, ...]  # in the order [hosts] declares them: the rollout's order
    batch: int
    max_failed: int


FLEET_ONLY = ("address", "ssh_host", "ssh_user", "ssh_port", "become", "python", "state_dir", "run_dir", "log_dir")


def _host(raw: dict[str, Any]) -> Host:
    return Host(
        vassals_dir=raw["vassals_dir"],
        nginx_dir=raw["nginx_dir"],
        nginx=tuple(raw["nginx"]),
        nginx_user=raw["nginx_user"],
        emperor_stats=raw["emperor_stats"],
        uwsgi=raw["uwsgi"],
        acme=Acme(raw["acme"]["directory"], raw["acme"].get("email"), tuple(raw["acme"]["certbot"]))
        if "acme" in raw else None,
        address=raw.get("address"),
        address6=dns.normal("AAAA", raw["address6"]) if "address6" in raw else None,
    )


def _fleet(data: dict[str, Any]) -> Fleet | None:
    hosts = data.get("hosts")
    if not hosts:
        return None
    head = data["production"]
    found = []
    for name, raw in hosts.items():
        merged = {**data["host"], **{k: v for k, v in raw.items() if k not in FLEET_ONLY}, "address": raw["address"]}
        found.append(FleetHost(
            name=name, address=raw["address"], host=_host(merged),
            state_dir=_directory(raw.get("state_dir", head["state_dir"])),
            run_dir=_directory(raw.get("run_dir", head["run_dir"])),
            log_dir=_directory(raw.get("log_dir", head["log_dir"])),
            ssh_host=raw.get("ssh_host", raw["address"]), ssh_user=raw.get("ssh_user"),
            ssh_port=raw.get("ssh_port", 22), become=raw["become"], python=raw.get("python")))
    rollout = head["rollout"]
    return Fleet(tuple(found), rollout["batch"], rollout["max_failed"])


def on_host(production: Production, name: str) -> Production:
    """The part of a production with [hosts] that host `name` runs, as a production of one host: its
    Sesses and Venues (and the Gigs, Acts and Stages they use), its [host] and directories. DNS is the
    fleet's (written once), and `migrate` runs on the first host only."""
    assert production.fleet is not None
    host = next(h for h in production.fleet.hosts if h.name == name)
    first = production.fleet.hosts[0].name == name
    sesses = {n: s for n, s in production.sesses.items() if name in s.on_hosts}
    venues = {n: v if not (v.tls and v.tls.acme) else  # certbot's files are under this host's state_dir
              replace(v, tls=Tls(*contract.certificate_files(host.state_dir, n), acme=True))
              for n, v in production.venues.items() if name in v.on_hosts}
    gigs = {n: g for n, g in production.gigs.items() if g.venue in venues}
    acts = {n: a if first or not a.django or not a.django.migrate
            else replace(a, django=replace(a.django, migrate=False))
            for n, a in production.acts.items() if any(s.act == n for s in sesses.values())}
    stages = {n: st for n, st in production.stages.items() if any(s.stage == n for s in sesses.values())}
    return replace(production, host=host.host, state_dir=host.state_dir, run_dir=host.run_dir,
                   log_dir=host.log_dir, stages=_sorted(stages), acts=_sorted(acts), sesses=_sorted(sesses),
                   venues=_sorted(venues), gigs=_sorted(gigs), producer=None, fleet=None)


@dataclass(frozen=True, slots=True)
class Record:
    """One extra DNS record of a zone: `name` absolute (with its dot), `ttl` None for [producer].ttl."""

    name: str
    type: str
    content: str
    ttl: int | None


@dataclass(frozen=True, slots=True)
class Producer:
    """[producer]: PowerDNS's API, and the zones backstage writes records into (zone -> extra records)."""

    api: str
    api_key_file: str
    server: str
    ttl: int
    zones: Mapping[str, tuple[Record, ...]]


def _producer(raw: dict[str, Any] | None) -> Producer | None:
    if raw is None:
        return None
    zones = {zone: tuple(Record(dns.absolute(r["name"], zone), r["type"], dns.normal(r["type"], r["content"]),
                                r.get("ttl"))
                         for r in table.get("records", ()))
             for zone, table in raw["zones"].items()}
    return Producer(raw["api"].rstrip("/"), raw["api_key_file"], raw["server"], raw["ttl"], _sorted(zones))


def _sorted(items: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(sorted(items.items())))


def build(data: dict[str, Any], gathered: Gathered) -> Production:
    """Model a production that check() accepted, from normalised data and what the sources phase read:
    the input is trusted here."""
    head = data["production"]
    host = data["host"]
    stages = {n: _stage(n, s, gathered.locks.get(n)) for n, s in data.get("stages", {}).items()}
    return Production(
        name=head["name"],
        state_dir=_directory(head["state_dir"]),
        run_dir=_directory(head["run_dir"]),
        log_dir=_directory(head["log_dir"]),
        host=_host(host),
        stages=_sorted(stages),
        acts=_sorted({n: _act(n, a, gathered.acts.get(n)) for n, a in data.get("acts", {}).items()}),
        sesses=_sorted({n: _sess(n, s, stages[s["stage"]]) for n, s in data.get("sesses", {}).items()}),
        venues=_sorted({n: _venue(n, v, head["state_dir"]) for n, v in data.get("venues", {}).items()}),
        gigs=_sorted({n: Gig(n, g["venue"], g["sess"], g["path"], g.get("client_max_body_size"), g.get("read_timeout"))
                      for n, g in data.get("gigs", {}).items()}),
        producer=_producer(data.get("producer")),
        fleet=_fleet(data),
    )


def _directory(path: str) -> str:
    return path.rstrip("/") or "/"


def _stage(name: str, raw: dict[str, Any], lock: bytes | None) -> Stage:
    return Stage(name, raw.get("virtualenv"), tuple(raw.get("requirements", ())), lock, raw.get("python"),
                 raw.get("uid"), raw.get("gid"), MappingProxyType(dict(raw.get("uwsgi", {}))))


def _act(name: str, raw: dict[str, Any], source: SourceTree | None) -> Act:
    module, _, func = raw["wsgi"].partition(":")
    django = raw.get("django")
    return Act(
        name=name,
        module=module,
        callable=func or "application",
        path=raw.get("path"),
        source=source,
        settings=raw.get("settings"),
        env=tuple(sorted(raw.get("env", {}).items())),
        secrets=tuple(sorted(raw.get("secrets", {}).items())),
        data=raw.get("data"),
        static=tuple(sorted(raw.get("static", {}).items())),
        health=raw["health"],
        django=Django(django.get("collectstatic"), django["migrate"], django["manage"],
                      tuple(tuple(argv) for argv in django.get("release", ()))) if django is not None else None,
    )


# Sess fields that a Stage's or Sess's [uwsgi] table may also give (normalise takes them from there):
# they are written once, as the fields, never also as pass-through options.
_SESS_FIELDS_IN_UWSGI = ("processes", "threads")


def _sess(name: str, raw: dict[str, Any], stage: Stage) -> Sess:
    options: dict[str, Scalar] = dict(stage.uwsgi) | raw.get("uwsgi", {})
    for key in _SESS_FIELDS_IN_UWSGI:
        options.pop(key, None)
    return Sess(
        name=name,
        act=raw["act"],
        stage=raw["stage"],
        processes=raw["processes"],
        threads=raw["threads"],
        needs=tuple(sorted(raw.get("needs", ()))),
        uwsgi=tuple(sorted(options.items())),
        protocol=raw["protocol"],
        port=raw.get("port"),
        on_hosts=tuple(raw.get("hosts", ())),
    )


def _tls(raw: dict[str, Any] | None, venue: str, state_dir: str) -> Tls | None:
    if raw is None:
        return None
    if raw.get("acme"):
        return Tls(*contract.certificate_files(state_dir, venue), acme=True)
    return Tls(raw["certificate"], raw["key"])


def _venue(name: str, raw: dict[str, Any], state_dir: str) -> Venue:
    tls = raw.get("tls")
    return Venue(
        name=name,
        domain=raw["domain"],
        aliases=tuple(raw.get("aliases", ())),
        listen=str(raw["listen"]),
        tls=_tls(tls, name, state_dir),
        redirect_http=bool(tls) and raw.get("redirect_http") is True,
        http_listen=str(raw["http_listen"]) if tls and raw.get("redirect_http") is True else None,
        hsts=raw.get("hsts", 0),  # `try` drops it with `tls`
        client_max_body_size=raw.get("client_max_body_size"),
        read_timeout=raw.get("read_timeout"),
        on_hosts=tuple(raw.get("hosts", ())),
    )
