"""Escaping per slot: a model built directly, bypassing check, with hostile values in every slot, renders
to exactly the declared directives and options, or rendering raises UnsafeValue. Never anything else."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from backstage.phases import graph, render
from backstage.phases.model import Act, Gig, Host, Production, Sess, Stage, Tls, Venue
from backstage.targets import UnsafeValue
from parse_back import ParseError, parse_nginx, parse_uwsgi_ini

LITERAL_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HOSTILE = ["~.*", "*.example.org", ".example.org", "_", "a b", "a;b", "a}b", "a{b", "$host", "a\nb", "", "\"q\"",
           "a#b", "x\\", "@named", "=/x", "~ ^/", "/a b/", "/a;b/", "/a{b/", "/$x/", "/a\nb/", "x/", "/a\"b/",
           "/ok/", "A=B", "A B", "A\nB", "x\nmaster = false", "%d", "$(id)", "@(file)", " x", "x ", "x;y",
           "/srv/x\nuid = root", "/etc/x; include /etc/passwd", "root\nuid = 0", "\u2028", "-e", "ok"]


def base(tls: bool = False) -> Production:
    return Production(
        name="club", state_dir="/var/lib/backstage/club", run_dir="/run/backstage/club",
        log_dir="/var/log/backstage/club",
        host=Host("/etc/uwsgi-emperor/vassals", "/etc/nginx/sites-enabled", ("nginx",), "www-data", "", "uwsgi"),
        stages=MappingProxyType({"main": Stage("main", "/srv/venv", (), None, None, None, None,
                                               MappingProxyType({}))}),
        acts=MappingProxyType({"web": Act("web", "web.wsgi", "application", "/srv/web", None, None,
                                          (("THEME", "dark"),), (), None, (("/static/", "/srv/web/static/"),), "/",
                                          None)}),
        sesses=MappingProxyType({"web": Sess("web", "web", "main", 1, 1, (), (("harakiri", 30),), "uwsgi", None)}),
        venues=MappingProxyType({"www": Venue("www", "example.org", ("www.example.org",), "80",
                                              Tls("/etc/ssl/c.pem", "/etc/ssl/k.pem") if tls else None,
                                              tls, "8080" if tls else None, 0, None, None)}),
        gigs=MappingProxyType({"site": Gig("site", "www", "web", "/api/", None, None)}),
    )


def graph_of(production: Production) -> Any:
    return graph.build({
        "acts": {n: {} for n in production.acts}, "stages": {n: {} for n in production.stages},
        "venues": {n: {} for n in production.venues},
        "sesses": {n: {"act": s.act, "stage": s.stage, "needs": list(s.needs)} for n, s in production.sesses.items()},
        "gigs": {n: {"sess": g.sess, "venue": g.venue} for n, g in production.gigs.items()},
    })


def replace(production: Production, table: str, name: str, **changes: Any) -> Production:
    entries = dict(getattr(production, table))
    entries[name] = dataclasses.replace(entries[name], **changes)
    return dataclasses.replace(production, **{table: MappingProxyType(entries)})


Slot = Callable[[str], Production]
SLOTS: dict[str, Slot] = {
    "venue.domain": lambda v: replace(base(), "venues", "www", domain=v),
    "venue.alias": lambda v: replace(base(), "venues", "www", aliases=("www.example.org", v)),
    "venue.listen": lambda v: replace(base(), "venues", "www", listen=v),
    "tls.certificate": lambda v: replace(base(tls=True), "venues", "www", tls=Tls(v, "/etc/ssl/k.pem")),
    "gig.path": lambda v: replace(base(), "gigs", "site", path=v),
    "act.static.prefix": lambda v: replace(base(), "acts", "web", static=((v, "/srv/web/static/"),)),
    "act.static.directory": lambda v: replace(base(), "acts", "web", static=(("/static/", v),)),
    "act.path": lambda v: replace(base(), "acts", "web", path=v),
    "act.module": lambda v: replace(base(), "acts", "web", module=v),
    "act.env.name": lambda v: replace(base(), "acts", "web", env=((v, "x"),)),
    "act.env.value": lambda v: replace(base(), "acts", "web", env=(("THEME", v),)),
    "act.secret.name": lambda v: replace(base(), "acts", "web", secrets=((v, "/etc/web/key"),)),
    "act.settings": lambda v: replace(base(), "acts", "web", settings=v),
    "stage.virtualenv": lambda v: replace(base(), "stages", "main", virtualenv=v),
    "stage.uid": lambda v: replace(base(), "stages", "main", uid=v),
    "stage.requirement": lambda v: replace(base(), "stages", "main", virtualenv=None, python="python3",
                                           requirements=(v,)),
    "stage.python": lambda v: replace(base(), "stages", "main", virtualenv=None, python=v, requirements=("six",)),
    "sess.option.name": lambda v: replace(base(), "sesses", "web", uwsgi=((v, 30),)),
    "sess.option.value": lambda v: replace(base(), "sesses", "web", uwsgi=(("harakiri", v),)),
    "host.nginx_user": lambda v: dataclasses.replace(base(), host=dataclasses.replace(base().host, nginx_user=v)),
    "production.log_dir": lambda v: dataclasses.replace(base(), log_dir=v),
}


def declared_server(production: Production) -> dict[str, Any]:
    venue = production.venues["www"]
    gig = production.gigs["site"]
    act = production.acts["web"]
    locations = [gig.path, *(gig.path + prefix.removeprefix("/") for prefix, _ in act.static)]
    if "/" not in locations:
        locations.append("/")
    return {"listen": venue.listen, "server_name": (venue.domain, *venue.aliases),
            "locations": sorted(locations),
            "aliases": sorted(d for _, d in act.static),
            "certificate": venue.tls.certificate if venue.tls else None}


def check_nginx(text: str, production: Production) -> None:
    *plain, server = parse_nginx(text)
    want = declared_server(production)
    venue = production.venues["www"]
    if venue.tls and venue.redirect_http:
        (redirect,) = plain
        assert [d.args for d in redirect.find("listen")] == [(venue.http_listen,)]
        assert [d.args for d in redirect.find("server_name")] == [want["server_name"]]
        assert sorted(d.args for d in redirect.find("location")) == [("/",), ("/.well-known/acme-challenge/",)]
    else:
        assert not plain
    assert server.name == "server"
    assert [d.args for d in server.find("server_name")] == [want["server_name"]]
    assert [d.args for d in server.find("listen")] == [(want["listen"], "ssl", "http2") if venue.tls else
                                                       (want["listen"],)]
    assert sorted(d.args for d in server.find("location")) == [(p,) for p in want["locations"]]
    # How nginx reads them: a literal name (not a regex '~', a wildcard or '_'), a prefix location (not
    # a modifier '=' '~' or a named location '@').
    assert all(LITERAL_HOST.fullmatch(name) for d in server.find("server_name") for name in d.args)
    assert all(d.args[0].startswith("/") for d in server.find("location"))
    aliases = [d.args for loc in server.find("location") for d in loc.find("alias")]
    assert sorted(aliases) == [(a,) for a in want["aliases"]]
    if want["certificate"]:
        assert [d.args for d in server.find("ssl_certificate")] == [(want["certificate"],)]
    names = {d.name for d in server.block or ()}
    tls = {"ssl_certificate", "ssl_certificate_key", "ssl_protocols", "ssl_ciphers", "ssl_prefer_server_ciphers",
           "ssl_session_timeout", "ssl_session_cache", "ssl_session_tickets"}
    assert names <= {"listen", "server_name", "server_tokens", "location"} | (tls if venue.tls else set())
    for loc in server.find("location"):  # a static location's one nested location refuses dotfiles
        assert [d.args for d in loc.find("location")] in ([], [("~", "/\\.")]), loc


def check_environment(document: bytes, production: Production) -> None:
    """environment.json holds exactly the declared variables and app, and is plain ASCII."""
    act = production.acts["web"]
    loaded = json.loads(document.decode("ascii"))
    hosts = " ".join(sorted(production.venues["www"].hosts))
    expected = dict(act.env) | ({"DJANGO_SETTINGS_MODULE": act.settings} if act.settings else {}) | {
        "BACKSTAGE_HOSTS": hosts}
    assert loaded == {"app": f"{act.module}:{act.callable}", "env": expected, "secrets": dict(act.secrets)}
    assert all(ENV_NAME.fullmatch(name) for name in loaded["env"])


def check_ini(text: str, production: Production) -> None:
    options = parse_uwsgi_ini(text)
    sess, act = production.sesses["web"], production.acts["web"]
    stage = production.stages["main"]
    got: dict[str, list[str]] = {}
    for option in options:
        assert option.has_equals
        got.setdefault(option.key, []).append(option.value)
    assert got["virtualenv"] == [stage.virtualenv] if stage.virtualenv else len(got["virtualenv"]) == 1
    assert got["chdir"] == [act.path] and got["pythonpath"] == [act.path]
    (entry,) = got["wsgi-file"]
    assert re.fullmatch(r"/var/lib/backstage/club/store/entry-web-[0-9a-f]{32}/wsgi\.py", entry), entry
    assert "env" not in got  # every variable goes through the entry point's environment.json
    assert got["logto"] == [f"{production.log_dir.rstrip('/')}/web.log"]
    assert got.get("uid", []) == ([stage.uid] if stage.uid else [])
    for key, value in sess.uwsgi:
        assert got[key] == [str(value)]
    builtin = {"strict", "master", "processes", "threads", "virtualenv", "chdir", "pythonpath", "wsgi-file", "socket",
               "chmod-socket", "chown-socket", "listen", "vacuum", "die-on-term", "need-app", "logto", "uid"}
    assert set(got) == builtin - ({"uid"} - set(got)) | {k for k, _ in sess.uwsgi}
    user = production.host.nginx_user
    assert got["chown-socket"] == [f"{stage.uid or user}:{user}"]


@pytest.mark.parametrize("slot", sorted(SLOTS))
def test_every_slot_renders_exactly_what_was_declared_or_raises(slot: str) -> None:
    rendered = refused = 0
    for value in HOSTILE:
        production = SLOTS[slot](value)
        try:
            files = render.render(production, graph_of(production))
        except UnsafeValue:
            refused += 1
            continue
        rendered += 1
        try:
            check_nginx(files["nginx/www.conf"].content.decode(), production)
            (ini,) = [f for p, f in files.items() if p.startswith("uwsgi/")]
            check_ini(ini.content.decode(), production)
            check_environment(files["entries/web/environment.json"].content, production)
        except (AssertionError, ParseError) as failure:
            raise AssertionError(f"{slot} = {value!r} rendered something else than declared: {failure}") from None
        for path, f in files.items():
            if path.endswith("requirements.txt"):
                lines = [line for line in f.content.decode().splitlines() if not line.startswith("#")]
                assert lines == list(production.stages["main"].requirements), (slot, value)
    assert refused, f"{slot}: no hostile value was refused"
    assert rendered, f"{slot}: not even a plain value rendered"


@pytest.mark.parametrize(("slot", "value"), [("venue.alias", "~.*"), ("gig.path", "@named"),
                                             ("act.env.name", "A=B"), ("sess.option.name", "a = b")])
def test_the_examples_of_the_issue_raise(slot: str, value: str) -> None:
    production = SLOTS[slot](value)
    with pytest.raises(UnsafeValue):
        render.render(production, graph_of(production))
