"""Phase 4, check: the JSON Schema plus whole-production rules, every error in one run."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

from ..errors import CODES, CONTROL, Diagnostic, InputError
from . import dns, layout, schema
from . import graph as graphs
from .load import KeyPath, Loaded, Source
from .normalise import Normalised

_GENERIC_CODES = {
    "type": "BS100",
    "additionalProperties": "BS101",
    "required": "BS102",
    "minimum": "BS104",
    "maximum": "BS104",
    "enum": "BS105",
    "const": "BS105",
    "maxLength": "BS106",
    "minLength": "BS106",
    "maxItems": "BS106",
    "minItems": "BS106",
    "maxProperties": "BS106",
    "uniqueItems": "BS107",
}


@cache
def _validator() -> jsonschema.protocols.Validator:
    import jsonschema  # only on the error path: its import and validation are slow

    return jsonschema.Draft202012Validator(schema.inlined())


@cache
def _fast_validator() -> Any:
    """jsonschema-rs (compiled) over the same schema, formats not asserted as jsonschema does not; None
    when it is not installed."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    return jsonschema_rs.Draft202012Validator(schema.inlined(), validate_formats=False)


def valid_fast(data: dict[str, Any]) -> bool:
    """True when the compiled validator finds the data valid. Any other answer (invalid, a value it
    cannot take, such as a TOML date or an integer beyond 64 bits, or no such validator) sends the data
    to jsonschema, whose errors carry the paths and codes reported. tests/test_fast_paths.py holds both
    validators to the same verdicts."""
    validator = _fast_validator()
    if validator is None:
        return False
    try:
        return bool(validator.is_valid(data))
    except Exception:
        return False


def check(normalised: Normalised, graph: graphs.Graph) -> None:
    """Raise InputError listing every problem in the production, sorted by line.

    `graph` is the graph phase's view of the same data (its `needs` cycles are reported here).
    """
    source = normalised.loaded.source
    data = normalised.data
    refuse_oversized(normalised.loaded)
    found = list(_control_characters(data, (), source)) if _may_hold_controls(source) else []
    flagged = {d.path for d in found}
    found += [d for d in _schema_errors(data, source, _copied(normalised)) if d.path not in flagged]
    found += _Rules(normalised, graph).run()
    if found:
        raise InputError(found)


def _may_hold_controls(source: Source) -> bool:
    """Whether a string or key of the data can hold a control character: only through an escape, a raw
    tab, a multi-line string, non-ASCII text or a value an overlay set. Else the walk is skipped."""
    text = source.text
    return (source.injected or not text.isascii() or "\\" in text or "\t" in text or '"""' in text
            or "'''" in text)


def refuse_oversized(loaded: Loaded) -> None:
    """Refuse tables with more entries than the schema allows before any other work: normalising,
    graphing and validating 100,000 entries only to reject them all would take long."""
    oversized = list(_oversized_tables(loaded.data, loaded.source))
    if oversized:
        raise InputError(oversized)


def _oversized_tables(data: dict[str, Any], source: Source) -> Iterator[Diagnostic]:
    for key, rule in schema.document()["properties"].items():
        limit = rule.get("maxProperties")
        table = data.get(key)
        if limit and isinstance(table, dict) and len(table) > limit:
            yield source.diagnostic((key,), "BS106", f"{len(table)} entries; the limit is {limit}",
                                    "split the production: one file should describe one host's sites")


def _control_characters(value: Any, path: KeyPath, source: Source) -> Iterator[Diagnostic]:
    if isinstance(value, dict):
        for key, item in value.items():
            if CONTROL.search(key):
                yield source.diagnostic((*path, key), "BS108", "the key holds a control character",
                                        "keys are plain names; remove the character")
            yield from _control_characters(item, (*path, key), source)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _control_characters(item, (*path, index), source)
    elif isinstance(value, str) and _is_env_value(path):
        if found := _LINE_BREAK.search(value):
            yield source.diagnostic(path, "BS114", f"the value holds {_LINE_BREAK_NAMES[found[0]]}",
                                    "an environment value is a single line; give a multi-line value "
                                    "through `secrets` (a file)")
    elif isinstance(value, str) and (found := CONTROL.search(value)):
        char = found[0]
        yield source.diagnostic(path, "BS108", f"the value holds the control character U+{ord(char):04X}",
                                "values are single lines of printable text")


# An `env` value may hold any character but these: it reaches os.environ through a JSON file, never
# through uWSGI's config parser (see targets/templates/entry.py.j2).
_LINE_BREAK = re.compile("[\x00\n\r]")
_LINE_BREAK_NAMES = {"\x00": "a NUL character", "\n": "a line break (\\n)", "\r": "a carriage return (\\r)"}


def _is_env_value(path: KeyPath) -> bool:
    return len(path) == 4 and path[0] == "acts" and path[2] == "env"


def _copied(normalised: Normalised) -> Callable[[KeyPath], bool]:
    """Whether a key path lies in a `hosts` list normalise filled in: its names are copied from [hosts]
    (a Sess's) or from the Sesses booked at the Venue (a Venue's), so whatever is wrong with them is
    reported where the file gives them, and an empty one means those Sesses run on no declared host,
    which is reported at them. Reported again here it would name a key the file never gave."""
    def copied(path: KeyPath) -> bool:
        return (len(path) >= 3 and path[0] in ("sesses", "venues") and path[2] == "hosts"
                and not normalised.spelled(path[:3]))
    return copied


def _schema_errors(data: dict[str, Any], source: Source,
                   copied: Callable[[KeyPath], bool] = lambda path: False) -> Iterator[Diagnostic]:
    if valid_fast(data):
        return
    for error in _validator().iter_errors(data):
        if not copied(tuple(error.absolute_path)):
            yield from _describe(error, source)


def _describe(error: jsonschema.ValidationError, source: Source) -> Iterator[Diagnostic]:
    path: KeyPath = tuple(error.absolute_path)
    keyword = str(error.validator)
    sub: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    instance: Any = error.instance
    if keyword == "additionalProperties":
        allowed = sorted(sub.get("properties", {}))
        for key in sorted(set(instance) - set(allowed)):
            yield source.diagnostic((*path, key), "BS101", f"unknown key `{key}`",
                                    _did_you_mean(key, allowed) or f"allowed keys: {', '.join(allowed)}")
        return
    if keyword == "required":
        for key in sub.get("required", []):
            if isinstance(instance, dict) and key not in instance:
                yield source.diagnostic(path, "BS102", f"missing required key `{key}`",
                                        f"add `{key} = ...` to this table")
        return
    if "propertyNames" in error.relative_schema_path or "propertyNames" in error.schema_path:
        path = (*path, instance)
    code = _GENERIC_CODES["type"] if keyword == "type" else sub.get("x-code") or _GENERIC_CODES.get(keyword, "BS100")
    if keyword == "type":
        types: list[str] = sub["type"] if isinstance(sub["type"], list) else [sub["type"]]
        expected = [_TOML_WORDS.get(t, t) for t in types]
        yield source.diagnostic(path, code, f"expected {' or '.join(expected)}, got {_toml_type(instance)}",
                                _expectation(error) or sub.get("description") or f"write a TOML {expected[0]}")
    elif keyword in ("enum", "const"):
        choices = sub.get("enum", [sub.get("const")])
        hint = _did_you_mean(str(instance), [str(c) for c in choices]) if isinstance(instance, str) else ""
        yield source.diagnostic(path, code, f"{_show(instance)} is not one of {', '.join(map(_show, choices))}",
                                hint)
    elif keyword in ("minimum", "maximum"):
        yield source.diagnostic(path, code, f"{instance} is out of range",
                                f"use {sub.get('minimum', '...')} to {sub.get('maximum', '...')}")
    elif keyword in ("maxLength", "maxItems", "maxProperties", "minLength", "minItems"):
        yield source.diagnostic(path, code, error.message if len(error.message) < 200 else
                                f"{keyword} {error.validator_value} exceeded", f"{keyword} is {error.validator_value}")
    elif keyword == "uniqueItems":
        yield source.diagnostic(path, code, "the list holds the same item twice", "remove the duplicate")
    else:
        yield source.diagnostic(path, code, f"{_show(instance)}: {CODES.get(code, 'invalid value')}",
                                _allowlist_hint(sub, instance) or _expectation(error))


def _expectation(error: jsonschema.ValidationError) -> str:
    sub = error.schema if isinstance(error.schema, dict) else {}
    expect = sub.get("x-expect")
    if not expect and error.parent is not None and hasattr(error.parent, "schema"):
        parent = error.parent.schema if isinstance(error.parent.schema, dict) else {}
        expect = parent.get("x-expect")
    return f"expected {expect}" if expect else ""


def _allowlist_hint(sub: dict[str, Any], name: Any) -> str:
    """The hint for a name refused by an allowlist (the uWSGI pass-through options): the field that sets
    it when backstage sets it itself (`x-reserved`), else an allowed name it looks like a typo of (a
    closer match than _did_you_mean's: `after-request-hook` is no typo of `max-requests`), else them all."""
    allowed = sub.get("x-allowed")
    if not isinstance(allowed, dict) or not isinstance(name, str):
        return ""
    reserved = sub.get("x-reserved", {})
    if name in reserved:
        return f"backstage sets `{name}` itself: {reserved[name]}"
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.8)
    if close:
        return f"did you mean `{close[0]}`?"
    return (f"only options that tune how the app is served pass through: {', '.join(sorted(allowed))}; "
            "commands, code, files, sockets and privileges come only from the Stage's and Act's own fields")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


_TOML_WORDS = {"object": "table", "array": "array", "string": "string", "integer": "integer",
               "boolean": "boolean", "number": "number"}


def _toml_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


def _table(data: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    value = data.get(key)
    if not isinstance(value, dict):
        return {}
    return {name: item for name, item in value.items() if isinstance(item, dict)}


def _static_prefixes(act: dict[str, Any]) -> list[str]:
    """The URL prefixes nginx serves an Act's files at itself: `static`, and Django's collectstatic."""
    static = act.get("static")
    prefixes = [p for p in static if isinstance(p, str)] if isinstance(static, dict) else []
    django = act.get("django")
    if isinstance(django, dict) and isinstance(django.get("collectstatic"), str):
        prefixes.append(django["collectstatic"])
    return prefixes


class _Rules:
    """Rules a schema cannot state: they relate one part of the production to another."""

    def __init__(self, normalised: Normalised, graph: graphs.Graph) -> None:
        data = normalised.data
        self.normalised = normalised
        self.graph = graph
        self.data = data
        self.source = normalised.loaded.source
        self.found: list[Diagnostic] = []
        self.acts = _table(data, "acts")
        self.stages = _table(data, "stages")
        self.sesses = _table(data, "sesses")
        self.venues = _table(data, "venues")
        self.gigs = _table(data, "gigs")
        self.hosts = _table(data, "hosts")

    def run(self) -> list[Diagnostic]:
        self.references()
        self.claimed_names()
        self.ports()
        self.tls_per_port()
        self.plain_http_settings()
        self.certificates()
        self.producer()
        self.placement()
        self.locations()
        self.settings_twice()
        self.needs_cycles()
        self.static_slashes()
        self.socket_lengths()
        self.act_code()
        self.stage_kinds()
        self.release_steps()
        self.secrets()
        self.data_dirs()
        return self.found

    def report(self, path: KeyPath, code: str, message: str, hint: str = "") -> None:
        self.found.append(self.source.diagnostic(path, code, message, hint))

    def references(self) -> None:
        def ref(path: KeyPath, name: Any, kind: str, table: dict[str, Any]) -> None:
            if isinstance(name, str) and name not in table:
                hint = _did_you_mean(name, sorted(table)) or (
                    f"declare [{kind}.{name}]" if not table else f"known {kind}: {', '.join(sorted(table)[:10])}")
                self.report(path, "BS201", f"no {kind[:-1] if kind != 'sesses' else 'sess'} named `{name}`",
                            hint)

        for name, sess in self.sesses.items():
            ref(("sesses", name, "act"), sess.get("act"), "acts", self.acts)
            ref(("sesses", name, "stage"), sess.get("stage"), "stages", self.stages)
            needs = sess.get("needs")
            for index, needed in enumerate(needs if isinstance(needs, list) else []):
                ref(("sesses", name, "needs", index), needed, "sesses", self.sesses)
        for name, gig in self.gigs.items():
            ref(("gigs", name, "venue"), gig.get("venue"), "venues", self.venues)
            ref(("gigs", name, "sess"), gig.get("sess"), "sesses", self.sesses)

    def claimed_names(self) -> None:
        owners: dict[str, str] = {}
        for path, host, name in self._venue_names():
            if host in owners:
                self.report(path, "BS202", f"`{host}` is already claimed by venue `{owners[host]}`",
                            "each domain and alias is claimed once; nginx would pick one server silently")
            owners.setdefault(host, name)

    def _on(self, entry: dict[str, Any]) -> list[str]:
        """The hosts a Sess or Venue runs on: with [hosts] its `hosts` (normalise fills them in), else the
        one host, named "" here."""
        if not self.hosts:
            return [""]
        given = entry.get("hosts")
        return [h for h in given if isinstance(h, str)] if isinstance(given, list) else list(self.hosts)

    def ports(self) -> None:
        """Sess ports are unique per host, and none is a port a Venue listens on on that host."""
        taken: dict[tuple[str, int], str] = {}
        for name, venue in self.venues.items():
            for key in ("listen", "http_listen"):
                port = layout.listen_port(venue.get(key))
                if port is None:
                    continue
                for host in self._on(venue):
                    taken.setdefault((host, port), f"venue `{name}`")
        for name, sess in self.sesses.items():
            port = sess.get("port")
            if not isinstance(port, int) or isinstance(port, bool):
                continue
            on = self._on(sess)
            clash = next((host for host in on if (host, port) in taken), None)
            if clash is not None:
                self.report(("sesses", name, "port"), "BS203",
                            f"port {port} is already used by {taken[clash, port]}{_on_host(clash)}",
                            "give each Sess its own port on a host, or drop `port` to use a unix socket")
            for host in on:
                taken.setdefault((host, port), f"sess `{name}`")

    def tls_per_port(self) -> None:
        # nginx's `ssl` belongs to the listening socket: every server on a port of a host is TLS, or none
        # is. A TLS Venue's plain-HTTP side (http_listen) is a plain server on its port.
        first: dict[tuple[str, int], tuple[str, bool]] = {}
        for name, venue in self.venues.items():
            sides = [("listen", "tls" in venue)]
            if "tls" in venue and venue.get("redirect_http") is True:
                sides.append(("http_listen", False))
            for key, tls in sides:
                port = layout.listen_port(venue.get(key))
                if port is None:
                    continue
                for host in self._on(venue):
                    other, other_tls = first.setdefault((host, port), (name, tls))
                    if other_tls != tls:
                        self.tls_clash(name, key, tls, port, other, host)
                        break

    def tls_clash(self, name: str, key: str, tls: bool, port: int, other: str, host: str) -> None:
        """Report a TLS/plain clash at a key of this Venue the file gives: the key itself, else what made
        it (`redirect_http` for the plain-HTTP side), else the Venue's table."""
        candidates = [key, "redirect_http"] if key == "http_listen" else [key]
        path: KeyPath = next((("venues", name, k) for k in candidates if k in self.venues[name]
                              and self.normalised.spelled(("venues", name, k))), ("venues", name))
        why = "" if path[-1] == key else (
            f" (the default `listen` of a Venue {'with' if tls else 'without'} `tls` is {port})" if key == "listen"
            else f" (a TLS Venue's plain-HTTP side, `http_listen`, defaults to port {port})")
        self.report(path, "BS208", f"port {port} is {'TLS' if not tls else 'plain HTTP'} for venue `{other}` "
                    f"but {'TLS' if tls else 'plain HTTP'} here{why}{_on_host(host)}",
                    "give TLS and plain-HTTP servers different ports: nginx's `ssl` belongs to the port (a TLS "
                    "Venue's `http_listen` is plain HTTP)"
                    + ("" if path != ("venues", name) else
                       f"; give venue `{name}` a `listen` of its own, or venue `{other}` another port"
                       if key == "listen" else
                       f"; give venue `{name}` an `http_listen` of its own, or `redirect_http = false`"))

    def plain_http_settings(self) -> None:
        for name, venue in self.venues.items():
            if "tls" in venue:
                continue
            for key in ("redirect_http", "http_listen", "hsts"):
                if key in venue and self.normalised.spelled(("venues", name, key)):
                    self.report(("venues", name, key), "BS216", f"`{key}` applies to a Venue with `tls` only",
                                "give the Venue `tls`, or drop the key")

    def certificates(self) -> None:
        host = self.data.get("host")
        acme_ca = isinstance(host, dict) and isinstance(host.get("acme"), dict)
        for name, venue in self.venues.items():
            tls = venue.get("tls")
            if not isinstance(tls, dict):
                continue
            files = [key for key in ("certificate", "key") if key in tls]
            if tls.get("acme") is True:  # anything else is the schema's error (BS105): no ACME here
                if files:
                    self.report(("venues", name, "tls", files[0]), "BS217",
                                f"`{files[0]}` beside `acme = true`: the certificate comes from ACME",
                                "keep `acme = true`, or drop it and give `certificate` and `key`")
                if not acme_ca:
                    self.report(("venues", name, "tls", "acme"), "BS218", "`acme = true` but [host.acme] is missing",
                                'add [host.acme] with the CA\'s `directory` (and an `email`), as the README shows')
                if venue.get("redirect_http") is False and self.normalised.spelled(("venues", name,
                                                                                     "redirect_http")):
                    self.report(("venues", name, "redirect_http"), "BS218",
                                "`redirect_http = false` with `acme = true`: the ACME challenge is answered on the "
                                "plain-HTTP side, which this turns off",
                                "drop `redirect_http = false`, or give certificate files instead of `acme`")
                elif venue.get("redirect_http") is False:  # defaulted: the TLS `listen` is port 80 itself
                    self.report(("venues", name, "listen"), "BS218",
                                f"`acme = true` with TLS on port {layout.HTTP_PORT}: the ACME challenge is answered "
                                "on a plain-HTTP side, which cannot share the TLS port",
                                "drop `listen` (TLS then listens on 443 and the plain-HTTP side on 80), or give "
                                "`http_listen` another port")
            elif len(files) < 2:
                missing = [key for key in ("certificate", "key") if key not in tls]
                self.report(("venues", name, "tls"), "BS217", f"`tls` lacks `{'` and `'.join(missing)}`",
                            "give both `certificate` and `key` files, or `acme = true`")

    def _venue_names(self) -> Iterator[tuple[KeyPath, str, str]]:
        """(key path, host name, venue) of every Venue domain and alias."""
        for name, venue in self.venues.items():
            aliases = venue.get("aliases")
            claims: list[tuple[KeyPath, Any]] = [(("venues", name, "domain"), venue.get("domain"))]
            claims += [(("venues", name, "aliases", i), a) for i, a in
                       enumerate(aliases if isinstance(aliases, list) else [])]
            yield from ((path, host, name) for path, host in claims if isinstance(host, str))

    def producer(self) -> None:
        host = self.data.get("host")
        host = host if isinstance(host, dict) else {}
        address6 = host.get("address6")
        if isinstance(address6, str):
            problem = dns.content_problem("AAAA", address6)
            if problem:
                self.report(("host", "address6"), "BS124", problem, "expected an IPv6 address such as 2001:db8::10")
        producer = self.data.get("producer")
        zones = producer.get("zones") if isinstance(producer, dict) else None
        if not isinstance(zones, dict):
            return
        served: dict[str, str] = {}  # absolute name -> venue, for the names inside a zone
        for claim, name, venue in self._venue_names():
            if dns.zone_of(name, zones) is None:
                continue
            served[dns.canonical(name)] = venue
            if not isinstance(host.get("address"), str) and not self.hosts:  # each of [hosts] has one
                self.report(claim, "BS220", f"`{name}` is inside a [producer] zone, but [host] has no `address` "
                            "for its A record", "set [host].address (and address6 for AAAA)")
        types: dict[str, dict[str, tuple[KeyPath, Any]]] = {}  # absolute name -> type -> (path, ttl)
        for zone, table in zones.items():
            records = table.get("records") if isinstance(table, dict) else None
            for i, record in enumerate(records if isinstance(records, list) else []):
                if not isinstance(record, dict) or not all(isinstance(record.get(k), str)
                                                           for k in ("name", "type", "content")):
                    continue
                path: KeyPath = ("producer", "zones", zone, "records", i)
                self.dns_record(zone, zones, record, path, served, types)

    def dns_record(self, zone: str, zones: dict[str, Any], record: dict[str, Any], path: KeyPath,
                   served: dict[str, str], types: dict[str, dict[str, tuple[KeyPath, Any]]]) -> None:
        rtype, content = record["type"], record["content"]
        name = dns.absolute(record["name"], zone)
        problem = dns.content_problem(rtype, content)
        if problem:
            self.report((*path, "content"), "BS127", problem, f"write the {rtype} record as PowerDNS reads it")
        if not dns.inside(name, zone):
            self.report((*path, "name"), "BS219", f"`{name}` is outside zone {zone}",
                        "give a name relative to the zone (www, @ for the zone itself), or one ending in "
                        f".{dns.canonical(zone)}")
            return
        if (owner := dns.zone_of(name, zones)) != zone:
            self.report((*path, "name"), "BS219", f"`{name}` belongs to the more specific zone {owner}",
                        f"declare it under [producer.zones.\"{owner}\"]")
            return
        if name in served and rtype in ("A", "AAAA", "CNAME"):
            self.report((*path, "type"), "BS219",
                        f"`{name}` is venue `{served[name]}`'s name: backstage gives it A/AAAA records itself, "
                        f"which a {rtype} record here would {'stand beside' if rtype == 'CNAME' else 'replace'}",
                        "drop this record, or take the name out of the Venue")
            return
        here = types.setdefault(name, {})
        if (rtype == "CNAME" and here) or ("CNAME" in here and rtype != "CNAME"):
            self.report((*path, "type"), "BS219", f"a CNAME at `{name}` beside other records there",
                        "a CNAME must be the only record at its name: drop one of them")
            return
        ttl = record.get("ttl")
        if rtype in here and here[rtype][1] != ttl:
            self.report((*path, "ttl"), "BS219", f"the {rtype} records at `{name}` give different TTLs",
                        "one RRset has one TTL: give them all the same `ttl`")
        here.setdefault(rtype, (path, ttl))

    def placement(self) -> None:
        """Where Sesses and Venues run, with [hosts]: every host of a Venue runs every Sess booked
        there (nginx routes to the local vassal), and a Sess runs only where the Sesses it needs run."""
        def placed(table: dict[str, dict[str, Any]], kind: str) -> dict[str, set[str]]:
            found = {}
            for name, entry in table.items():
                given = entry.get("hosts")
                if given is None:
                    continue
                if not self.hosts:
                    self.report((kind, name, "hosts"), "BS221", "`hosts` without [hosts]",
                                "declare the hosts as [hosts.<name>] tables, or drop `hosts`")
                    continue
                names = [h for h in given if isinstance(h, str)] if isinstance(given, list) else []
                for index, host in enumerate(names):
                    if host not in self.hosts:
                        self.report((kind, name, "hosts", index), "BS201", f"no host named `{host}`",
                                    _did_you_mean(host, sorted(self.hosts))
                                    or f"known hosts: {', '.join(sorted(self.hosts)[:10])}")
                found[name] = set(names)
            return found

        sesses, venues = placed(self.sesses, "sesses"), placed(self.venues, "venues")
        for name, gig in self.gigs.items():
            venue, sess = gig.get("venue"), gig.get("sess")
            if venue not in venues or sess not in sesses:
                continue
            missing = [h for h in self.hosts if h in venues[venue] - sesses[sess]]
            if missing:
                where = ("venues", venue, "hosts")
                self.report(where if self.normalised.spelled(where) else ("gigs", name, "sess"), "BS221",
                            f"venue `{venue}` is served on host {', '.join(missing)}, where sess `{sess}` (gig "
                            f"`{name}`) does not run", f"add {', '.join(missing)} to sess `{sess}`'s `hosts`, "
                            f"or take {'them' if len(missing) > 1 else 'it'} out of the Venue's `hosts`")
        for name, sess in self.sesses.items():
            needs = sess.get("needs")
            for index, needed in enumerate(needs if isinstance(needs, list) else []):
                if name in sesses and needed in sesses and (missing := [h for h in self.hosts if h in
                                                                        sesses[name] - sesses[needed]]):
                    self.report(("sesses", name, "needs", index), "BS221",
                                f"sess `{name}` runs on {', '.join(missing)}, where the sess it needs, "
                                f"`{needed}`, does not", f"run `{needed}` there too, or `{name}` only where "
                                f"`{needed}` runs")
        targets: dict[tuple[Any, Any], str] = {}
        for name, host in self.hosts.items():
            target = (host.get("ssh_host", host.get("address")), host.get("ssh_port", 22))
            if target in targets:
                self.report(("hosts", name, "ssh_host" if "ssh_host" in host else "address"), "BS128",
                            f"host `{name}` is reached at the same address as host `{targets[target]}`",
                            "give each host its own address (or ssh_host/ssh_port)")
            targets.setdefault(target, name)

    def settings_twice(self) -> None:
        for name, act in self.acts.items():
            for table in ("env", "secrets"):
                given = act.get(table)
                if "settings" in act and isinstance(given, dict) and "DJANGO_SETTINGS_MODULE" in given:
                    self.report(("acts", name, table, "DJANGO_SETTINGS_MODULE"), "BS113",
                                "DJANGO_SETTINGS_MODULE is already set by this Act's `settings`",
                                "keep one of the two")

    def secrets(self) -> None:
        for name, act in self.acts.items():
            env, secrets = act.get("env"), act.get("secrets")
            if not (isinstance(env, dict) and isinstance(secrets, dict)):
                continue
            for variable in sorted(set(env) & set(secrets)):
                self.report(("acts", name, "secrets", variable), "BS214",
                            f"{variable} is given in both `env` and `secrets`",
                            "keep one: `secrets` for a value read from a file on the host, `env` for one "
                            "written in the production")

    def data_dirs(self) -> None:
        production = self.data.get("production")
        managed = [(key, production[key]) for key in ("state_dir", "run_dir", "log_dir")
                   if isinstance(production, dict) and isinstance(production.get(key), str)]
        for name, act in self.acts.items():
            data = act.get("data")
            if not isinstance(data, str):
                continue
            for key, directory in managed:
                if _within(data, directory) or _within(directory, data):
                    self.report(("acts", name, "data"), "BS215",
                                f"`{data}` overlaps production.{key} `{directory}`, which backstage manages",
                                "give the Act's data a directory of its own, such as /var/lib/<site>")
            owners = {(s.get("uid"), s.get("gid")) for s in self._stages_of(name)}
            if len(owners) > 1:
                self.report(("acts", name, "data"), "BS215",
                            "the Act plays on Stages with different `uid`/`gid`, so its data directory "
                            "cannot belong to one of them",
                            "give those Stages the same uid and gid, or split the Act")

    def _stages_of(self, act: str) -> list[dict[str, Any]]:
        stages = []
        for sess in self.sesses.values():
            stage = self.stages.get(str(sess.get("stage")))
            if sess.get("act") == act and isinstance(stage, dict):
                stages.append(stage)
        return stages

    def locations(self) -> None:
        owners: dict[tuple[str, str], str] = {}
        for name, gig in self.gigs.items():
            venue, path = gig.get("venue"), gig.get("path")
            if not (isinstance(venue, str) and isinstance(path, str)):
                continue
            key = (venue, path)
            if key in owners:
                self.report(("gigs", name, "path"), "BS204",
                            f"venue `{venue}` already routes `{path}` to {owners[key]}",
                            "give this Gig another path or another Venue")
            owners.setdefault(key, f"gig `{name}`")
        for name, gig in self.gigs.items():
            venue, path = gig.get("venue"), gig.get("path")
            act = self.acts.get(str(self.sesses.get(str(gig.get("sess")), {}).get("act")), {})
            if not (isinstance(venue, str) and isinstance(path, str)):
                continue
            for prefix in _static_prefixes(act):
                key = (venue, layout.url_join(path, prefix))
                if key in owners:
                    self.report(("gigs", name), "BS204",
                                f"static files of this Gig would be served at `{key[1]}`, which venue `{venue}` "
                                f"already routes to {owners[key]}",
                                "change the Act's static prefix or the Gig's path")
                owners.setdefault(key, f"gig `{name}`")

    def needs_cycles(self) -> None:
        for cycle in graphs.needs_cycles(self.graph):
            first = cycle[0]
            needs = self.sesses[first]["needs"]
            self.report(("sesses", first, "needs", needs.index(cycle[1 % len(cycle)])), "BS205",
                        "`needs` forms a cycle: " + " -> ".join([*cycle, cycle[0]]),
                        "a Sess cannot need itself, directly or through others; remove one edge")

    def static_slashes(self) -> None:
        for name, act in self.acts.items():
            static = act.get("static")
            for prefix, directory in (static.items() if isinstance(static, dict) else []):
                if (isinstance(directory, str) and prefix.endswith("/") and directory.startswith("/")
                        and not directory.endswith("/")):
                    self.report(("acts", name, "static", prefix), "BS206",
                                f"static prefix `{prefix}` ends with '/' but directory `{directory}` does not",
                                f"write `{directory}/`: with nginx `alias`, a mismatch serves files outside "
                                "the directory (GET /static../secret)")

    def act_code(self) -> None:
        for name, act in self.acts.items():
            given = [key for key in ("path", "source") if key in act]
            if len(given) != 1:
                self.report(("acts", name, given[1]) if given else ("acts", name), "BS209",
                            "both `path` and `source` are given" if given else "neither `path` nor `source` is given",
                            "`path`: code managed outside backstage, used in place; `source`: a directory copied "
                            "into the artifact and run from the store. Keep one")
            if "exclude" in act and "source" not in act:
                self.report(("acts", name, "exclude"), "BS209", "`exclude` applies to `source` only",
                            "drop `exclude`, or give `source`")

    def stage_kinds(self) -> None:
        for name, stage in self.stages.items():
            given = [key for key in _STAGE_KINDS if key in stage]
            if given == ["virtualenv", "requirements"]:
                self.report(("stages", name, "requirements"), "BS210",
                            "`virtualenv` and `requirements` together: version 2 builds a Stage from its "
                            "requirements itself",
                            "drop `virtualenv` to let backstage build the Stage in its store (the version 1 "
                            "meaning of `requirements`, a file written for you to install, is gone), or drop "
                            "`requirements` to keep using the virtualenv as it is")
            elif len(given) != 1:
                self.report(("stages", name, given[1]) if given else ("stages", name), "BS210",
                            f"{' and '.join(f'`{g}`' for g in given)} together" if given else
                            "none of `virtualenv`, `lock` and `requirements` is given",
                            "`virtualenv`: an environment managed outside backstage; `lock` or `requirements`: "
                            "backstage builds the Stage. Keep exactly one")
            if "python" in stage and "virtualenv" in stage:
                self.report(("stages", name, "python"), "BS210", "`python` applies to Stages backstage builds",
                            "drop `python`: a `virtualenv` brings its own interpreter")

    def release_steps(self) -> None:
        for name, act in self.acts.items():
            django = act.get("django")
            if not isinstance(django, dict):
                continue
            if "collectstatic" in django and "path" in act:
                self.report(("acts", name, "django", "collectstatic"), "BS213",
                            "collectstatic needs the Act's code in the store (`source`)",
                            "give `source` instead of `path`, or serve the files with `static`")
            release = django.get("release")
            if not self.normalised.spelled(("acts", name, "django", "release")):
                continue  # the default, built from `manage`, whose own rule (BS110) is the one to report
            for index, argv in enumerate(release if isinstance(release, list) else []):
                first = argv[0] if isinstance(argv, list) and argv and isinstance(argv[0], str) else None
                if first is not None and (first.startswith("/") or ".." in first.split("/") or first == ""):
                    self.report(("acts", name, "django", "release", index, 0), "BS213",
                                f"`{first}`: a release command runs from the Act's code or the Stage's bin/",
                                "give a script relative to the Act's code (such as manage.py) or a command the "
                                "Stage installs (such as django-admin)")

    def socket_lengths(self) -> None:
        production = self.data.get("production")
        if not isinstance(production, dict) or not isinstance(production.get("name"), str):
            return
        prod = production["name"]
        run_dir = production.get("run_dir")
        if not isinstance(run_dir, str):
            return
        for name, sess in self.sesses.items():
            if "port" in sess:
                continue
            path = layout.socket_path(run_dir, prod, name, "0" * layout.HASH_LENGTH)
            if len(path.encode()) > layout.MAX_SOCKET_PATH:
                self.report(("sesses", name), "BS207",
                            f"its socket path would be {len(path.encode())} bytes; unix sockets allow "
                            f"{layout.MAX_SOCKET_PATH}",
                            "shorten production.run_dir, the production name or the Sess name, or give it a port")



def _on_host(host: str) -> str:
    return f" on host `{host}`" if host else ""


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# Keys a version 1 Stage could combine and version 2 cannot: the hint names what to drop.
_STAGE_KINDS = ("virtualenv", "lock", "requirements")
