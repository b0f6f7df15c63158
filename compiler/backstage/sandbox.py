"""A private nginx and a private uWSGI Emperor for one temporary directory, for tests and `backstage try`.

Everything lives under one root directory and listens on 127.0.0.1 only; system services, their
configuration and their ports are never touched:

    ROOT/vassals/            the Emperor watches ROOT/vassals/*.ini (a glob: re-read on every scan)
    ROOT/emperor.log         the Emperor's log (vassals without their own logto log here too)
    ROOT/nginx/nginx.conf    the private nginx's main configuration; it includes ROOT/nginx/sites/*
    ROOT/nginx/sites/        where Venue server files (or a production's include.conf) are linked
    ROOT/nginx/error.log     nginx's error log, at `warn`

Every process started here carries BACKSTAGE_SANDBOX=<token> in its environment and runs in its own
session, so `stop()` can find and kill whatever is left, even after a failure.

Measured behaviour this module relies on (uWSGI 2.0.31, nginx 1.22):
- SIGINT to the Emperor's master stops it for good: the Emperor sends every vassal a stop message
  ("RAGNAROK"), waits for them and exits (about 3 s). SIGTERM does the same only with --die-on-term
  (which we pass); without it SIGTERM stops the vassals but leaves the master running.
- The Emperor's stats socket answers one JSON document per connection; "vassals" lists each vassal
  with "id" (the full path of its file, as the glob matched it) and "pid" (its uWSGI master).
  Connecting to it also wakes the Emperor for an immediate scan.
- SIGQUIT stops nginx gracefully; `nginx -s reload` (SIGHUP) starts new workers and retires the old ones.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "ComponentMissing",
    "Components",
    "Response",
    "Sandbox",
    "SandboxError",
    "find_components",
    "free_port",
    "free_ports",
]

TAG = "BACKSTAGE_SANDBOX"
LOCALHOST = "127.0.0.1"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


class SandboxError(RuntimeError):
    """A sandboxed component failed to start, stop or answer."""


class ComponentMissing(SandboxError):
    """nginx or a compiled uWSGI is not installed: real-component tests cannot run."""


@dataclass(frozen=True, slots=True)
class Components:
    nginx: str
    uwsgi: str


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# Finding the real components


def _runs(command: Sequence[str]) -> str | None:
    """The combined output of `command` if it exits 0, else None."""
    try:
        done = subprocess.run(command, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return (done.stdout + done.stderr).decode("utf-8", "replace").strip()


def _find_nginx(rejected: list[str]) -> str | None:
    candidates = [os.environ.get("BACKSTAGE_NGINX", ""), shutil.which("nginx") or "", *NGINX_CANDIDATES]
    for candidate in filter(None, candidates):
        if not os.access(candidate, os.X_OK):
            continue
        if _runs([candidate, "-v"]) is None:
            rejected.append(f"{candidate}: `nginx -v` failed")
            continue
        return candidate
    return None


def _pyenv_target(shim: str) -> str | None:
    """The real executable behind a pyenv shim, or None."""
    pyenv = shutil.which("pyenv")
    if not pyenv:
        return None
    found = _runs([pyenv, "which", Path(shim).name])
    return found.splitlines()[-1] if found else None


def _classify_uwsgi(candidate: str, rejected: list[str]) -> str | None:
    """`candidate` if it is a compiled uWSGI binary; pyuwsgi's Python wrapper is refused."""
    try:
        with open(candidate, "rb") as handle:
            head = handle.read(4096)
    except OSError as error:
        rejected.append(f"{candidate}: {error}")
        return None
    if head.startswith(b"\x7fELF"):
        if _runs([candidate, "--version"]) is None:
            rejected.append(f"{candidate}: `uwsgi --version` failed")
            return None
        return candidate
    if b"pyuwsgi" in head:
        rejected.append(f"{candidate}: is pyuwsgi (a Python wrapper: the Emperor cannot run vassals with it)")
        return None
    if head.startswith(b"#!") and b"pyenv" in head:
        target = _pyenv_target(candidate)
        if target and target != candidate:
            return _classify_uwsgi(target, rejected)
        rejected.append(f"{candidate}: a pyenv shim that resolves to no uwsgi")
        return None
    rejected.append(f"{candidate}: not a compiled uWSGI binary")
    return None


def _find_uwsgi(rejected: list[str]) -> str | None:
    # The uwsgi next to the running interpreter first: it was built against this Python.
    candidates = [
        os.environ.get("BACKSTAGE_UWSGI", ""),
        str(Path(sys.executable).parent / "uwsgi"),
        shutil.which("uwsgi") or "",
    ]
    seen: set[str] = set()
    for candidate in filter(None, candidates):
        if candidate in seen or not os.access(candidate, os.X_OK):
            continue
        seen.add(candidate)
        found = _classify_uwsgi(candidate, rejected)
        if found:
            return found
    return None


def find_components() -> Components:
    """The nginx and compiled uWSGI binaries to use; raises ComponentMissing, loudly, if either is absent.

    BACKSTAGE_NGINX and BACKSTAGE_UWSGI override the search.
    """
    rejected: list[str] = []
    nginx = _find_nginx(rejected)
    uwsgi = _find_uwsgi(rejected)
    missing = []
    if not nginx:
        missing.append("nginx (install it: `apt-get install -y nginx`; or set BACKSTAGE_NGINX)")
    if not uwsgi:
        missing.append(
            "a compiled uWSGI (`pip install uwsgi` into the environment running the tests; pyuwsgi does "
            "not work with the Emperor; or set BACKSTAGE_UWSGI)"
        )
    if missing:
        details = "".join(f"\n  - rejected {item}" for item in rejected)
        raise ComponentMissing("real components are missing: " + "; ".join(missing) + details)
    assert nginx and uwsgi
    return Components(nginx=nginx, uwsgi=uwsgi)


# ---------------------------------------------------------------------------------------------
# Ports and HTTP


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOCALHOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def http_get(port: int, host: str, path: str = "/", timeout: float = 10.0) -> Response:
    """One GET to 127.0.0.1:port with this Host header, on a new connection closed afterwards."""
    connection = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": host, "Connection": "close"})
        reply = connection.getresponse()
        body = reply.read()
        return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, body)
    finally:
        connection.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# /proc


def _proc_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgrp, session) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[2]), int(fields[3])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    if stat is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# ---------------------------------------------------------------------------------------------
# The sandbox


NGINX_CONF = """\
# Private nginx of a backstage sandbox; generated by backstage.sandbox. Listens on 127.0.0.1 only.
{user}worker_processes 2;
pid {nginx_root}/nginx.pid;
error_log {nginx_root}/error.log warn;
env {tag};

events {{
    worker_connections 1024;
}}

http {{
    types {{
        text/html html htm;
        text/plain txt;
        text/css css;
        application/javascript js;
        application/json json;
        image/png png;
        image/svg+xml svg;
        image/x-icon ico;
    }}
    default_type application/octet-stream;
    access_log {access_log};
    sendfile on;
    keepalive_timeout 65;
    server_names_hash_bucket_size 128;

    client_body_temp_path {nginx_root}/temp/client_body;
    proxy_temp_path {nginx_root}/temp/proxy;
    fastcgi_temp_path {nginx_root}/temp/fastcgi;
    uwsgi_temp_path {nginx_root}/temp/uwsgi;
    scgi_temp_path {nginx_root}/temp/scgi;

{catch_all}    include {nginx_root}/sites/*;
}}
"""

# A Host no Venue claims gets a 5xx, so wait_ready() and the load generator never mistake it for a
# Venue's answer. Venues must listen on 127.0.0.1:PORT: a bare `listen PORT` (*:PORT) server is not
# consulted for connections to 127.0.0.1 when this one binds 127.0.0.1:PORT explicitly.
CATCH_ALL = """\
    server {{
        listen {address} default_server;
        server_name _;
        default_type text/plain;
        return 503 "backstage sandbox: no venue for this host\\n";
    }}

"""


class Sandbox:
    """A private nginx and uWSGI Emperor under `root`, listening on 127.0.0.1 only.

        with Sandbox(tmp_path / "sandbox") as sandbox:
            ...link vassals into sandbox.vassals_dir, servers into sandbox.nginx_dir...
            sandbox.reload_nginx()
            sandbox.wait_ready("example.test", "/healthz")
    """

    def __init__(
        self,
        root: str | Path,
        *,
        http_port: int | None = None,
        stats_port: int | None = None,
        emperor_no_blacklist: bool = True,
        emperor_freq: int | None = None,
        catch_all: bool = True,
        access_log: bool = True,
        components: Components | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.components = components or find_components()
        ports = free_ports(2)
        self.http_port = http_port or ports[0]
        self.stats_port = stats_port or (ports[1] if ports[1] != self.http_port else free_port())
        self.emperor_no_blacklist = emperor_no_blacklist
        self.emperor_freq = emperor_freq
        self.catch_all = catch_all
        self.access_log = access_log
        self.token = f"{self.root}#{secrets.token_hex(8)}"
        self._nginx: subprocess.Popen[bytes] | None = None
        self._emperor: subprocess.Popen[bytes] | None = None
        self._sessions: set[int] = set()
        self._outputs: list[object] = []

    # -- layout ------------------------------------------------------------------------------

    @property
    def vassals_dir(self) -> Path:
        return self.root / "vassals"

    @property
    def nginx_root(self) -> Path:
        return self.root / "nginx"

    @property
    def nginx_dir(self) -> Path:
        """Where Venue server files or a production's include.conf go: nginx.conf includes sites/*."""
        return self.nginx_root / "sites"

    @property
    def nginx_conf(self) -> Path:
        return self.nginx_root / "nginx.conf"

    @property
    def nginx_error_log(self) -> Path:
        return self.nginx_root / "error.log"

    @property
    def nginx_access_log(self) -> Path:
        return self.nginx_root / "access.log"

    @property
    def emperor_log(self) -> Path:
        return self.root / "emperor.log"

    @property
    def emperor_pidfile(self) -> Path:
        return self.root / "emperor.pid"

    @property
    def emperor_stats(self) -> str:
        """The "127.0.0.1:PORT" a production's [host].emperor_stats should be set to."""
        return f"{LOCALHOST}:{self.stats_port}"

    @property
    def listen(self) -> str:
        """The `listen` to give every Venue: "127.0.0.1:PORT"."""
        return f"{LOCALHOST}:{self.http_port}"

    @property
    def nginx_command(self) -> list[str]:
        """The command prefix a production's [host].nginx should be, so -t and -s reload act here."""
        return [
            self.components.nginx,
            "-p", f"{self.nginx_root}/",
            "-c", str(self.nginx_conf),
            "-e", str(self.nginx_error_log),
        ]

    def host_table(self) -> dict[str, object]:
        """The [host] table of a production applied to this sandbox (nginx_user: the current user)."""
        return {
            "vassals_dir": str(self.vassals_dir),
            "nginx_dir": str(self.nginx_dir),
            "nginx": self.nginx_command,
            "nginx_user": _current_user(),
            "emperor_stats": self.emperor_stats,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        """Write the configuration, start nginx and the Emperor, and wait until both answer."""
        if self._nginx or self._emperor:
            raise SandboxError(f"sandbox {self.root} is already started")
        atexit.register(self.stop)
        try:
            self._prepare()
            self._start_nginx()
            self._start_emperor()
            deadline = time.monotonic() + timeout
            self._wait_nginx(deadline)
            self._wait_emperor(deadline)
        except BaseException:
            self.stop()
            raise

    def _prepare(self) -> None:
        for directory in (self.vassals_dir, self.nginx_dir, *(
            self.nginx_root / "temp" / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )):
            directory.mkdir(parents=True, exist_ok=True)
        self.nginx_conf.write_text(self.render_nginx_conf())
        done = subprocess.run([*self.nginx_command, "-t", "-q"], capture_output=True, check=False)
        if done.returncode != 0:
            raise SandboxError(
                f"the sandbox's own nginx.conf is invalid:\n{done.stderr.decode(errors='replace')}"
            )

    def render_nginx_conf(self) -> str:
        return NGINX_CONF.format(
            user="user root;\n" if os.geteuid() == 0 else "",
            nginx_root=self.nginx_root,
            tag=TAG,
            access_log=str(self.nginx_access_log) if self.access_log else "off",
            catch_all=CATCH_ALL.format(address=self.listen) if self.catch_all else "",
        )

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env[TAG] = self.token
        # A vassal must get its Python from its own `virtualenv`, not from the test runner's.
        for name in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE"):
            env.pop(name, None)
        return env

    def _spawn(self, command: list[str], output: Path) -> subprocess.Popen[bytes]:
        handle = open(output, "ab")  # noqa: SIM115 -- closed in stop()
        self._outputs.append(handle)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            env=self._environment(),
            start_new_session=True,
        )
        self._sessions.add(process.pid)
        return process

    def _start_nginx(self) -> None:
        self._nginx = self._spawn([*self.nginx_command, "-g", "daemon off;"], self.nginx_root / "stdout.log")

    def emperor_command(self) -> list[str]:
        command = [
            self.components.uwsgi,
            "--master",
            "--emperor", f"{self.vassals_dir}/*.ini",
            "--emperor-stats", self.emperor_stats,
            "--die-on-term",
            "--logto", str(self.emperor_log),
            "--pidfile", str(self.emperor_pidfile),
        ]
        if self.emperor_no_blacklist:
            command.append("--emperor-no-blacklist")
        if self.emperor_freq is not None:
            command += ["--emperor-freq", str(self.emperor_freq)]
        return command

    def _start_emperor(self) -> None:
        self._emperor = self._spawn(self.emperor_command(), self.root / "emperor.stdout.log")

    def _check_running(self) -> None:
        for name, process in (("nginx", self._nginx), ("uWSGI Emperor", self._emperor)):
            if process is not None and process.poll() is not None:
                raise SandboxError(f"{name} exited with status {process.returncode}\n{self.diagnostics()}")

    def _wait_nginx(self, deadline: float) -> None:
        # nginx writes its pid file only after it has bound every listening socket: an open port
        # alone could belong to someone else.
        pidfile = self.nginx_root / "nginx.pid"
        while not (_read_pid(pidfile) == self._nginx_pid() and _port_open(self.http_port)):
            self._check_running()
            if time.monotonic() > deadline:
                raise SandboxError(f"nginx does not listen on {self.listen}\n{self.diagnostics()}")
            time.sleep(0.05)

    def _wait_emperor(self, deadline: float) -> None:
        while True:
            self._check_running()
            with contextlib.suppress(OSError, ValueError):
                # The Emperor runs as a child of the master we started; a foreign listener is not it.
                pid = int(self.stats().get("pid", 0))  # type: ignore[call-overload]
                stat = _stat(pid)
                if self._emperor is not None and stat is not None and stat[0] == self._emperor.pid:
                    return
            if time.monotonic() > deadline:
                raise SandboxError(f"the Emperor's stats socket does not answer\n{self.diagnostics()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop nginx (QUIT) and the Emperor (INT: it stops its vassals first); then kill what is left.

        Safe to call twice, and after a failed start().
        """
        atexit.unregister(self.stop)
        try:
            if self._nginx is not None:
                _terminate(self._nginx, signal.SIGQUIT, timeout)
            if self._emperor is not None:
                _terminate(self._emperor, signal.SIGINT, timeout)
        finally:
            self._kill_leftovers()
            self._nginx = None
            self._emperor = None
            for handle in self._outputs:
                with contextlib.suppress(OSError):
                    handle.close()  # type: ignore[attr-defined]
            self._outputs.clear()

    def leftover_pids(self) -> list[int]:
        """Processes this sandbox started (or their children) that are still alive."""
        me = os.getpid()
        found = []
        marker = f"{TAG}={self.token}".encode()
        for pid in _proc_pids():
            if pid == me:
                continue
            stat = _stat(pid)
            if stat is None:
                continue
            ours = stat[2] in self._sessions or marker in _environ(pid).split(b"\0")
            if ours and _alive(pid):
                found.append(pid)
        return found

    def _kill_leftovers(self) -> None:
        deadline = time.monotonic() + 5.0
        while True:
            pids = self.leftover_pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise SandboxError(f"sandbox {self.root}: processes {pids} survive SIGKILL")
            time.sleep(0.05)

    # -- nginx -------------------------------------------------------------------------------

    def nginx(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the private nginx's command with `args` (e.g. "-t", or "-s", "reload")."""
        done = subprocess.run([*self.nginx_command, *args], capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise SandboxError(f"nginx {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def _nginx_pid(self) -> int:
        return self._nginx.pid if self._nginx is not None else -1

    def nginx_master_pid(self) -> int | None:
        return self._nginx.pid if self._nginx is not None and self._nginx.poll() is None else None

    def nginx_worker_pids(self) -> set[int]:
        master = self.nginx_master_pid()
        if master is None:
            return set()
        found = set()
        for pid in _proc_pids():
            stat = _stat(pid)
            if stat and stat[0] == master and _alive(pid):
                cmdline = " ".join(_cmdline(pid))
                if "worker process" in cmdline and "shutting down" not in cmdline:
                    found.add(pid)
        return found

    def nginx_old_worker_pids(self) -> set[int]:
        """Workers of the private nginx that are still finishing requests after a reload."""
        master = self.nginx_master_pid()
        found = set()
        for pid in _proc_pids():
            stat = _stat(pid)
            if stat and stat[0] == master and "shutting down" in " ".join(_cmdline(pid)):
                found.add(pid)
        return found

    def reload_nginx(self, wait: bool = True, timeout: float = 15.0) -> None:
        """`nginx -s reload`; with `wait`, until new workers serve and the old ones have exited."""
        before = self.nginx_worker_pids()
        self.nginx("-s", "reload")
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while True:
            self._check_running()
            now = self.nginx_worker_pids()
            if now and not (now & before) and not (self.nginx_old_worker_pids() & before):
                return
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"nginx did not finish reloading in {timeout} s (workers before {sorted(before)}, "
                    f"now {sorted(now)})\n{self.diagnostics()}"
                )
            time.sleep(0.05)

    # -- the Emperor -------------------------------------------------------------------------

    def stats(self, timeout: float = 5.0) -> dict[str, object]:
        """The Emperor's stats JSON. Connecting also wakes the Emperor for a scan."""
        with socket.create_connection((LOCALHOST, self.stats_port), timeout=timeout) as sock:
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        document = json.loads(b"".join(chunks))
        if not isinstance(document, dict):
            raise ValueError("the Emperor's stats are not a JSON object")
        return document

    def wake_emperor(self) -> None:
        """Make the Emperor scan its vassals now instead of at its next tick."""
        with socket.create_connection((LOCALHOST, self.stats_port), timeout=5.0) as sock:
            while sock.recv(65536):
                pass

    def vassal_pids(self) -> dict[str, int]:
        """Vassal file name (e.g. "prod--sess--hash.ini") -> pid of its uWSGI master."""
        try:
            stats = self.stats()
        except (OSError, ValueError):
            return self._vassal_pids_from_proc()
        found = {}
        vassals = stats.get("vassals", [])
        assert isinstance(vassals, list)
        for vassal in vassals:
            pid = int(vassal.get("pid", 0))
            if pid > 0:
                found[Path(str(vassal["id"])).name] = pid
        return found

    def _vassal_pids_from_proc(self) -> dict[str, int]:
        """The same from /proc: a vassal master is a child of the Emperor running `uwsgi --ini FILE`."""
        emperors = {
            pid for pid in _proc_pids()
            if (stat := _stat(pid)) and self._emperor and stat[0] == self._emperor.pid
        }
        found = {}
        for pid in _proc_pids():
            stat = _stat(pid)
            command = _cmdline(pid)
            if stat and stat[0] in emperors and "--ini" in command and _alive(pid):
                ini = command[command.index("--ini") + 1] if command.index("--ini") + 1 < len(command) else ""
                if Path(ini).parent == self.vassals_dir:
                    found[Path(ini).name] = pid
        return found

    def vassals(self) -> list[dict[str, object]]:
        """The Emperor's per-vassal stats (id, pid, ready, accepting, loyal, respawns...)."""
        vassals = self.stats().get("vassals", [])
        assert isinstance(vassals, list)
        return vassals

    # -- HTTP --------------------------------------------------------------------------------

    def get(self, host: str, path: str = "/", timeout: float = 10.0) -> Response:
        """GET through the private nginx with this Host header."""
        return http_get(self.http_port, host, path, timeout)

    def wait_ready(self, host: str, path: str = "/", timeout: float = 30.0) -> Response:
        """GET through nginx until a response below 500 arrives; raise SandboxError with logs if none."""
        deadline = time.monotonic() + timeout
        last = "nothing yet"
        while True:
            self._check_running()
            try:
                response = self.get(host, path, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            except OSError as error:
                last = f"{type(error).__name__}: {error}"
            else:
                if response.status < 500:
                    return response
                last = f"{response.status} {response.text[:200]!r}"
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"http://{host}{path} (via {self.listen}) not ready after {timeout} s; last: {last}\n"
                    f"{self.diagnostics()}"
                )
            time.sleep(0.1)

    # -- diagnostics -------------------------------------------------------------------------

    def diagnostics(self, lines: int = 30, extra_logs: Sequence[Path] = ()) -> str:
        """The tails of the sandbox's logs, for failure messages."""
        parts = []
        for log in (self.nginx_error_log, self.emperor_log, self.nginx_root / "stdout.log",
                    self.root / "emperor.stdout.log", *extra_logs):
            parts.append(f"--- {log} (last {lines} lines) ---\n{_tail(log, lines)}")
        return "\n".join(parts)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"({error.strerror})"
    return "\n".join(text.splitlines()[-lines:])


def _terminate(process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Signal a process gracefully and wait; SIGKILL its whole session if it does not exit in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5.0)


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name
