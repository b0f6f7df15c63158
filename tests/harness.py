"""Test-only helpers around the product's sandbox (backstage.cli.sandbox): HTTP through its nginx, the
Emperor's vassals and nginx's workers, so tests can look at what an apply did; and, for the fault
suites (tests/test_faults*.py), a two-generation production (FaultStage), `backstage` run in a session
of its own (so that a signal to its group reaches nothing else), and small tmpfs mounts to fill.

    with TestSandbox(tmp_path / "sandbox") as sandbox:
        ...apply a production built with sandbox.host_table() and sandbox.listen...
        assert sandbox.get("show.test", "/").status == 200
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backstage.agent import emperor, nginx, procfs
from backstage.cli.sandbox import LOCALHOST, Sandbox, find_components, free_ports

__all__ = ["SHOWCASE", "FaultStage", "Response", "Run", "TestSandbox", "backstage", "backstage_started", "expected",
           "finished", "free_port", "http_get", "limited", "no_traceback", "production_text", "stopped",
           "stopped_agent", "tmpfs"]

REPO = Path(__file__).resolve().parent.parent
SHOWCASE = REPO / "examples" / "apps" / "showcase"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


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


class TestSandbox(Sandbox):
    """The product's Sandbox, plus what tests ask of it."""

    __test__ = False  # a helper, not a pytest test class

    def get(self, host: str, path: str = "/", timeout: float = 10.0) -> Response:
        """GET through the private nginx with this Host header."""
        return http_get(self.http_port, host, path, timeout)

    def stats(self) -> dict[str, Any]:
        """The Emperor's stats JSON ("pid", and "vassals" with each one's "id" and "pid")."""
        return emperor.stats(self.emperor_stats)

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
        if self._emperor is None:
            return {}
        found = {}
        for the_emperor in procfs.children(self._emperor.pid):
            for pid in procfs.children(the_emperor):
                command = procfs.cmdline(pid)
                if "--ini" in command[:-1]:
                    ini = Path(command[command.index("--ini") + 1])
                    if ini.parent == self.vassals_dir:
                        found[ini.name] = pid
        return found

    def nginx_worker_pids(self) -> set[int]:
        """The private nginx's workers serving the current configuration (not those a reload retired)."""
        if self._nginx is None or self._nginx.poll() is not None:
            return set()
        master = self._nginx.pid
        return {pid for pid, parent in nginx.workers().items()
                if parent == master and "shutting down" not in procfs.title(pid)}

    def emperor_pid(self) -> int:
        """The Emperor proper (the stats' "pid"), a child of the master this sandbox started."""
        return int(self.stats()["pid"])

    def emperor_master_pid(self) -> int:
        assert self._emperor is not None
        return self._emperor.pid

    def nginx_master_pid(self) -> int:
        assert self._nginx is not None
        return self._nginx.pid

    def restart_emperor(self, timeout: float = 20.0) -> None:
        """Start the Emperor again after a test killed it; it starts every linked vassal."""
        if self._emperor is not None and self._emperor.poll() is None:
            return
        if self._emperor is not None:
            self._emperor.wait()
        self._emperor = self._spawn(self.emperor_command(), self.root / "emperor.stdout.log")
        self._wait_emperor(time.monotonic() + timeout)


# ------------------------------------------------------------------------------------- fault suites

@dataclass
class Run:
    code: int
    out: str
    err: str

    def line(self) -> str:
        """The one-line outcome on stderr (a vassal's log tail may follow it)."""
        starts = ("apply ", "refused:", "backstage:", "rollback ", "install.sh:")
        return next((line for line in self.err.splitlines() if line.startswith(starts)), "")


def backstage(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Run:
    """The real `backstage` command, in a session of its own (a signal to its group reaches only it),
    as a user would run it; returns once it and everything holding its output have exited."""
    done = subprocess.run([sys.executable, "-m", "backstage.cli", *args], capture_output=True, text=True,
                          env=os.environ | (env or {}), timeout=timeout, start_new_session=True)
    return Run(done.returncode, done.stdout, done.stderr)


def backstage_started(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`backstage` as `backstage()` runs it, but returning at once: for tests that act while it runs."""
    return subprocess.Popen([sys.executable, "-m", "backstage.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | (env or {}), start_new_session=True)


def finished(process: subprocess.Popen[str], timeout: float = 300) -> Run:
    out, err = process.communicate(timeout=timeout)
    return Run(process.returncode, out, err)


def stopped_agent(process: subprocess.Popen[str], timeout: float = 60) -> int:
    """The pid of the agent `process` runs, once it has stopped itself (a SIGSTOP from its test hook)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in procfs.children(process.pid):
            found = procfs.stat(pid)
            if found and found.state == "T" and any(part.endswith("agent.pyz") for part in procfs.cmdline(pid)):
                return pid
        if process.poll() is not None:
            raise AssertionError(f"backstage exited ({process.returncode}) before its agent stopped: "
                                 f"{process.communicate()[1]}")
        time.sleep(0.05)
    raise AssertionError(f"no stopped agent under pid {process.pid} after {timeout} s")


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64m", inodes: int = 100_000) -> Iterator[Path]:
    """A tmpfs mounted at `path` (we run as root), root-owned 0755 as apply trusts; unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes},mode=0755", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def limited(path: Path, spare_inodes: int | None = None, full: bool = False, readonly: bool = False,
            size: str = "64m", inodes: int = 100_000) -> Iterator[None]:
    """Remount the tmpfs at `path` so that only `spare_inodes` more files or links fit (or, `full`, no
    byte and no inode); or, `readonly`, cover it with a read-only bind mount of itself (files already
    open for writing, as vassals' logs, stay so). Everything comes back afterwards."""
    if readonly:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
            yield
        finally:
            subprocess.run(["umount", str(path)], check=True)
        return
    fs = os.statvfs(path)
    used_inodes = fs.f_files - fs.f_ffree
    options = []
    if spare_inodes is not None:
        options.append(f"nr_inodes={used_inodes + spare_inodes}")
    if full:
        used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
        options += [f"nr_inodes={used_inodes}", f"size={max(used, fs.f_frsize)}"]
    subprocess.run(["mount", "-o", ",".join(["remount", *options]), str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", f"remount,size={size},nr_inodes={inodes}", str(path)], check=True)


def production_text(tmp: Path, sandbox: TestSandbox, gen: str, extra: str = "", site_env: str = "",
                    site_uwsgi: str = "") -> str:
    """Generation "a": site (version a), old, keep. Generation "b": site (version b), new, keep. Each
    Sess serves one Gig: site at www /, old at www /old/, new at www /new/, keep at quiet /."""
    from conftest import sandbox_head

    q = json.dumps
    sesses = {"site": f"site-{gen}", "keep": "keep-1", ("old" if gen == "a" else "new"): "side-1"}
    paths = {"site": ("www", "/"), "old": ("www", "/old/"), "new": ("www", "/new/"), "keep": ("quiet", "/")}
    text = sandbox_head("fault", tmp, sandbox.host_table()) + f"""
[stages.main]
virtualenv = {q(sys.prefix)}

[venues.www]
domain = "www.fault.test"
listen = {q(sandbox.listen)}

[venues.quiet]
domain = "quiet.fault.test"
listen = {q(sandbox.listen)}
"""
    for name, version in sesses.items():
        env = f'SHOWCASE_VERSION = "{version}"' + (site_env if name == "site" else "")
        venue, path = paths[name]
        text += f"""
[acts.{name}]
wsgi = "showcase.wsgi:application"
path = {q(str(SHOWCASE))}
settings = "showcase.settings"
health = "/healthz"
env = {{ {env} }}

[sesses.{name}]
act = "{name}"
stage = "main"
{site_uwsgi if name == "site" else ""}
[gigs.{name}]
venue = "{venue}"
sess = "{name}"
path = "{path}"
"""
    return text + extra


def expected(gen: str) -> dict[tuple[str, str], str]:
    """What each Gig's body starts with while generation `gen` ("a" or "b") serves."""
    return {("www.fault.test", "/"): f"showcase site-{gen} script_name= ",
            ("www.fault.test", "/old/"): ("showcase side-1 script_name=/old " if gen == "a"
                                          else "showcase site-b script_name= path=/old/"),
            ("www.fault.test", "/new/"): ("showcase side-1 script_name=/new " if gen == "b"
                                          else "showcase site-a script_name= path=/new/"),
            ("quiet.fault.test", "/"): "showcase keep-1 "}


@dataclass
class FaultStage:
    """A sandbox and the artifacts of a two-generation production ("a", "b") and its variants, shared by
    a module's tests; each test first brings it where it needs it (`at`, `pair`), so every test passes
    alone as well as after the others."""

    sandbox: TestSandbox
    tmp: Path
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    def build(self, key: str, gen: str, **variant: str) -> Path:
        """Build (once) generation `gen` with production_text's `variant`s, under the name `key`."""
        if key not in self.artifacts:
            source = self.tmp / "sources" / key / "production.toml"
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(production_text(self.tmp, self.sandbox, gen, **variant))
            done = backstage("build", str(source), "-o", str(self.tmp / "build"))
            assert done.code == 0, done.err
            self.artifacts[key] = Path(done.out.strip())
        return self.artifacts[key]

    TIMEOUTS = ("--ready-timeout=20", "--health-timeout=5", "--drain-timeout=5")

    def apply(self, key: str, *flags: str, env: dict[str, str] | None = None) -> Run:
        return backstage("apply", str(self.artifacts[key]), *self.TIMEOUTS, *flags, env=env)

    def apply_started(self, key: str, *flags: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return backstage_started("apply", str(self.artifacts[key]), *self.TIMEOUTS, *flags, env=env)

    def serving(self) -> str | None:
        """Which of "a" and "b" answers at every Gig through nginx; None if neither (a mix, or errors)."""
        try:
            bodies = {target: self.sandbox.get(*target, timeout=5).text for target in expected("a")}
        except OSError:
            return None
        found = [gen for gen in ("a", "b") if all(bodies[t].startswith(e) for t, e in expected(gen).items())]
        return found[0] if found else None

    def current(self) -> str | None:
        """The artifact key `current` names (the first built under that name), or its raw name."""
        try:
            name = Path(os.readlink(self.state / "current")).name
        except OSError:
            return None
        return next((key for key, built in self.artifacts.items() if built.name == name), name)

    def links(self) -> list[str]:
        return sorted(p.name for p in self.sandbox.vassals_dir.iterdir() if not p.name.startswith("."))

    def desired(self, key: str) -> list[str]:
        return sorted(p.name for p in (self.artifacts[key] / "uwsgi").glob("*.ini"))

    def history(self) -> list[list[str]]:
        try:
            return [line.split("\t") for line in (self.state / "history").read_text().splitlines()]
        except FileNotFoundError:
            return []

    def at(self, key: str) -> None:
        """Make `key` (an "a" or "b" artifact) live, whole, with no other vassal of this production."""
        if not (self.serving() == key[0] and self.current() == key and self.links() == self.desired(key)):
            done = self.apply(key)
            assert done.code == 0, done.out + done.err
        self.assert_live(key)

    def pair(self) -> tuple[str, str]:
        """("a", "b") or ("b", "a"): what serves now, whole, and the other; "a" if neither does."""
        self.sandbox.restart_emperor()  # if a test killed it
        for key in ("a", "b"):
            if self.serving() == key and self.current() == key and self.links() == self.desired(key):
                return key, "b" if key == "a" else "a"
        self.at("a")
        return "a", "b"

    def assert_live(self, key: str, extra_links: tuple[str, ...] = ()) -> None:
        """`key` serves every Gig through nginx, `current` names it and exactly its vassals are linked
        (with `extra_links`, at least those: vassals a failed run could not know were safe to stop)."""
        assert self.serving() == key[0], f"gigs answer as {self.serving()}, not {key}"
        assert self.current() == key
        if extra_links:
            assert set(self.desired(key)) <= set(self.links()) <= set(self.desired(key)) | set(extra_links)
        else:
            assert self.links() == self.desired(key)

    def wait_unlocked(self, timeout: float = 60.0) -> None:
        """Until no agent holds the production's lock (an agent whose parent was killed runs on to undo)."""
        import fcntl

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                fd = os.open(self.state / "lock", os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except OSError:
                time.sleep(0.1)
            finally:
                os.close(fd)
        raise AssertionError(f"the production's lock is still held after {timeout} s")


def no_traceback(run: Run) -> None:
    """No traceback of backstage's own (a vassal's log tail, indented, may quote the app's)."""
    for text in (run.out, run.err):
        assert not any(line.startswith("Traceback") for line in text.splitlines()), run.err


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGCONT `pid` when leaving (a test that SIGSTOPs a component never leaves it stopped)."""
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def fault_stage(tmp: Path) -> Iterator[FaultStage]:
    """A sandbox under `tmp` with generations "a" and "b" built (not applied), for a module's fault tests."""
    find_components()
    with TestSandbox(tmp / "sandbox") as sandbox:
        stage = FaultStage(sandbox, tmp)
        stage.build("a", "a")
        stage.build("b", "b")
        yield stage
