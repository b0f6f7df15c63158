"""Phase 6, model: normalised, checked data -> frozen, typed objects. It states no default: normalise did."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
        host=Host(
            vassals_dir=host["vassals_dir"],
            nginx_dir=host["nginx_dir"],
            nginx=tuple(host["nginx"]),
            nginx_user=host["nginx_user"],
            emperor_stats=host["emperor_stats"],
            uwsgi=host["uwsgi"],
            acme=Acme(host["acme"]["directory"], host["acme"].get("email"), tuple(host["acme"]["certbot"]))
            if "acme" in host else None,
            address=host.get("address"),
            address6=dns.normal("AAAA", host["address6"]) if "address6" in host else None,
        ),
        stages=_sorted(stages),
        acts=_sorted({n: _act(n, a, gathered.acts.get(n)) for n, a in data.get("acts", {}).items()}),
        sesses=_sorted({n: _sess(n, s, stages[s["stage"]]) for n, s in data.get("sesses", {}).items()}),
        venues=_sorted({n: _venue(n, v, head["state_dir"]) for n, v in data.get("venues", {}).items()}),
        gigs=_sorted({n: Gig(n, g["venue"], g["sess"], g["path"], g.get("client_max_body_size"), g.get("read_timeout"))
                      for n, g in data.get("gigs", {}).items()}),
        producer=_producer(data.get("producer")),
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
    )
