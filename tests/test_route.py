"""`backstage route` against a real nginx: generated productions, generated requests, and what nginx does.

Each generated production is compiled; its nginx files are served by a private Debian nginx (through
the artifact's own include.conf); every Sess is a real uWSGI answering with its name and what it was
given (SCRIPT_NAME, PATH_INFO, QUERY_STRING, REQUEST_URI, X-Forwarded-Prefix, SERVER_NAME), reached at
the very socket path or port the rendered files name. Then each generated request is sent to nginx
and what comes back is compared with `route`'s answer for it. At least 2,000 requests per run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from backstage import contract
from backstage.cli import route as route_cli
from backstage.errors import InputError
from backstage.nginxroute import Answer, Request, Server, parse, route
from backstage.phases import pipeline
from conftest import EXAMPLES, require_binary, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from nginx_check import stub_certificate

PRODUCTIONS = int(os.environ.get("BACKSTAGE_ROUTE_PRODUCTIONS", "100"))  # more for a longer search
REQUESTS_EACH = 21  # 2,100 requests per run
APP = r'''
def application(environ, start_response):
    keys = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_URI", "HTTP_X_FORWARDED_PREFIX", "SERVER_NAME")
    body = {"sess": environ["ROUTE_SESS"] if "ROUTE_SESS" in environ else __import__("os").environ["ROUTE_SESS"]}
    body.update({key: environ.get(key) for key in keys})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [__import__("json").dumps(body).encode()]
'''
UWSGI_SESSES = ("u0", "u1", "u2")
HTTP_SESSES = ("h0", "h1")  # h0 on a port, h1 on a unix socket
NAMES = ("a.test", "www.a.test", "b.test", "c.test", "api.c.test", "d.test")
PATHS = ("/", "/a/", "/a/b/", "/ab/", "/a-/", "/b/", "/api/", "/s/", "/.x/")
STATIC = ("/s/", "/static/", "/.w/", "/s/t/")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


@dataclass
class Lab:
    tmp: Path
    nginx: str
    plain: tuple[int, int]
    tls: int
    http_port: int
    cert: Path
    key: Path
    pool: Path

    @property
    def run_dir(self) -> Path:
        return self.tmp / "run"

    def static_dir(self, sess: str) -> Path:
        return self.tmp / "static" / sess


def _uwsgi() -> str:
    binary = Path(sys.executable).parent / "uwsgi"
    if not binary.exists():
        pytest.fail(f"no compiled uWSGI at {binary}; .ci/run installs it (pip install uwsgi)")
    return str(binary)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("route")
    cert, key = stub_certificate(tmp)
    pool = tmp / "pool"
    pool.mkdir()
    (pool / "routeapp.py").write_text(APP)
    ports = {_free_port() for _ in range(8)}
    plain1, plain2, tls, http_port = sorted(ports)[:4]
    lab = Lab(tmp, require_binary("nginx"), (plain1, plain2), tls, http_port, cert, key, pool)
    for sess in (*UWSGI_SESSES, *HTTP_SESSES):
        static = lab.static_dir(sess)
        (static / "d").mkdir(parents=True)
        (static / "f").write_text(f"static {sess} f")
        (static / "d" / "f").write_text(f"static {sess} d/f")
        (static / ".hidden").write_text("never served")
    processes = []
    for sess in (*UWSGI_SESSES, *HTTP_SESSES):
        bind = (["--http-socket", f"127.0.0.1:{http_port}"] if sess == "h0" else
                ["--http-socket" if sess in HTTP_SESSES else "--socket", str(pool / f"{sess}.sock"),
                 "--chmod-socket=666"])
        processes.append(subprocess.Popen(
            [_uwsgi(), "--strict", "--master", "--processes", "1", "--need-app", "--die-on-term",
             "--chdir", str(pool), "--wsgi-file", str(pool / "routeapp.py"), "--env", f"ROUTE_SESS={sess}",
             "--disable-logging", "--logto", str(pool / f"{sess}.log"), *bind]))
    deadline = time.monotonic() + 30
    for sess in (*UWSGI_SESSES, "h1"):
        while not (pool / f"{sess}.sock").exists():
            assert time.monotonic() < deadline, (pool / f"{sess}.log").read_text()
            time.sleep(0.05)
    while not _answers("127.0.0.1", http_port):
        assert time.monotonic() < deadline, (pool / "h0.log").read_text()
        time.sleep(0.05)
    yield lab
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=30)


def _answers(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Generated productions and requests


@st.composite
def productions(draw: st.DrawFn, lab: Lab) -> str:
    q = json.dumps
    plain = [lab.plain[0], f"127.0.0.1:{lab.plain[0]}", f"127.0.0.2:{lab.plain[0]}", lab.plain[1]]
    tls = [lab.tls, f"127.0.0.1:{lab.tls}"]
    names = list(draw(st.permutations(NAMES)))
    venues = []
    for index in range(draw(st.integers(1, 4))):
        if not names:
            break
        count = draw(st.integers(1, min(2, len(names))))
        own, names = names[:count], names[count:]
        venue = [f"[venues.v{index}]", f"domain = {q(own[0])}"]
        if own[1:]:
            venue.append(f"aliases = {q(own[1:])}")
        if draw(st.booleans()) and draw(st.booleans()):
            listen = draw(st.sampled_from(tls))
            venue += [f"listen = {q(listen)}",
                      f"tls = {{ certificate = {q(str(lab.cert))}, key = {q(str(lab.key))} }}"]
            if draw(st.booleans()):
                venue.append(f"http_listen = {q(draw(st.sampled_from(plain)))}")
            else:
                venue.append("redirect_http = false")
        else:
            venue.append(f"listen = {q(draw(st.sampled_from(plain)))}")
        venues.append("\n".join(venue))
    gigs, booked = [], set()
    for index in range(draw(st.integers(0, 7)) or draw(st.integers(0, 7))):
        venue = draw(st.integers(0, len(venues) - 1))
        path = draw(st.sampled_from(PATHS))
        if (venue, path) in booked:
            continue
        booked.add((venue, path))
        sess = draw(st.sampled_from((*UWSGI_SESSES, *HTTP_SESSES)))
        gigs.append(f'[gigs.g{index}]\nvenue = "v{venue}"\nsess = "{sess}"\npath = {q(path)}')
    acts, sesses = [], []
    for sess in (*UWSGI_SESSES, *HTTP_SESSES):
        act = [f"[acts.{sess}]", 'wsgi = "routeapp"', f"path = {q(str(lab.pool))}"]
        if draw(st.integers(0, 2)) == 0:
            act.append(f"static = {{ {q(draw(st.sampled_from(STATIC)))} = {q(str(lab.static_dir(sess)) + '/')} }}")
        acts.append("\n".join(act))
        own = [f"[sesses.{sess}]", f'act = "{sess}"', 'stage = "main"']
        if sess in HTTP_SESSES:
            own.append('protocol = "http"')
        if sess == "h0":
            own.append(f"port = {lab.http_port}")
        sesses.append("\n".join(own))
    head = f"""[production]
name = "rt"
state_dir = {q(str(lab.tmp / "state"))}
run_dir = {q(str(lab.run_dir))}
log_dir = {q(str(lab.tmp / "log"))}

[stages.main]
virtualenv = "/nonexistent/route-venv"
"""
    return "\n\n".join([head, *acts, *sesses, *venues, *gigs]) + "\n"


PIECES = ("", "x", "f", "d/f", "d", "d/", "/", "//", "./", "../", "../../", ".hidden", "%2F", "%2e%2E/", "%41",
          "%20", "%3F", "%25", "+", "?q=1", "?a=%2F&b", "#frag", "a/./b", "b/../", ".x")


@st.composite
def requests(draw: st.DrawFn, lab: Lab, servers: tuple[Server, ...]) -> Request:
    """Mostly requests the production's servers take (their sockets, names and locations), some not."""
    listens = [listen for server in servers for listen in server.listens]
    if listens and draw(st.integers(0, 5)):
        listen = draw(st.sampled_from(listens))
        scheme = "https" if listen.ssl else "http"
        if not draw(st.integers(0, 9)):
            scheme = "http" if listen.ssl else "https"
        port = listen.port
        address = listen.address if listen.address != "0.0.0.0" else draw(st.sampled_from(("127.0.0.1", "127.0.0.3")))
    else:
        scheme, port = draw(st.sampled_from([("http", lab.plain[0]), ("http", lab.plain[1]), ("https", lab.tls)]))
        address = draw(st.sampled_from(("127.0.0.1", "127.0.0.2", "127.0.0.3")))
    names = [name for server in servers for name in server.names]
    name = draw(st.sampled_from(names)) if names and draw(st.integers(0, 4)) else \
        draw(st.sampled_from((*NAMES, "unknown.test", "127.0.0.1")))
    if draw(st.integers(0, 5)) == 0:
        name = name.upper()
    if draw(st.integers(0, 7)) == 0:
        name += "."
    host = name + (f":{port}" if draw(st.booleans()) else "")
    locations = [loc.name for server in servers for loc in server.locations]
    base = draw(st.sampled_from(locations)) if locations and draw(st.integers(0, 3)) else \
        draw(st.sampled_from((*PATHS, *STATIC, "/a", "/api", "/s", "/a/b", "/nope/", "/.x")))
    if draw(st.integers(0, 3)) == 0:
        base = base.rstrip("/")
    target = base + "".join(draw(st.lists(st.sampled_from(PIECES), max_size=3)))
    target = target.split("#", 1)[0] or "/"  # a client never sends the fragment
    return Request(scheme, host, address, port, target)


# ---------------------------------------------------------------------------------------------
# Serving one production


class Served:
    def __init__(self, lab: Lab, toml: str) -> None:
        self.lab = lab
        self.compiled = pipeline.compile_bytes(toml.encode())
        files = {path: f.content for path, f in self.compiled.files.items()}
        self.host = route_cli.hosts(files)[0]
        state = lab.tmp / "state"
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(lab.run_dir, ignore_errors=True)
        lab.run_dir.mkdir()
        live = state / "current"
        for path, content in files.items():
            if path.startswith("nginx/"):
                (live / path).parent.mkdir(parents=True, exist_ok=True)
                (live / path).write_bytes(content)
        (state / "include.conf").write_bytes(files["include.conf"])
        plan = contract.Plan.from_json(files[contract.PLAN])
        for vassal in plan.vassals:  # each Sess's socket path, where nginx looks: the pool's uWSGI
            bound = vassal.address.removeprefix("unix:")
            if bound.startswith("/"):
                os.symlink(lab.pool / f"{vassal.sess}.sock", bound)
        work = lab.tmp / "nginx"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        (work / "nginx.conf").write_text(f"""
user root;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
worker_processes 1;
events {{}}
http {{
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    uwsgi_temp_path {work}/uwsgi;
    fastcgi_temp_path {work}/fastcgi;
    scgi_temp_path {work}/scgi;
    access_log off;
    include {state}/include.conf;
}}
""")
        self.process = subprocess.Popen([lab.nginx, "-p", str(work), "-c", str(work / "nginx.conf"),
                                         "-g", "daemon off;"], stderr=subprocess.PIPE)
        sockets = {(one.address, one.port) for s in self.host.servers for one in s.listens}
        deadline = time.monotonic() + 10
        for address, port in sockets:
            probe = "127.0.0.1" if address == "0.0.0.0" else address
            while not _answers(probe, port):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    said = self.process.stderr.read().decode() if self.process.stderr else ""
                    pytest.fail(f"nginx did not start: {said}\n{toml}")
                time.sleep(0.01)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@dataclass
class Got:
    status: int | None  # None: the connection was refused / the TLS handshake failed
    failure: str
    headers: dict[str, str]
    body: bytes


def send(request: Request) -> Got:
    try:
        raw = socket.create_connection((request.address, request.port), timeout=10)
    except ConnectionRefusedError:
        return Got(None, "refused", {}, b"")
    try:
        conn: socket.socket = raw
        if request.scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sni = route_cli.nginxroute.host_name(request.host)
            try:
                conn = context.wrap_socket(raw, server_hostname=None if route_cli._ip(sni) else sni)
            except (ssl.SSLError, ConnectionResetError):
                return Got(None, "tls-error", {}, b"")
        conn.sendall(f"GET {request.target} HTTP/1.1\r\nHost: {request.host}\r\nConnection: close\r\n\r\n"
                     .encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    finally:
        raw.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Got(int(lines[0].split()[1]), "", headers, body)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, body = out + rest[:n], rest[n + 2:]
    return out


def agrees(answer: Answer, got: Got) -> str:
    """'' when what nginx did is what `route` said; else what differs."""
    if answer.outcome in ("refused", "tls-error"):
        return "" if got.failure == answer.outcome else f"expected {answer.outcome}"
    if got.status is None:
        return f"nginx: {got.failure}"
    if answer.outcome in ("uwsgi", "http"):
        if got.status != 200:
            return f"status {got.status}"
        seen = json.loads(got.body)
        _, sess = route_cli.gig_of(answer.location)
        wanted = {"sess": sess}
        if answer.outcome == "uwsgi":
            assert answer.server is not None
            wanted |= {"SCRIPT_NAME": answer.script_name, "PATH_INFO": answer.path_info,
                       "QUERY_STRING": answer.query_string, "SERVER_NAME": answer.server.names[0]}
        else:
            wanted |= {"REQUEST_URI": answer.request_target, "HTTP_X_FORWARDED_PREFIX": answer.forwarded_prefix}
        if not seen.get("HTTP_X_FORWARDED_PREFIX"):
            seen["HTTP_X_FORWARDED_PREFIX"] = ""  # nginx sends no header whose value is empty
        wrong = {k: (v, seen.get(k)) for k, v in wanted.items() if seen.get(k) != v}
        return f"route, nginx: {wrong}" if wrong else ""
    if answer.outcome == "file":
        path = Path(answer.file)
        if answer.file.endswith("/"):  # a directory's index: no index.html here, and autoindex is off
            wanted = 403 if path.is_dir() else 404
            return "" if got.status == wanted else f"status {got.status} for {answer.file}, not {wanted}"
        if path.is_file():
            same = (got.status, got.body) == (200, path.read_bytes())
            return "" if same else f"status {got.status} {got.body[:40]!r}"
        if path.is_dir():  # nginx redirects to the name with its slash
            return "" if got.status == 301 else f"status {got.status} for a directory"
        return "" if got.status == 404 else f"status {got.status} for a missing file"
    if got.status != answer.status:
        return f"status {got.status}, route says {answer.status}"
    if answer.outcome == "redirect" and got.headers.get("location") != answer.location_header:
        return f"Location {got.headers.get('location')!r}, route says {answer.location_header!r}"
    if answer.outcome == "return" and answer.body and got.body != answer.body.encode():
        return f"body {got.body!r}, route says {answer.body!r}"
    return ""


def test_route_agrees_with_a_real_nginx_on_generated_productions(lab: Lab) -> None:
    compared: list[str] = []
    outcomes: dict[str, int] = {}

    @settings(max_examples=PRODUCTIONS, deadline=None, database=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        toml = data.draw(productions(lab))
        try:
            served = Served(lab, toml)
        except InputError:
            from hypothesis import reject
            reject()
        try:
            for _ in range(REQUESTS_EACH):
                request = data.draw(requests(lab, served.host.servers))
                answer = route(served.host.servers, request)
                got = send(request)
                wrong = agrees(answer, got)
                assert not wrong, (f"{request}\nroute: {answer.outcome} {answer.location and answer.location.shown}"
                                   f" {answer}\nnginx: {got}\n{wrong}\n\n{toml}")
                compared.append(answer.outcome)
                outcomes[answer.outcome] = outcomes.get(answer.outcome, 0) + 1
        finally:
            served.stop()

    check()
    print(f"route and nginx agreed on {len(compared)} requests: {dict(sorted(outcomes.items()))}")
    assert len(compared) >= 2000, len(compared)
    # The generated cases reach every kind of answer, so none of the comparisons is vacuous.
    assert set(outcomes) >= {"uwsgi", "http", "file", "redirect", "return", "refused", "tls-error", "bad-request"}, \
        outcomes


def test_route_cli_in_words_and_json() -> None:
    production = EXAMPLES / "jazzclub" / "production.toml"
    run = run_cli("route", "https://example.com/api/v1/items?page=2", str(production))
    assert run.code == 0, run.err
    assert run.out.splitlines() == [
        "GET https://example.com/api/v1/items?page=2",
        "connect    203.0.113.10:443 (server on 0.0.0.0:443)",
        "server     venue example, nginx/example.conf:19 (server_name example.com)",
        "location   /api/ (longest prefix)",
        "gig        api-live -> sess api (http)",
        "upstream   http://127.0.0.1:8101/",
        "app sees   /v1/items?page=2 with X-Forwarded-Prefix: '/api'",
    ]
    document = json.loads(run_cli("route", "https://example.com/api", str(production), "--json").out)
    assert document["format"] == 1
    assert [(a["outcome"], a["status"], a["redirect"]) for a in document["answers"]] == [
        ("redirect", 301, "https://example.com/api/")]
    unreachable = run_cli("route", "--unreachable", str(production), "--json")
    assert json.loads(unreachable.out) == {"format": 1, "unreachable": []}
    assert run_cli("route", str(production)).code == 2


def test_unreachable_names_a_static_prefix_behind_a_dot(tmp_path: Path) -> None:
    production = tmp_path / "production.toml"
    production.write_text((EXAMPLES / "minimal" / "production.toml").read_text().replace(
        'settings = "site.settings"', 'settings = "site.settings"\nstatic = { "/.well/" = "/srv/well/" }'))
    run = run_cli("route", "--unreachable", str(production))
    assert run.code == 0, run.err
    assert run.out.splitlines() == [
        "nginx/www.conf:29: venue www: location /.well/ (gig site) is never reached: /.well/ goes to location "
        "~ /\\. inside /.well/"]


def test_route_with_several_hosts_answers_for_the_hosts_serving_the_name(tmp_path: Path) -> None:
    production = tmp_path / "fleet.toml"
    production.write_text("""
[production]
name = "fl"
[stages.main]
virtualenv = "/srv/v"
[acts.site]
wsgi = "site.wsgi"
path = "/srv/site"
[hosts.web1]
address = "10.0.0.1"
[hosts.web2]
address = "10.0.0.2"
[sesses.site]
act = "site"
stage = "main"
[sesses.blog]
act = "site"
stage = "main"
hosts = ["web2"]
[venues.www]
domain = "example.org"
[venues.blog]
domain = "blog.example.org"
hosts = ["web2"]
[gigs.site]
venue = "www"
sess = "site"
[gigs.blog]
venue = "blog"
sess = "blog"
""")
    blog = json.loads(run_cli("route", "http://blog.example.org/x", str(production), "--json").out)
    assert [(a["host"], a["connect"], a["sess"], a["path_info"]) for a in blog["answers"]] == [
        ("web2", "10.0.0.2:80", "blog", "/x")]
    www = json.loads(run_cli("route", "http://example.org/", str(production), "--json").out)
    assert [(a["host"], a["sess"]) for a in www["answers"]] == [("web1", "site"), ("web2", "site")]
    # Asked on web1, where blog.example.org is not served: its only server, www, is the default.
    there = json.loads(run_cli("route", "http://blog.example.org/", str(production), "--host", "web1",
                               "--json").out)
    assert [(a["venue"], a["name_match"]) for a in there["answers"]] == [("www", "default")]
    wrong = run_cli("route", "http://example.org/", str(production), "--host", "web3")
    assert wrong.code == 2 and "no such host (hosts: web1, web2)" in wrong.err


def test_an_ipv6_connection_meets_no_ipv4_wildcard() -> None:
    production = EXAMPLES / "jazzclub" / "production.toml"
    document = json.loads(run_cli("route", "http://[::1]/x", str(production), "--json").out)
    assert [(a["outcome"], a["connect"]) for a in document["answers"]] == [("refused", "[::1]:80")]
    bad = run_cli("route", "http://example.com/", str(production), "--address", "nope")
    assert bad.code == 2 and "give an IP address" in bad.err


def test_slash_sorts_lowest_in_the_location_tree() -> None:
    """nginx orders locations (and searches their tree) with '/' below every other byte, so /a/ sorts
    before /a-/, and /a (one slash short of /a/, which passes upstream) is redirected to /a/. Found by
    the comparison with nginx above; a plain byte order routed /a to the / location."""
    conf = """
server {
    listen 8080;
    server_name a.test;
    location / { uwsgi_pass unix:/run/root.sock; }
    location /.w/ { alias /srv/w/; }
    location /a-/ { uwsgi_pass unix:/run/dash.sock; }
    location /a-/.w/ { alias /srv/w/; }
    location /a/ { uwsgi_pass unix:/run/a.sock; }
    location /a/.w/ { alias /srv/w/; }
}
"""
    servers = parse(conf, "t.conf")

    def answer(target: str) -> Answer:
        return route(servers, Request("http", "a.test", "127.0.0.1", 8080, target))
    moved = answer("/a")
    assert (moved.outcome, moved.location_header) == ("redirect", "http://a.test:8080/a/"), moved
    assert answer("/a/x").upstream == "unix:/run/a.sock"
    assert answer("/a-/x").upstream == "unix:/run/dash.sock"
    assert answer("/b").upstream == "unix:/run/root.sock"
