"""The floor: the least work that writes the files `backstage build` writes for a generated production.

It takes the generator's in-memory data (no TOML, no checking, no model, no graph), renders the
installed package's templates with backstage's own Jinja2 environments (the same escaping), and
writes the files: one vassal .ini per Sess and one nginx .conf per Venue, which is all but a handful
of the build's files (include.conf, install.sh, requirements.txt and the manifest are left out).
Content hashes are not computed: every vassal gets the placeholder hash below, so the output equals
the build's once hashes are masked.

    python benchmarks/floor.py N OUTDIR
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
from backstage import targets
from generate import generate

PLACEHOLDER_HASH = "0" * 8


def environment(target: str) -> jinja2.Environment:
    # backstage's own Environment for the target (the same finalize and slot filters): the output must
    # match the build's byte for byte.
    return targets.environment(target)


def endpoints(run_dir: str, stem: str, sess: dict[str, Any]) -> tuple[str, str, str]:
    """The vassal's bind, its address for needing sesses, and its upstream for nginx."""
    http = sess.get("protocol") == "http"
    if port := sess.get("port"):
        bind = f"127.0.0.1:{port}"
        return bind, bind, f"http://{bind}/" if http else bind
    bind = f"{run_dir}/{stem}.sock"
    return bind, f"unix:{bind}", f"http://unix:{bind}:/" if http else f"unix:{bind}"


def vassal_contexts(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, template context) per Sess. The generator's needs point at earlier sesses only."""
    prod = data["production"]["name"]
    run_dir = data["production"]["run_dir"]
    nginx_user = data["host"]["nginx_user"]
    hosts: dict[str, set[str]] = {}
    for gig in data["gigs"].values():
        venue = data["venues"][gig["venue"]]
        hosts.setdefault(gig["sess"], set()).update([venue["domain"], *venue.get("aliases", ())])
    addresses: dict[str, str] = {}
    for name, sess in data["sesses"].items():
        act = data["acts"][sess["act"]]
        stage = data["stages"][sess["stage"]]
        options = stage.get("uwsgi", {}) | sess.get("uwsgi", {})
        stem = f"{prod}--{name}--{PLACEHOLDER_HASH}"
        bind, addresses[name], _ = endpoints(run_dir, stem, sess)
        env = sorted(act.get("env", {}).items())
        if "settings" in act:
            env.append(("DJANGO_SETTINGS_MODULE", act["settings"]))
        if name in hosts:
            env.append(("BACKSTAGE_HOSTS", " ".join(sorted(hosts[name]))))
        for other in sorted(sess.get("needs", ())):
            prefix = "BACKSTAGE_" + other.upper().replace("-", "_")
            env += [(f"{prefix}_ADDRESS", addresses[other]),
                    (f"{prefix}_PROTOCOL", data["sesses"][other].get("protocol", "uwsgi"))]
        module, _, func = act["wsgi"].partition(":")
        yield f"entries/{name}/environment.json", {
            "app": f"{module}:{func or 'application'}", "env": dict(env), "secrets": act.get("secrets", {})}
        yield f"uwsgi/{stem}.ini", {
            "production": prod,
            "sess": {"name": name, "port": sess.get("port"),
                     "processes": sess.get("processes", options.get("processes", 1)),
                     "threads": sess.get("threads", options.get("threads", 1))},
            "act": {"name": sess["act"], "path": act["path"]},
            "stage": {"name": sess["stage"], "virtualenv": stage["virtualenv"], "uid": stage.get("uid"),
                      "gid": stage.get("gid")},
            "entry": f"/var/lib/backstage/{prod}/store/entry-{name}-{PLACEHOLDER_HASH * 4}/wsgi.py",
            "restart": 0,
            "code": act["path"],
            "environment": stage["virtualenv"],
            "socket_owner": stage.get("uid") or nginx_user,
            "nginx_user": nginx_user,
            "logto": f"/var/log/backstage/{prod}/{name}.log",
            "options": sorted((k, v) for k, v in options.items() if k not in ("processes", "threads")),
            "socket_option": "http-socket" if sess.get("protocol") == "http" else "socket",
            "bind": bind,
        }


def venue_contexts(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    prod = data["production"]["name"]
    run_dir = data["production"]["run_dir"]
    locations: dict[str, list[dict[str, Any]]] = {name: [] for name in data["venues"]}
    for gig_name, gig in data["gigs"].items():
        sess = data["sesses"][gig["sess"]]
        path = gig.get("path", "/")
        kind = sess.get("protocol", "uwsgi")
        _, _, upstream = endpoints(run_dir, f"{prod}--{gig['sess']}--{PLACEHOLDER_HASH}", sess)
        venue = data["venues"][gig["venue"]]
        locations[gig["venue"]].append({
            "kind": kind, "gig": gig_name, "sess": gig["sess"], "path": path,
            "path_regex": targets.nginx.prefix_regex(path), "script_name": path.rstrip("/"), "upstream": upstream,
            "body_size": gig.get("client_max_body_size"), "read_timeout": gig.get("read_timeout",
                                                                                  venue.get("read_timeout")),
        })
        for prefix, directory in sorted(data["acts"][sess["act"]].get("static", {}).items()):
            locations[gig["venue"]].append({"kind": "static", "gig": gig_name, "path": path + prefix[1:],
                                            "directory": directory, "cache": False})
    for name, venue in data["venues"].items():
        locs = sorted(locations[name], key=lambda loc: loc["path"])
        tls = venue.get("tls")
        listen = venue.get("listen", 443 if tls else 80)
        redirect = bool(tls) and venue.get("redirect_http", True)
        yield f"nginx/{name}.conf", {
            "production": prod,
            "venue": {"name": name, "listen": listen, "tls": tls,
                      "hosts": (venue["domain"], *venue.get("aliases", ())), "redirect_http": redirect,
                      "http_listen": venue.get("http_listen", 80), "client_max_body_size":
                          venue.get("client_max_body_size")},
            "locations": locs,
            "has_root": any(loc["path"] == "/" for loc in locs),
            "hsts": f"max-age={venue['hsts']}" if tls and venue.get("hsts") else "",
            "https_port": int(str(listen).rsplit(":", 1)[-1]),
            "acme_root": f"{data['production'].get('state_dir', '/var/lib/backstage/' + prod)}/acme",
        }


def main() -> int:
    n, out = int(sys.argv[1]), Path(sys.argv[2])
    data = generate(n)
    for sub in ("uwsgi", "nginx"):
        (out / sub).mkdir(parents=True)
    vassal = environment("uwsgi").get_template("vassal.ini.j2")
    for rel, context in vassal_contexts(data):
        if rel.endswith(".json"):  # a Sess's environment, as JSON: what backstage writes beside its vassal
            (out / rel).parent.mkdir(parents=True)
            (out / rel).write_text(json.dumps(context, ensure_ascii=True, sort_keys=True) + "\n")
            continue
        (out / rel).write_text(vassal.render(context), "utf-8")
    nginx = environment("nginx")
    venue = nginx.get_template("venue.conf.j2")
    params = targets.Verbatim(nginx.get_template("uwsgi_params.j2").render())  # as render.py: once
    for rel, context in venue_contexts(data):
        (out / rel).write_text(venue.render(context, uwsgi_params=params), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
