"""`backstage diff OLD NEW`: what a change of production does, in words, then its impact.

Two production files are compiled (nothing is written) and compared by their models, grouped by
Venue, Gig, Sess, Act, Stage, host and DNS; two artifacts (which hold no model) are compared by what
they carry: their Gigs' routes, their vassals, their server files and their DNS. The impact (vassals
started and stopped, an nginx reload, DNS record changes) comes from the compiled files in both cases.
Values of environment variables whose names contain KEY, SECRET, TOKEN or PASSWORD are never shown:
only that they changed. The output is sorted and byte-stable; `--json` carries "format": 1.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import contract

FORMAT = 1
SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD")
_GROUPS = ("venue", "gig", "sess", "act", "stage", "host", "dns")


@dataclasses.dataclass(frozen=True, slots=True)
class Side:
    """One side of a diff: its files (path -> bytes), and its model when it came from a production file."""

    label: str
    files: Mapping[str, bytes]
    production: Any | None  # model.Production


def load(path: Path, output: Path | None = None) -> Side:
    """A production file (compiled in memory) or an artifact directory (read and verified)."""
    if path.is_file():
        from ..phases import pipeline

        compiled = pipeline.compile(path)
        return Side(str(path), {rel: f.content for rel, f in compiled.files.items()}, compiled.production)
    if (path / "result").is_symlink():
        path = path / "result"
    path = path.resolve()
    contract.verify(path)
    found = {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return Side(str(path), found, None)


def _secret(name: str) -> bool:
    return any(word in name.upper() for word in SECRET_WORDS)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, sort_keys=True)


def _pairs(value: Any) -> dict[str, Any] | None:
    """A tuple of (key, value) pairs or a mapping, as a dict; None for anything else."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple) and all(isinstance(v, tuple) and len(v) == 2 for v in value) and value:
        return dict(value)
    return None


def _field(kind: str, name: str, key: str, old: Any, new: Any) -> list[str]:
    """What changed in one field, in words."""
    if old == new:
        return []
    label = {"on_hosts": "hosts", "uwsgi": "uwsgi option"}.get(key, key.replace("_", " "))
    if kind == "gig" and key == "sess":
        return [f"now routed to sess {new} (was {old})"]
    if kind == "gig" and key == "venue":
        return [f"now at venue {new} (was {old})"]
    if kind == "stage" and key == "lock":
        return ["lock file changed"]
    if kind == "stage" and key == "requirements":
        return ["requirements changed: " + " ".join([*(f"+{r}" for r in new if r not in old),
                                                      *(f"-{r}" for r in old if r not in new)])]
    old_pairs, new_pairs = _pairs(old) if old else {}, _pairs(new) if new else {}
    if old_pairs is not None and new_pairs is not None and (old_pairs or new_pairs):
        lines = []
        for item in sorted(old_pairs.keys() | new_pairs.keys()):
            hidden = key == "env" and _secret(item)
            if item not in old_pairs:
                lines.append(f"{label} {item} added" + ("" if hidden else f" = {_show(new_pairs[item])}"))
            elif item not in new_pairs:
                lines.append(f"{label} {item} removed")
            elif old_pairs[item] != new_pairs[item]:
                lines.append(f"{label} {item} changed" + ("" if hidden else
                                                           f": {_show(old_pairs[item])} → {_show(new_pairs[item])}"))
        return lines
    if isinstance(old, tuple) and isinstance(new, tuple):
        singular = {"aliases": "alias", "hosts": "host", "needs": "need", "release": "release step"}.get(label, label)
        return [*(f"{singular} {_show(v)} added" for v in new if v not in old),
                *(f"{singular} {_show(v)} removed" for v in old if v not in new)]
    if dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new):
        return [line for f in dataclasses.fields(old)
                for line in _field(kind, name, f"{key}.{f.name}", getattr(old, f.name), getattr(new, f.name))]
    return [f"{label}: {_show(old)} → {_show(new)}"]


def _table(kind: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    found = []
    for name in sorted(old.keys() | new.keys()):
        if name not in old:
            found.append((kind, name, "added"))
        elif name not in new:
            found.append((kind, name, "removed"))
        else:
            before, after = old[name], new[name]
            for f in dataclasses.fields(before):
                was, now = getattr(before, f.name), getattr(after, f.name)
                if f.name == "source":
                    found += [(kind, name, "source files changed")] if was != now else []
                elif f.name != "name":
                    found += [(kind, name, line) for line in _field(kind, name, f.name, was, now)]
    return found


def _model_changes(old: Any, new: Any) -> list[tuple[str, str, str]]:
    found = []
    for kind, attr in (("venue", "venues"), ("gig", "gigs"), ("sess", "sesses"), ("act", "acts"),
                       ("stage", "stages")):
        found += _table(kind, getattr(old, attr), getattr(new, attr))
    old_hosts = {h.name: h for h in old.fleet.hosts} if old.fleet else {}
    new_hosts = {h.name: h for h in new.fleet.hosts} if new.fleet else {}
    found += _table("host", old_hosts, new_hosts)
    return found


def _plan(files: Mapping[str, bytes]) -> contract.Plan | None:
    raw = files.get(contract.PLAN)
    return contract.Plan.from_json(raw) if raw else None


def _artifact_changes(old: Side, new: Side) -> list[tuple[str, str, str]]:
    """Without models: the Gigs' routes from the plans, and which server files changed."""
    found: list[tuple[str, str, str]] = []
    before, after = _plan(old.files), _plan(new.files)
    gigs_old = {g.name: g for g in before.gigs} if before else {}
    gigs_new = {g.name: g for g in after.gigs} if after else {}
    for name in sorted(gigs_old.keys() | gigs_new.keys()):
        if name not in gigs_old:
            found.append(("gig", name, "added"))
        elif name not in gigs_new:
            found.append(("gig", name, "removed"))
        else:
            for key in ("sess", "host", "url", "connect"):
                found += [("gig", name, line) for line in _field("gig", name, key, getattr(gigs_old[name], key),
                                                                 getattr(gigs_new[name], key))]
    for path in sorted(_under(old.files, "nginx/") | _under(new.files, "nginx/")):
        venue = path.removeprefix("nginx/").removesuffix(".conf")
        if path not in old.files:
            found.append(("venue", venue, "added"))
        elif path not in new.files:
            found.append(("venue", venue, "removed"))
        elif old.files[path] != new.files[path]:
            found.append(("venue", venue, "server changed"))
    return found


def _under(files: Iterable[str], prefix: str) -> set[str]:
    return {p for p in files if p.startswith(prefix) and "/" not in p[len(prefix):]}


def _rrsets(files: Mapping[str, bytes]) -> dict[tuple[str, str], contract.RRset]:
    found: dict[tuple[str, str], contract.RRset] = {}
    for path in sorted(files):
        if path.startswith(f"{contract.DNS}/") and path.endswith(".json") and path.count("/") == 1:
            _, rrsets = contract.read_zone(files[path])
            found.update(((r.name, r.type), r) for r in rrsets)
    return found


def _dns_changes(old: Side, new: Side) -> list[tuple[str, str, str]]:
    before, after = _rrsets(old.files), _rrsets(new.files)
    found = []
    for key in sorted(before.keys() | after.keys()):
        name, rtype = key
        shown = after.get(key) or before[key]
        text = f"{rtype} {' | '.join(shown.records)}"
        if key not in before:
            found.append(("dns", name, f"add {text}"))
        elif key not in after:
            found.append(("dns", name, f"delete {rtype} {' | '.join(before[key].records)}"))
        elif before[key] != after[key]:
            was = before[key]
            records = (f" {' | '.join(was.records)} → {' | '.join(shown.records)}" if was.records != shown.records
                       else "")
            ttl = f" ttl {was.ttl} → {shown.ttl}" if was.ttl != shown.ttl else ""
            found.append(("dns", name, f"change {rtype}{records}{ttl}"))
    return found


def _hosts_files(files: Mapping[str, bytes]) -> dict[str, dict[str, bytes]]:
    """host -> its files ("" for a production on one host), without the artifact-name directory level."""
    if contract.FLEET not in files:
        return {"": dict(files)}
    found: dict[str, dict[str, bytes]] = {}
    for path, content in files.items():
        parts = path.split("/", 3)
        if parts[0] == contract.HOSTS and len(parts) == 4:
            found.setdefault(parts[1], {})[parts[3]] = content
    return found


def impact(old: Side, new: Side) -> dict[str, Any]:
    """Per host: the vassals a switch from OLD to NEW starts and stops, whether nginx reloads."""
    result: dict[str, Any] = {}
    old_hosts, new_hosts = _hosts_files(old.files), _hosts_files(new.files)
    for host in sorted(old_hosts.keys() | new_hosts.keys()):
        before, after = old_hosts.get(host, {}), new_hosts.get(host, {})
        old_vassals, new_vassals = _under(before, "uwsgi/"), _under(after, "uwsgi/")
        servers = {p: c for p, c in before.items() if p.startswith("nginx/")}
        result[host] = {
            "start": sorted(p.removeprefix("uwsgi/") for p in new_vassals - old_vassals),
            "stop": sorted(p.removeprefix("uwsgi/") for p in old_vassals - new_vassals),
            "nginx_reload": servers != {p: c for p, c in after.items() if p.startswith("nginx/")},
        }
    return result


def diff(old: Side, new: Side) -> dict[str, Any]:
    if old.production is not None and new.production is not None:
        changes = _model_changes(old.production, new.production)
    else:
        changes = _artifact_changes(old, new)
    changes += _dns_changes(old, new)
    order = {kind: i for i, kind in enumerate(_GROUPS)}
    changes.sort(key=lambda c: (order.get(c[0], len(order)), c[1], c[2]))
    return {"format": FORMAT, "old": old.label, "new": new.label,
            "changes": [{"kind": k, "name": n, "change": c} for k, n, c in changes], "impact": impact(old, new)}


def text(result: dict[str, Any]) -> str:
    lines = [f"{c['kind']} {c['name']}: {c['change']}" for c in result["changes"]] or ["no change"]
    dns = sum(1 for c in result["changes"] if c["kind"] == "dns")
    for host, effect in result["impact"].items():
        where = f" on {host}" if host else ""
        parts = []
        if effect["start"]:
            parts.append(f"start {len(effect['start'])} vassal(s): {', '.join(effect['start'])}")
        if effect["stop"]:
            parts.append(f"stop {len(effect['stop'])} vassal(s): {', '.join(effect['stop'])}")
        if effect["nginx_reload"]:
            parts.append("nginx: test and reload")
        lines.append(f"impact{where}: " + ("; ".join(parts) if parts else "nothing to switch"))
    if dns:
        lines.append(f"impact: {dns} DNS RRset(s) to write")
    return "\n".join(lines) + "\n"
