"""A private nginx and a private uWSGI Emperor for one temporary directory: what `backstage try` runs.

Everything lives under one root directory and listens on 127.0.0.1 only; system services, their
configuration and their ports are never touched:

    ROOT/vassals/            the Emperor watches ROOT/vassals/*.ini (a glob: re-read on every scan)
    ROOT/emperor.log         the Emperor's log (vassals without their own logto log here too)
    ROOT/nginx/nginx.conf    the private nginx's main configuration; it includes ROOT/nginx/sites/*
    ROOT/nginx/sites/        where a production's include file is linked
    ROOT/nginx/error.log     nginx's error log, at `warn`

Every process started here carries BACKSTAGE_SANDBOX=<token> in its environment and runs in its own
session, so `stop()` can find and kill whatever is left, even after a failure; an nginx or uWSGI whose
command line names a path under ROOT is counted too (a vassal that dropped to a Stage's uid is no
exception).

Measured behaviour this module relies on (uWSGI 2.0.31, nginx 1.22):
- SIGINT to the Emperor's master stops it for good: the Emperor sends every vassal a stop message
  ("RAGNAROK"), waits for them and exits (about 3 s). SIGTERM does the same only with --die-on-term
  (which we pass); without it SIGTERM stops the vassals but leaves the master running.
- The Emperor's stats socket answers one JSON document per connection, whose "pid" is the Emperor,
  a child of the master we start.
- SIGQUIT stops nginx gracefully.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from ..agent import emperor, nginx, probes, procfs
from ..targets import UnsafeValue, template

__all__ = ["ComponentMissing", "Components", "Sandbox", "SandboxError", "find_components", "free_ports"]

TAG = "BACKSTAGE_SANDBOX"
LOCALHOST = "127.0.0.1"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


class SandboxError(RuntimeError):
    """A sandboxed component failed to start, stop or answer."""


class ComponentMissing(SandboxError):
    """nginx or a compiled uWSGI is not installed, so no sandbox can start."""


@dataclass(frozen=True, slots=True)
class Components:
    nginx: str
    uwsgi: str


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


def _find_uwsgi(environments: Sequence[str], rejected: list[str]) -> tuple[str | None, list[str]]:
    """The compiled uWSGI to run the Emperor with, and the places it was looked for.

    BACKSTAGE_UWSGI, when set, is the only candidate. Otherwise: each Stage's own virtualenv (a uWSGI
    installed there was built against the Python the Stage runs), then PATH, then beside the Python
    running backstage.
    """
    override = os.environ.get("BACKSTAGE_UWSGI", "")
    beside = Path(sys.executable).parent / "uwsgi"
    if override:
        looked = [f"BACKSTAGE_UWSGI={override}"]
        candidates = [override]
    else:
        own = list(dict.fromkeys(str(Path(environment, "bin", "uwsgi")) for environment in environments))
        looked = [*(f"{path} (the Stage's virtualenv)" for path in own), "uwsgi on PATH",
                  *([] if str(beside) in own else [f"{beside} (beside {sys.executable})"])]
        candidates = [*own, shutil.which("uwsgi") or "", str(beside)]
    seen: set[str] = set()
    for candidate in filter(None, candidates):
        if candidate in seen:
            continue
        seen.add(candidate)
        if not os.access(candidate, os.X_OK):
            if override:
                rejected.append(f"{candidate}: {'not executable' if os.path.exists(candidate) else 'no such file'}")
            continue
        found = _classify_uwsgi(candidate, rejected)
        if found:
            return found, looked
    return None, looked


def _uwsgi_missing(environments: Sequence[str], looked: list[str]) -> str:
    """What to do without a compiled uWSGI, in a user's words."""
    override = os.environ.get("BACKSTAGE_UWSGI", "")
    if override:
        return (f"BACKSTAGE_UWSGI={override} is not a compiled uWSGI: point it at one, or unset it to use the one "
                "in the Stage's virtualenv, on PATH or beside the Python running backstage")
    into = (f"into the Stage's virtualenv (`{environments[0]}/bin/python -m pip install uwsgi`)" if environments
            else "into the Python your Stages are built from (`python3 -m pip install uwsgi`)")
    return ("a compiled uWSGI runs the Emperor and every vassal, and none was found (looked for "
            + ", ".join(looked) + f"). Install one {into} or system-wide (`pip install uwsgi`); pip compiles "
            "it, which needs a C compiler and the Python headers (Debian: `apt-get install build-essential "
            "python3-dev`). The `pyuwsgi` wheel does not work: it cannot run as an Emperor. "
            "BACKSTAGE_UWSGI=/path/to/uwsgi names one explicitly.")


def find_components(environments: Sequence[str] = ()) -> Components:
    """The nginx and compiled uWSGI binaries to use; raises ComponentMissing, saying what to install.

    `environments`: the Stages' virtualenvs, whose own bin/uwsgi is preferred. BACKSTAGE_NGINX and
    BACKSTAGE_UWSGI override the search.
    """
    rejected: list[str] = []
    found_nginx = _find_nginx(rejected)
    found_uwsgi, looked = _find_uwsgi(environments, rejected)
    missing = []
    if not found_nginx:
        missing.append("nginx is not installed (Debian: `apt-get install nginx`; or set BACKSTAGE_NGINX to its "
                       "path)")
    if not found_uwsgi:
        missing.append(_uwsgi_missing(environments, looked))
    if missing:
        details = "".join(f"\n  - rejected {item}" for item in rejected)
        raise ComponentMissing("cannot start a sandbox: " + "; ".join(missing) + details)
    assert found_nginx and found_uwsgi
    return Components(nginx=found_nginx, uwsgi=found_uwsgi)


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


# ---------------------------------------------------------------------------------------------
# The sandbox


class Sandbox:
    """A private nginx and uWSGI Emperor under `root`, listening on 127.0.0.1 only.

        with Sandbox(root) as sandbox:
            ...build a production with [host] = sandbox.host_table() and every listen = sandbox.listen,
            and apply it...
    """

    def __init__(self, root: str | Path, *, http_port: int | None = None,
                 components: Components | None = None) -> None:
        self.root = Path(root).resolve()
        self.components = components or find_components()
        ports = free_ports(2)
        self.http_port = http_port or ports[0]
        self.stats_port = next(port for port in ports if port != self.http_port)
        self.token = f"{self.root}#{secrets.token_hex(8)}"
        self._nginx: subprocess.Popen[bytes] | None = None
        self._emperor: subprocess.Popen[bytes] | None = None
        self._sessions: set[int] = set()
        self._outputs: list[IO[bytes]] = []

    # -- layout ------------------------------------------------------------------------------

    @property
    def vassals_dir(self) -> Path:
        return self.root / "vassals"

    @property
    def nginx_root(self) -> Path:
        return self.root / "nginx"

    @property
    def nginx_dir(self) -> Path:
        """Where a production's include file goes: nginx.conf includes sites/*."""
        return self.nginx_root / "sites"

    @property
    def nginx_conf(self) -> Path:
        return self.nginx_root / "nginx.conf"

    @property
    def nginx_error_log(self) -> Path:
        return self.nginx_root / "error.log"

    @property
    def emperor_log(self) -> Path:
        return self.root / "emperor.log"

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
            "nginx_user": pwd.getpwuid(os.geteuid()).pw_name,
            "emperor_stats": self.emperor_stats,
            "uwsgi": self.components.uwsgi,
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
            self._nginx = self._spawn([*self.nginx_command, "-g", "daemon off;"], self.nginx_root / "stdout.log")
            self._emperor = self._spawn(self.emperor_command(), self.root / "emperor.stdout.log")
            deadline = time.monotonic() + timeout
            self._wait_nginx(deadline)
            self._wait_emperor(deadline)
        except BaseException:
            self.stop()
            raise

    def _prepare(self) -> None:
        for directory in (self.vassals_dir, self.nginx_dir,
                          *(self.nginx_root / "temp" / kind for kind in nginx.TEMP_KINDS)):
            directory.mkdir(parents=True, exist_ok=True)
        try:
            text = self.render_nginx_conf()
        except UnsafeValue as exc:
            raise SandboxError(f"cannot write the sandbox's nginx.conf under {self.root}: {exc}") from None
        self.nginx_conf.write_text(text)
        done = nginx.run([*self.nginx_command, "-t", "-q"])
        if done.returncode != 0:
            raise SandboxError(f"the sandbox's own nginx.conf is invalid:\n{done.stderr}")

    def render_nginx_conf(self) -> str:
        return template("nginx", "sandbox-nginx.conf.j2").render(
            user_root=os.geteuid() == 0,
            pid=str(self.nginx_root / "nginx.pid"),
            error_log=str(self.nginx_error_log),
            tag=TAG,
            access_log=str(self.nginx_root / "access.log"),
            temp={kind: str(self.nginx_root / "temp" / kind) for kind in nginx.TEMP_KINDS},
            listen=self.listen,
            sites=f"{self.nginx_dir}/*",
        )

    def emperor_command(self) -> list[str]:
        return [
            self.components.uwsgi,
            "--master",
            "--emperor", f"{self.vassals_dir}/*.ini",
            "--emperor-stats", self.emperor_stats,
            "--die-on-term",
            "--logto", str(self.emperor_log),
            "--pidfile", str(self.root / "emperor.pid"),
            "--emperor-no-blacklist",
        ]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env[TAG] = self.token
        # A vassal must get its Python from its own `virtualenv`, not from backstage's.
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

    def _check_running(self) -> None:
        for name, process in (("nginx", self._nginx), ("uWSGI Emperor", self._emperor)):
            if process is not None and process.poll() is not None:
                raise SandboxError(f"{name} exited with status {process.returncode}\n{self._logs()}")

    def _wait_nginx(self, deadline: float) -> None:
        # nginx writes its pid file only after it has bound every listening socket: an open port
        # alone could belong to someone else.
        pidfile = self.nginx_root / "nginx.pid"
        while not (self._nginx is not None and _read_pid(pidfile) == self._nginx.pid and self._port_open()):
            self._check_running()
            if time.monotonic() > deadline:
                raise SandboxError(f"nginx does not listen on {self.listen}\n{self._logs()}")
            time.sleep(0.05)

    def _port_open(self) -> bool:
        try:
            probes.connect(self.listen, 0.5).close()
        except OSError:
            return False
        return True

    def _wait_emperor(self, deadline: float) -> None:
        while True:
            self._check_running()
            with contextlib.suppress(OSError, ValueError, TypeError):
                # The Emperor runs as a child of the master we started; a foreign listener is not it.
                found = procfs.stat(int(emperor.stats(self.emperor_stats).get("pid", 0)))
                if self._emperor is not None and found is not None and found.ppid == self._emperor.pid:
                    return
            if time.monotonic() > deadline:
                raise SandboxError(f"the Emperor's stats socket does not answer\n{self._logs()}")
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
                    handle.close()
            self._outputs.clear()

    def leftover_pids(self) -> list[int]:
        """Processes this sandbox started (or their children) that are still alive: in a session it
        started, carrying its token, or an nginx or uWSGI whose command line names a path under its root
        (a vassal that dropped to a Stage's uid, or that lost its environment, is found all the same)."""
        me = os.getpid()
        marker = f"{TAG}={self.token}".encode()
        inside = f"{self.root}/"
        binaries = {os.path.realpath(self.components.nginx), os.path.realpath(self.components.uwsgi)}
        found = []
        for pid in procfs.pids():
            if pid == me:
                continue
            stat = procfs.stat(pid)
            if stat is None or stat.state == "Z":
                continue
            if (stat.session in self._sessions or marker in procfs.environ(pid)
                    or (inside in procfs.title(pid) and _executable(pid) in binaries)):
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

    def _logs(self, lines: int = 30) -> str:
        """The tails of the sandbox's logs, for failure messages (the root is removed afterwards)."""
        logs = (self.nginx_error_log, self.emperor_log, self.nginx_root / "stdout.log",
                self.root / "emperor.stdout.log")
        return "\n".join(f"--- {log} (last {lines} lines) ---\n{_tail(log, lines)}" for log in logs)


def _executable(pid: int) -> str:
    try:
        return os.path.realpath(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


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
