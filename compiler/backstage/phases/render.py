"""Phase 6, render: model -> file contents, through the targets' templates, and the host's plan.

Every `{{ }}` is escaped for its target and, where a slot has rules of its own, by that slot's filter
(backstage.targets). Nothing edits rendered text afterwards.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

import networkx as nx

from .. import contract, targets
from . import graph as graphs
from . import layout
from .layout import EXECUTABLE, File
from .model import Gig, Production, Sess


@dataclass(frozen=True, slots=True)
class Vassal:
    """One Sess as uWSGI will run it: its content-hashed name and its address for nginx and needers."""

    sess: str
    stem: str
    bind: str
    upstream: str
    address: str


# The vassal's name hashes its own text. A unix socket's path holds that name, so the text is hashed
# with the bind slot holding a placeholder, which is filled afterwards (see targets.Placeholder).
_BIND = targets.Placeholder("\x00bind\x00")


def render(production: Production, graph: nx.DiGraph) -> dict[str, File]:
    """Every rendered file of the artifact, keyed by relative path (artifact adds the agent and manifest)."""
    files: dict[str, File] = {}
    hosts = _hosts_by_sess(production)
    vassals = _render_vassals(production, graph, hosts)
    files.update((f"uwsgi/{v.stem}.ini", File(text)) for v, text in vassals.values())
    addresses = {name: v for name, (v, _) in vassals.items()}
    booked: dict[str, list[Gig]] = {name: [] for name in production.venues}
    for gig in production.gigs.values():
        booked[gig.venue].append(gig)
    for name, gigs in booked.items():
        files[f"nginx/{name}.conf"] = File(_render_venue(production, name, gigs, addresses))
    include = targets.template("nginx", "include.conf.j2").render(
        production=production.name, pattern=layout.in_dir(production.state_dir, "current/nginx/*.conf"))
    files["include.conf"] = File(include.encode())
    files[contract.PLAN] = File(plan(production, hosts, addresses).to_json())
    pythons = sorted({layout.in_dir(stage.virtualenv, "bin/python3") for stage in production.stages.values()})
    script = targets.template("shell", "install.sh.j2").render(production=production.name,
                                                                pythons=[*pythons, "python3"])
    files[contract.INSTALLER] = File(script.encode(), EXECUTABLE)
    for stage in production.stages.values():
        if stage.requirements:
            text = targets.template("pip", "requirements.txt.j2").render(production=production.name, stage=stage)
            files[f"stages/{stage.name}/requirements.txt"] = File(text.encode())
    return dict(sorted(files.items()))


def _hosts_by_sess(production: Production) -> dict[str, list[str]]:
    hosts: dict[str, set[str]] = {}
    for gig in production.gigs.values():
        hosts.setdefault(gig.sess, set()).update(production.venues[gig.venue].hosts)
    return {sess: sorted(names) for sess, names in hosts.items()}


def _render_vassals(production: Production, graph: nx.DiGraph,
                    hosts: dict[str, list[str]]) -> dict[str, tuple[Vassal, bytes]]:
    """Each Sess's vassal and its file, rendered after the Sesses it needs (their addresses are in it)."""
    template = targets.template("uwsgi", "vassal.ini.j2")
    done: dict[str, tuple[Vassal, bytes]] = {}
    for name in graphs.sesses_needed_first(graph):
        sess = production.sesses[name]
        context = _vassal_context(production, sess, hosts.get(name, []), {n: v for n, (v, _) in done.items()})
        # A TCP bind is written (and hashed) as itself, so a changed port is a new vassal.
        bind = layout.tcp_address(sess.port) if sess.port else _BIND
        chunks = list(template.generate(context, bind=bind,
                                        socket_option="http-socket" if sess.protocol == "http" else "socket"))
        vassal = _address(production, sess, hashlib.sha256("".join(chunks).encode()).hexdigest()[: layout.HASH_LENGTH])
        path = targets.escape("uwsgi", vassal.bind)
        text = "".join(path if chunk == _BIND else chunk for chunk in chunks)
        done[name] = (vassal, text.encode())
    return dict(sorted(done.items()))


def _vassal_context(production: Production, sess: Sess, hosts: list[str],
                    needed: dict[str, Vassal]) -> dict[str, object]:
    act = production.acts[sess.act]
    stage = production.stages[sess.stage]
    env = list(act.env)
    if act.settings:
        env.append(("DJANGO_SETTINGS_MODULE", act.settings))
    if hosts:
        env.append(("BACKSTAGE_HOSTS", " ".join(hosts)))
    for other in sess.needs:
        prefix = layout.env_prefix(other)
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
        "logto": layout.in_dir(production.log_dir, f"{sess.name}.log"),
        "options": list(sess.uwsgi),
    }


def _address(production: Production, sess: Sess, content_hash: str) -> Vassal:
    stem = layout.vassal_stem(production.name, sess.name, content_hash)
    if sess.port:
        bind = layout.tcp_address(sess.port)
        address = bind
        upstream = f"http://{bind}/" if sess.protocol == "http" else bind
    else:
        bind = layout.socket_path(production.run_dir, production.name, sess.name, content_hash)
        address = f"unix:{bind}"
        upstream = f"http://unix:{bind}:/" if sess.protocol == "http" else address
    return Vassal(sess.name, stem, bind, upstream, address)


@cache
def _uwsgi_params() -> targets.Verbatim:
    """The artifact's own uwsgi_params: fixed template text, rendered once and written into each location."""
    return targets.Verbatim(targets.template("nginx", "uwsgi_params.j2").render())


def _render_venue(production: Production, venue_name: str, gigs: list[Gig], vassals: dict[str, Vassal]) -> bytes:
    locations: list[dict[str, object]] = []
    for gig in gigs:
        sess = production.sesses[gig.sess]
        locations.append({
            "kind": sess.protocol,
            "gig": gig.name,
            "sess": sess.name,
            "path": gig.path,
            "script_name": gig.path.rstrip("/"),
            "upstream": vassals[sess.name].upstream,
        })
        for prefix, directory in production.acts[sess.act].static:
            locations.append({"kind": "static", "gig": gig.name, "path": layout.url_join(gig.path, prefix),
                              "directory": directory})
    locations.sort(key=lambda loc: str(loc["path"]))
    text = targets.template("nginx", "venue.conf.j2").render(
        uwsgi_params=_uwsgi_params(),
        production=production.name,
        venue=production.venues[venue_name],
        locations=locations,
        has_root=any(loc["path"] == "/" for loc in locations),
    )
    return text.encode()


def plan(production: Production, hosts: dict[str, list[str]], vassals: dict[str, Vassal]) -> contract.Plan:
    """What the host agent needs to switch, probe and check (apply.json)."""
    host = production.host
    return contract.Plan(
        production=production.name,
        state_dir=production.state_dir,
        run_dir=production.run_dir,
        log_dir=production.log_dir,
        nginx_link=layout.nginx_link_name(production.name),
        host=contract.HostPlan(host.vassals_dir, host.nginx_dir, host.nginx, host.nginx_user, host.emperor_stats),
        vassals=tuple(
            contract.VassalPlan(
                sess=v.sess, stem=v.stem, protocol=production.sesses[v.sess].protocol, address=v.address,
                health_host=(hosts.get(v.sess) or ["localhost"])[0],
                health_path=production.acts[production.sesses[v.sess].act].health)
            for v in vassals.values()),
        gigs=tuple(
            contract.GigPlan(
                name=gig.name, sess=gig.sess, host=production.venues[gig.venue].domain,
                connect=layout.connect_address(production.venues[gig.venue].listen),
                tls=production.venues[gig.venue].tls is not None,
                url=layout.url_join(gig.path, production.acts[production.sesses[gig.sess].act].health))
            for gig in production.gigs.values()),
    )
