"""Synthetic but realistic productions with N gigs, deterministic for a given N.

Shape, per N gigs: ~N/3 venues (~5% closed, a third with aliases, half with TLS), ~N/2 sesses
(every sess booked at about two venues or paths, a few jamming without a gig), acts shared by a
production and a staging sess, five stages, static files on half the acts, http sesses on ports,
and `needs` edges that always point at a lower-numbered sess, so they can never form a cycle.

    python benchmarks/generate.py N [-o production.toml]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

PRODUCTION = "bench"
# Short, so socket paths stay far below the 107-byte unix limit.
RUN_DIR = "/run/bs/bench"
NGINX_USER = "www-data"
STAGES = ("prod", "staging", "py312", "legacy", "lab")
# A venue's n-th gig goes to the n-th path: path routing, never clashing with /static/ or /media/.
GIG_PATHS = ("/", "/api/", "/shop/", "/blog/", "/admin/", "/v2/api/", "/docs/", "/account/")
WORDS = ("jazz", "blues", "swing", "bebop", "soul", "funk", "salsa", "tango", "waltz", "polka", "opera",
         "choir", "organ", "banjo", "cello", "flute", "oboe", "harp", "lute", "sitar")
TLDS = ("com", "org", "net", "io", "de", "fr")


def generate(n: int) -> dict[str, Any]:
    """The production as the plain data tomllib would return for its TOML."""
    rng = random.Random(f"backstage-bench-{n}")
    n_sesses = max(2, n // 2)
    n_acts = max(1, (n_sesses * 2) // 3)
    n_venues = max(2, n // 3)

    stages: dict[str, Any] = {}
    for i, name in enumerate(STAGES):
        # Environments managed outside backstage: a built Stage is a host-side cost, not a build one.
        stage: dict[str, Any] = {"virtualenv": f"/srv/venvs/{name}"}
        if i < 3:
            stage["uid"] = stage["gid"] = "www-data"
        stage["uwsgi"] = {"processes": 1 + i % 3, "harakiri": 30 + 10 * i}
        stages[name] = stage

    acts: dict[str, Any] = {}
    for i in range(n_acts):
        word = WORDS[i % len(WORDS)]
        name = f"{word}-{i:05d}"
        act: dict[str, Any] = {"wsgi": f"{word}.wsgi" if i % 4 else f"{word}.app:make_app",
                               "path": f"/srv/apps/{name}"}
        if i % 4:
            act["settings"] = f"{word}.settings"
        if i % 3 == 0:
            act["env"] = {"THEME": rng.choice(("dark", "light")), "FEATURES": "search,cart"}
        if i % 2 == 0:
            act["static"] = {"/static/": f"/srv/apps/{name}/static/"}
            if i % 6 == 0:
                act["static"]["/media/"] = f"/srv/data/{name}/media/"
        if i % 5 == 0:
            act["health"] = "/healthz"
        acts[name] = act
    act_names = list(acts)

    sesses: dict[str, Any] = {}
    sess_names: list[str] = []
    for i in range(n_sesses):
        act = act_names[i % n_acts]
        name = f"{act}-{'live' if i < n_acts else 'stage'}"
        sess: dict[str, Any] = {"act": act, "stage": STAGES[i % len(STAGES)] if i % 7 else "prod"}
        if i % 4 == 0:
            sess["processes"] = rng.randint(2, 8)
        if i % 10 == 3:
            sess["protocol"] = "http"
            sess["port"] = 8000 + i  # unique; n_sesses <= 5,000 keeps it below 65536
        elif i % 25 == 7:
            sess["protocol"] = "http"
        if i % 9 == 5:
            sess["needs"] = sorted({sess_names[rng.randrange(i)] for _ in range(rng.randint(1, 2))})
        if i % 6 == 1:
            sess["uwsgi"] = {"max-requests": 1000 * rng.randint(1, 5), "lazy-apps": True}
        sesses[name] = sess
        sess_names.append(name)

    venues: dict[str, Any] = {}
    for i in range(n_venues):
        word = WORDS[i % len(WORDS)]
        domain = f"{word}{i}.example.{TLDS[i % len(TLDS)]}"
        venue: dict[str, Any] = {"domain": domain}
        if i % 3 == 0:
            venue["aliases"] = [f"www.{domain}", f"{word}{i}.example.cloud"][: 2 + (i % 2)]
            if i % 6 == 0:
                venue["aliases"].append(f"m.{domain}")
        if i % 2 == 0:
            venue["tls"] = {"certificate": f"/etc/ssl/certs/{domain}.pem",
                            "key": f"/etc/ssl/private/{domain}.key"}
        elif i % 11 == 1:
            venue["listen"] = "127.0.0.1:8080"
        venues[f"v-{word}-{i:05d}"] = venue
    venue_names = list(venues)
    # Every 20th venue stays closed; at N=10 that is v-jazz-00000 alone.
    open_venues = [v for i, v in enumerate(venue_names) if i % 20 != 0]

    gigs: dict[str, Any] = {}
    # Sesses are booked round-robin; the last few stay unbooked ("jamming in the garage").
    bookable = sess_names[: max(1, len(sess_names) - max(1, len(sess_names) // 50))]
    for j in range(n):
        venue = open_venues[j % len(open_venues)]
        path = GIG_PATHS[(j // len(open_venues)) % len(GIG_PATHS)]
        sess = bookable[(j * 7) % len(bookable)]
        gig: dict[str, Any] = {"venue": venue, "sess": sess}
        if path != "/":
            gig["path"] = path
        gigs[f"g{j:05d}-{sess}"[:63]] = gig

    return {
        "production": {"name": PRODUCTION, "run_dir": RUN_DIR},
        "host": {"nginx_user": NGINX_USER},
        "stages": stages,
        "acts": acts,
        "sesses": sesses,
        "venues": venues,
        "gigs": gigs,
    }


def to_toml(data: dict[str, Any]) -> str:
    """TOML for the generator's data: tables of tables, scalars, lists and flat inline tables."""
    lines: list[str] = []

    def table(header: str, body: dict[str, Any]) -> None:
        lines.append(f"\n[{header}]")
        subtables = []
        for key, value in body.items():
            if isinstance(value, dict) and key == "uwsgi":
                subtables.append((key, value))
            else:
                lines.append(f"{_key(key)} = {_value(value)}")
        for key, value in subtables:
            table(f"{header}.{key}", value)

    for section, body in data.items():
        if section in ("production", "host"):
            table(section, body)
        else:
            for name, item in body.items():
                table(f"{section}.{name}", item)
    return "# Generated by benchmarks/generate.py; do not edit.\n" + "\n".join(lines).lstrip("\n") + "\n"


def _key(key: str) -> str:
    return key if key.replace("-", "").replace("_", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # The generator only writes printable ASCII, where JSON and TOML basic strings agree.
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value).__name__)


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("n", type=int, help="number of gigs")
    cli.add_argument("-o", "--output", help="file to write (default: stdout)")
    args = cli.parse_args()
    text = to_toml(generate(args.n))
    if args.output:
        Path(args.output).write_text(text, "utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
