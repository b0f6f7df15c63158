"""The host side's bookkeeping: which generation a rollback goes to, and what gc may delete."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from backstage.agent.generations import gc, rollback_target
from backstage.agent.outcomes import Refused
from backstage.agent.state import State
from backstage.agent.switch import sweep_sockets
from backstage.contract import HostPlan, Plan


def state_with(tmp_path: Path, history: list[tuple[str, str]], current: str | None) -> State:
    plan = Plan(production="p", state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"),
                log_dir=str(tmp_path / "log"), nginx_link="backstage--p.conf",
                host=HostPlan(vassals_dir=str(tmp_path / "vassals"), nginx_dir=str(tmp_path / "sites"),
                              nginx=("nginx",), nginx_user="www-data", emperor_stats=""),
                vassals=(), gigs=())
    state = State(plan)
    for name in {name for name, _ in history}:
        (state.generations / name).mkdir(parents=True, exist_ok=True)
    state.history.write_text("".join(f"2026-11-24T00:00:{i:02d}Z\t{name}\t{outcome}\n"
                                     for i, (name, outcome) in enumerate(history)))
    if current:
        os.symlink(f"generations/{current}", state.current)
    state.vassals_dir.mkdir()
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
    # Killed after `current` switched to p-b: p-a is what served before, and the target.
    state = state_with(tmp_path, [("p-a", "start"), ("p-a", "ok"), ("p-b", "start")], "p-b")
    assert rollback_target(state, None).name == "p-a"
    assert state.last_good() == "p-a"


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
    removed = gc(state, keep=1)
    assert removed == ["p-b", "p-c"]
    assert sorted(p.name for p in state.generations.iterdir()) == ["p-a", "p-d"]


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
