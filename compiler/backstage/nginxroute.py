"""Which server and location nginx gives a request, and what the upstream is sent: a simulator.

It reads nginx configuration text (the servers backstage renders, in the order nginx includes them)
and follows nginx's own rules, ported from its source (1.22):

- the listening socket: a server listening on the connection's exact address:port, else on
  0.0.0.0:port; the default server of a socket is its first server (none is marked `default_server`);
- the virtual server: the Host header (lower-cased, without port and trailing dot) against each
  server's literal `server_name`s, else the default server;
- the URI: ngx_http_parse_complex_uri (percent-decoding, merged slashes, `.` and `..` resolved;
  a `..` above the root is 400);
- the location: nginx's static location tree (ngx_http_create_locations_tree, searched as
  ngx_http_core_find_static_location does, with the auto-redirect of `/x` to `/x/` for a location
  that passes to an upstream), then nested locations, then regex locations in order;
- in the location: `rewrite ... break`, `return`, `alias`/`root`, `uwsgi_pass` with its
  SCRIPT_NAME and PATH_INFO (`$document_uri`), `proxy_pass` with a URI part (the matched prefix
  replaced, re-escaped when the request had a `%`).

Standard library only; no file is read here: the caller gives the configuration text.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------------
# Configuration text -> servers


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Directive:
    name: str
    args: tuple[str, ...]


@dataclass(slots=True)
class Location:
    modifier: str  # "" (prefix), "=", "^~", "~", "~*"
    name: str
    line: int
    label: str  # the comment right above it ("gig blog-live: sess blog")
    directives: list[Directive] = field(default_factory=list)
    nested: list[Location] = field(default_factory=list)
    level: Level | None = None
    parent: Location | None = field(default=None, repr=False, compare=False)

    def first(self, name: str) -> Directive | None:
        return next((d for d in self.directives if d.name == name), None)

    @property
    def passes(self) -> bool:
        """nginx's auto_redirect: set by the directives that pass a request upstream."""
        return any(d.name in ("uwsgi_pass", "proxy_pass", "fastcgi_pass", "scgi_pass", "grpc_pass",
                              "memcached_pass") for d in self.directives)

    @property
    def protocol(self) -> str:
        return "uwsgi" if self.first("uwsgi_pass") else "http" if self.first("proxy_pass") else ""

    @property
    def shown(self) -> str:
        own = f"{self.modifier} {self.name}" if self.modifier else self.name
        return f"{own} inside {self.parent.shown}" if self.parent is not None else own


@dataclass(frozen=True, slots=True)
class Listen:
    address: str  # "0.0.0.0" for a port alone
    port: int
    ssl: bool

    @property
    def socket(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(slots=True)
class Server:
    file: str
    line: int
    label: str  # "venue example" from the file's first comment
    listens: list[Listen] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    directives: list[Directive] = field(default_factory=list)
    locations: list[Location] = field(default_factory=list)
    level: Level | None = None


_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{};]|[^\s{};"\'#]+', re.S)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _tokens(text: str, file: str) -> Iterator[tuple[str, int, bool]]:
    """(token, line, is_comment); quoted tokens come unquoted, with nginx's escapes."""
    line, pos = 1, 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ConfigError(f"{file}:{line}: cannot read {text[pos:pos + 20]!r}")
        token = match.group()
        if token.startswith("#"):
            yield token[1:].strip(), line, True
        elif token[0] in "\"'":
            body = token[1:-1]
            yield re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body, flags=re.S), line, False
        elif not token.isspace():
            yield token, line, False
        line += token.count("\n")
        pos = match.end()


def _listen(args: tuple[str, ...]) -> Listen:
    where = args[0]
    address, _, port = where.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"listen {where!r}: only a port or IPv4:port is understood")
    if address in ("", "*"):
        address = "0.0.0.0"
    ipaddress.IPv4Address(address)
    return Listen(address, int(port), "ssl" in args[1:])


def parse(text: str, file: str) -> list[Server]:
    """The servers of one configuration file (only `server` blocks at its top level)."""
    servers: list[Server] = []
    stack: list[Server | Location] = []
    words: list[str] = []
    comment, first_comment, start = "", "", 0
    for token, line, is_comment in _tokens(text, file):
        if is_comment:
            comment = token
            first_comment = first_comment or token
            continue
        if not words:
            start = line
        if token == "{":
            name, args = (words[0], tuple(words[1:])) if words else ("", ())
            words = []
            if name == "server" and not stack:
                label = first_comment.split(", ", 1)[1] if ", " in first_comment else ""
                server = Server(file, start, label)
                servers.append(server)
                stack.append(server)
            elif name == "location" and stack:
                modifier, path = (args[0], args[1]) if len(args) == 2 else ("", args[0])
                parent = stack[-1]
                location = Location(modifier, path, start, comment,
                                    parent=parent if isinstance(parent, Location) else None)
                if isinstance(parent, Server):
                    parent.locations.append(location)
                else:
                    parent.nested.append(location)
                stack.append(location)
            else:
                raise ConfigError(f"{file}:{start}: unexpected block {name!r}")
            comment = ""
        elif token == "}":
            if not stack or words:
                raise ConfigError(f"{file}:{line}: unexpected '}}'")
            stack.pop()
            comment = ""
        elif token == ";":
            if not words:
                raise ConfigError(f"{file}:{line}: empty directive")
            directive = Directive(words[0], tuple(words[1:]))
            words, comment = [], ""
            if not stack:
                continue  # a top-level directive (include) is not a server's
            block = stack[-1]
            if isinstance(block, Server) and directive.name == "listen":
                block.listens.append(_listen(directive.args))
            elif isinstance(block, Server) and directive.name == "server_name":
                block.names.extend(directive.args)
            else:
                block.directives.append(directive)
        else:
            words.append(token)
    if stack or words:
        raise ConfigError(f"{file}: unexpected end of file")
    for server in servers:
        server.level = _level(server.locations)
    return servers


# ---------------------------------------------------------------------------------------------
# nginx's location tree (ngx_http_init_static_location_trees)


@dataclass(slots=True)
class _Queued:
    name: str
    exact: Location | None
    inclusive: Location | None
    list: list[_Queued] = field(default_factory=list)


@dataclass(slots=True)
class _Node:
    name: str
    exact: Location | None
    inclusive: Location | None
    auto_redirect: bool
    left: _Node | None = None
    right: _Node | None = None
    tree: _Node | None = None


@dataclass(slots=True)
class Level:
    """The locations of one server or one location: its static tree and its regexes in order."""

    tree: _Node | None
    regexes: list[Location]


# ngx_filename_cmp, which both sorts the locations and searches their tree, orders bytes with '/' as
# the lowest of all ("we need '/' to be the lowest character"): /a/ comes before /a-/.
_SLASH_LOWEST = bytes.maketrans(b"/", b"\x00")


def _filename(name: str) -> bytes:
    return name.encode("latin-1", "replace").translate(_SLASH_LOWEST)


def _sort_key(location: Location) -> tuple[bytes, int]:
    # ngx_http_cmp_locations: ngx_filename_cmp over min(len)+1 bytes (a shorter prefix first), and an
    # exact match before the inclusive one of the same name.
    return _filename(location.name), 0 if location.modifier == "=" else 1


def _level(locations: list[Location]) -> Level:
    for location in locations:
        location.level = _level(location.nested)
    regexes = [loc for loc in locations if loc.modifier in ("~", "~*")]
    static = sorted((loc for loc in locations if loc.modifier not in ("~", "~*")), key=_sort_key)
    queue: list[_Queued] = []
    for location in static:  # ngx_http_join_exact_locations
        exact = location if location.modifier == "=" else None
        if queue and queue[-1].name == location.name:
            if (queue[-1].exact is None) == (exact is None):
                raise ConfigError(f"duplicate location {location.name!r}")
            queue[-1].inclusive = location
            continue
        queue.append(_Queued(location.name, exact, None if exact else location))
    _make_list(queue, 0)
    return Level(_tree(queue, 0), regexes)


def _make_list(locations: list[_Queued], q: int) -> None:
    """ngx_http_create_locations_list: each inclusive location takes the following ones it prefixes."""
    while q < len(locations) - 1:
        head = locations[q]
        if head.inclusive is None:
            q += 1
            continue
        x = q + 1
        while x < len(locations) and locations[x].name.startswith(head.name):
            x += 1
        if x == q + 1:
            q = x
            continue
        head.list = locations[q + 1:x]
        del locations[q + 1:x]
        _make_list(head.list, 0)
        q += 1


def _tree(locations: list[_Queued], prefix: int) -> _Node | None:
    """ngx_http_create_locations_tree: the middle element, left and right halves, its own list below."""
    if not locations:
        return None
    middle = len(locations) // 2
    head = locations[middle]
    auto = any(loc is not None and loc.passes for loc in (head.exact, head.inclusive))
    node = _Node(head.name[prefix:], head.exact, head.inclusive, auto)
    node.left = _tree(locations[:middle], prefix)
    node.right = _tree(locations[middle + 1:], prefix)
    node.tree = _tree(head.list, len(head.name)) if head.list else None
    return node


OK, AGAIN, DONE, DECLINED = "ok", "again", "done", "declined"


def _find_static(node: _Node | None, uri: bytes) -> tuple[str, Location | None]:
    """ngx_http_core_find_static_location, step by step."""
    found: tuple[str, Location | None] = (DECLINED, None)
    while node is not None:
        name = _filename(node.name)
        n = min(len(uri), len(name))
        if uri[:n] != name[:n]:
            node = node.left if uri[:n] < name[:n] else node.right
            continue
        if len(uri) > len(name):
            if node.inclusive is not None:
                found = (AGAIN, node.inclusive)
                node, uri = node.tree, uri[n:]
                continue
            node = node.right
            continue
        if len(uri) == len(name):
            if node.exact is not None:
                return OK, node.exact
            return AGAIN, node.inclusive
        if len(uri) + 1 == len(name) and node.auto_redirect:
            found = (DONE, node.exact or node.inclusive)
        node = node.left
    return found


def find_location(level: Level, uri: str) -> tuple[str, Location | None]:
    """ngx_http_core_find_location: (OK | DONE | AGAIN | DECLINED, the location)."""
    rc, location = _find_static(level.tree, _filename(uri))
    noregex = False
    if rc == AGAIN and location is not None and location.level is not None:
        noregex = location.modifier == "^~"
        nested_rc, nested = find_location(location.level, uri)
        if nested_rc in (OK, DONE):
            return nested_rc, nested
    if rc in (OK, DONE):
        return rc, location
    if not noregex:
        for regex in level.regexes:
            flags = re.I if regex.modifier == "~*" else 0
            if re.search(regex.name, uri, flags):
                if regex.level is not None:
                    nested_rc, nested = find_location(regex.level, uri)
                    if nested_rc in (OK, DONE):
                        return OK, nested
                return OK, regex
    return rc, location


# ---------------------------------------------------------------------------------------------
# The request line


class BadRequest(ValueError):
    pass


_USUAL, _SLASH, _DOT, _DOTDOT = "usual", "slash", "dot", "dotdot"
_HEX = frozenset("0123456789abcdefABCDEF")


def normalise(target: str) -> tuple[str, str, bool]:
    """ngx_http_parse_complex_uri with merge_slashes on: (uri, args, quoted); BadRequest as nginx's 400.

    A decoded "%XX" is processed as the character it stands for (so %2F is a slash and %2E a dot),
    except %25, %23 and %3F, which are taken literally."""
    if not target.startswith("/"):
        raise BadRequest("the request target must start with '/'")
    out: list[str] = []
    state, quoted, i = _USUAL, False, 0
    pending = ""  # a decoded character, processed in the state its '%' was met in
    while pending or i < len(target):
        if pending:
            ch, pending = pending, ""
        else:
            ch, i = target[i], i + 1
            if ch == "%":
                quoted = True
                hexits = target[i:i + 2]
                if len(hexits) < 2 or not set(hexits) <= _HEX:
                    raise BadRequest("a '%' not followed by two hex digits")
                i += 2
                decoded = chr(int(hexits, 16))
                if decoded == "\0":
                    raise BadRequest("%00 in the path")
                if decoded in "%#?":
                    out.append(decoded)
                    state = _USUAL
                else:
                    pending = decoded
                continue
            if ch in "?#":
                args = target[i:].split("#", 1)[0] if ch == "?" else ""
                _end(out, state)
                return "".join(out), args, quoted
        if state == _SLASH and ch == "/":
            continue  # merge_slashes
        if state in (_DOT, _DOTDOT) and ch == "/":
            _end(out, state)
            state = _SLASH
            continue
        out.append(ch)
        if ch == "/":
            state = _SLASH
        elif ch == "." and state == _SLASH:
            state = _DOT
        elif ch == "." and state == _DOT:
            state = _DOTDOT
        else:
            state = _USUAL
    _end(out, state)
    return "".join(out), "", quoted


def _end(out: list[str], state: str) -> None:
    """The end of a segment: "/." drops its dot, "/.." the segment before it."""
    if state == _DOT:
        out.pop()
    elif state == _DOTDOT:
        _up(out)


def _up(out: list[str]) -> None:
    """A "/.." just written: drop it and the segment before it (nginx: u -= 4, back to a '/')."""
    del out[-3:]  # "/.."
    if not out:
        raise BadRequest("'..' above the root")
    while out and out[-1] != "/":
        out.pop()
    if not out:
        raise BadRequest("'..' above the root")


_ESCAPE_URI = frozenset(' "#%<>?\\^`{|}\x7f')


def escape_uri(text: str) -> str:
    """ngx_escape_uri(NGX_ESCAPE_URI): control characters, bytes above 0x7f and ` "#%<>?\\^`{|}`."""
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        char = chr(byte)
        out.append(f"%{byte:02X}" if byte < 0x20 or byte > 0x7e or char in _ESCAPE_URI else char)
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# A request, routed


@dataclass(frozen=True, slots=True)
class Request:
    scheme: str  # "http" | "https"
    host: str  # the Host header as sent (may carry ":port")
    address: str  # where the connection goes
    port: int
    target: str  # the request target: path and query, as sent


@dataclass(frozen=True, slots=True)
class Answer:
    """What nginx does with a request. `status` is None when it is passed upstream."""

    outcome: str  # refused | tls-error | bad-request | return | redirect | file | uwsgi | http | none
    socket: str = ""
    server: Server | None = None
    name_match: str = ""  # "exact" | "default"
    location: Location | None = None
    location_match: str = ""  # "exact" | "prefix" | "regex" | "auto-redirect" | "none"
    status: int | None = None
    location_header: str = ""
    body: str = ""
    file: str = ""
    upstream: str = ""
    script_name: str = ""
    path_info: str = ""
    query_string: str = ""
    request_target: str = ""  # what an HTTP upstream is sent
    forwarded_prefix: str = ""
    reason: str = ""


def join(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def host_name(header: str) -> str:
    """nginx's $host from a Host header: lower-cased, port and trailing dot dropped."""
    name = header.lower()
    name = name.split("]", 1)[0] + "]" if name.startswith("[") else name.split(":", 1)[0]
    return name.rstrip(".") if name not in (".",) else name


def servers_on(servers: Sequence[Server], address: str, port: int) -> list[Server]:
    """The servers a connection to address:port meets: those on that exact socket, else on 0.0.0.0."""
    exact = [s for s in servers if any(one.port == port and one.address == address for one in s.listens)]
    if exact or ":" in address:  # 0.0.0.0 is IPv4's wildcard: an IPv6 connection meets none of it
        return exact
    return [s for s in servers if any(one.port == port and one.address == "0.0.0.0" for one in s.listens)]


def route(servers: Sequence[Server], request: Request) -> Answer:
    group = servers_on(servers, request.address, request.port)
    if not group:
        return Answer("refused", reason=f"nothing listens on {join(request.address, request.port)}")
    socket = next(one.socket for one in group[0].listens if one.port == request.port
                  and one.address in (request.address, "0.0.0.0"))
    ssl = any(one.ssl for s in group for one in s.listens if one.port == request.port)
    if request.scheme == "https" and not ssl:
        return Answer("tls-error", socket, reason=f"{socket} speaks plain HTTP, not TLS")
    name = host_name(request.host)
    server = next((s for s in group if name in s.names), None)
    match = "exact" if server else "default"
    server = server or group[0]
    if request.scheme == "http" and ssl:
        return Answer("bad-request", socket, server, match, status=400,
                      reason="a plain HTTP request sent to a TLS port")
    try:
        uri, args, quoted = normalise(request.target)
    except BadRequest as exc:
        return Answer("bad-request", socket, server, match, status=400, reason=str(exc))
    assert server.level is not None
    rc, location = find_location(server.level, uri)
    common = {"socket": socket, "server": server, "name_match": match, "location": location}
    if location is None:
        return Answer("none", **common, location_match="none", status=404,  # type: ignore[arg-type]
                      reason="no location matches: the server's own document root")
    how = ("auto-redirect" if rc == DONE else "regex" if location.modifier in ("~", "~*")
           else "exact" if location.modifier == "=" else "prefix")
    common["location_match"] = how
    if rc == DONE:
        port = "" if (request.port, request.scheme) in ((80, "http"), (443, "https")) else f":{request.port}"
        where = escape_uri(location.name) + (f"?{args}" if args else "")
        return Answer("redirect", **common, status=301,  # type: ignore[arg-type]
                      location_header=f"{request.scheme}://{name}{port}{where}",
                      reason=f"{location.name} without its trailing slash")
    return _content(location, uri, args, quoted, request, name, common)


def _substitute(replacement: str, matched: re.Match[str]) -> str:
    """A rewrite's replacement with its $1..$9 (copied as they are: the URI is not escaped again)."""
    return re.sub(r"\$(\d)", lambda m: matched.group(int(m.group(1))) or "", replacement)


def _content(location: Location, uri: str, args: str, quoted: bool, request: Request, host: str,
             common: dict[str, object]) -> Answer:
    original_path = request.target.split("?", 1)[0]
    for directive in location.directives:
        if directive.name == "rewrite":
            pattern, replacement = directive.args[0], directive.args[1]
            matched = re.search(pattern, uri)
            if matched:
                uri = _substitute(replacement, matched)
                if directive.args[2:] == ("break",):
                    continue
        elif directive.name == "return":
            code = int(directive.args[0])
            text = directive.args[1] if len(directive.args) > 1 else ""
            text = (text.replace("$host", host).replace("$request_uri", request.target)
                    .replace("$uri", uri))
            if code in (301, 302, 303, 307, 308):
                return Answer("redirect", **common, status=code, location_header=text)  # type: ignore[arg-type]
            return Answer("return", **common, status=code, body=text)  # type: ignore[arg-type]
    for directive in location.directives:
        if directive.name == "uwsgi_pass":
            params = {d.args[0]: d.args[1] for d in location.directives if d.name == "uwsgi_param"}
            return Answer("uwsgi", **common, upstream=directive.args[0],  # type: ignore[arg-type]
                          script_name=params.get("SCRIPT_NAME", ""), path_info=uri, query_string=args)
        if directive.name == "proxy_pass":
            upstream = directive.args[0]
            part = re.sub(r"^http://(unix:[^:]*:|[^/]*)", "", upstream)
            if part:
                rest = uri[min(len(location.name), len(uri)):]
                target = part + (escape_uri(rest) if quoted else rest)
            else:
                target = original_path
            target += f"?{args}" if args else ""
            headers = {d.args[0]: d.args[1] for d in location.directives if d.name == "proxy_set_header"}
            return Answer("http", **common, upstream=upstream, request_target=target,  # type: ignore[arg-type]
                          forwarded_prefix=headers.get("X-Forwarded-Prefix", ""))
    alias, root = location.first("alias"), location.first("root")
    if alias is not None:
        return Answer("file", **common, file=alias.args[0] + uri[len(location.name):])  # type: ignore[arg-type]
    if root is not None:
        return Answer("file", **common, file=root.args[0].rstrip("/") + uri)  # type: ignore[arg-type]
    return Answer("none", **common, status=404, reason="the location serves nothing")  # type: ignore[arg-type]
