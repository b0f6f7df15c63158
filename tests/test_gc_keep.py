"""`gc --keep N` keeps the live generation and the N most recent others by sequence number (the order in
which generations first went live), and removes a store path only when no kept generation refers to it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from backstage.agent.generations import gc
from backstage.agent.outcomes import Refused
from backstage.agent.state import State
from conftest import run_cli
from test_host_state import state_with


def went_live(tmp_path: Path, names: list[str], live: str) -> State:
    """Generations that went live in the order of `names` (a start and an ok line each), `live` live now."""
    return state_with(tmp_path, [(n, event) for n in names for event in ("start", "ok")], live)


def left(state: State) -> list[str]:
    return sorted(p.name for p in state.generations.iterdir())


def test_keep_1_keeps_the_live_one_and_the_most_recent_other(tmp_path: Path) -> None:
    state = went_live(tmp_path, ["p-a", "p-b", "p-c"], "p-c")
    assert gc(state, keep=1) == ["p-a"]
    assert left(state) == ["p-b", "p-c"]


def test_keep_0_keeps_the_live_one_only(tmp_path: Path) -> None:
    state = went_live(tmp_path, ["p-a", "p-b", "p-c"], "p-c")
    assert gc(state, keep=0) == ["p-a", "p-b"]
    assert left(state) == ["p-c"]


def test_keep_more_than_there_are_removes_nothing(tmp_path: Path) -> None:
    state = went_live(tmp_path, ["p-a", "p-b", "p-c"], "p-c")
    assert gc(state, keep=5) == []
    assert left(state) == ["p-a", "p-b", "p-c"]


def test_after_a_rollback_the_live_one_is_kept_besides_the_n_most_recent_others(tmp_path: Path) -> None:
    # p-b is live again (rolled back to: it went live second, so its number stays 2): the most recent
    # others are p-d, then p-c.
    state = went_live(tmp_path, ["p-a", "p-b", "p-c", "p-d"], "p-b")
    state.record("p-b", "start")
    state.record("p-b", "ok")
    assert gc(state, keep=1) == ["p-a", "p-c"]
    assert left(state) == ["p-b", "p-d"]


def test_after_a_rollback_keep_2(tmp_path: Path) -> None:
    state = went_live(tmp_path, ["p-a", "p-b", "p-c", "p-d"], "p-b")
    assert gc(state, keep=2) == ["p-a"]
    assert left(state) == ["p-b", "p-c", "p-d"]


def test_a_generation_that_never_went_live_counts_as_the_oldest(tmp_path: Path) -> None:
    # p-z was applied last but failed: it never went live, so it is older than every one that did.
    state = state_with(tmp_path, [("p-a", "ok"), ("p-b", "ok"), ("p-c", "ok"), ("p-z", "start"),
                                  ("p-z", "failed")], "p-c")
    assert gc(state, keep=1) == ["p-z", "p-a"]
    assert left(state) == ["p-b", "p-c"]


def test_a_linked_generation_is_kept_and_does_not_count(tmp_path: Path) -> None:
    state = went_live(tmp_path, ["p-a", "p-b", "p-c", "p-d"], "p-d")
    (state.generations / "p-a" / "uwsgi").mkdir()
    os.symlink(state.generations / "p-a" / "uwsgi" / "p--s--1.ini", state.vassals_dir / "p--s--1.ini")
    assert gc(state, keep=1) == ["p-b"]
    assert left(state) == ["p-a", "p-c", "p-d"]


def test_without_a_live_generation_the_n_most_recent_are_kept(tmp_path: Path) -> None:
    state = state_with(tmp_path, [(n, "ok") for n in ("p-a", "p-b", "p-c")], None)
    assert gc(state, keep=1) == ["p-a", "p-b"]
    assert left(state) == ["p-c"]


def test_a_negative_keep_is_refused_and_removes_nothing(tmp_path: Path) -> None:
    state = went_live(tmp_path, ["p-a", "p-b"], "p-b")
    with pytest.raises(Refused, match="--keep must be 0 or more"):
        gc(state, keep=-1)
    assert left(state) == ["p-a", "p-b"]


def test_the_command_line_allows_keep_0_and_refuses_a_negative_keep(tmp_path: Path) -> None:
    missing = tmp_path / "no-state"
    refused = run_cli("gc", str(missing), "--keep", "-1")
    assert refused.code == 2 and "--keep must be 0 or more" in refused.err, refused.err
    allowed = run_cli("gc", str(missing), "--keep", "0")  # past the check: it fails on the missing state_dir
    assert allowed.code == 1 and "--keep" not in allowed.err, allowed.err
