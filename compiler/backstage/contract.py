"""The compile→host contract: what an artifact holds and how the host agent reads it.

Both sides import this module: the compiler writes these types, the host agent (shipped inside every
artifact) reads them. It is standard library only, and changes only together with FORMAT.

An artifact is a directory named `<production>-<32 hex of its tree hash>` holding:

    manifest.json   Manifest: every other file with its sha256 and mode
    apply.json      Plan: what the agent needs to switch, probe and check
    agent.pyz       the host agent (a zipapp of backstage.agent and this module)
    install.sh      runs agent.pyz with a Python 3 the host has
    include.conf, nginx/*.conf, uwsgi/*.ini, stages/*/requirements.txt, acts/<act>/..., entries/<sess>/...
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal

from .files import write_tree
from .timeouts import Timeouts as Timeouts  # re-exported: the agent and the CLI take them from here
from .timeouts import flag as flag

FORMAT = 2  # 2: Act sources, built Stages, release steps, entry points, secrets and data in the plan; [host].uwsgi
MANIFEST = "manifest.json"
PLAN = "apply.json"
AGENT = "agent.pyz"
INSTALLER = "install.sh"
NAME_HASH_LENGTH = 32
# Test hooks: the agent kills itself with SIGKILL at the named point of a switch; `backstage apply`
# runs this shell command, with the original artifact's path as $1, once its copy is verified.
CRASH_POINT_ENV = "BACKSTAGE_TEST_CRASH_AT"
AFTER_COPY_ENV = "BACKSTAGE_TEST_AFTER_COPY"
SIGNAL_AT_ENV = "BACKSTAGE_TEST_SIGNAL_AT"  # POINT:SIGNAME[:WHOM]: the agent sends a signal at a named point
# The read end of a pipe whose write end only the `backstage` command holds (cli/handoff.run_installer
# sets it): end of file means that process has died, and the agent stops as on SIGTERM.
PARENT_FD_ENV = "BACKSTAGE_PARENT_FD"

Protocol = Literal["uwsgi", "http"]


class ContractError(ValueError):
    """An artifact, or one of its contract files, is not what the contract says it must be."""


# ------------------------------------------------------------------------------------------ the plan

@dataclass(frozen=True, slots=True)
class HostPlan:
    vassals_dir: str
    nginx_dir: str
    nginx: tuple[str, ...]
    nginx_user: str
    emperor_stats: str
    uwsgi: str = "uwsgi"  # the Emperor's uWSGI binary (its embedded Python runs every vassal)


@dataclass(frozen=True, slots=True)
class VassalPlan:
    """One vassal: its file is uwsgi/<stem>.ini; `address` is `unix:/path` or `IP:PORT`."""

    sess: str
    stem: str
    protocol: Protocol
    address: str
    health_host: str
    health_path: str
    restart: int = 0  # how often `apply --restart` started it afresh (part of its text, so of its name)

    @property
    def file(self) -> str:
        return f"{self.stem}.ini"

    @property
    def tcp(self) -> bool:
        return not self.address.startswith("unix:")


@dataclass(frozen=True, slots=True)
class GigPlan:
    """One Gig, checked through nginx: GET `url` with Host `host` on `connect` (IP:PORT), TLS if `tls`."""

    name: str
    sess: str
    host: str
    connect: str
    tls: bool
    url: str


STORE = "store"  # state_dir/store/: immutable, content-addressed directories named <kind>-<name>-<hash>
STORE_COMPLETE = ".backstage-complete"  # written last into a built Stage: without it the Stage is unfinished


@dataclass(frozen=True, slots=True)
class ActPlan:
    """An Act with `source`: its files are the artifact's directory `files`, installed as store/`store`."""

    name: str
    store: str  # "act-<name>-<32 hex>"
    files: str  # "acts/<name>"


@dataclass(frozen=True, slots=True)
class EntryPlan:
    """A Sess's WSGI entry point: `wsgi.py` and the `environment.json` it loads (env values, the files
    secrets are read from, the app to import), the artifact's directory `files`, installed as store/`store`.
    Every vassal loads its app through it, so uWSGI never parses an environment value."""

    sess: str
    store: str  # "entry-<sess>-<32 hex>"
    files: str  # "entries/<sess>"


@dataclass(frozen=True, slots=True)
class SecretPlan:
    """An environment variable of `sess` read from the host's file `path` when its vassal starts (and for
    its release steps). `uid`/`gid`: the Stage's ("" for root), who alone besides root may read it."""

    sess: str
    name: str
    path: str
    uid: str
    gid: str


@dataclass(frozen=True, slots=True)
class DataPlan:
    """An Act's persistent directory: created when missing, owned by `uid`/`gid` ("" for root), 0750."""

    act: str
    path: str
    uid: str
    gid: str


ACME_WEBROOT = "acme"  # state_dir/acme/: certbot's webroot, served at /.well-known/acme-challenge/
CERTS = "certs"  # state_dir/certs/: certbot's own config dir (live/<venue>/...), outside every generation
CHALLENGES = "acme"  # an artifact's directory of challenge-only server files, one per ACME Venue


@dataclass(frozen=True, slots=True)
class AcmePlan:
    """[host.acme]: the CA that ACME Venues get their certificates from, through `certbot` (a command prefix)."""

    directory: str
    email: str  # "" registers without one
    certbot: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CertificatePlan:
    """An ACME Venue's certificate: certbot's lineage `venue` under state_dir/certs/, for `names`.

    Until it exists (for exactly these names) the Venue is served from `challenge` (a file of the
    artifact: its plain-HTTP side, answering the challenge and 503 otherwise) while certbot gets it;
    only then does the TLS server, which reads `fullchain` and `key`, go live."""

    venue: str
    names: tuple[str, ...]
    fullchain: str
    key: str
    challenge: str  # "acme/<venue>.conf"


DNS = "dns"  # an artifact's directory of zones: dns/<zone>.json, the RRsets the production owns there


@dataclass(frozen=True, slots=True)
class RRset:
    """One RRset backstage owns: absolute `name` (with its dot), `type`, `ttl`, the contents sorted."""

    name: str
    type: str
    ttl: int
    records: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ZonePlan:
    """A zone backstage writes into (`zone` absolute, with its dot) and the artifact's file of its RRsets."""

    zone: str
    file: str  # "dns/<zone>.json"


@dataclass(frozen=True, slots=True)
class ProducerPlan:
    """[producer]: PowerDNS's API. The key is read from `api_key_file` on the host when applying; backstage
    owns exactly the RRsets whose comment is `mark`."""

    api: str
    api_key_file: str
    server: str
    mark: str  # "backstage:<production>"
    zones: tuple[ZonePlan, ...]


def plain(value: Any) -> Any:
    """A dataclass as dicts and lists, like dataclasses.asdict but without its deep copies (5x faster)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    fields_of = _FIELDS_OF.get(kind)
    if fields_of is None:
        if kind is list or kind is tuple:
            return [plain(item) for item in value]
        if kind is dict:
            return {key: plain(item) for key, item in value.items()}
        if not is_dataclass(value):
            return value
        names = tuple(f.name for f in fields(value))
        fields_of = _FIELDS_OF[kind] = (names, _getter(names))
    names, get = fields_of
    return {name: item if type(item) in _SCALARS else plain(item)
            for name, item in zip(names, get(value), strict=True)}


_FIELDS_OF: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """All the fields at once (attrgetter gives a bare value, not a tuple, for one name)."""
    if len(names) != 1:
        return attrgetter(*names)
    name = names[0]

    def one(value: Any) -> tuple[Any, ...]:
        return (getattr(value, name),)
    return one


_SCALARS = frozenset({str, int, bool, float, type(None)})
_SORTED = json.JSONEncoder(sort_keys=True)  # one encoder for every line: json.dumps makes one per call


def _lines_json(data: object) -> bytes:
    """JSON with each top-level key, and each item of a top-level list, on a line of its own: readable in
    a diff. `data` is a dataclass or a dict; the bytes are `json.dumps(plain(data), sort_keys=True)`'s
    but for the line breaks."""
    lines = []
    for key, value in _sorted_fields(data):
        if type(value) in (list, tuple) and value:
            items = ",\n    ".join([_json(item) for item in value])
            lines.append(f"  {key}[\n    {items}\n  ]")
        else:
            lines.append(f"  {key}{_json(value)}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


def _json(value: object) -> str:
    """`_SORTED.encode(plain(value))`, written directly for a dataclass, list or scalar (a plan or manifest
    has tens of thousands of items, and building each one's dict first cost more than encoding it)."""
    kind = type(value)
    scalar = _SCALAR_JSON.get(kind)
    if scalar is not None:
        return scalar(value)
    if kind is list or kind is tuple:
        return "[" + ", ".join([_json(item) for item in value]) + "]"  # type: ignore[attr-defined]
    if kind is dict or not is_dataclass(value):
        return _SORTED.encode(plain(value))
    return "{" + ", ".join([key + _json(item) for key, item in _sorted_fields(value)]) + "}"


def _sorted_fields(value: object) -> list[tuple[str, Any]]:
    """(the key encoded as JSON with its ': ', the value) of a dataclass's fields or a dict's items,
    sorted by key."""
    if type(value) is dict:
        return [(_SORTED.encode(key) + ": ", item) for key, item in sorted(value.items())]
    kind = type(value)
    layout = _JSON_LAYOUT.get(kind)
    if layout is None:
        names = sorted(f.name for f in fields(value))  # type: ignore[arg-type]
        layout = _JSON_LAYOUT[kind] = (tuple(_SORTED.encode(n) + ": " for n in names), _getter(tuple(names)))
    keys, get = layout
    return list(zip(keys, get(value), strict=True))


_SCALAR_JSON: dict[type, Callable[[Any], str]] = {
    str: json.encoder.encode_basestring_ascii,  # what the encoder uses with ensure_ascii, its default
    int: int.__repr__,
    bool: lambda flag: "true" if flag else "false",
    type(None): lambda _: "null",
    float: _SORTED.encode,
}
_JSON_LAYOUT: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}


def zone_json(zone: str, rrsets: Iterable[RRset]) -> bytes:
    """dns/<zone>.json: the zone and its RRsets sorted by name and type, one per line."""
    ordered = sorted(rrsets, key=lambda r: (r.name, r.type))
    return _lines_json({"rrsets": ordered, "zone": zone})


def read_zone(raw: bytes) -> tuple[str, tuple[RRset, ...]]:
    """The zone and RRsets of a dns/<zone>.json (ContractError if it is not one)."""
    try:
        data = _object(json.loads(raw), "zone file")
        rrsets = []
        for item in _list(data["rrsets"]):
            entry = _object(item, "rrset")
            ttl = entry["ttl"]
            if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
                raise ValueError("ttl is not a positive integer")
            rrsets.append(RRset(_str(entry["name"]), _str(entry["type"]), ttl,
                                tuple(_str(r) for r in _list(entry["records"]))))
        return _str(data["zone"]), tuple(rrsets)
    except (ValueError, KeyError, TypeError) as exc:
        raise ContractError(f"not a backstage zone file: {exc}") from None


FLEET = "fleet.json"  # an artifact of several hosts: FleetPlan; each host's own artifact is hosts/<host>/<name>/
HOSTS = "hosts"


@dataclass(frozen=True, slots=True)
class FleetHostPlan:
    """One host of a fleet: how Ansible reaches it, and its state_dir (where its artifact is unpacked)."""

    name: str
    address: str
    ssh_host: str
    ssh_user: str  # "" for Ansible's default
    ssh_port: int
    become: bool
    python: str  # "" for Ansible's discovery
    state_dir: str


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """fleet.json: the hosts in rollout order, the batch size and stop rule, and the fleet's DNS."""

    production: str
    hosts: tuple[FleetHostPlan, ...]
    batch: int
    max_failed: int
    producer: ProducerPlan | None

    def to_json(self) -> bytes:
        return (json.dumps(plain(self), sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> FleetPlan:
        try:
            data = _object(json.loads(raw), FLEET)
            hosts = []
            for item in _list(data["hosts"]):
                entry = _object(item, "host")
                port = entry["ssh_port"]
                if not isinstance(port, int) or isinstance(port, bool) or not isinstance(entry["become"], bool):
                    raise TypeError("ssh_port or become has the wrong type")
                hosts.append(FleetHostPlan(_str(entry["name"]), _str(entry["address"]), _str(entry["ssh_host"]),
                                           _str(entry["ssh_user"]), port, entry["become"], _str(entry["python"]),
                                           _str(entry["state_dir"])))
            batch, failed = data["batch"], data["max_failed"]
            if not all(isinstance(n, int) and not isinstance(n, bool) for n in (batch, failed)):
                raise TypeError("batch or max_failed is not an integer")
            return cls(_str(data["production"]), tuple(hosts), batch, failed, _producer(data.get("producer")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ContractError(f"{FLEET} is not a backstage fleet plan: {exc}") from None


def host_artifact(artifact: Path, host: str) -> Path:
    """The one artifact directory of `host` inside a fleet artifact."""
    found = sorted(p for p in (artifact / HOSTS / host).iterdir() if p.is_dir()) if (artifact / HOSTS / host).is_dir() \
        else []
    if len(found) != 1:
        raise ContractError(f"{artifact}: {HOSTS}/{host}/ does not hold exactly one artifact")
    return found[0]


def certificate_files(state_dir: str, venue: str) -> tuple[str, str]:
    """Where certbot keeps an ACME Venue's certificate chain and key (its `live/` links)."""
    live = f"{state_dir.rstrip('/')}/{CERTS}/live/{venue}"
    return f"{live}/fullchain.pem", f"{live}/privkey.pem"


@dataclass(frozen=True, slots=True)
class StagePlan:
    """A Stage backstage builds: a virtualenv made at store/`store` from the artifact's `requirements`.

    `exact`: the file is a lock, installed exactly (nothing more, nothing less: `uv pip sync`).
    The interpreter must be the Python the Emperor's uWSGI (`HostPlan.uwsgi`) embeds (major.minor).
    """

    name: str
    store: str  # "stage-<name>-<32 hex>"
    python: str
    requirements: str  # "stages/<name>/requirements.txt"
    exact: bool


@dataclass(frozen=True, slots=True)
class StepPlan:
    """A release step, run once per apply after the store is complete and before any new vassal starts:
    `argv` (no shell) in `cwd`, with `env`, as `uid`/`gid` when given ("" for the applying user).

    `kind` "collectstatic" writes into store/`static` (under a temporary name, renamed when complete,
    and skipped when that store path exists); "migrate" and "release" run on every apply.
    """

    act: str
    sess: str
    kind: Literal["collectstatic", "migrate", "release"]
    argv: tuple[str, ...]
    cwd: str
    env: tuple[tuple[str, str], ...]
    uid: str
    gid: str
    static: str  # "static-<act>-<32 hex>" for collectstatic, else ""
    secrets: tuple[tuple[str, str], ...] = ()  # (variable, file on the host), read by the agent when it runs


@dataclass(frozen=True, slots=True)
class Plan:
    """apply.json: everything the host agent needs to make a generation live."""

    production: str
    state_dir: str
    run_dir: str
    log_dir: str
    nginx_link: str
    host: HostPlan
    vassals: tuple[VassalPlan, ...]
    gigs: tuple[GigPlan, ...]
    acts: tuple[ActPlan, ...] = ()
    stages: tuple[StagePlan, ...] = ()
    steps: tuple[StepPlan, ...] = ()
    entries: tuple[EntryPlan, ...] = ()
    secrets: tuple[SecretPlan, ...] = ()
    data: tuple[DataPlan, ...] = ()
    acme: AcmePlan | None = None
    certificates: tuple[CertificatePlan, ...] = ()
    producer: ProducerPlan | None = None

    @property
    def store_dir(self) -> str:
        return f"{self.state_dir.rstrip('/')}/{STORE}"

    def store_paths(self) -> set[str]:
        """Every store directory name this generation refers to."""
        return ({a.store for a in self.acts} | {s.store for s in self.stages} | {e.store for e in self.entries}
                | {step.static for step in self.steps if step.static})

    def to_json(self) -> bytes:
        """JSON with each top-level key, and each item of a top-level list, on a line of its own:
        readable in a diff, and written by json's C encoder (indent= would use the pure-Python one)."""
        return _lines_json(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Plan:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ContractError(f"{PLAN} is not a backstage plan: {exc}") from None
        return _plan(data)

    def vassal_files(self) -> dict[str, VassalPlan]:
        return {v.file: v for v in self.vassals}


def _plan(value: Any) -> Plan:
    """A Plan from apply.json's parsed JSON, every field checked."""
    try:
        data = _object(value, PLAN)
        host = _object(data["host"], "host")
        return Plan(
            production=_str(data["production"]),
            state_dir=_str(data["state_dir"]),
            run_dir=_str(data["run_dir"]),
            log_dir=_str(data["log_dir"]),
            nginx_link=_str(data["nginx_link"]),
            host=HostPlan(
                vassals_dir=_str(host["vassals_dir"]),
                nginx_dir=_str(host["nginx_dir"]),
                nginx=tuple(_str(part) for part in _list(host["nginx"])),
                nginx_user=_str(host["nginx_user"]),
                emperor_stats=_str(host["emperor_stats"]),
                uwsgi=_str(host.get("uwsgi", "uwsgi")),  # format 1 had none: the one on PATH
            ),
            vassals=tuple(_vassal(_object(v, "vassal")) for v in _list(data["vassals"])),
            gigs=tuple(_gig(_object(g, "gig")) for g in _list(data["gigs"])),
            acts=tuple(_fields(ActPlan, item) for item in _list(data.get("acts", []))),
            stages=tuple(_fields(StagePlan, item) for item in _list(data.get("stages", []))),
            steps=tuple(_step(item) for item in _list(data.get("steps", []))),
            entries=tuple(_fields(EntryPlan, item) for item in _list(data.get("entries", []))),
            secrets=tuple(_fields(SecretPlan, item) for item in _list(data.get("secrets", []))),
            data=tuple(_fields(DataPlan, item) for item in _list(data.get("data", []))),
            acme=_acme(data.get("acme")),
            certificates=tuple(_certificate(item) for item in _list(data.get("certificates", []))),
            producer=_producer(data.get("producer")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ContractError(f"{PLAN} is not a backstage plan: {exc}") from None


def _fields(cls: type[Any], value: Any) -> Any:
    """A dataclass of str and bool fields from a JSON object, every field checked."""
    data = _object(value, cls.__name__)
    values: dict[str, Any] = {}
    for item in fields(cls):
        raw = data[item.name]
        if item.type == "bool":
            if not isinstance(raw, bool):
                raise TypeError(f"{item.name} is not a boolean")
            values[item.name] = raw
        else:
            values[item.name] = _str(raw)
    return cls(**values)


def _acme(value: Any) -> AcmePlan | None:
    if value is None:
        return None
    data = _object(value, "acme")
    return AcmePlan(_str(data["directory"]), _str(data["email"]), tuple(_str(a) for a in _list(data["certbot"])))


def _producer(value: Any) -> ProducerPlan | None:
    if value is None:
        return None
    data = _object(value, "producer")
    return ProducerPlan(_str(data["api"]), _str(data["api_key_file"]), _str(data["server"]), _str(data["mark"]),
                        tuple(_fields(ZonePlan, z) for z in _list(data["zones"])))


def _certificate(value: Any) -> CertificatePlan:
    data = _object(value, "certificate")
    return CertificatePlan(_str(data["venue"]), tuple(_str(n) for n in _list(data["names"])), _str(data["fullchain"]),
                           _str(data["key"]), _str(data["challenge"]))


def _step(value: Any) -> StepPlan:
    data = _object(value, "step")
    kind = _str(data["kind"])
    if kind not in ("collectstatic", "migrate", "release"):
        raise ValueError(f"unknown step kind {kind!r}")
    return StepPlan(_str(data["act"]), _str(data["sess"]), kind,  # type: ignore[arg-type]
                    tuple(_str(a) for a in _list(data["argv"])), _str(data["cwd"]), _pairs(data["env"], "env"),
                    _str(data["uid"]), _str(data["gid"]), _str(data["static"]),
                    _pairs(data.get("secrets", []), "secrets"))


def _pairs(value: Any, what: str) -> tuple[tuple[str, str], ...]:
    items = _list(value)
    pairs = tuple((_str(pair[0]), _str(pair[1])) for pair in (_list(p) for p in items) if len(pair) == 2)
    if len(pairs) != len(items):
        raise ValueError(f"{what} holds an item that is not a [name, value] pair")
    return pairs


def _vassal(data: Mapping[str, Any]) -> VassalPlan:
    protocol = _str(data["protocol"])
    if protocol not in ("uwsgi", "http"):
        raise ValueError(f"unknown protocol {protocol!r}")
    restart = data.get("restart", 0)
    if not isinstance(restart, int) or isinstance(restart, bool) or restart < 0:
        raise TypeError("restart is not a count")
    return VassalPlan(_str(data["sess"]), _str(data["stem"]), protocol,  # type: ignore[arg-type]
                      _str(data["address"]), _str(data["health_host"]), _str(data["health_path"]), restart)


def _gig(data: Mapping[str, Any]) -> GigPlan:
    tls = data["tls"]
    if not isinstance(tls, bool):
        raise TypeError("tls is not a boolean")
    return GigPlan(_str(data["name"]), _str(data["sess"]), _str(data["host"]), _str(data["connect"]), tls,
                   _str(data["url"]))


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not an object")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


# ------------------------------------------------------------------------------------------ manifest

@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    sha256: str
    mode: str  # four octal digits, "0444"


@dataclass(frozen=True, slots=True)
class Manifest:
    backstage: str
    format: int
    production: str
    input_sha256: str
    files: tuple[FileEntry, ...] = field(default=())

    def to_json(self) -> bytes:
        """As the plan: a line per top-level key and per file (json's C encoder; indent= is pure Python)."""
        return _lines_json(self)

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """Reads a manifest of any format far enough to say which format it is; check `format` next."""
        try:
            data = _object(json.loads(raw), MANIFEST)
            files = tuple(FileEntry(_str(f["path"]), _str(f["sha256"]), _str(f["mode"]))
                          for f in (_object(item, "file") for item in _list(data["files"])))
            version = data.get("format")
            if not isinstance(version, int) or isinstance(version, bool):
                raise TypeError(f"format {version!r} is not a number")
            return cls(str(data.get("backstage")), version, _str(data["production"]),
                       str(data.get("input_sha256", "")), files)
        except (ValueError, KeyError, TypeError) as exc:
            raise ContractError(f"{MANIFEST} is not a backstage manifest: {exc}") from None


def manifest_json(version: str, production: str, input_sha256: str,
                  files: Iterable[tuple[str, int, bytes]]) -> bytes:
    """The Manifest's `to_json()` for these files (sorted by path, each with its sha256 and mode), written
    without a FileEntry per file: an artifact of 10,000 Gigs lists 18,000 of them, and making and encoding
    each entry cost more than hashing its content."""
    quote = _SCALAR_JSON[str]
    entries = [f'{{"mode": "{mode:04o}", "path": {quote(path)}, "sha256": "{hashlib.sha256(content).hexdigest()}"}}'
               for path, mode, content in sorted(files)]
    listed = "[\n    " + ",\n    ".join(entries) + "\n  ]" if entries else "[]"
    return (f'{{\n  "backstage": {quote(version)},\n  "files": {listed},\n  "format": {FORMAT},\n'
            f'  "input_sha256": {quote(input_sha256)},\n  "production": {quote(production)}\n}}\n').encode()


# ------------------------------------------------------------------------------------ identity and naming

def tree_hash(entries: Iterable[tuple[str, int, bytes]]) -> str:
    """The artifact's identity: sha256 over each (path, mode, content), sorted by path."""
    digest = hashlib.sha256()
    for path, mode, content in sorted(entries):
        digest.update(f"{path}\0{mode:o}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def artifact_name(production: str, tree: str) -> str:
    return f"{production}-{tree[:NAME_HASH_LENGTH]}"


# Bounds on what an artifact may hold: far above any real one, low enough that a hostile tree is
# refused at once instead of exhausting the agent.
MAX_DEPTH = 16
MAX_ENTRIES = 200_000
MAX_BYTES = 1 << 30

Tree = dict[str, tuple[int, bytes]]  # relative path -> (mode, content) of every regular file


def read_tree(artifact: Path) -> Tree:
    """Every file of an artifact, read without following a link or blocking: only regular files and
    directories are allowed (no symlink, FIFO, socket or device, no file with a second hard link), at
    most MAX_DEPTH levels deep. Anything else is refused (ContractError) with its path."""
    found: Tree = {}
    total = 0
    pending: list[tuple[str, int]] = [("", 0)]
    try:
        top = os.lstat(artifact)
    except OSError as exc:
        raise ContractError(f"{artifact}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(top.st_mode):
        raise ContractError(f"{artifact}: not a directory")
    while pending:
        rel_dir, depth = pending.pop()
        try:
            names = sorted(os.listdir(artifact / rel_dir if rel_dir else artifact))
        except OSError as exc:
            raise ContractError(f"{artifact}: {rel_dir or '.'}: {exc.strerror or exc}") from None
        for entry in names:
            rel = f"{rel_dir}/{entry}" if rel_dir else entry
            path = artifact / rel
            try:
                info = os.lstat(path)
            except OSError as exc:
                raise ContractError(f"{artifact}: {rel}: {exc.strerror or exc}") from None
            if stat.S_ISLNK(info.st_mode):
                raise ContractError(f"{artifact}: {rel} is a symlink (to {os.readlink(path)}); artifacts hold none")
            if stat.S_ISDIR(info.st_mode):
                if depth + 1 >= MAX_DEPTH:
                    raise ContractError(f"{artifact}: {rel} is nested deeper than {MAX_DEPTH} levels")
                pending.append((rel, depth + 1))
            elif not stat.S_ISREG(info.st_mode):
                raise ContractError(f"{artifact}: {rel} is a {_kind(info.st_mode)}; artifacts hold regular files only")
            elif info.st_nlink != 1:
                raise ContractError(f"{artifact}: {rel} has {info.st_nlink} hard links; artifacts hold files of one")
            else:
                found[rel] = _read_regular(artifact, rel)
                total += len(found[rel][1])
            if len(found) + len(pending) > MAX_ENTRIES or total > MAX_BYTES:
                raise ContractError(f"{artifact}: more than {MAX_ENTRIES} entries or {MAX_BYTES} bytes")
    return found


def _read_regular(artifact: Path, rel: str) -> tuple[int, bytes]:
    """(mode, content) of a file that lstat saw as regular, checked again on the open descriptor."""
    try:
        fd = os.open(artifact / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise ContractError(f"{artifact}: {rel}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise ContractError(f"{artifact}: {rel} changed while it was read")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return info.st_mode & 0o777, b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return word
    return "special file"


def verify(artifact: Path, name: str | None = None) -> Manifest:
    """Refuse (ContractError) an artifact whose files differ in any way from what its manifest and name
    promise; return its manifest. `name` is the name the tree must hash to when it is checked under
    another (a copy in progress). Symlinks and special files are refused, never followed or opened.
    """
    return check_tree(artifact, read_tree(artifact), name or artifact.name)


def check_tree(artifact: Path, found: Tree, name: str) -> Manifest:
    """The checks of `verify` over a tree already read: `artifact` only names it in messages."""
    # Checked step by step, in the order and with the words of format 1's first agent: a manifest of
    # another format is only read far enough to name its format.
    try:
        raw = found[MANIFEST][1]
        data = json.loads(raw)
    except KeyError:
        raise ContractError(f"{artifact}: unreadable {MANIFEST}: no such file") from None
    except ValueError as exc:
        raise ContractError(f"{artifact}: unreadable {MANIFEST}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ContractError(f"{artifact}: {MANIFEST} is not a backstage manifest")
    if data.get("format") != FORMAT:
        raise ContractError(f"{artifact}: artifact format {data.get('format')!r} (backstage {data.get('backstage')!r}) "
                            f"is not format {FORMAT}; use the matching backstage")
    try:
        listed: dict[str, dict[str, Any]] = {_str(f["path"]): _object(f, "file") for f in data["files"]}
    except (TypeError, KeyError):
        raise ContractError(f"{artifact}: {MANIFEST} lists its files wrongly") from None
    missing = sorted(set(listed) - set(found))
    extra = sorted(set(found) - set(listed) - {MANIFEST})
    if missing or extra:
        raise ContractError(f"{artifact}: files missing {missing or '[]'}, files not in the manifest {extra or '[]'}")
    for rel, promised in sorted(listed.items()):
        mode, content = found[rel]
        if hashlib.sha256(content).hexdigest() != promised.get("sha256") or f"{mode:04o}" != promised.get("mode"):
            raise ContractError(f"{artifact}: {rel} was changed after the build (content or mode)")
    tree = tree_hash((rel, mode, content) for rel, (mode, content) in found.items())
    hashed = artifact_name(str(data.get("production")), tree)
    if name != hashed:
        raise ContractError(f"{artifact}: the manifest does not match the artifact (its content hashes to {hashed})")
    try:
        return Manifest.from_json(raw)
    except ContractError as exc:
        raise ContractError(f"{artifact}: {exc}") from None


def copy_verified(artifact: Path, dest: Path, found: Tree | None = None) -> Manifest:
    """Copy a verified artifact to `dest` (which must not exist; its parent must be trusted): the bytes
    written are the bytes verified, read once (`found`, when the caller has read the tree already), so
    a file changed in the original afterwards changes nothing. Directory modes are normalised to 0555;
    file modes are the manifest's."""
    if found is None:
        found = read_tree(artifact)
    manifest = check_tree(artifact, found, artifact.name)
    os.mkdir(dest, 0o700)
    write_tree(dest, ((rel, mode, content) for rel, (mode, content) in sorted(found.items())))
    return manifest


def read_plan(artifact: Path) -> Plan:
    try:
        data = json.loads((artifact / PLAN).read_bytes())
    except (OSError, ValueError) as exc:
        raise ContractError(f"{artifact}: unreadable {PLAN}: {exc}") from None
    if not isinstance(data, dict):
        raise ContractError(f"{artifact}: {PLAN} is not a backstage plan")
    try:
        return _plan(data)
    except ContractError as exc:
        raise ContractError(f"{artifact}: {exc}") from None
