"""A failing or hostile host during `backstage apply`: nginx that refuses a reload or is stopped, an
Emperor stopped or killed, a port another process holds, a locked, missing or unusable state_dir, and
generations that went live in the same second. Real nginx, uWSGI Emperor and Django, on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from backstage.agent.outcomes import SIGNAL_AT_ENV
from backstage.cli.sandbox import LOCALHOST
from backstage.contract import CRASH_POINT_ENV
from harness import FaultStage, backstage, fault_stage, free_port, no_traceback, production_text, stopped
from test_apply import with_port_sess


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStage]:
    yield from fault_stage(tmp_path_factory.mktemp("hostfaults"))


def snapshot(stage: FaultStage) -> tuple[object, ...]:
    """What an apply that changes nothing leaves exactly as it was."""
    return (stage.links(), stage.current(), stage.history(), sorted(p.name for p in stage.state.iterdir()),
            sorted(p.name for p in (stage.state / "generations").iterdir()))


# ------------------------------------------------------------------------------------ nginx

def test_a_reload_nginx_does_not_take_is_a_failure_and_is_undone(stage: FaultStage) -> None:
    """A new Venue on a port another process holds: `nginx -t` passes and `nginx -s reload` exits 0, but
    the master keeps its old configuration. Before, apply said `live:`, then stopped the old vassals."""
    start, target = stage.pair()
    with socket.socket() as holder:
        holder.bind((LOCALHOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        key = f"{target}-extra-{port}"
        venue = f'\n[venues.extra]\ndomain = "extra.fault.test"\nlisten = "{LOCALHOST}:{port}"\n'
        stage.build(key, target, extra=venue)
        run = stage.apply(key)
    no_traceback(run)
    assert run.code == 1, run.err
    line = run.line()
    assert line.startswith(f"apply failed, rolled back to {stage.artifacts[start].name}: "
                           "nginx did not take the new configuration: no new worker within 5 s"), line
    assert f"bind() to {LOCALHOST}:{port} failed (98: Address already in use)" in line, line
    stage.assert_live(start)
    assert stage.history()[-1][2:] == [stage.artifacts[key].name, "failed"]


def test_nginx_stopped_during_apply_fails_cleanly_and_keeps_what_nginx_may_route_to(stage: FaultStage) -> None:
    start, target = stage.pair()
    master = stage.sandbox.nginx_master_pid()
    with stopped(master):
        run = stage.apply(target, "--drain-timeout=2", env={SIGNAL_AT_ENV: f"vassals-ready:SIGSTOP:{master}"})
    no_traceback(run)
    assert run.code == 1, run.err
    line = run.line()
    assert line.startswith(f"apply failed, rolled back to {stage.artifacts[start].name}: nginx did not take the "
                           f"new configuration: no new worker within 2 s of `nginx -s reload`; the master (pid "
                           f"{master}) is stopped (SIGSTOP): continue it (SIGCONT)"), line
    assert "but nginx did not reload back either" in line and "the new vassals are kept running" in line, line
    # Continued, nginx takes the reloads it was sent: the configuration on disk, the old generation's.
    deadline = time.monotonic() + 10
    while stage.serving() != start[0] and time.monotonic() < deadline:
        time.sleep(0.2)
    stage.assert_live(start, extra_links=tuple(stage.desired(target)))
    assert stage.history()[-1][2:] == [stage.artifacts[target].name, "failed"]
    run = stage.apply(target)  # converges: the kept vassals are simply kept
    assert run.code == 0, run.err
    stage.assert_live(target)


# ---------------------------------------------------------------------------------- the Emperor

def test_the_emperor_stopped_during_apply_fails_cleanly(stage: FaultStage) -> None:
    start, target = stage.pair()
    before = snapshot(stage)
    emperor = stage.sandbox.emperor_pid()
    with stopped(emperor):
        run = stage.apply(target, "--ready-timeout=3", env={SIGNAL_AT_ENV: f"installed:SIGSTOP:{emperor}"})
    no_traceback(run)
    assert run.code == 1, run.err
    line = run.line()
    assert line.startswith(f"apply failed, rolled back to {stage.artifacts[start].name}: sess "), line
    assert "did not answer within 3 s" in line, line
    assert (f"the uWSGI Emperor does not answer on its stats socket {stage.sandbox.emperor_stats}: is it stopped "
            "(SIGSTOP) or hung?") in line, line
    stage.assert_live(start)
    assert snapshot(stage)[:2] == before[:2]
    assert stage.history()[-1][2:] == [stage.artifacts[target].name, "failed"]


def test_the_emperor_killed_during_apply_fails_cleanly_and_a_new_one_converges(stage: FaultStage) -> None:
    start, target = stage.pair()
    master = stage.sandbox.emperor_master_pid()
    run = stage.apply(target, "--ready-timeout=3", env={SIGNAL_AT_ENV: f"installed:SIGKILL:{master}"})
    no_traceback(run)
    assert run.code == 1, run.err
    line = run.line()
    assert line.startswith(f"apply failed, rolled back to {stage.artifacts[start].name}: sess "), line
    assert (f"the uWSGI Emperor's stats socket {stage.sandbox.emperor_stats} fails ([Errno 111] Connection "
            "refused): is the Emperor running?") in line, line
    assert stage.links() == stage.desired(start) and stage.current() == start
    assert stage.history()[-1][2:] == [stage.artifacts[target].name, "failed"]
    stage.sandbox.restart_emperor()  # it starts every linked vassal: the old generation's, whole
    deadline = time.monotonic() + 20
    while stage.serving() != start[0] and time.monotonic() < deadline:
        time.sleep(0.2)
    stage.assert_live(start)
    run = stage.apply(target)
    assert run.code == 0, run.err
    stage.assert_live(target)


# ------------------------------------------------------------------------------- ports

class _Answers200(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def impostor(port: int) -> Iterator[None]:
    """Another process's HTTP server on 127.0.0.1:port that answers 200 to everything (a thread here)."""
    server = http.server.HTTPServer((LOCALHOST, port), _Answers200)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_another_process_holds_is_refused_before_anything_changes(stage: FaultStage) -> None:
    """Before, readiness took the other process's answers for the new vassal's, and nginx routed to it."""
    start, target = stage.pair()
    port = free_port()
    key = f"{target}-svc-{port}"
    stage.build(key, target, extra=with_port_sess("svc-1", port))
    before = snapshot(stage)
    with impostor(port):
        run = stage.apply(key)
    no_traceback(run)
    assert run.code == 1, run.err
    assert f"sess svc cannot bind its port {LOCALHOST}:{port}: pid {os.getpid()} (" in run.line()
    assert "already listens there. Free the port or give the Sess another `port`; nothing was changed." in run.line()
    stage.assert_live(start)
    assert snapshot(stage) == before
    run = stage.apply(key)  # once the port is free, the same artifact goes live
    assert run.code == 0, run.err
    assert stage.sandbox.get("quiet.fault.test", "/svc/").text.startswith("showcase svc-1 ")


# ------------------------------------------------------------------------------ state_dir

def test_a_dry_run_neither_waits_for_the_lock_nor_writes(stage: FaultStage) -> None:
    stage.at("a")
    stage.at("b")  # so that there is a generation before it to roll back to
    target = "a"
    before = snapshot(stage)
    fd = os.open(stage.state / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another apply is running
        began = time.monotonic()
        run = stage.apply(target, "--dry-run", "--lock-wait=60")
        rollback = backstage("rollback", str(stage.state), "--dry-run", "--lock-wait=60")
        took = time.monotonic() - began
    finally:
        os.close(fd)
    assert run.code == 0, run.err
    assert any(line.startswith("start vassal fault--site--") for line in run.out.splitlines()), run.out
    assert "nginx: test and reload" in run.out
    assert rollback.code == 0, rollback.err
    assert rollback.out.startswith(f"would roll back to {stage.artifacts['a'].name}\n"), rollback.out
    assert took < 30, f"the dry runs waited {took:.0f} s"
    assert snapshot(stage) == before


def test_a_dry_run_on_a_host_never_applied_to_says_what_it_would_do_and_creates_nothing(stage: FaultStage) -> None:
    fresh = stage.tmp / "fresh"
    source = stage.tmp / "sources" / "fresh" / "production.toml"
    source.parent.mkdir(parents=True, exist_ok=True)
    # Another production on the same host, with its own names and domains.
    text = production_text(fresh, stage.sandbox, "a").replace('name = "fault"', 'name = "fresh"')
    source.write_text(text.replace(".fault.test", ".fresh.test"))
    built = backstage("build", str(source), "-o", str(stage.tmp / "build"))
    assert built.code == 0, built.err
    run = backstage("apply", built.out.strip(), "--dry-run")
    assert run.code == 0, run.err
    no_traceback(run)
    assert run.out.splitlines()[0] == f"state_dir {fresh / 'state'} does not exist yet: apply would create it"
    assert sum(line.startswith("start vassal fresh--") for line in run.out.splitlines()) == 3
    assert not fresh.exists()
    assert not any(p.name.startswith("fresh--") for p in stage.sandbox.vassals_dir.iterdir())


def test_a_first_apply_that_fails_removes_what_it_added(stage: FaultStage) -> None:
    """Nothing was live before: not "rolled back to nothing"; no link of the production is left."""
    first = stage.tmp / "first"
    source = stage.tmp / "sources" / "first" / "production.toml"
    source.parent.mkdir(parents=True, exist_ok=True)
    # Its site's Gig fails through nginx (see test_faults.artifact_for): it fails after nginx took it.
    text = production_text(first, stage.sandbox, "a", site_uwsgi="[sesses.site.uwsgi]\nbuffer-size = 320\n")
    source.write_text(text.replace('name = "fault"', 'name = "first"').replace(".fault.test", ".first.test"))
    built = backstage("build", str(source), "-o", str(stage.tmp / "build"))
    assert built.code == 0, built.err
    run = backstage("apply", built.out.strip(), *FaultStage.TIMEOUTS, "--health-timeout=2")
    no_traceback(run)
    assert run.code == 1, run.err
    assert run.line().startswith("apply failed, nothing was live before; removed what it added: gig site "), run.line()
    assert "answered 502" in run.line()
    assert not stage.sandbox.get("www.first.test", "/").text.startswith("showcase")  # nginx forgot it
    assert not os.path.lexists(first / "state" / "current")
    assert not os.path.lexists(stage.sandbox.nginx_dir / "backstage--first.conf")
    assert not any(p.name.startswith("first--") for p in stage.sandbox.vassals_dir.iterdir())
    history = [line.split("\t") for line in (first / "state" / "history").read_text().splitlines()]
    assert [h[0] for h in history] == ["1", "2"] and [h[3] for h in history] == ["start", "failed"]


def test_a_state_dir_that_is_a_file_is_one_line(stage: FaultStage) -> None:
    elsewhere = stage.tmp / "filed"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "state").write_text("not a directory\n")
    source = stage.tmp / "sources" / "filed" / "production.toml"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(production_text(elsewhere, stage.sandbox, "a").replace('name = "fault"', 'name = "filed"')
                      .replace(".fault.test", ".filed.test"))
    built = backstage("build", str(source), "-o", str(stage.tmp / "build"))
    assert built.code == 0, built.err
    for run in (backstage("apply", built.out.strip()), backstage("apply", built.out.strip(), "--dry-run")):
        no_traceback(run)
        assert run.code == 1, run.err
        assert len(run.err.strip().splitlines()) == 1, run.err
        assert str(elsewhere / "state") in run.err and "not a directory" in run.err, run.err
    assert (elsewhere / "state").read_text() == "not a directory\n"


def test_an_immutable_lock_file_is_one_line_and_changes_nothing(stage: FaultStage) -> None:
    if not shutil.which("chattr"):
        pytest.fail("chattr (e2fsprogs) is needed to make the lock file immutable")
    start, target = stage.pair()
    lock = stage.state / "lock"
    before = snapshot(stage)
    if subprocess.run(["chattr", "+i", str(lock)], capture_output=True, check=False).returncode != 0:
        pytest.fail(f"chattr +i does not work on {lock}'s filesystem")
    try:
        run = stage.apply(target)
    finally:
        subprocess.run(["chattr", "-i", str(lock)], check=True)
    no_traceback(run)
    assert run.code == 1, run.err
    assert len(run.err.strip().splitlines()) == 1, run.err
    assert str(lock) in run.err and "Operation not permitted" in run.err, run.err
    stage.assert_live(start)
    assert snapshot(stage) == before


# ------------------------------------------------------------------------------ generations

def test_generations_live_in_the_same_second_roll_back_in_the_order_they_went_live(stage: FaultStage) -> None:
    """Two generations first live in the same second, in history lines without numbers (as older agents
    wrote them): their order is the history's, never their names'."""
    # Live first the one whose name sorts last, so that an order by (time, name) would be the wrong one.
    first, second = sorted(("a", "b"), key=lambda key: stage.artifacts[key].name, reverse=True)
    stage.at(second)
    if not (stage.state / "generations" / stage.artifacts[first].name).is_dir():  # run alone: copy it in
        assert stage.apply(first, env={CRASH_POINT_ENV: "installed"}).code == 1
    names = {key: stage.artifacts[key].name for key in ("a", "b")}
    (stage.state / "history").write_text("".join(f"2026-11-24T02:45:30Z\t{names[key]}\t{event}\n"
                                                 for key in (first, second) for event in ("start", "ok")))
    listed = backstage("generations", str(stage.state))
    assert listed.code == 0, listed.err
    order = [line[2:].split()[0] for line in listed.out.splitlines() if not line.endswith("(never live)")]
    assert order == [names[first], names[second]], listed.out
    run = backstage("rollback", str(stage.state), "--ready-timeout=20", "--health-timeout=5", "--drain-timeout=5")
    assert run.code == 0, run.err
    assert f"rolling back to {names[first]}" in run.err
    stage.assert_live(first)
    last = stage.history()[-1]
    assert last[0] == "6" and last[2:] == [names[first], "ok"]  # numbered after the four unnumbered lines
