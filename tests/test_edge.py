"""The edge, against Debian's real nginx and a real vassal: a TLS Venue (certificate files made here with
openssl) speaks TLS 1.2 and 1.3 only and offers h2, sends HSTS only when asked, redirects its plain-HTTP
side to https except the ACME challenge path, refuses bodies over client_max_body_size with 413, and its
static locations refuse dotfiles; collected static files get cache headers.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_binary, sandbox_head
from harness import TestSandbox, backstage, free_port

APP = '''
def application(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"edge ok %d" % len(body)]
'''
HOST = "edge.test"


@dataclass
class Edge:
    sandbox: TestSandbox
    tmp: Path
    https: int
    http: int

    def apply(self, hsts: int) -> None:
        q = json.dumps
        text = sandbox_head("edge", self.tmp, self.sandbox.host_table()) + f"""
[stages.main]
virtualenv = {q(sys.prefix)}

[acts.site]
wsgi = "edgeapp"
path = {q(str(self.tmp / "app"))}
static = {{ "/static/" = {q(str(self.tmp / "static") + "/")} }}

[sesses.site]
act = "site"
stage = "main"

[venues.www]
domain = "{HOST}"
listen = "127.0.0.1:{self.https}"
http_listen = "127.0.0.1:{self.http}"
tls = {{ certificate = {q(str(self.tmp / "cert.pem"))}, key = {q(str(self.tmp / "key.pem"))} }}
hsts = {hsts}
client_max_body_size = "64k"

[gigs.site]
venue = "www"
sess = "site"
"""
        production = self.tmp / f"production-{hsts}.toml"
        production.write_text(text)
        run = backstage("apply", str(production), "-o", str(self.tmp / "build"), "--ready-timeout=20")
        assert run.code == 0, run.err

    def context(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(self.tmp / "cert.pem")
        for name, version in versions.items():
            setattr(context, name, version)
        return context

    def https_request(self, method: str = "GET", path: str = "/", body: bytes = b"") -> http.client.HTTPResponse:
        """One request over TLS with SNI and Host `HOST`; the body is sent after the headers, and nginx may
        answer (a 413) before it has read it."""
        tls = self.context().wrap_socket(socket.create_connection(("127.0.0.1", self.https), 10),
                                         server_hostname=HOST)
        with tls:
            tls.sendall(f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
                        "Connection: close\r\n\r\n".encode())
            with contextlib.suppress(OSError):
                tls.sendall(body)
            response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
            response.begin()
            response.read()
        return response


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge")
    (tmp / "app").mkdir()
    (tmp / "app" / "edgeapp.py").write_text(APP)
    (tmp / "static").mkdir()
    (tmp / "static" / "site.css").write_text("body {}\n")
    (tmp / "static" / ".env").write_text("SECRET=1\n")
    subprocess.run([require_binary("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", f"/CN={HOST}",
                    "-addext", f"subjectAltName=DNS:{HOST}", "-keyout", str(tmp / "key.pem"),
                    "-out", str(tmp / "cert.pem")], check=True, capture_output=True)
    with TestSandbox(tmp / "sandbox") as sandbox:
        yield Edge(sandbox, tmp, free_port(), free_port())


def handshake(edge: Edge, **versions: ssl.TLSVersion) -> tuple[str | None, str | None]:
    context = edge.context(**versions)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with context.wrap_socket(socket.create_connection(("127.0.0.1", edge.https), 10), server_hostname=HOST) as tls:
        return tls.version(), tls.selected_alpn_protocol()


def test_tls_1_2_and_1_3_only_and_h2_offered(edge: Edge) -> None:
    edge.apply(hsts=0)
    assert handshake(edge) == ("TLSv1.3", "h2")
    assert handshake(edge, maximum_version=ssl.TLSVersion.TLSv1_2)[0] == "TLSv1.2"
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        context = old_client(edge, old)
        assert speaks(context, edge, old), f"this machine's OpenSSL cannot speak {old.name}: the check means nothing"
        with socket.create_connection(("127.0.0.1", edge.https), 10) as raw, pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname=HOST)


def old_client(edge: Edge, version: ssl.TLSVersion) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = edge.context(minimum_version=version, maximum_version=version)
    context.set_ciphers("ALL:@SECLEVEL=0")  # let the client offer what the server must refuse
    return context


def speaks(client: ssl.SSLContext, edge: Edge, version: ssl.TLSVersion) -> bool:
    """Whether `client` completes a handshake with a server that allows only `version` (the control)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(edge.tmp / "cert.pem", edge.tmp / "key.pem")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = server.maximum_version = version
    server.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            connection, _ = listener.accept()
            with contextlib.suppress(OSError), server.wrap_socket(connection, server_side=True):
                pass
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with client.wrap_socket(socket.create_connection(listener.getsockname(), 10), server_hostname=HOST) as tls:
                return tls.version() == version.name.replace("_", ".")
        except ssl.SSLError:
            return False
        finally:
            thread.join(10)


def test_hsts_only_when_set(edge: Edge) -> None:
    edge.apply(hsts=0)
    assert edge.https_request().getheader("Strict-Transport-Security") is None
    edge.apply(hsts=300)
    response = edge.https_request()
    assert (response.status, response.getheader("Strict-Transport-Security")) == (200, "max-age=300")


def test_plain_http_redirects_except_the_acme_challenge(edge: Edge) -> None:
    edge.apply(hsts=0)
    connection = http.client.HTTPConnection("127.0.0.1", edge.http, timeout=10)
    connection.request("GET", "/some/page?x=1", headers={"Host": HOST})
    response = connection.getresponse()
    assert (response.status, response.getheader("Location")) == (301, f"https://{HOST}:{edge.https}/some/page?x=1")
    challenge = edge.tmp / "state" / "acme" / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True, exist_ok=True)
    (challenge / "token123").write_text("token123.thumbprint")
    connection = http.client.HTTPConnection("127.0.0.1", edge.http, timeout=10)
    connection.request("GET", "/.well-known/acme-challenge/token123", headers={"Host": HOST})
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"token123.thumbprint")


def test_a_body_over_client_max_body_size_gets_413(edge: Edge) -> None:
    edge.apply(hsts=0)
    assert edge.https_request("POST", "/", b"x" * 1000).status == 200
    assert edge.https_request("POST", "/", b"x" * (65 * 1024)).status == 413


def test_static_locations_refuse_dotfiles(edge: Edge) -> None:
    edge.apply(hsts=0)
    assert edge.https_request("GET", "/static/site.css").status == 200
    assert edge.https_request("GET", "/static/.env").status == 404
