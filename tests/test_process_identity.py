"""Who a process is: apply, as root, against processes a local non-root user (here `nobody`) started with
the command line of a vassal or of nginx's master and workers. Any user can give their own processes
any argv; what counts is the process's parent and uid (README, Safety 1 and 7). Real nginx, a compiled
uWSGI Emperor and the showcase app.

Each case asserts the failure (exit 1, one line naming what went wrong), that the undo left the
previous generation live, and that the host still serves it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from backstage.agent import nginx, procfs
from backstage.agent.outcomes import SIGNAL_AT_ENV
from backstage.agent.state import State
from backstage.agent.switch import vassal_processes
from backstage.contract import read_plan
from conftest import host_table
from harness import SHOWCASE, Run, TestSandbox, backstage, backstage_started, finished, free_port, stopped_agent

NOBODY = 65534
TIMEOUTS = ("--ready-timeout=15", "--health-timeout=5", "--drain-timeout=5")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# Each attacker program first gives itself the argv[0] it was passed (os.execv), so that its command
# line reads `ARGV0 -c CODE --renamed ARGS...`.
RENAME = r"""
import os, sys
if sys.argv[1:2] != ["--renamed"]:
    os.execv(sys.executable, [sys.argv[1], "-c", CODE, "--renamed", *sys.argv[2:]])
"""

# Listens on 127.0.0.1:ARGS[0] and answers every request with PWNED.
LISTENER = RENAME + r"""
import socket
port = int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(64)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n"
                  b"Connection: close\r\n\r\nPWNED!\n")
    except OSError:
        pass
    finally:
        c.close()
"""

# Titled as an nginx master (given the real master's title as ARGV0), starts a new child titled
# "nginx: worker process" every 50 ms and kills the one before: always a worker pid nginx never had.
FAKE_MASTER = RENAME + r"""
import subprocess, time
print("faking", flush=True)
worker = None
while True:
    new = subprocess.Popen(["bash", "-c", 'exec -a "nginx: worker process" sleep 1000'])
    if worker:
        worker.kill(); worker.wait()
    worker = new
    time.sleep(0.05)
"""


def makes_workers(fake: subprocess.Popen[str], timeout: float = 5.0) -> bool:
    """Whether the FAKE_MASTER `fake` is running and a scan of the host sees one of its children titled as
    an nginx worker, within `timeout` seconds. One scan may miss them all though one always runs: the
    fake replaces its child every 50 ms, and a scan of /proc is no snapshot (it can list the old child,
    then read it once killed, and list too early the new one), the likelier on a busy machine."""
    deadline = time.monotonic() + timeout
    while fake.poll() is None:
        if any(parent == fake.pid for parent in nginx.workers().values()):
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return False


def as_nobody(code: str, argv0: str, *args: str) -> subprocess.Popen[str]:
    """`code` run by python as user nobody (setpriv), in a session of its own, with the command line
    `ARGV0 -c CODE --renamed ARGS...`; it prints one line once it is in place."""
    program = f"CODE = {code!r}\n" + code
    process = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
         PYTHON, "-c", program, argv0, *args],
        cwd="/", stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() in ("listening", "faking"), f"the attacker process did not start: {line!r}"
    return process


@contextlib.contextmanager
def killed_at_end(processes: list[subprocess.Popen[str]]) -> Iterator[list[subprocess.Popen[str]]]:
    """Kill each process's whole session (it and every child it started) when leaving."""
    try:
        yield processes
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            if process.stdout:
                process.stdout.close()


@dataclass
class Host:
    sandbox: TestSandbox
    tmp: Path

    def build(self, name: str, version: str, extra: str = "") -> Path:
        q = json.dumps
        base = self.tmp / name
        text = f"""
[production]
name = {q(name)}
state_dir = {q(str(base / "state"))}
run_dir = {q(str(base / "run"))}
log_dir = {q(str(base / "log"))}

""" + host_table(self.sandbox.host_table()) + f"""
[stages.main]
virtualenv = {q(sys.prefix)}

[acts.site]
wsgi = "showcase.wsgi:application"
path = {q(str(SHOWCASE))}
settings = "showcase.settings"
health = "/healthz"
env = {{ SHOWCASE_VERSION = {q(f"{name}-{version}")} }}

[sesses.site]
act = "site"
stage = "main"

[venues.www]
domain = "{name}.identity.test"
listen = {q(self.sandbox.listen)}

[gigs.site]
venue = "www"
sess = "site"
""" + extra
        source = self.tmp / "src" / f"{name}-{version}" / "production.toml"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(text)
        done = backstage("build", str(source), "-o", str(self.tmp / "build"))
        assert done.code == 0, done.err
        return Path(done.out.strip())

    def serves(self, name: str, version: str, path: str = "/") -> None:
        """The production's www venue answers with `version`'s page, three times in a row."""
        for _ in range(3):
            page = self.sandbox.get(f"{name}.identity.test", path)
            assert page.status == 200 and page.text.startswith(f"showcase {name}-{version} "), page.text[:200]
            assert "PWNED" not in page.text
            time.sleep(0.3)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    tmp = tmp_path_factory.mktemp("identity")
    with TestSandbox(tmp / "sandbox") as sandbox:
        yield Host(sandbox, tmp)


def history(host: Host, name: str) -> list[list[str]]:
    return [line.split("\t") for line in (host.tmp / name / "state" / "history").read_text().splitlines()]


def links(host: Host, name: str) -> list[str]:
    return sorted(p.name for p in host.sandbox.vassals_dir.iterdir() if p.name.startswith(f"{name}--"))


def applied(host: Host, artifact: Path) -> Run:
    done = backstage("apply", str(artifact), *TIMEOUTS)
    assert done.code == 0, done.err
    return done


def test_another_users_process_with_a_vassals_command_line_is_not_the_vassal(host: Host) -> None:
    """Defect A: nobody binds a TCP Sess's port after apply checked it was free, in a process whose argv
    names the vassal's file (`--ini .../<file>`). It answers the readiness check; apply must see that
    the socket is not its vassal's, fail naming the holder, and leave the previous generation serving."""
    name, port = "pa", free_port()
    svc = f"""
[acts.svc]
wsgi = "showcase.wsgi:application"
path = {json.dumps(str(SHOWCASE))}
settings = "showcase.settings"
health = "/healthz"
env = {{ SHOWCASE_VERSION = "svc-1" }}

[sesses.svc]
act = "svc"
stage = "main"
protocol = "http"
port = {port}

[gigs.svc]
venue = "www"
sess = "svc"
path = "/svc/"
"""
    first, second = host.build(name, "v1"), host.build(name, "v2", svc)
    applied(host, first)
    before = links(host, name)
    vassal_file = next(p.name for p in (second / "uwsgi").glob(f"{name}--svc--*.ini"))
    started = backstage_started("apply", str(second), *TIMEOUTS, env={SIGNAL_AT_ENV: "installed:SIGSTOP:self"})
    agent = stopped_agent(started)  # past the check that the port is free
    with killed_at_end([]) as attackers:
        try:
            attackers.append(as_nobody(LISTENER, "python3", str(port), "--ini", f"/srv/{name}/uwsgi/{vassal_file}"))
        finally:
            os.kill(agent, signal.SIGCONT)
        run = finished(started)
        holder = attackers[0].pid
        assert run.code == 1, run.err
        line = run.line()
        assert line.startswith(f"apply failed, rolled back to {first.name}: sess svc ({vassal_file[:-4]}) is not "
                               f"what answers at its address: 127.0.0.1:{port} is held by pid {holder} ("), line
        assert line.endswith("), not by its vassal; free the port or give the Sess another `port`"), line
        assert f"held by pid {holder} (python3 -c " in line, line  # its title, on this one line
        host.serves(name, "v1")
        host.serves(name, "v1", "/svc/")  # routed to the v1 site as before, never to the impostor
        assert links(host, name) == before
        assert history(host, name)[-1][2:] == [second.name, "failed"]

        # The same command line in a process of root that the Emperor did not start is no vassal either;
        # the Emperor's own vassal still is.
        state = State(read_plan(host.tmp / name / "state" / "generations" / first.name))
        site_file = next(f for f in before if "--site--" in f)
        site_master = host.sandbox.vassal_pids()[site_file]
        impostor = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)", "--ini",
                                     str(host.sandbox.vassals_dir / site_file)], start_new_session=True)
        try:
            deadline = time.monotonic() + 5
            while "--ini" not in procfs.cmdline(impostor.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            found = vassal_processes(state, [site_file])
            assert site_master in found and procfs.children(site_master)[0] in found
            assert impostor.pid not in found
            assert holder not in vassal_processes(state, [vassal_file])
        finally:
            impostor.kill()
            impostor.wait()


def test_fake_nginx_workers_do_not_make_a_refused_reload_count_as_taken(host: Host) -> None:
    """Defect B: nobody holds the port a new Venue listens on, so nginx refuses the reload, and runs a
    fake master (titled as nginx's real one) that starts fresh processes titled `nginx: worker process`.
    apply must not take them for new workers: it fails quoting nginx's [emerg] line and rolls back, and
    the previous generation keeps serving."""
    name, port = "pb", free_port()
    side = f"""
[venues.side]
domain = "side.pb.identity.test"
listen = "127.0.0.1:{port}"

[gigs.side]
venue = "side"
sess = "site"
"""
    first, second = host.build(name, "v1"), host.build(name, "v2", side)
    applied(host, first)
    host.serves(name, "v1")
    before = links(host, name)
    master = host.sandbox.nginx_master_pid()
    command = host.sandbox.nginx_command
    with killed_at_end([]) as attackers:
        attackers.append(as_nobody(LISTENER, "python3", str(port)))
        attackers.append(as_nobody(FAKE_MASTER, procfs.title(master)))
        fake = attackers[1].pid
        assert makes_workers(attackers[1])
        assert procfs.title(fake).startswith("nginx: master process ")  # the fake looks like the master

        run = backstage("apply", str(second), *TIMEOUTS)
        assert run.code == 1, run.err
        line = run.line()
        assert line.startswith(f"apply failed, rolled back to {first.name}: nginx did not take the new "
                               "configuration"), line
        assert "[emerg]" in line and f"bind() to 127.0.0.1:{port} failed (98: Address already in use)" in line, line
        host.serves(name, "v1")
        assert links(host, name) == before
        assert history(host, name)[-1][2:] == [second.name, "failed"]
        # The master is the process of root that runs nginx's binary, its workers that master's children.
        assert nginx.masters(command) == {master}
        assert set(nginx.workers_of({master})) == host.sandbox.nginx_worker_pids()
        assert makes_workers(attackers[1])  # the fake still ran throughout (never exited, still makes workers)
    host.serves(name, "v1")  # and after the attacker's port is free again, still v1 (nothing half-done)
