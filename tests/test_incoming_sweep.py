"""state_dir/incoming/ does not fill up with the verified copies of killed applies.

`backstage apply` runs the agent from a copy in state_dir/incoming/.apply-*/ and removes it when it
is done; killed by kill -9 (or by SIGTERM before it started the agent) it cannot, and before, nothing
else ever did. Now every copy is held by an flock on its directory, which the agent running from it
inherits, and each apply first removes the copies nobody holds: never one a running apply or agent
uses, never through a link. Real nginx, uWSGI Emperor and Django for the applies; the sweep itself
also on plain directories.
"""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from backstage.agent.outcomes import SIGNAL_AT_ENV
from backstage.cli import handoff
from backstage.files import write_tree
from harness import FaultStage, fault_stage, finished, no_traceback, stopped, stopped_agent


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStage]:
    yield from fault_stage(tmp_path_factory.mktemp("sweep"))


def copies(stage: FaultStage) -> set[str]:
    incoming = stage.state / "incoming"
    return {p.name for p in incoming.iterdir() if p.name.startswith(".apply-")} if incoming.is_dir() else set()


def held_by_someone(directory: Path) -> bool:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_the_copy_a_killed_apply_left_is_removed_by_the_next_apply(stage: FaultStage) -> None:
    """Before: every kill -9 of the `backstage` command left its copy in incoming/ for good."""
    start, target = stage.pair()
    assert copies(stage) == set()
    run = stage.apply(target, env={SIGNAL_AT_ENV: "vassals-linked:SIGKILL:parent"})
    assert run.code == -signal.SIGKILL
    no_traceback(run)
    stage.wait_unlocked()
    left = copies(stage)
    assert len(left) == 1  # the command died before its `finally`; its agent has undone and exited
    stage.assert_live(start)
    run = stage.apply(target)
    assert run.code == 0, run.err
    stage.assert_live(target)
    assert copies(stage) == set()


def test_a_copy_an_agent_still_runs_from_is_kept_until_it_has_exited(stage: FaultStage) -> None:
    """The agent of a killed `backstage` command goes on to undo the switch from its copy: another
    apply meanwhile must not take that copy away; the one after the agent exited removes it."""
    start, target = stage.pair()
    before = copies(stage)
    process = stage.apply_started(target, env={SIGNAL_AT_ENV: "vassals-linked:SIGSTOP:self"})
    agent = stopped_agent(process)
    with stopped(agent):
        (name,) = copies(stage) - before
        copy = stage.state / "incoming" / name
        (artifact,) = copy.iterdir()
        assert held_by_someone(copy)
        os.kill(process.pid, signal.SIGKILL)  # the command; its stopped agent still runs from the copy
        process.wait(timeout=30)
        assert held_by_someone(copy)  # the agent holds it now
        other = stage.apply(start, "--lock-wait=1")  # sweeps first, then waits for the production's lock
        assert other.code == 1, other.err
        assert "is being changed by" in other.line(), other.err
        assert (artifact / "install.sh").is_file() and (artifact / "agent.pyz").is_file()
        assert copies(stage) - before == {name}
        os.kill(agent, signal.SIGCONT)
        run = finished(process)
    assert run.code == -signal.SIGKILL
    no_traceback(run)
    assert run.line() == ("apply interrupted by SIGTERM (the `backstage` command that ran it has died), "
                          f"rolled back to {stage.artifacts[start].name}")
    stage.wait_unlocked()
    stage.assert_live(start)
    assert copy.is_dir() and not held_by_someone(copy)
    run = stage.apply(start)
    assert run.code == 0, run.err
    assert copies(stage) == set()


def test_the_sweep_removes_only_unheld_copies_and_follows_no_link(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    stale = incoming / ".apply-stale"
    (stale / "prod-1234").mkdir(parents=True)
    write_tree(stale / "prod-1234", [("install.sh", 0o555, b"#!/bin/sh\n"), ("uwsgi/a.ini", 0o444, b"")])
    used = incoming / ".apply-used"
    (used / "prod-5678").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    write_tree(outside, [("keep", 0o444, b"keep")], seal_base=False)
    (incoming / ".apply-link").symlink_to(outside)
    (incoming / ".apply-file").write_text("not a copy")
    (incoming / "ansible").mkdir()  # the fleet's own unpacked artifacts
    holder = os.open(used, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # a running apply's
        first, first_fd = handoff._new_stage(incoming)
        try:
            assert not stale.exists()
            assert (used / "prod-5678").is_dir()
            assert os.readlink(incoming / ".apply-link") == str(outside)
            assert (outside / "keep").read_text() == "keep" and (outside / "keep").stat().st_mode & 0o777 == 0o444
            assert (incoming / ".apply-file").read_text() == "not a copy"
            assert (incoming / "ansible").is_dir()
            assert first.parent == incoming and first.name.startswith(".apply-") and held_by_someone(first)
            second, second_fd = handoff._new_stage(incoming)
            os.close(second_fd)
            assert first.is_dir() and second.is_dir()  # the first is held; the second not yet swept
        finally:
            os.close(first_fd)
        third, third_fd = handoff._new_stage(incoming)
        os.close(third_fd)
        assert not first.exists() and not second.exists() and third.is_dir()
        assert (used / "prod-5678").is_dir()
    finally:
        os.close(holder)
    assert sorted(p.name for p in incoming.iterdir()) == sorted([".apply-file", ".apply-link", ".apply-used",
                                                                 "ansible", third.name])
