"""Phase 5, render: model -> file contents, through Jinja2 templates that escape every value.

Each output format has its own Environment whose `finalize` escapes every `{{ }}` for that format,
so a template author cannot forget to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2

from . import escape, names
from .graph import sesses_needed_first
from .model import Gig, Production, Sess

READ_ONLY = 0o444
EXECUTABLE = 0o555


@dataclass(frozen=True, slots=True)
class File:
    content: bytes
    mode: int = READ_ONLY


@dataclass(frozen=True, slots=True)
class Vassal:
    """One Sess as uWSGI will run it: its content-hashed name and its address for nginx and needers."""

    sess: str
    stem: str
    bind: str
    upstream: str
    address: str


@cache
def _environment(finalize: Callable[[Any], str]) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("backstage", "templates"),
        undefined=jinja2.StrictUndefined,
        finalize=finalize,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@cache
def _template(finalize: Callable[[Any], str], name: str) -> jinja2.Template:
    return _environment(finalize).get_template(name)


def render(production: Production) -> dict[str, File]:
    """Every rendered file of the artifact, keyed by relative path (artifact adds install.py and the manifest)."""
    files: dict[str, File] = {}
    hosts = _hosts_by_sess(production)
    vassals = _render_vassals(production, hosts, files)
    booked: dict[str, list[Gig]] = {name: [] for name in production.venues}
    for gig in production.gigs.values():
        booked[gig.venue].append(gig)
    for name, gigs in booked.items():
        files[f"nginx/{name}.conf"] = File(_render_venue(production, name, gigs, vassals))
    include = _template(escape.nginx, "include.conf.j2").render(
        production=production.name, pattern=names.in_dir(production.state_dir, "current/nginx/*.conf"))
    files["include.conf"] = File(include.encode())
    files["apply.json"] = File(_apply_plan(production, hosts, vassals))
    pythons = sorted({names.in_dir(stage.virtualenv, "bin/python3") for stage in production.stages.values()})
    script = _template(escape.shell, "install.sh.j2").render(production=production.name,
                                                              pythons=[*pythons, "python3"])
    files["install.sh"] = File(script.encode(), EXECUTABLE)
    for stage in production.stages.values():
        if stage.requirements:
            text = _template(escape.text_line, "requirements.txt.j2").render(production=production.name, stage=stage)
            files[f"stages/{stage.name}/requirements.txt"] = File(text.encode())
    return dict(sorted(files.items()))


def _hosts_by_sess(production: Production) -> dict[str, list[str]]:
    hosts: dict[str, set[str]] = {}
    for gig in production.gigs.values():
        hosts.setdefault(gig.sess, set()).update(production.venues[gig.venue].hosts)
    return {sess: sorted(names) for sess, names in hosts.items()}


def _render_vassals(production: Production, hosts: dict[str, list[str]],
                    files: dict[str, File]) -> dict[str, Vassal]:
    template = _template(escape.uwsgi_ini, "vassal.ini.j2")
    done: dict[str, Vassal] = {}
    for name in sesses_needed_first(production):
        sess = production.sesses[name]
        context = _vassal_context(production, sess, hosts.get(name, []), done)
        # The name hashes the vassal's own text. A unix socket's path holds that name, so it is hashed
        # as a placeholder (no production value can hold one: control characters are refused); a TCP
        # bind is hashed as itself, so a changed port is a new vassal.
        bind = escape.Verbatim(f"127.0.0.1:{sess.port}") if sess.port else _BIND
        text = template.render(context, socket_option="http-socket" if sess.protocol == "http" else "socket",
                               bind=bind)
        vassal = _address(production, sess, hashlib.sha256(text.encode()).hexdigest()[: names.HASH_LENGTH])
        done[name] = vassal
        files[f"uwsgi/{vassal.stem}.ini"] = File(text.replace(_BIND, vassal.bind).encode())
    return dict(sorted(done.items()))


_BIND = escape.Verbatim("\x00bind\x00")


def _vassal_context(production: Production, sess: Sess, hosts: list[str],
                    needed: dict[str, Vassal]) -> dict[str, Any]:
    act = production.acts[sess.act]
    stage = production.stages[sess.stage]
    env = list(act.env)
    if act.settings:
        env.append(("DJANGO_SETTINGS_MODULE", act.settings))
    if hosts:
        env.append(("BACKSTAGE_HOSTS", " ".join(hosts)))
    for other in sess.needs:
        prefix = names.env_prefix(other)
        env.append((f"{prefix}_ADDRESS", needed[other].address))
        env.append((f"{prefix}_PROTOCOL", production.sesses[other].protocol))
    return {
        "production": production.name,
        "sess": sess,
        "act": act,
        "stage": stage,
        "module": f"{act.module}:{act.callable}",
        "socket_owner": stage.uid or production.host.nginx_user,
        "nginx_user": production.host.nginx_user,
        "env": env,
        "logto": names.in_dir(production.log_dir, f"{sess.name}.log"),
        "options": list(sess.uwsgi),
    }


def _address(production: Production, sess: Sess, content_hash: str) -> Vassal:
    stem = names.vassal_stem(production.name, sess.name, content_hash)
    if sess.port:
        bind = f"127.0.0.1:{sess.port}"
        address = bind
        upstream = f"http://{bind}/" if sess.protocol == "http" else bind
    else:
        bind = names.socket_path(production.run_dir, production.name, sess.name, content_hash)
        address = f"unix:{bind}"
        upstream = f"http://unix:{bind}:/" if sess.protocol == "http" else address
    return Vassal(sess.name, stem, bind, upstream, address)


@cache
def _uwsgi_params() -> escape.Verbatim:
    """The artifact's own uwsgi_params: fixed text, rendered once and written into each uwsgi location."""
    return escape.Verbatim(_template(escape.nginx, "uwsgi_params.j2").render())


def _render_venue(production: Production, venue_name: str, gigs: list[Gig],
                  vassals: dict[str, Vassal]) -> bytes:
    locations: list[dict[str, Any]] = []
    for gig in gigs:
        sess = production.sesses[gig.sess]
        locations.append({
            "kind": sess.protocol,
            "gig": gig.name,
            "sess": sess.name,
            "path": gig.path,
            "path_regex": escape.nginx_prefix_regex(gig.path),
            "script_name": gig.path.rstrip("/"),
            "upstream": vassals[sess.name].upstream,
        })
        for prefix, directory in production.acts[sess.act].static:
            locations.append({"kind": "static", "gig": gig.name, "path": names.url_join(gig.path, prefix),
                              "directory": directory})
    locations.sort(key=lambda loc: loc["path"])
    text = _template(escape.nginx, "venue.conf.j2").render(
        uwsgi_params=_uwsgi_params(),
        production=production.name,
        venue=production.venues[venue_name],
        locations=locations,
        has_root=any(loc["path"] == "/" for loc in locations),
    )
    return text.encode()


def _apply_plan(production: Production, hosts: dict[str, list[str]], vassals: dict[str, Vassal]) -> bytes:
    """What the host side (host/install.py) needs to switch, probe and check, as JSON."""
    host = production.host
    plan = {
        "production": production.name,
        "state_dir": production.state_dir,
        "run_dir": production.run_dir,
        "log_dir": production.log_dir,
        "nginx_link": names.nginx_link_name(production.name),
        "host": {"vassals_dir": host.vassals_dir, "nginx_dir": host.nginx_dir, "nginx": list(host.nginx),
                 "nginx_user": host.nginx_user, "emperor_stats": host.emperor_stats},
        "vassals": [
            {"sess": v.sess, "stem": v.stem, "protocol": production.sesses[v.sess].protocol,
             "address": v.address, "health_host": (hosts.get(v.sess) or ["localhost"])[0],
             "health_path": production.acts[production.sesses[v.sess].act].health}
            for v in vassals.values()
        ],
        "gigs": [
            {"name": gig.name, "sess": gig.sess, "host": production.venues[gig.venue].domain,
             "connect": _connect_address(production.venues[gig.venue].listen),
             "tls": production.venues[gig.venue].tls is not None,
             "url": names.url_join(gig.path, production.acts[production.sesses[gig.sess].act].health)}
            for gig in production.gigs.values()
        ],
    }
    return _json_lines(plan)


def _json_lines(plan: dict[str, Any]) -> bytes:
    """JSON with each top-level key, and each item of a top-level list, on a line of its own: readable
    in a diff, and written by json's C encoder (indent= would use the slow pure-Python one)."""
    lines = []
    for key, value in sorted(plan.items()):
        if isinstance(value, list):
            items = ",\n".join(f"    {json.dumps(item, sort_keys=True)}" for item in value)
            lines.append(f"  {json.dumps(key)}: [\n{items}\n  ]" if value else f"  {json.dumps(key)}: []")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True)}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


def _connect_address(listen: str) -> str:
    ip, _, port = listen.rpartition(":")
    return f"{'127.0.0.1' if ip in ('', '0.0.0.0') else ip}:{port}"
