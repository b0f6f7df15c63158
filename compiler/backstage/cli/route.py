"""`backstage route URL PRODUCTION`: which server, location, Gig and Sess answer a URL, by nginx's rules.

The production file is compiled in memory (or an artifact directory read and verified), and its own
nginx files are routed by backstage.nginxroute in the order nginx includes them. `--unreachable`
lists the locations no request can reach. Other sites of the host's nginx are not seen: a server of
theirs that comes first, or says `default_server`, would be the default instead.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .. import contract, nginxroute
from ..nginxroute import Answer, Location, Request, Server

FORMAT = 1
LOOPBACK = "127.0.0.1"


class RouteError(ValueError):
    """A URL or an option route cannot take (a usage error)."""


@dataclass(frozen=True, slots=True)
class Host:
    name: str  # "" for a production of one host
    address: str  # "" when the production does not say
    servers: tuple[Server, ...]


def hosts(files: Mapping[str, bytes]) -> list[Host]:
    """Each host's servers, in include order (its nginx/*.conf sorted by name)."""
    fleet_raw = files.get(contract.FLEET)
    if fleet_raw is None:
        return [Host("", "", _servers(files, ""))]
    plan = contract.FleetPlan.from_json(fleet_raw)
    found = []
    for host in plan.hosts:
        prefix = f"{contract.HOSTS}/{host.name}/"
        names = {path.split("/")[2] for path in files if path.startswith(prefix)}
        if len(names) != 1:
            raise contract.ContractError(f"{prefix}: expected one artifact, found {len(names)}")
        found.append(Host(host.name, host.address, _servers(files, f"{prefix}{names.pop()}/")))
    return found


def _servers(files: Mapping[str, bytes], prefix: str) -> tuple[Server, ...]:
    servers: list[Server] = []
    for path in sorted(p for p in files if p.startswith(f"{prefix}nginx/") and p.endswith(".conf")):
        servers += nginxroute.parse(files[path].decode(), path[len(prefix):])
    return tuple(servers)


def request(url: str, address: str | None, default_address: str) -> Request:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # an unclosed [IPv6 literal, say
        raise RouteError(f"{url!r}: not a URL ({exc}); give an http:// or https:// URL with a host name") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RouteError(f"{url!r}: give an http:// or https:// URL with a host name")
    try:
        given = parts.port  # None when the URL gives none; 0 is no port a server can listen on
    except ValueError:
        given = 0
    if given == 0:
        raise RouteError(f"{url!r}: the port is not a number from 1 to 65535")
    port = given or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query or url.endswith("?") else "")
    literal = parts.hostname if _ip(parts.hostname) else ""
    connect = address or literal or default_address or LOOPBACK
    if not _ip(connect):
        raise RouteError(f"--address {connect!r}: give an IP address")
    return Request(parts.scheme, parts.netloc.rpartition("@")[2], connect, port, target)


def _ip(text: str) -> bool:
    """An IPv4 or IPv6 address (the servers backstage writes listen on IPv4 only: IPv6 finds none)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def gig_of(location: Location | None) -> tuple[str, str]:
    """(gig, sess) from the comment backstage writes above each of its locations."""
    while location is not None and location.parent is not None and not location.label:
        location = location.parent
    if location is None:
        return "", ""
    found = re.match(r"gig (\S+): sess (\S+)", location.label)
    if found:
        return found.group(1), found.group(2)
    found = re.match(r"static files of gig (\S+)", location.label)
    return (found.group(1), "") if found else ("", "")


def answer_json(host: Host, req: Request, answer: Answer) -> dict[str, Any]:
    gig, sess = gig_of(answer.location)
    server = answer.server
    return {
        "host": host.name or None,
        "connect": nginxroute.join(req.address, req.port),
        "socket": answer.socket or None,
        "venue": server.label.removeprefix("venue ") if server else None,
        "server": f"{server.file}:{server.line}" if server else None,
        "server_names": list(server.names) if server else [],
        "name_match": answer.name_match or None,
        "location": answer.location.shown if answer.location else None,
        "location_match": answer.location_match or None,
        "gig": gig or None,
        "sess": sess or None,
        "outcome": answer.outcome,
        "status": answer.status,
        "redirect": answer.location_header or None,
        "body": answer.body or None,
        "file": answer.file or None,
        "upstream": answer.upstream or None,
        "script_name": answer.script_name if answer.outcome == "uwsgi" else None,
        "path_info": answer.path_info if answer.outcome == "uwsgi" else None,
        "query_string": answer.query_string if answer.outcome == "uwsgi" else None,
        "request_target": answer.request_target or None,
        "forwarded_prefix": answer.forwarded_prefix if answer.outcome == "http" else None,
        "reason": answer.reason or None,
    }


def answer_text(host: Host, req: Request, answer: Answer) -> list[str]:
    lines = []
    if host.name:
        lines.append(f"host       {host.name}" + (f" ({host.address})" if host.address else ""))
    connect = nginxroute.join(req.address, req.port)
    lines.append(f"connect    {connect}" + (f" (server on {answer.socket})" if answer.socket
                                             and answer.socket != connect else ""))
    server = answer.server
    if server is not None:
        which = (f"server_name {nginxroute.host_name(req.host)}" if answer.name_match == "exact" else
                 f"the default server: no server_name is {nginxroute.host_name(req.host)!r}")
        lines.append(f"server     {server.label or 'server'}, {server.file}:{server.line} ({which})")
    if answer.location is not None:
        lines.append(f"location   {answer.location.shown} ({_how(answer.location_match)})")
    gig, sess = gig_of(answer.location)
    if gig and answer.location is not None:
        served = f" -> sess {sess} ({answer.location.protocol})" if sess else " (static files)"
        lines.append(f"gig        {gig}{served}")
    lines += _outcome(answer)
    if server is not None and answer.name_match == "default":
        lines.append("note       another site of the host's nginx included earlier, or marked default_server, "
                     "would take this request instead")
    return lines


def _how(match: str) -> str:
    return {"prefix": "longest prefix", "exact": "exact match", "regex": "regex, in order",
            "auto-redirect": "the URL lacks its trailing slash", "none": "none"}.get(match, match)


def _outcome(answer: Answer) -> list[str]:
    if answer.outcome == "uwsgi":
        return [f"upstream   {answer.upstream}",
                f"app sees   SCRIPT_NAME={answer.script_name!r} PATH_INFO={answer.path_info!r} "
                f"QUERY_STRING={answer.query_string!r}"]
    if answer.outcome == "http":
        return [f"upstream   {answer.upstream}",
                f"app sees   {answer.request_target} with X-Forwarded-Prefix: {answer.forwarded_prefix!r}"]
    if answer.outcome == "file":
        return [f"file       {answer.file}"]
    if answer.outcome == "redirect":
        return [f"answer     {answer.status} to {answer.location_header}" +
                (f" ({answer.reason})" if answer.reason else "")]
    if answer.outcome == "return":
        body = f" {answer.body.strip()!r}" if answer.body else ""
        return [f"answer     {answer.status}{body}"]
    if answer.outcome in ("refused", "tls-error"):
        return [f"answer     {'connection refused' if answer.outcome == 'refused' else 'TLS handshake fails'}: "
                f"{answer.reason}"]
    return [f"answer     {answer.status}: {answer.reason}"]


def _chosen(found: list[Host], url: str, host: str | None) -> list[Host]:
    if host is not None:
        chosen = [h for h in found if h.name == host]
        if not chosen:
            known = ", ".join(h.name for h in found if h.name) or "none: the production has no [hosts]"
            raise RouteError(f"--host {host!r}: no such host (hosts: {known})")
        return chosen
    if len(found) == 1:
        return found
    name = nginxroute.host_name(urllib.parse.urlsplit(url).netloc.rpartition("@")[2])
    serving = [h for h in found if any(name in s.names for s in h.servers)]
    return serving or found


def route(files: Mapping[str, bytes], url: str, *, address: str | None = None, host: str | None = None,
          default_address: str = "") -> tuple[list[str], dict[str, Any]]:
    """(text lines, JSON document) for one URL."""
    lines = [f"GET {url}"]
    answers = []
    for each in _chosen(hosts(files), url, host):
        req = request(url, address, each.address or default_address)
        answer = nginxroute.route(each.servers, req)
        lines += answer_text(each, req, answer)
        answers.append(answer_json(each, req, answer))
    return lines, {"format": FORMAT, "url": url, "answers": answers}


# ---------------------------------------------------------------------------------------------
# --unreachable


def _walk(locations: list[Location], parent: Location | None = None) -> Iterator[tuple[Location, Location | None]]:
    for location in locations:
        yield location, parent
        yield from _walk(location.nested, location)


def _witnesses(location: Location, parent: Location | None) -> list[str]:
    if location.modifier in ("~", "~*"):
        base = parent.name if parent is not None and parent.name.endswith("/") else "/"
        return [base + ".backstage", base + ".x/y"]
    return [location.name, location.name + "backstage", location.name + "x/y"]


def _connections(server: Server, servers: tuple[Server, ...]) -> Iterator[tuple[str, int, str]]:
    """(address, port, scheme) that reach each of the server's listening sockets."""
    for listen in server.listens:
        address = listen.address
        if address == "0.0.0.0":  # an address no server binds on this port specifically
            bound = {one.address for s in servers for one in s.listens if one.port == listen.port}
            address = next(f"127.0.0.{n}" for n in range(1, 255) if f"127.0.0.{n}" not in bound)
        yield address, listen.port, "https" if listen.ssl else "http"


def unreachable(files: Mapping[str, bytes]) -> tuple[list[str], dict[str, Any]]:
    """Every location that no request reaches: each is tried with its own path on each of its server's
    sockets and names, and routed as nginx would."""
    lines, found = [], []
    for host in hosts(files):
        for server in host.servers:
            for location, parent in _walk(server.locations):
                taken_by = _reached(host, server, location, parent)
                if taken_by is None:
                    continue
                gig, _ = gig_of(location)
                item = {"host": host.name or None, "venue": server.label.removeprefix("venue ") or None,
                        "server": f"{server.file}:{server.line}", "location": location.shown,
                        "line": location.line, "gig": gig or None, "taken_by": taken_by}
                found.append(item)
                lines.append(("" if not host.name else f"{host.name}: ") +
                             f"{server.file}:{location.line}: {server.label}: location {location.shown}"
                             + (f" (gig {gig})" if gig else "") + f" is never reached: {taken_by}")
    if not lines:
        lines = ["every location can be reached"]
    return lines, {"format": FORMAT, "unreachable": found}


def _reached(host: Host, server: Server, location: Location, parent: Location | None) -> str | None:
    """None when some request reaches the location, else what takes its own path instead."""
    taken = ""
    for address, port, scheme in _connections(server, host.servers):
        for name in server.names or ["localhost"]:
            for path in _witnesses(location, parent):
                answer = nginxroute.route(host.servers, Request(scheme, name, address, port, path))
                if answer.location is location and answer.location_match != "auto-redirect":
                    return None
                if not taken:
                    other = answer.location.shown if answer.location else answer.outcome
                    where = (answer.server.label if answer.server and answer.server is not server else "")
                    taken = f"{path} goes to location {other}" + (f" of {where}" if where else "")
    return taken or "it has no path to try"


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
