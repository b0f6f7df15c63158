"""A real, private ACME CA for tests: Debian's `pebble` (2.4) and `pebble-challtestsrv`, run as child processes
on 127.0.0.1 only, on free ports, with every file under a directory the caller gives.

    with Pebble(tmp_path / "acme", http_port=sandbox.http_port) as ca:
        env = {**os.environ, **ca.certbot_env()}
        subprocess.run(["certbot", "certonly", "--server", ca.directory, ...], env=env, check=True)
        assert ca.issued() == 1
        context = ssl.create_default_context(cadata=ca.root_pem())   # verifies what nginx now serves

What it relies on (measured with pebble 2.4.0+ds1, certbot 2.1 and OpenSSL 3.0 on Debian):
- Debian's pebble ships no certificate for its own HTTPS listener, so one is made here with openssl
  (subjectAltName IP:127.0.0.1 and DNS:localhost). Clients must trust it: certbot (python-requests) through
  the environment variable REQUESTS_CA_BUNDLE (`certbot_env()`), this module through an ssl context.
- pebble resolves the names it validates through `-dnsserver`; `pebble-challtestsrv` is that DNS server and,
  started with `-defaultIPv4 127.0.0.1 -defaultIPv6 ""`, answers every name with 127.0.0.1 and no AAAA (with
  its default ::1 pebble would try [::1] first). So no name has to be registered with it. Its own HTTP-01,
  HTTPS-01 and TLS-ALPN-01 listeners are switched off ("" each); it keeps only `-dns01` and `-management`.
- pebble's `httpPort` is the port it fetches /.well-known/acme-challenge/ from: the caller's HTTP port (e.g.
  the sandbox nginx). `tlsPort` gets a free port nobody uses.
- PEBBLE_VA_NOSLEEP=1 (no random delay before a validation) and PEBBLE_WFE_NONCEREJECT=0 (pebble otherwise
  rejects 5% of good nonces, and certbot does not retry a badNonce).
- pebble logs no reason when a validation fails; certbot's log (--logs-dir) and its stdout have the "Detail:"
  line (e.g. "Detail: Non-200 status code from HTTP: http://z.test:PORT/.well-known/acme-challenge/... returned 404").
- pebble writes one line "Issued certificate serial <hex> for order <id>" per certificate: `issued()` counts them.
- pebble's certificates are valid for years, so `certbot renew` says they are not due; `--force-renewal`
  renews anyway. Without a terminal, `certbot renew` first sleeps up to 8 minutes unless given
  `--no-random-sleep-on-renew`. Each certbot run wants its own --config-dir, --work-dir and --logs-dir.
- pebble's issuing root is only in memory: its management API serves it at /roots/0 (`root_pem()`); it is a
  new root on every start.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from harness import free_ports

__all__ = ["Pebble"]

LOCALHOST = "127.0.0.1"
START_TIMEOUT = 20.0
ISSUED_LINE = re.compile(r"Issued certificate serial [0-9a-fA-F]+ for order")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text("utf-8", "replace")
    except OSError as error:
        return f"({path}: {error})"
    return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Pebble:
    """pebble + pebble-challtestsrv on 127.0.0.1, files under `tmp`, validating HTTP-01 on `http_port`.

    Only usable inside its `with` block: ports, the listener certificate and the processes exist from
    `__enter__` to `__exit__`.
    """

    def __init__(self, tmp: Path, http_port: int) -> None:
        self.tmp = Path(tmp)
        self.http_port = http_port
        self.ca_bundle = self.tmp / "listener-cert.pem"  # the certificate pebble's HTTPS listeners present
        self.listener_key = self.tmp / "listener-key.pem"
        self.config = self.tmp / "pebble-config.json"
        self.pebble_log = self.tmp / "pebble.log"
        self.challtestsrv_log = self.tmp / "challtestsrv.log"
        self.port = 0  # ACME listener
        self.management_port = 0  # pebble's management API (roots, intermediates)
        self.tls_port = 0  # TLS-ALPN-01 port pebble would validate on; unused
        self.dns_port = 0  # challtestsrv's DNS (UDP and TCP)
        self.challtestsrv_port = 0  # challtestsrv's management API
        self._pebble: subprocess.Popen[bytes] | None = None
        self._challtestsrv: subprocess.Popen[bytes] | None = None
        self._context: ssl.SSLContext | None = None

    # -- what tests use ---------------------------------------------------------------------------

    @property
    def directory(self) -> str:
        """The ACME directory URL, for certbot's --server."""
        return f"https://{LOCALHOST}:{self.port}/dir"

    @property
    def management(self) -> str:
        """pebble's management API base URL."""
        return f"https://{LOCALHOST}:{self.management_port}"

    def certbot_env(self) -> dict[str, str]:
        """Environment variables certbot needs on top of os.environ to talk to this CA."""
        return {"REQUESTS_CA_BUNDLE": str(self.ca_bundle),
                # Never let a proxy from the environment see (or fail) loopback traffic.
                "NO_PROXY": f"{LOCALHOST},localhost", "no_proxy": f"{LOCALHOST},localhost"}

    def root_pem(self) -> str:
        """PEM of pebble's issuing root (this run's; pebble makes a new one at each start)."""
        return self._get(f"{self.management}/roots/0").decode("ascii")

    def intermediate_pem(self) -> str:
        """PEM of pebble's issuing intermediate (certbot puts it in chain.pem / fullchain.pem)."""
        return self._get(f"{self.management}/intermediates/0").decode("ascii")

    def issued(self) -> int:
        """How many certificates pebble has issued since it started (its log has one line per certificate)."""
        try:
            text = self.pebble_log.read_text("utf-8", "replace")
        except FileNotFoundError:
            return 0
        return len(ISSUED_LINE.findall(text))

    def log_tail(self, lines: int = 30) -> str:
        """The end of both logs, for assertion messages."""
        return (f"--- {self.pebble_log}\n{_tail(self.pebble_log, lines)}\n"
                f"--- {self.challtestsrv_log}\n{_tail(self.challtestsrv_log, lines)}")

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> Pebble:
        self.tmp.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop()

    def _start(self) -> None:
        self._make_listener_cert()
        self.port, self.management_port, self.tls_port, self.dns_port, self.challtestsrv_port = free_ports(5)
        self.config.write_text(json.dumps({"pebble": {
            "listenAddress": f"{LOCALHOST}:{self.port}",
            "managementListenAddress": f"{LOCALHOST}:{self.management_port}",
            "certificate": str(self.ca_bundle),
            "privateKey": str(self.listener_key),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }}, indent=2) + "\n")

        self._challtestsrv = self._spawn(
            ["pebble-challtestsrv", "-defaultIPv4", LOCALHOST, "-defaultIPv6", "",
             "-dns01", f"{LOCALHOST}:{self.dns_port}", "-management", f"{LOCALHOST}:{self.challtestsrv_port}",
             "-http01", "", "-https01", "", "-tlsalpn01", ""],
            self.challtestsrv_log, os.environ.copy())
        self._wait("pebble-challtestsrv", self._challtestsrv, self.challtestsrv_log, self._tcp_open)

        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        self._pebble = self._spawn(
            ["pebble", "-config", str(self.config), "-dnsserver", f"{LOCALHOST}:{self.dns_port}"],
            self.pebble_log, env)
        self._wait("pebble", self._pebble, self.pebble_log, self._directory_answers)

    def _stop(self) -> None:
        _stop(self._pebble)
        _stop(self._challtestsrv)

    def _make_listener_cert(self) -> None:
        done = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(self.listener_key), "-out", str(self.ca_bundle), "-days", "30",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"openssl could not make pebble's listener certificate:\n{done.stderr}")
        self._context = ssl.create_default_context(cafile=str(self.ca_bundle))

    def _spawn(self, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=self.tmp)

    def _wait(self, name: str, process: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} while starting:\n{_tail(log)}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {START_TIMEOUT:.0f} s:\n{_tail(log)}")
            time.sleep(0.1)

    def _tcp_open(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((LOCALHOST, self.challtestsrv_port), 1):
            return True
        return False

    def _directory_answers(self) -> bool:
        try:
            return b"newAccount" in self._get(self.directory, timeout=2)
        except (OSError, urllib.error.URLError):
            return False

    def _get(self, url: str, timeout: float = 10) -> bytes:
        # No proxy handler: loopback only, whatever the environment says.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=self._context))
        with opener.open(url, timeout=timeout) as reply:
            body: bytes = reply.read()
            return body

