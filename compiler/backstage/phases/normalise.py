"""Phase 2, normalise: every default filled in, once, before anything reads the data.

The schema states the defaults (`default` on a property); a few depend on other values and are
derived here, each in one function: the three directories (from the production's name), a Venue's
`listen` (80, or 443 with `tls`), a TLS Venue's `redirect_http` (true, unless its TLS `listen` is
port 80 itself) and `http_listen` (80), a built Stage's `python` (python3), a Sess's `processes` and
`threads` (its `[uwsgi]` table, else its Stage's, else the schema's default), a Django Act's `release`
(Django's own `check --deploy` when the Act has `settings` and the file gives its [acts.X.django]
table), and with [hosts] each Sess's and Venue's `hosts`. check and model read the result and state no
default.

The data may still be invalid here: a default is only filled in where its table is a table, and a
derived one only from values of the right type; check then reports what is wrong.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import layout, schema
from .load import KeyPath, Loaded

Data = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Normalised:
    loaded: Loaded
    data: Data
    defaulted: frozenset[KeyPath]  # the key paths this phase filled in, not the file

    def spelled(self, path: KeyPath) -> bool:
        """Whether the file itself gives this key."""
        return path not in self.defaulted


def normalise(loaded: Loaded) -> Normalised:
    """Fill the defaults into the loaded data, in place: the pipeline owns it, and copying a large
    production would cost more than the rest of this phase."""
    data = loaded.data
    filled: set[KeyPath] = set()
    for table, key, derive in _DERIVED:
        for path, entry in _entries(data, table):
            if isinstance(entry, dict) and key not in entry:
                value = derive(data, entry)
                if value is not None:
                    entry[key] = value
                    filled.add((*path, key))
    filled |= set(_schema_defaults(data, schema.inlined(), ()))
    filled |= set(_deploy_check(data, filled))
    filled |= set(_placement(data))
    return Normalised(loaded, data, frozenset(filled))


def _schema_defaults(node: Any, rule: dict[str, Any], path: KeyPath) -> Iterator[KeyPath]:
    if not isinstance(node, dict):
        return
    steps, entries = _steps(rule)
    for key, sub, default, optional_table, descend in steps:
        if key not in node:
            if default is not _NONE:
                node[key] = copy.deepcopy(default) if isinstance(default, list | dict) else default
                yield (*path, key)
            elif optional_table:
                node[key] = {}  # an optional table left out, such as [host]: its keys' defaults apply (not
                # [host.acme], which exists only when given)
                yield (*path, key)
                yield from _schema_defaults(node[key], sub, (*path, key))
        elif descend:
            yield from _schema_defaults(node[key], sub, (*path, key))
    if entries is not None:
        properties = rule.get("properties", {})
        for key, value in node.items():
            if key not in properties:
                yield from _schema_defaults(value, entries, (*path, key))


_NONE = object()
Step = tuple[str, dict[str, Any], Any, bool, bool]
_STEPS: dict[int, tuple[dict[str, Any], tuple[Step, ...], dict[str, Any] | None]] = {}


def _steps(rule: dict[str, Any]) -> tuple[tuple[Step, ...], dict[str, Any] | None]:
    """What the walk does at each key of a rule, worked out once per rule of the (cached) schema:
    (key, its rule, its default, whether it is an optional table with defaults, whether to go in)."""
    kept = _STEPS.get(id(rule))
    if kept is None or kept[0] is not rule:
        steps = []
        for key, sub in rule.get("properties", {}).items():
            optional_table = (key not in rule.get("required", ()) and _has_defaults(sub)
                              and not sub.get("required"))
            steps.append((key, sub, sub.get("default", _NONE), optional_table, _goes_deeper(sub)))
        entries = rule.get("additionalProperties")
        object_entries = entries if isinstance(entries, dict) and entries.get("type") == "object" else None
        kept = _STEPS[id(rule)] = (rule, tuple(steps), object_entries)
    return kept[1], kept[2]


def _goes_deeper(rule: dict[str, Any]) -> bool:
    """Whether anything below this rule has a default to fill."""
    if _has_defaults(rule):
        return True
    entries = rule.get("additionalProperties")
    return (any(_goes_deeper(sub) for sub in rule.get("properties", {}).values() if isinstance(sub, dict))
            or (isinstance(entries, dict) and entries.get("type") == "object" and _goes_deeper(entries)))


def _deploy_check(data: Data, filled: set[KeyPath]) -> Iterator[KeyPath]:
    """A Django Act (`settings` and an [acts.X.django] table the file gives) with no `release` runs
    `manage.py check --deploy` as its release step: its warnings are printed, its errors fail the apply.
    `release = []` runs none. An Act without its own django table (every version 1 Act, whose code may
    have no manage.py) has no release steps: the empty table the schema's defaults put there does not
    count (`filled`)."""
    for path, act in _entries(data, "acts"):
        django = act.get("django") if isinstance(act, dict) else None
        if (isinstance(django, dict) and (*path, "django") not in filled and "release" not in django
                and isinstance(act.get("settings"), str) and isinstance(django.get("manage"), str)):
            django["release"] = [[django["manage"], "check", "--deploy"]]
            yield (*path, "django", "release")


def _placement(data: Data) -> Iterator[KeyPath]:
    """With [hosts]: a Sess's `hosts` (every host) and a Venue's (every host that runs a Sess booked at
    it, in [hosts] order; every host for a Venue without Gigs)."""
    hosts = data.get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        return
    every = list(hosts)
    for path, sess in _entries(data, "sesses"):
        if isinstance(sess, dict) and "hosts" not in sess:
            sess["hosts"] = list(every)
            yield (*path, "hosts")
    raw = data.get("sesses")
    sesses: Data = raw if isinstance(raw, dict) else {}
    booked: dict[str, set[str]] = {}
    for _, gig in _entries(data, "gigs"):
        if not isinstance(gig, dict) or not isinstance(gig.get("venue"), str):
            continue
        name = gig.get("sess")
        sess = sesses.get(name) if isinstance(name, str) else None
        placed = sess.get("hosts") if isinstance(sess, dict) else None
        booked.setdefault(gig["venue"], set()).update(h for h in placed or [] if isinstance(h, str))
    for path, venue in _entries(data, "venues"):
        if isinstance(venue, dict) and "hosts" not in venue:
            on = booked.get(str(path[1]))
            venue["hosts"] = [h for h in every if h in on] if on is not None else list(every)
            yield (*path, "hosts")


def _has_defaults(rule: dict[str, Any]) -> bool:
    return any("default" in sub for sub in rule.get("properties", {}).values())


def _entries(data: Data, table: str | None) -> Iterator[tuple[KeyPath, Any]]:
    if table is None:
        yield ("production",), data.get("production")
        return
    value = data.get(table)
    if isinstance(value, dict):
        for name, entry in value.items():
            yield (table, name), entry


def _dir(kind: str) -> Callable[[Data, Data], str | None]:
    def derive(data: Data, production: Data) -> str | None:
        name = production.get("name")
        return layout.default_dirs(name)[kind] if isinstance(name, str) else None
    return derive


def _python(data: Data, stage: Data) -> str | None:
    """The interpreter a Stage backstage builds is made from; a virtualenv brings its own."""
    built = ("lock" in stage or "requirements" in stage) and "virtualenv" not in stage
    return "python3" if built else None


def _listen(data: Data, venue: Data) -> int:
    return layout.default_listen(tls="tls" in venue)


def _redirect_http(data: Data, venue: Data) -> bool | None:
    """A TLS Venue's plain-HTTP side redirects to https unless told otherwise, and exists unless the
    Venue's TLS `listen` is itself on port 80 (where the side would default to) and no `http_listen`
    names another port: nginx's `ssl` belongs to a port, so one port cannot be both (the contract's
    version 1 example, `listen = 80` with `tls`, is a TLS server on port 80 and nothing else)."""
    if "tls" not in venue:
        return None
    return "http_listen" in venue or layout.listen_port(venue.get("listen")) != layout.HTTP_PORT


def _http_listen(data: Data, venue: Data) -> int | None:
    return layout.HTTP_PORT if "tls" in venue and venue.get("redirect_http", True) is True else None


def _count(key: str) -> Callable[[Data, Data], Any]:
    """A Sess's processes or threads: its own [uwsgi] table's, else its Stage's, else the schema's."""
    def derive(data: Data, sess: Data) -> Any:
        stages = data.get("stages")
        stage = stages.get(sess.get("stage")) if isinstance(stages, dict) and isinstance(sess.get("stage"), str) \
            else None
        for table in (sess.get("uwsgi"), stage.get("uwsgi") if isinstance(stage, dict) else None):
            if isinstance(table, dict) and key in table:
                value = table[key]
                # uWSGI reads "4" as 4; anything else is left for check to refuse at this Sess.
                return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else value
        default: int = schema.inlined()["properties"]["sesses"]["additionalProperties"]["properties"][key]["default"]
        return default
    return derive


_DERIVED: tuple[tuple[str | None, str, Callable[[Data, Data], Any]], ...] = (
    (None, "state_dir", _dir("state_dir")),
    (None, "run_dir", _dir("run_dir")),
    (None, "log_dir", _dir("log_dir")),
    ("venues", "listen", _listen),
    ("venues", "redirect_http", _redirect_http),
    ("venues", "http_listen", _http_listen),
    ("stages", "python", _python),
    ("sesses", "processes", _count("processes")),
    ("sesses", "threads", _count("threads")),
)
