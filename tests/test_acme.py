"""ACME against a real CA: Debian's pebble (tests/acme_ca.py), certbot, Debian's nginx and a real vassal.

One CA, one sandbox and one sequence of generations for the module: a plain site first, then the same
production with an ACME Venue (certbot gets its certificate while the Venue answers the challenge and
503), renewals, a rollback to the generation without the ACME Venue and forward again, and an apply
whose CA is unreachable.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from acme_ca import Pebble
from backstage.agent.outcomes import SIGNAL_AT_ENV
from backstage.contract import CRASH_POINT_ENV
from conftest import require_binary, sandbox_head
from harness import Run, TestSandbox, backstage, free_ports, http_get

APP = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"acme ok"]
'''
NAMES = ("shop.test", "www.shop.test")
PLAIN = "plain.test"
# A certbot wrapper that records what the Venue answers on its plain-HTTP side while certbot runs
# (the challenge-only server), then runs the real certbot.
WRAPPER = """#!/bin/sh
{python} - <<'EOF'
import http.client
connection = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
connection.request("GET", "/", headers={{"Host": "{host}"}})
with open("{record}", "a") as record:
    record.write("%d\\n" % connection.getresponse().status)
EOF
exec env {env} {certbot} "$@"
"""


@dataclass
class Site:
    sandbox: TestSandbox
    ca: Pebble
    tmp: Path
    https: int
    http: int
    plain: int

    @property
    def during(self) -> Path:
        return self.tmp / "during-certbot.txt"

    def production(self, acme: bool, directory: str | None = None, names: tuple[str, ...] = NAMES) -> Path:
        q = json.dumps
        text = sandbox_head("shop", self.tmp, self.sandbox.host_table())
        text += f"""
[host.acme]
directory = {q(directory or self.ca.directory)}
email = "ops@shop.test"
certbot = [{q(str(self.tmp / "certbot"))}]

[stages.main]
virtualenv = {q(sys.prefix)}

[acts.site]
wsgi = "acmeapp"
path = {q(str(self.tmp / "app"))}

[sesses.site]
act = "site"
stage = "main"

[venues.plain]
domain = "{PLAIN}"
listen = "127.0.0.1:{self.plain}"

[gigs.plain]
venue = "plain"
sess = "site"
"""
        if acme:
            text += f"""
[venues.shop]
domain = "{names[0]}"
aliases = {q(list(names[1:]))}
listen = "127.0.0.1:{self.https}"
http_listen = "127.0.0.1:{self.http}"
tls = {{ acme = true }}

[gigs.shop]
venue = "shop"
sess = "site"
"""
        path = self.tmp / f"production-{'acme' if acme else 'plain'}-{len(names)}-{bool(directory)}.toml"
        path.write_text(text)
        return path

    def apply(self, production: Path, env: dict[str, str] | None = None) -> Run:
        return backstage("apply", str(production), "-o", str(self.tmp / "build"), "--ready-timeout=20", env=env)

    def nginx_link(self) -> str:
        return os.readlink(Path(str(self.sandbox.host_table()["nginx_dir"])) / "backstage--shop.conf")

    def fullchain(self) -> bytes:
        return (self.tmp / "state" / "certs" / "live" / "shop" / "fullchain.pem").read_bytes()

    def https_get(self, host: str = NAMES[0]) -> tuple[int, bytes, dict[str, object]]:
        """GET / over TLS with SNI `host`, verifying the chain against pebble's root and the name."""
        context = ssl.create_default_context(cadata=self.ca.root_pem() + self.ca.intermediate_pem())
        with context.wrap_socket(socket.create_connection(("127.0.0.1", self.https), 10),
                                 server_hostname=host) as tls:
            certificate = tls.getpeercert()
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
            response.begin()
            return response.status, response.read(), certificate


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    certbot = require_binary("certbot")
    require_binary("pebble")
    tmp = tmp_path_factory.mktemp("acme")
    (tmp / "app").mkdir()
    (tmp / "app" / "acmeapp.py").write_text(APP)
    https, http, plain = free_ports(3)
    with TestSandbox(tmp / "sandbox") as sandbox, Pebble(tmp / "ca", http_port=http) as ca:
        wrapper = tmp / "certbot"
        env = " ".join(f"{key}={value}" for key, value in sorted(ca.certbot_env().items()))
        wrapper.write_text(WRAPPER.format(python=sys.executable, port=http, host=NAMES[0],
                                          record=tmp / "during-certbot.txt", env=env, certbot=certbot))
        wrapper.chmod(0o755)
        yield Site(sandbox, ca, tmp, https, http, plain)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_apply_gets_the_certificate_before_the_tls_server_goes_live(site: Site) -> None:
    assert site.apply(site.production(acme=False)).code == 0
    assert http_get(site.plain, PLAIN).status == 200
    before = site.ca.issued()
    run = site.apply(site.production(acme=True))
    assert run.code == 0, run.err
    assert site.ca.issued() == before + 1
    # While certbot ran, the Venue's plain-HTTP side answered 503 (challenge only), not the site.
    assert _lines(site.during) == ["503"]
    for name in NAMES:
        status, body, certificate = site.https_get(name)
        assert (status, body) == (200, b"acme ok")
        assert sorted(value for kind, value in certificate["subjectAltName"]) == sorted(NAMES)  # type: ignore
    # The plain-HTTP side now redirects, except the challenge path.
    reply = http_get(site.http, NAMES[1], "/a?b=1")
    assert (reply.status, reply.headers["location"]) == (301, f"https://{NAMES[1]}:{site.https}/a?b=1")
    challenge = site.tmp / "state" / "acme" / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True, exist_ok=True)
    (challenge / "tok").write_text("tok.print")
    assert http_get(site.http, NAMES[0], "/.well-known/acme-challenge/tok").body == b"tok.print"
    assert http_get(site.plain, PLAIN).status == 200


def test_tls_1_3_and_h2_offered_with_the_acme_certificate(site: Site) -> None:
    """(TLS 1.0 and 1.1 refused: test_edge.py, with a control, for the same server block.)"""
    context = ssl.create_default_context(cadata=site.ca.root_pem() + site.ca.intermediate_pem())
    context.set_alpn_protocols(["h2", "http/1.1"])
    with context.wrap_socket(socket.create_connection(("127.0.0.1", site.https), 10),
                             server_hostname=NAMES[0]) as tls:
        assert (tls.version(), tls.selected_alpn_protocol()) == ("TLSv1.3", "h2")


def test_apply_again_asks_the_ca_nothing(site: Site) -> None:
    before = (site.ca.issued(), len(_lines(site.during)))
    run = site.apply(site.production(acme=True))
    assert run.code == 0, run.err
    assert (site.ca.issued(), len(_lines(site.during))) == before


def test_renew_with_nothing_due_changes_nothing(site: Site) -> None:
    workers = site.sandbox.nginx_worker_pids()
    chain = site.fullchain()
    run = backstage("renew", str(site.tmp / "state"))
    assert run.code == 0, run.err
    assert "not due" in run.out
    assert site.fullchain() == chain
    assert site.sandbox.nginx_worker_pids() == workers


def test_renew_forced_renews_and_reloads(site: Site) -> None:
    workers = site.sandbox.nginx_worker_pids()
    chain, issued = site.fullchain(), site.ca.issued()
    run = backstage("renew", str(site.production(acme=True)), "--force")
    assert run.code == 0, run.err
    assert site.fullchain() != chain
    assert site.ca.issued() == issued + 1
    assert not workers & site.sandbox.nginx_worker_pids()  # nginx reloaded: new workers
    served = ssl.DER_cert_to_PEM_cert(_served_der(site))
    assert served.strip() in site.fullchain().decode()  # the renewed certificate is the one served


def _served_der(site: Site) -> bytes:
    context = ssl.create_default_context(cadata=site.ca.root_pem() + site.ca.intermediate_pem())
    with context.wrap_socket(socket.create_connection(("127.0.0.1", site.https), 10),
                             server_hostname=NAMES[0]) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return der


def test_rollback_and_forward_reuse_the_certificate(site: Site) -> None:
    issued = site.ca.issued()
    run = backstage("rollback", str(site.tmp / "state"))
    assert run.code == 0, run.err
    with pytest.raises(OSError):  # the generation without the ACME Venue: nothing on the TLS port
        socket.create_connection(("127.0.0.1", site.https), 2).close()
    run = site.apply(site.production(acme=True))
    assert run.code == 0, run.err
    assert site.https_get()[:2] == (200, b"acme ok")
    assert site.ca.issued() == issued


def test_the_ca_unreachable_fails_and_the_previous_generation_serves(site: Site) -> None:
    live = os.readlink(site.tmp / "state" / "current")
    (closed,) = free_ports(1)
    production = site.production(acme=True, directory=f"https://127.0.0.1:{closed}/dir",
                                 names=(*NAMES, "new.shop.test"))
    run = site.apply(production)
    assert run.code == 1, run.err
    assert "venue shop" in run.line() and "Connection refused" in run.line(), run.err
    assert "apply failed" in run.line() and "rolled back" in run.line()
    assert os.readlink(site.tmp / "state" / "current") == live
    assert site.https_get()[:2] == (200, b"acme ok")
    assert http_get(site.http, NAMES[0], "/").status == 301  # the challenge-only server is gone again
    with contextlib.suppress(FileNotFoundError):
        assert "new.shop.test" not in (site.tmp / "state" / "certs" / "backstage" / "shop.names").read_text()


LATE = (*NAMES, "late.shop.test")


def test_ctrl_c_while_the_challenges_are_served_puts_nginx_back(site: Site) -> None:
    live, issued = os.readlink(site.tmp / "state" / "current"), site.ca.issued()
    run = site.apply(site.production(acme=True, names=LATE), env={SIGNAL_AT_ENV: "challenges-served:SIGINT:group"})
    assert run.code == 130, run.err
    assert run.line() == f"apply interrupted by SIGINT, rolled back to {Path(live).name}", run.err
    assert "Traceback" not in run.err
    assert os.readlink(site.tmp / "state" / "current") == live
    assert site.nginx_link() == str(site.tmp / "state" / "current" / "include.conf")
    assert http_get(site.http, NAMES[0], "/").status == 301  # not the challenge server's 503
    assert site.https_get()[:2] == (200, b"acme ok")
    assert site.ca.issued() == issued


def test_killed_while_the_challenges_are_served_the_next_apply_converges(site: Site) -> None:
    production = site.production(acme=True, names=LATE)
    run = site.apply(production, env={CRASH_POINT_ENV: "challenges-served"})
    assert run.code != 0
    assert site.nginx_link() == str(site.tmp / "state" / "acme.conf")  # what kill -9 left
    assert site.https_get()[:2] == (200, b"acme ok")  # the live generation still serves
    run = site.apply(production)
    assert run.code == 0, run.err
    assert site.nginx_link() == str(site.tmp / "state" / "current" / "include.conf")
    status, body, certificate = site.https_get("late.shop.test")
    assert (status, body) == (200, b"acme ok")
    assert sorted(value for kind, value in certificate["subjectAltName"]) == sorted(LATE)  # type: ignore
