"""The host side's bookkeeping: which generation a rollback goes to, and what gc may delete."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from backstage.agent.generations import gc, generations, return_target, rollback_target
from backstage.agent.outcomes import Refused
from backstage.agent.state import State
from backstage.agent.switch import sweep_sockets
from backstage.contract import HostPlan, Plan, VassalPlan


def state_with(tmp_path: Path, history: list[tuple[str, str]], current: str | None,
               vassals: dict[str, list[str]] | None = None, linked: list[str] = ()) -> State:
    """A state_dir with these generations (each with a plan naming `vassals[gen]`, default one vassal
    of its own), old-format history lines (one second apart), `current`, and these vassal links."""
    plan = Plan(production="p", state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"),
                log_dir=str(tmp_path / "log"), nginx_link="backstage--p.conf",
                host=HostPlan(vassals_dir=str(tmp_path / "vassals"), nginx_dir=str(tmp_path / "sites"),
                              nginx=("nginx",), nginx_user="www-data", emperor_stats=""),
                vassals=(), gigs=())
    state = State(plan)
    state.generations.mkdir(parents=True)
    for name in {name for name, _ in history}:
        (state.generations / name).mkdir(exist_ok=True)
        stems = (vassals or {}).get(name, [f"p--s--{name[2:]}"])
        (state.generations / name / "apply.json").write_bytes(replace(plan, vassals=tuple(
            VassalPlan(sess="s", stem=stem, protocol="uwsgi", address=f"unix:/run/{stem}.sock",
                       health_host="localhost", health_path="/") for stem in stems)).to_json())
    state.history.write_text("".join(f"2026-11-24T00:00:{i:02d}Z\t{name}\t{outcome}\n"
                                     for i, (name, outcome) in enumerate(history)))
    if current:
        os.symlink(f"generations/{current}", state.current)
    state.vassals_dir.mkdir()
    for stem in linked:
        os.symlink(f"/nowhere/{stem}.ini", state.vassals_dir / f"{stem}.ini")
    return state


def test_rollback_steps_back_one_generation_at_a_time(tmp_path: Path) -> None:
    history = [(g, o) for g in ("p-a", "p-b", "p-c") for o in ("start", "ok")]
    state = state_with(tmp_path, history, "p-c")
    assert rollback_target(state, None).name == "p-b"
    state.record("p-b", "start")
    state.record("p-b", "ok")
    os.remove(state.current)
    os.symlink("generations/p-b", state.current)
    assert rollback_target(state, None).name == "p-a"


def test_rollback_after_an_interrupted_apply_returns_to_what_was_live(tmp_path: Path) -> None:
    # Killed after `current` switched to p-b, before its Gigs were proven: p-a, whose vassals all still
    # run, is what served before, and the target.
    state = state_with(tmp_path, [("p-a", "start"), ("p-a", "ok"), ("p-b", "start")], "p-b",
                       linked=["p--s--a", "p--s--b"])
    assert rollback_target(state, None).name == "p-a"
    assert return_target(state) == "p-a"
    assert state.last_good() == "p-a"


def test_a_failed_apply_returns_to_what_runs_not_to_the_last_ok(tmp_path: Path) -> None:
    # An older agent, killed while stopping p-a's vassals after proving p-b (it wrote no `ok` first):
    # p-a is the last generation marked ok, but one of its vassals is gone; p-b runs, whole.
    vassals = {"p-a": ["p--site--a", "p--old--a", "p--keep--k"], "p-b": ["p--site--b", "p--keep--k"]}
    state = state_with(tmp_path, [("p-a", "start"), ("p-a", "ok"), ("p-b", "start")], "p-b", vassals,
                       linked=["p--site--a", "p--site--b", "p--keep--k"])
    assert state.last_good() == "p-a"
    assert return_target(state) == "p-b"
    assert rollback_target(state, None).name == "p-b"
    # This agent writes `ok` before it stops anything: then p-b is both the last ok and whole.
    state.record("p-b", "ok")
    assert return_target(state) == "p-b"


def test_generations_live_in_the_same_second_are_ordered_by_sequence_not_by_hash(tmp_path: Path) -> None:
    # p-b went live before p-a, in the same second: sorting by (time, name) would put p-a first.
    state = state_with(tmp_path, [], None)
    for name in ("p-c", "p-b", "p-a"):
        (state.generations / name).mkdir()
    state.history.write_text("".join(f"2026-11-24T00:00:00Z\t{name}\t{event}\n"
                                     for name in ("p-c", "p-b") for event in ("start", "ok")))
    for event in ("start", "ok"):
        state.record("p-a", event)
    os.symlink("generations/p-a", state.current)
    lines = state.history.read_text().splitlines()
    assert [line.split("\t")[0] for line in lines[-2:]] == ["5", "6"]  # numbered after the unnumbered lines
    assert [(e.seq, e.name, e.event) for e in state.entries()] == [
        (1, "p-c", "start"), (2, "p-c", "ok"), (3, "p-b", "start"), (4, "p-b", "ok"), (5, "p-a", "start"),
        (6, "p-a", "ok")]
    assert [g.name for g in generations(state)] == ["p-c", "p-b", "p-a"]
    assert rollback_target(state, None).name == "p-b"


def test_history_numbers_rise_whatever_the_lines_say(tmp_path: Path) -> None:
    state = state_with(tmp_path, [], None)
    state.history.write_text("7\t2026-11-24T00:00:00Z\tp-a\tstart\n"
                             "3\t2026-11-24T00:00:00Z\tp-a\tok\n"  # a number below the line before's
                             "garbage line\n"
                             "2026-11-24T00:00:01Z\tp-b\tstart\n")
    assert [e.seq for e in state.entries()] == [7, 8, 9]
    state.record("p-b", "failed")
    assert state.entries()[-1].seq == 10 and state.entries()[-1].event == "failed"


def test_rollback_with_one_generation_is_refused(tmp_path: Path) -> None:
    state = state_with(tmp_path, [("p-a", "start"), ("p-a", "ok")], "p-a")
    with pytest.raises(Refused, match="no earlier generation"):
        rollback_target(state, None)


def test_rollback_to_a_hash_prefix(tmp_path: Path) -> None:
    state = state_with(tmp_path, [("p-aaaa1", "ok"), ("p-bbbb2", "ok")], "p-bbbb2")
    assert rollback_target(state, "aaaa").name == "p-aaaa1"
    with pytest.raises(Refused, match="no single kept generation"):
        rollback_target(state, "zzzz")


def test_gc_keeps_current_recent_and_linked_generations(tmp_path: Path) -> None:
    names = ["p-a", "p-b", "p-c", "p-d"]
    state = state_with(tmp_path, [(n, "ok") for n in names], "p-d")
    (state.generations / "p-a" / "uwsgi").mkdir()
    os.symlink(state.generations / "p-a" / "uwsgi" / "p--s--1.ini", state.vassals_dir / "p--s--1.ini")
    removed = gc(state, keep=1)  # the live p-d, the most recent other (p-c), and p-a, which a link uses
    assert removed == ["p-b"]
    assert sorted(p.name for p in state.generations.iterdir()) == ["p-a", "p-c", "p-d"]


def test_sockets_no_live_vassal_owns_are_swept(tmp_path: Path) -> None:
    import socket

    state = state_with(tmp_path, [("p-a", "ok")], "p-a")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink("/nowhere/p--live--1.ini", state.vassals_dir / "p--live--1.ini")
    for stem in ("p--live--1", "p--gone--2", "q--other--3"):
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(run / f"{stem}.sock"))
    (run / "p--note.sock").write_text("not a socket")
    sweep_sockets(state)
    assert sorted(p.name for p in run.iterdir()) == ["p--live--1.sock", "p--note.sock", "q--other--3.sock"]


def test_a_new_vassal_on_a_port_a_leaving_one_holds_is_a_clash(tmp_path: Path) -> None:
    from dataclasses import replace

    from backstage.agent.switch import plan_steps, port_clashes
    from backstage.contract import VassalPlan

    def vassal(stem: str, address: str) -> VassalPlan:
        return VassalPlan(sess=stem.split("--")[1], stem=stem, protocol="http", address=address,
                          health_host="localhost", health_path="/")

    old = state_with(tmp_path, [("p-a", "ok")], "p-a")
    leaving = (vassal("p--tcp--1", "127.0.0.1:8001"), vassal("p--unix--1", "unix:/run/p--unix--1.sock"),
               vassal("p--away--1", "127.0.0.1:8003"))
    generation = old.generations / "p-a"
    (generation / "uwsgi").mkdir()
    (generation / "apply.json").write_bytes(replace(old.plan, vassals=leaving).to_json())
    for v in leaving[:2]:
        os.symlink(generation / "uwsgi" / v.file, old.vassals_dir / v.file)
    # A link outside generations/ is never followed to a plan, even one that would clash.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "uwsgi").mkdir(parents=True)
    (elsewhere / "apply.json").write_bytes(replace(old.plan, vassals=leaving).to_json())
    os.symlink(elsewhere / "uwsgi" / "p--away--1.ini", old.vassals_dir / "p--away--1.ini")
    arriving = (vassal("p--tcp--2", "127.0.0.1:8001"), vassal("p--unix--2", "unix:/run/p--unix--1.sock"),
                vassal("p--away--2", "127.0.0.1:8003"))
    new = State(replace(old.plan, vassals=arriving))
    steps = plan_steps(new)
    assert steps.stop == ("p--away--1.ini", "p--tcp--1.ini", "p--unix--1.ini")
    assert port_clashes(new, steps) == ["p--tcp--2.ini binds 127.0.0.1:8001, which p--tcp--1.ini holds until it stops"]


def test_a_tcp_vassal_is_ready_only_when_its_own_process_listens(tmp_path: Path) -> None:
    """Readiness of the right process: whatever answers at a vassal's port must be that vassal."""
    import socket
    import subprocess
    import sys

    from backstage.agent.switch import wrong_process

    state = state_with(tmp_path, [], None)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        vassal = VassalPlan(sess="svc", stem="p--svc--1", protocol="http", address=f"127.0.0.1:{port}",
                            health_host="localhost", health_path="/")
        assert wrong_process(state, vassal).startswith(f"127.0.0.1:{port} is held by pid {os.getpid()} (")
        assert wrong_process(state, vassal).endswith("), not by its vassal")
    # A process with a vassal's command line (`... --ini .../p--svc--1.ini`) that no Emperor started is
    # not the vassal either: anyone can name their process so (tests/test_process_identity.py has the
    # vassal a real Emperor starts).
    code = ("import socket, sys, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            f"s.bind(('127.0.0.1', {port})); s.listen(); print('ready', flush=True); time.sleep(60)")
    own = subprocess.Popen([sys.executable, "-c", code, "--ini", str(state.vassals_dir / vassal.file)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert own.stdout is not None and own.stdout.readline() == "ready\n"
        assert wrong_process(state, vassal).startswith(f"127.0.0.1:{port} is held by pid {own.pid} (")
    finally:
        own.kill()
        own.wait()
