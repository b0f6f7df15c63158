"""A full or read-only disk under `backstage apply`: state_dir, vassals_dir and log_dir each on a small
tmpfs (we run as root) that a test fills, or makes read-only, at a chosen step. Afterwards one generation
serves every Gig with all of its vassals, nothing half-written is left, the history says `failed`, and
one line names the path and what to do, never a traceback. Real nginx, uWSGI Emperor and Django.

A test that must fill a disk in the middle of an apply makes the agent stop itself there (its test hook
BACKSTAGE_TEST_SIGNAL_AT=POINT:SIGSTOP), fills the disk, and lets it go on (SIGCONT).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from backstage.agent.outcomes import SIGNAL_AT_ENV
from backstage.cli.sandbox import find_components
from backstage.contract import CRASH_POINT_ENV
from harness import (
    SHOWCASE,
    FaultStage,
    Run,
    fault_stage,
    finished,
    limited,
    no_traceback,
    stopped_agent,
    tmpfs,
)


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStage]:
    find_components()
    tmp = tmp_path_factory.mktemp("diskfaults")
    with contextlib.ExitStack() as mounts:
        for directory in (tmp / "state", tmp / "log", tmp / "sandbox" / "vassals"):
            mounts.enter_context(tmpfs(directory))
        yield from fault_stage(tmp)


def apply_filling(stage: FaultStage, key: str, point: str, directory: Path) -> Run:
    """Apply `key`, and from `point` on let no new file or link into the tmpfs at `directory`."""
    process = stage.apply_started(key, env={SIGNAL_AT_ENV: f"{point}:SIGSTOP:self"})
    agent = stopped_agent(process)
    with limited(directory, spare_inodes=0):
        os.kill(agent, signal.SIGCONT)
        return finished(process)


@pytest.mark.parametrize("fault", ["ENOSPC", "EROFS"])
def test_vassals_dir_full_or_read_only_leaves_no_mix_of_links(stage: FaultStage, fault: str) -> None:
    """Full after the first new link (ENOSPC on the second), or read-only from the first (EROFS).
    Before: a traceback, and the first new vassal left linked beside the old generation's."""
    start, target = stage.pair()
    vassals = stage.sandbox.vassals_dir
    with limited(vassals, spare_inodes=1) if fault == "ENOSPC" else limited(vassals, readonly=True):
        run = stage.apply(target)
    no_traceback(run)
    assert run.code == 1, run.err
    why = ("No space left on device; free space there and apply again" if fault == "ENOSPC"
           else "Read-only file system; that filesystem is read-only")
    undone = "rolled back to {}" if fault == "ENOSPC" else "nothing was changed ({} stays live)"
    line = run.line()
    assert line.startswith(f"apply failed, {undone.format(stage.artifacts[start].name)}: "
                           f"cannot write {vassals}/."), line
    assert line.endswith(why), line
    stage.assert_live(start)
    assert sorted(p.name for p in vassals.iterdir()) == stage.desired(start)  # no temporary link either
    assert stage.history()[-1][2:] == [stage.artifacts[target].name, "failed"]


def test_state_dir_full_while_the_generation_is_copied_in(stage: FaultStage) -> None:
    """Before: a traceback, the history left at `start`, and a partial copy filling the disk."""
    start, target = stage.pair()
    key = f"{target}-copied"
    stage.build(key, target, extra="\n# a generation never installed here\n")
    run = apply_filling(stage, key, "verified", stage.state)
    no_traceback(run)
    assert run.code == 1, run.err
    line = run.line()
    assert line.startswith(f"apply failed, nothing was changed ({stage.artifacts[start].name} stays live): "
                           f"cannot write {stage.state}/generations/.tmp-"), line
    assert line.endswith("No space left on device; free space there and apply again"), line
    assert not [p for p in (stage.state / "generations").iterdir() if p.name.startswith(".")]
    assert not (stage.state / "generations" / stage.artifacts[key].name).exists()
    stage.assert_live(start)
    assert stage.history()[-1][2:] == [stage.artifacts[key].name, "failed"]
    assert stage.history()[-2][2:] == [stage.artifacts[key].name, "start"]


def test_state_dir_full_when_current_switches(stage: FaultStage) -> None:
    start, target = stage.pair()
    if not (stage.state / "generations" / stage.artifacts[target].name).is_dir():
        assert stage.apply(target, env={CRASH_POINT_ENV: "installed"}).code == 1  # copied in, nothing else
    run = apply_filling(stage, target, "vassals-ready", stage.state)
    no_traceback(run)
    assert run.code == 1, run.err
    line = run.line()
    assert line.startswith(f"apply failed, rolled back to {stage.artifacts[start].name}: cannot write "
                           f"{stage.state}/.current."), line
    assert line.endswith("No space left on device; free space there and apply again"), line
    stage.assert_live(start)
    assert stage.history()[-1][2:] == [stage.artifacts[target].name, "failed"]


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_log_dir_full_or_read_only_is_named_when_a_new_vassal_cannot_start(stage: FaultStage, fault: str) -> None:
    """A new Sess's vassal cannot create its log, so it never starts: the line says why."""
    start, target = stage.pair()
    key = f"{target}-logged"
    stage.build(key, target, extra=f"""
[acts.logged]
wsgi = "showcase.wsgi:application"
path = {json.dumps(str(SHOWCASE))}
settings = "showcase.settings"
health = "/healthz"

[sesses.logged]
act = "logged"
stage = "main"
""")
    log = stage.tmp / "log"
    with contextlib.suppress(FileNotFoundError):
        (log / "logged.log").unlink()
    with limited(log, full=True) if fault == "full" else limited(log, readonly=True):
        run = stage.apply(key, "--ready-timeout=3")
    no_traceback(run)
    assert run.code == 1, run.err
    line = run.line()
    assert line.startswith(f"apply failed, rolled back to {stage.artifacts[start].name}: sess logged "), line
    why = (f"{log}'s filesystem is full; free space there and apply again" if fault == "full"
           else f"{log} is on a read-only filesystem")
    assert f"(no log at {log}/logged.log: {why})" in run.err, run.err
    stage.assert_live(start)
    assert stage.history()[-1][2:] == [stage.artifacts[key].name, "failed"]
