"""Hypothesis strategies for production files, drawn from the schema's own patterns.

`productions()` draws whole productions meant to pass `backstage.check.check`: every string comes
from the schema's regular expression for its field (mixed with a few realistic values), and the
whole-production rules (references, unique claims, ports, no `needs` cycle, static slashes) are
respected by construction. The rare draw that still fails check() is rejected by the test.

`to_toml()` writes a production as TOML text; it quotes every key and string, so any Unicode text
(control characters included) round-trips through tomllib.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from functools import cache
from typing import Any

import jsonschema
from backstage.phases import schema
from hypothesis import strategies as st

Data = dict[str, Any]



@cache
def defs() -> dict[str, Any]:
    return schema.document()["$defs"]


@cache
def pattern(*where: str | int) -> str:
    node: Any = schema.document()
    for key in where:
        node = node[key]
    return str(node["pattern"])


def matches(*where: str | int) -> Callable[[str], bool]:
    compiled = re.compile(pattern(*where))
    return lambda text: compiled.search(text) is not None


@cache
def regex(*where: str | int, max_size: int | None = None) -> st.SearchStrategy[str]:
    strategy = st.from_regex(pattern(*where), fullmatch=True)
    if max_size is not None:
        strategy = strategy.filter(lambda s: len(s) <= max_size)
    return strategy


# ------------------------------------------------------------------------------------------ scalars

@cache
def names() -> st.SearchStrategy[str]:
    """Table keys: mostly short (socket paths are limited to 107 bytes), sometimes anything legal."""
    return st.one_of(
        st.sampled_from(["blog", "api", "main", "a", "x-1", "web-2", "b", "c", "d", "e", "f", "web", "z9"]),
        mix(st.from_regex(r"[a-z][a-z0-9-]{0,5}", fullmatch=True), regex("$defs", "name")),
    )


@cache
def production_names() -> st.SearchStrategy[str]:
    return mix(st.sampled_from(["jazz", "pp", "a-b", "x0"]),
               st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,4}[a-z0-9]", fullmatch=True),
                         regex("properties", "production", "properties", "name")))


_NICE_PATHS = ["/", "/srv/apps/blog", "/srv/venvs/main", "/a", "/x/y.z", "/p-1/q_2", "/ünï/cödé", "/a#b",
               "/a(b)", "/a[1]", "/a*b", "/a?b", "/a&b|c", "/a<b>", "/a,b=c:d@e", "/~x", "/a!b", "/a@b",
               "/a)b", "/#", "/a/#b", "/.a", "/a..b", "/日本"]


@cache
def paths() -> st.SearchStrategy[str]:
    return mix(st.sampled_from(_NICE_PATHS), regex("$defs", "path", max_size=200))


@cache
def short_paths() -> st.SearchStrategy[str]:
    """Paths short enough for a run_dir: a socket path must fit in 107 bytes."""
    return mix(st.sampled_from(["/run/b", "/r", "/", "/tmp/é", "/s#", "/a(b)"]),
               regex("$defs", "path", max_size=24))


@cache
def directories() -> st.SearchStrategy[str]:
    """Static directories: a path that ends with '/' (BS206)."""
    return paths().map(lambda p: p if p.endswith("/") else p + "/").filter(matches("$defs", "path"))


@cache
def accounts() -> st.SearchStrategy[str]:
    return mix(st.sampled_from(["www-data", "nobody", "0", "app_user"]), regex("$defs", "account"))


@cache
def domains() -> st.SearchStrategy[str]:
    nice = st.sampled_from(["example.com", "www.example.com", "a", "xn--bcher-kva.example", "1.2.3.4",
                            "a-b.c-d", "0", "localhost"])
    # Names of 47+ characters on a shared port need server_names_hash_bucket_size 128 in the host's
    # nginx.conf (README, "Long host names"); the stub main config here has nginx's default.
    drawn = regex("$defs", "domain").filter(lambda d: len(d) <= 40)
    return mix(nice, drawn)


@cache
def url_prefixes() -> st.SearchStrategy[str]:
    return mix(st.sampled_from(["/", "/api/", "/a/b/", "/static/", "/~u/", "/a.b/", "/@x/", "/a:b/",
                                "/a-b/", "/!/", "/*/", "/+,=/", "/media/", "/x/y/z/"]),
               regex("$defs", "url-prefix", max_size=1024))


@cache
def listens() -> st.SearchStrategy[int | str]:
    return st.one_of(st.sampled_from([80, 443, 8080, "127.0.0.1:8080", "0.0.0.0:80", "127.0.0.2:443"]),
                     st.integers(1, 65535), regex("$defs", "venue", "properties", "listen", "anyOf", 1))


@cache
def env_names() -> st.SearchStrategy[str]:
    drawn = st.one_of(st.sampled_from(["BLOG_THEME", "_", "A1", "PATH"]),
                      st.from_regex(r"[A-Z_][A-Z0-9_]{0,127}", fullmatch=True))
    # Names the compiler sets itself are exercised by test_declared_env_is_not_shadowed.
    return drawn.filter(lambda n: n != "DJANGO_SETTINGS_MODULE" and not n.startswith("BACKSTAGE_"))


@cache
def env_values() -> st.SearchStrategy[str]:
    nice = st.sampled_from(["dark", "", "Hello; #1 \"live\"", "a=b", "$HOME", "${X}", "a$", "@x", "日本",
                            "x\\ny", "'q'", "[]", "a  b", "#", ";", "$", "@"])
    return mix(nice, regex("$defs", "env-value", max_size=8192))


@cache
def _option_name_ok() -> Callable[[str], bool]:
    """The schema's propertyNames rule for pass-through options, as one fast predicate."""
    rule = defs()["sess"]["properties"]["uwsgi"]["propertyNames"]
    validator = jsonschema.Draft202012Validator(rule)
    return cache(validator.is_valid)


@cache
def mix(nice: st.SearchStrategy[Any], drawn: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly realistic values (cheap to draw), one time in four anything the schema's regex allows."""
    return st.one_of(nice, nice, nice, drawn)


@cache
def option_names() -> st.SearchStrategy[str]:
    nice = st.sampled_from(["max-requests", "harakiri", "buffer-size", "lazy-apps", "enable-threads",
                            "thunder-lock", "post-buffering", "cheaper", "reload-on-rss", "single-interpreter"])
    drawn = st.from_regex(r"[a-z][a-z0-9-]{0,63}", fullmatch=True)
    return mix(nice, drawn).filter(lambda n: _option_name_ok()(n)).filter(
        lambda n: n not in ("processes", "threads"))


@cache
def option_values() -> st.SearchStrategy[bool | int | str]:
    strings = mix(st.sampled_from(["spare", "a;b", "#x", "x # y", "\"q\"", "a=b", "日本", "$HOME", "a$",
                                         "[x]", "x\\n"]),
                  regex("$defs", "uwsgi-value", max_size=4096))
    return st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), strings)


@cache
def counts() -> st.SearchStrategy[int]:
    return st.integers(1, 1024)


@cache
def python_names(field: str) -> st.SearchStrategy[str]:
    return mix(st.sampled_from(["app", "blog.wsgi", "a.b.c", "_x"]),
               regex("$defs", "act", "properties", field, max_size=512))


@cache
def wsgis() -> st.SearchStrategy[str]:
    return mix(st.sampled_from(["blog.wsgi:application", "api.wsgi", "m:make_app", "_:_"]),
               regex("$defs", "act", "properties", "wsgi", max_size=512))


@cache
def requirements() -> st.SearchStrategy[str]:
    return mix(st.sampled_from(["Django>=5.2,<6", "psycopg[binary]>=3.2", "a", "x==1 ; python_version>'3'"]),
               st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._<>=!~,\[\] -]{0,40}[A-Za-z0-9\]]", fullmatch=True))


@cache
def healths() -> st.SearchStrategy[str]:
    return mix(st.sampled_from(["/", "/healthz", "/a?b=1&c=%20"]),
               regex("$defs", "act", "properties", "health", max_size=1024))


# ------------------------------------------------------------------------------------------ productions

def _uwsgi_table(draw: st.DrawFn) -> dict[str, bool | int | str]:
    table: dict[str, bool | int | str] = draw(st.dictionaries(option_names(), option_values(), max_size=3))
    for key in ("processes", "threads"):
        if draw(st.integers(0, 5)) == 0:
            table[key] = draw(counts())
    return table


@st.composite
def productions(draw: st.DrawFn, tls: tuple[str, str]) -> Data:
    """A production meant to pass check(); `tls` is the (certificate, key) every TLS venue uses."""
    name = draw(production_names())
    head: Data = {"name": name}
    for key, strategy in (("state_dir", paths()), ("run_dir", short_paths()), ("log_dir", paths())):
        if draw(st.booleans()):
            head[key] = draw(strategy)
    data: Data = {"production": head}

    if draw(st.booleans()):
        host: Data = {}
        if draw(st.booleans()):
            host["nginx_user"] = draw(accounts())
        if draw(st.booleans()):
            host["vassals_dir"] = draw(paths())
        if draw(st.booleans()):
            host["nginx_dir"] = draw(paths())
        if draw(st.booleans()):
            host["emperor_stats"] = draw(st.sampled_from(["", "127.0.0.1:9191"]))
        data["host"] = host

    stage_names = draw(st.lists(names(), min_size=1, max_size=2, unique=True))
    stages: Data = {}
    for stage_name in stage_names:
        # Version 2: an environment managed outside backstage, or one it builds from requirements.
        stage: Data = {}
        if draw(st.booleans()):
            stage["virtualenv"] = draw(paths())
        else:
            stage["requirements"] = draw(st.lists(requirements(), max_size=3, unique=True))
        for key in ("uid", "gid"):
            if draw(st.booleans()):
                stage[key] = draw(accounts())
        if draw(st.booleans()):
            stage["uwsgi"] = _uwsgi_table(draw)
        stages[stage_name] = stage
    data["stages"] = stages

    act_names = draw(st.lists(names(), min_size=1, max_size=2, unique=True))
    acts: Data = {}
    for act_name in act_names:
        act: Data = {"wsgi": draw(wsgis()), "path": draw(paths())}
        if draw(st.booleans()):
            act["settings"] = draw(python_names("settings"))
        if draw(st.booleans()):
            act["env"] = draw(st.dictionaries(env_names(), env_values(), max_size=3))
        if draw(st.booleans()):
            act["static"] = draw(st.dictionaries(url_prefixes(), directories(), max_size=3))
        if draw(st.booleans()):
            act["health"] = draw(healths())
        acts[act_name] = act
    data["acts"] = acts

    sess_names = draw(st.lists(names(), max_size=3, unique=True))
    sesses: Data = {}
    ports = st.integers(1024, 65535)
    for index, sess_name in enumerate(sess_names):
        sess: Data = {"act": draw(st.sampled_from(act_names)), "stage": draw(st.sampled_from(stage_names))}
        for key in ("processes", "threads"):
            if draw(st.booleans()):
                sess[key] = draw(counts())
        earlier = sess_names[:index]  # needs only point backwards: no cycle
        if earlier and draw(st.booleans()):
            sess["needs"] = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True))
        if draw(st.booleans()):
            sess["uwsgi"] = _uwsgi_table(draw)
        if draw(st.booleans()):
            sess["protocol"] = draw(st.sampled_from(["uwsgi", "http"]))
        if draw(st.integers(0, 2)) == 0:
            sess["port"] = draw(ports)
        sesses[sess_name] = sess
    data["sesses"] = sesses

    venue_names = draw(st.lists(names(), max_size=3, unique=True))
    hosts = draw(st.lists(domains(), min_size=len(venue_names), max_size=len(venue_names) * 2, unique=True))
    venues: Data = {}
    for index, venue_name in enumerate(venue_names):
        venue: Data = {"domain": hosts[index]}
        share = hosts[len(venue_names):][index::len(venue_names)]
        if share:
            venue["aliases"] = share
        if draw(st.booleans()):
            venue["tls"] = {"certificate": tls[0], "key": tls[1]}
        if draw(st.booleans()):
            venue["listen"] = draw(listens())
        if "tls" in venue and draw(st.integers(0, 3)) == 0:
            venue["hsts"] = draw(st.sampled_from([0, 300, 31536000]))
        if draw(st.integers(0, 3)) == 0:
            venue["client_max_body_size"] = draw(st.sampled_from(["0", "512k", "10m", "1G", "100"]))
        if draw(st.integers(0, 3)) == 0:
            venue["read_timeout"] = draw(st.integers(1, 86400))
        venues[venue_name] = venue
    _separate_tls_ports(venues)  # TLS and plain venues on one port are refused (BS208): keep most valid
    data["venues"] = venues

    gigs: Data = {}
    if venue_names and sess_names:
        for gig_name in draw(st.lists(names(), max_size=4, unique=True)):
            gig: Data = {"venue": draw(st.sampled_from(venue_names)), "sess": draw(st.sampled_from(sess_names))}
            if draw(st.integers(0, 3)):
                gig["path"] = draw(url_prefixes())
            if draw(st.integers(0, 4)) == 0:
                gig["client_max_body_size"] = draw(st.sampled_from(["2m", "64k"]))
            if draw(st.integers(0, 4)) == 0:
                gig["read_timeout"] = draw(st.integers(1, 3600))
            gigs[gig_name] = gig
    data["gigs"] = gigs
    return data


def _listen_port(venue: Data) -> int:
    listen = venue.get("listen", 443 if "tls" in venue else 80)
    return listen if isinstance(listen, int) else int(str(listen).rsplit(":", 1)[1])


def _separate_tls_ports(venues: Data) -> None:
    tls_ports = {_listen_port(v) for v in venues.values() if "tls" in v}
    for venue in venues.values():
        if "tls" not in venue and _listen_port(venue) in tls_ports:
            venue["tls"] = next(v["tls"] for v in venues.values() if "tls" in v)
    for venue in venues.values():  # a TLS Venue's plain side listens on 80 unless told otherwise
        if "tls" in venue and 80 in tls_ports:
            venue["redirect_http"] = False


# ------------------------------------------------------------------------------------------ TOML

def toml_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value).__name__)


def to_toml(data: Data) -> str:
    """Top-level tables as [headers]; named tables as [kind."name"]; deeper tables inline."""
    lines: list[str] = []
    for top, table in data.items():
        if top in ("production", "host"):
            lines.append(f"[{toml_string(top)}]")
            lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items()]
            lines.append("")
            continue
        if not table:
            lines += [f"[{toml_string(top)}]", ""]
            continue
        for name, item in table.items():
            lines.append(f"[{toml_string(top)}.{toml_string(name)}]")
            lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in item.items()]
            lines.append("")
    return "\n".join(lines)


def plain(data: Data) -> str:
    """A short, stable rendering of a production for failure messages."""
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def clone(data: Data) -> Data:
    return copy.deepcopy(data)
