"""Test-only helpers: a private PowerDNS Authoritative server (gsqlite3 backend, HTTP API) on 127.0.0.1, and
an HTTP proxy in front of its API that can be told to fail PATCH requests.

    with PowerDNS(tmp_path / "pdns") as pdns:
        pdns.create_zone("example.test")
        pdns.add_record("example.test", "www.example.test.", "A", "192.0.2.1", comment="backstage:other")
        assert pdns.dig("www.example.test") == ["192.0.2.1"]
        with FaultProxy(pdns.api) as proxy:
            proxy.fail_patch = (422, '{"error": "nope"}')
            ...point the product at proxy.url with pdns.key_file...

Needs Debian's pdns-server, pdns-backend-sqlite3 and bind9-dnsutils (pdns_server, pdnsutil, dig). Everything
listens on, and talks to, 127.0.0.1 only. The caches (packet, query, negative, zone, metadata) are off, so that a
change made through the API or by pdnsutil is answered at once.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from types import TracebackType
from typing import Any

from harness import free_ports

__all__ = ["SCHEMA", "FaultProxy", "PowerDNS"]

LOCALHOST = "127.0.0.1"
SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def _dot(name: str) -> str:
    """The fully qualified form of a DNS name: "example.test" -> "example.test."."""
    return name if name.endswith(".") else name + "."


def _free_dns_port() -> int:
    """A port of 127.0.0.1 free for both TCP and UDP a moment ago."""
    for _ in range(50):
        port = free_ports(1)[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((LOCALHOST, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port of 127.0.0.1 free for both TCP and UDP")


class PowerDNS:
    """pdns_server with its own config dir, sqlite database, ports and API key, under `tmp`.

    Attributes (set on enter): api ("http://127.0.0.1:PORT"), key, key_file (the key + "\\n", mode 0600),
    dns_port (UDP and TCP), server ("localhost"), pid (of the running pdns_server), config_dir, database, log.
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = Path(tmp)
        self.config_dir = self.tmp / "etc"
        self.database = self.tmp / "pdns.sqlite3"
        self.socket_dir = self.tmp / "run"
        self.log = self.tmp / "pdns.log"
        self.key_file = self.tmp / "api-key"
        self.server = "localhost"
        self.key = ""
        self.api = ""
        self.dns_port = 0
        self.api_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    # -- life cycle ------------------------------------------------------------------------------

    def __enter__(self) -> PowerDNS:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if not self.database.exists():
            connection = sqlite3.connect(self.database)
            try:
                connection.executescript(SCHEMA.read_text())
                connection.commit()
            finally:
                connection.close()
        self.dns_port = _free_dns_port()
        self.api_port = next(port for port in free_ports(2) if port != self.dns_port)
        self.api = f"http://{LOCALHOST}:{self.api_port}"
        self.key = secrets.token_hex(16)
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.key + "\n")
        os.chmod(self.key_file, 0o600)
        self._write_config()
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _write_config(self) -> None:
        settings = {
            "launch": "gsqlite3",
            "gsqlite3-database": str(self.database),
            "local-address": LOCALHOST,
            "local-port": str(self.dns_port),
            "api": "yes",
            "api-key": self.key,
            "webserver": "yes",
            "webserver-address": LOCALHOST,
            "webserver-port": str(self.api_port),
            "webserver-allow-from": LOCALHOST,
            "daemon": "no",
            "guardian": "no",
            "disable-syslog": "yes",
            "write-pid": "no",
            "socket-dir": str(self.socket_dir),
            "security-poll-suffix": "",
            "cache-ttl": "0",
            "negquery-cache-ttl": "0",
            "query-cache-ttl": "0",
            "zone-cache-refresh-interval": "0",
            "zone-metadata-cache-ttl": "0",
            "dnssec-key-cache-ttl": "0",
            "consistent-backends": "no",
            "loglevel": "4",
        }
        text = "".join(f"{name}={value}\n" for name, value in settings.items())
        (self.config_dir / "pdns.conf").write_text(text)

    @property
    def pid(self) -> int:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError("pdns_server is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> None:
        """Start pdns_server (same ports, same database) and wait until its API answers."""
        if self.running:
            return
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(
                ["pdns_server", f"--config-dir={self.config_dir}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            code = self._process.poll()
            if code is not None:
                raise RuntimeError(f"pdns_server exited with {code} while starting:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = self.request("GET", f"/api/v1/servers/{self.server}", timeout=1.0)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"pdns_server API not ready after {READY_TIMEOUT:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate pdns_server (kill after 10 s); nothing if it is not running."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- tools -----------------------------------------------------------------------------------

    def pdnsutil(self, *args: str) -> str:
        """Run `pdnsutil --config-dir=DIR ARGS...`; its stdout, or RuntimeError if it fails."""
        done = subprocess.run(["pdnsutil", f"--config-dir={self.config_dir}", *args], capture_output=True,
                              text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pdnsutil {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout

    def request(self, method: str, path: str, body: Any = None, key: str | None = None,
                timeout: float = 10.0) -> tuple[int, Any]:
        """One API request (path like "/api/v1/servers/localhost/zones"); (status, parsed JSON body or None)."""
        connection = http.client.HTTPConnection(LOCALHOST, self.api_port, timeout=timeout)
        try:
            headers = {"X-API-Key": self.key if key is None else key, "Connection": "close"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=data, headers=headers)
            reply = connection.getresponse()
            raw = reply.read()
        finally:
            connection.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return reply.status, parsed

    def zone_path(self, zone: str) -> str:
        return f"/api/v1/servers/{self.server}/zones/{urllib.parse.quote(_dot(zone))}"

    # -- zones and records -----------------------------------------------------------------------

    def create_zone(self, zone: str, soa_edit_api: bool = True) -> None:
        """A native zone with SOA and NS (ns1.ZONE.), created by pdnsutil; SOA-EDIT-API DEFAULT if asked."""
        name = zone.rstrip(".")
        self.pdnsutil("create-zone", name, f"ns1.{name}.")
        if soa_edit_api:
            self.pdnsutil("set-meta", name, "SOA-EDIT-API", "DEFAULT")
        if self.running:
            deadline = time.monotonic() + 10.0
            while not self.dig(name, "SOA"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pdns_server does not answer for {name}:\n{self.log_tail()}")
                time.sleep(0.05)

    def add_record(self, zone: str, name: str, rtype: str, content: str | list[str], ttl: int = 300,
                   comment: str | None = None) -> None:
        """Put an RRset straight through the API (REPLACE), with a comment if given."""
        contents = [content] if isinstance(content, str) else content
        rrset: dict[str, Any] = {
            "name": _dot(name), "type": rtype, "ttl": ttl, "changetype": "REPLACE",
            "records": [{"content": value, "disabled": False} for value in contents],
        }
        if comment is not None:
            rrset["comments"] = [{"content": comment, "account": ""}]
        status, body = self.request("PATCH", self.zone_path(zone), {"rrsets": [rrset]})
        if status != 204:
            raise RuntimeError(f"PATCH {zone} {name} {rtype}: {status} {body}")

    def zone(self, zone: str) -> dict[str, Any]:
        """GET of the zone from the API."""
        status, body = self.request("GET", self.zone_path(zone))
        if status != 200:
            raise RuntimeError(f"GET zone {zone}: {status} {body}")
        assert isinstance(body, dict)
        return body

    def rrsets(self, zone: str) -> list[dict[str, Any]]:
        """The API's rrsets of the zone (each with name, type, ttl, records, comments)."""
        rrsets = self.zone(zone)["rrsets"]
        assert isinstance(rrsets, list)
        return rrsets

    def dig(self, name: str, rtype: str = "A") -> list[str]:
        """The running server's answers (sorted `dig +short` lines; [] for none)."""
        done = subprocess.run(
            ["dig", f"@{LOCALHOST}", "-p", str(self.dns_port), "+short", "+norecurse", "+time=2", "+tries=2",
             _dot(name), rtype], capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"dig {name} {rtype} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return sorted(line for line in done.stdout.splitlines() if line.strip() and not line.startswith(";"))

    def serial(self, zone: str) -> int:
        """The zone's SOA serial as the server answers it."""
        answers = self.dig(zone, "SOA")
        if len(answers) != 1:
            raise RuntimeError(f"SOA of {zone}: {answers}")
        return int(answers[0].split()[2])


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of `target` (e.g. PowerDNS.api) that forwards every request, except
    that while `fail_patch = (status, body_json_text)` is set, PATCH requests get that answer unforwarded.
    `patches` counts PATCH requests received (failed or forwarded). If the target does not answer, the proxy
    answers 502 with a JSON error.
    """

    def __init__(self, target: str) -> None:
        parsed = urllib.parse.urlsplit(target)
        if parsed.hostname != LOCALHOST or parsed.port is None:
            raise ValueError(f"FaultProxy forwards to http://127.0.0.1:PORT only, not {target!r}")
        self.target_port = parsed.port
        self.fail_patch: tuple[int, str] | None = None
        self.patches = 0
        self.requests = 0
        self.url = ""
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FaultProxy:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy.requests += 1
                    failure = None
                    if self.command == "PATCH":
                        proxy.patches += 1
                        failure = proxy.fail_patch
                if failure is not None:
                    status, text = failure
                    self._answer(status, [("Content-Type", "application/json")], text.encode())
                    return
                headers = {name: value for name, value in self.headers.items()
                           if name.lower() not in ("host", "connection", "content-length", "transfer-encoding",
                                                   "proxy-connection", "keep-alive")}
                headers["Connection"] = "close"
                connection = http.client.HTTPConnection(LOCALHOST, proxy.target_port, timeout=30)
                try:
                    connection.request(self.command, self.path, body=body if body or length else None,
                                       headers=headers)
                    reply = connection.getresponse()
                    answer = reply.read()
                    self._answer(reply.status, reply.getheaders(), answer)
                except (OSError, http.client.HTTPException) as error:
                    message = json.dumps({"error": f"proxy: target unreachable: {error}"}).encode()
                    self._answer(502, [("Content-Type", "application/json")], message)
                finally:
                    connection.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

        self._server = http.server.ThreadingHTTPServer((LOCALHOST, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{LOCALHOST}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="FaultProxy", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
