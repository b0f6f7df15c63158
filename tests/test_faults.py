"""Signals and kills during `backstage apply`, against Debian's nginx, a compiled uWSGI Emperor and the
showcase Django app on 127.0.0.1. Whatever stops apply, afterwards exactly one generation serves every
Gig with all of its vassals, the history says what happened, and one line says it, never a traceback.

The agent's test hooks make each fault happen at a named step (backstage.agent.outcomes):
BACKSTAGE_TEST_SIGNAL_AT=POINT:SIGNAME:WHOM sends the signal to the agent itself, to the `backstage`
command that runs it, or to that command's process group (as a terminal's Ctrl-C does).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from backstage.agent.outcomes import SIGNAL_AT_ENV
from backstage.contract import CRASH_POINT_ENV
from harness import FaultStage, backstage, fault_stage, no_traceback

# Steps of a switch, in order; a signal before the point of no return undoes it, one after lets it finish.
BEFORE = ["verified", "installed", "vassals-linked", "waiting-ready", "vassals-ready", "current-switched",
          "nginx-reloaded", "checking-gigs", "undoing"]
AFTER = ["gigs-checked", "stopping-old"]
SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"]
WHOM = ["self", "parent", "group"]
# Every step with each of the three signals; who receives it turns, so that each step gets all three.
CASES = [(point, sig, WHOM[(i + j) % 3]) for i, point in enumerate(BEFORE + AFTER) for j, sig in enumerate(SIGNALS)]


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStage]:
    yield from fault_stage(tmp_path_factory.mktemp("faults"))


def artifact_for(stage: FaultStage, point: str, target: str) -> str:
    """The artifact that reaches `point`: one whose vassal never starts for the steps of a failing
    readiness check and of an undo, one whose Gig fails through nginx for the Gig checks."""
    if point in ("waiting-ready", "undoing"):
        stage.build(f"broken-{target}", target, site_env=', SHOWCASE_BREAK_IMPORT = "1"')
        return f"broken-{target}"
    if point == "checking-gigs":
        # Readiness asks in about 250 bytes of uwsgi variables; nginx sends about 400, which this vassal's
        # buffer cannot take: it resets the connection and nginx answers 502.
        stage.build(f"gigfail-{target}", target, site_uwsgi="[sesses.site.uwsgi]\nbuffer-size = 320\n")
        return f"gigfail-{target}"
    return target


@pytest.mark.parametrize(("point", "sig", "whom"), CASES, ids=[f"{p}-{s}-{w}" for p, s, w in CASES])
def test_a_signal_at_any_step_undoes_the_switch_or_lets_it_finish(stage: FaultStage, point: str, sig: str,
                                                                   whom: str) -> None:
    start, target = stage.pair()
    key = artifact_for(stage, point, target)
    history = stage.history()
    run = stage.apply(key, "--ready-timeout=4" if key.startswith("broken") else "--ready-timeout=20",
                      env={SIGNAL_AT_ENV: f"{point}:{sig}:{whom}"})
    no_traceback(run)
    signum = signal.Signals[sig]
    if point in AFTER:
        assert run.code == 0, run.err
        assert f"{sig} came after the new generation was proven live; the switch was finished" in run.err
        stage.assert_live(target)
        assert stage.history()[-1][2:] == [stage.artifacts[target].name, "ok"]
        return
    assert run.code == 128 + signum, run.err
    line = run.line()
    if point == "undoing":  # the failure came first; the signal waited for its undo
        assert line.startswith(f"apply failed, rolled back to {stage.artifacts[start].name}: sess site"), line
        assert f"{sig} arrived during the undo" in line, line
    elif point == "verified":  # before the lock: nothing begun
        assert line == f"apply interrupted by {sig}; nothing was changed", line
    elif point == "installed":
        assert line == f"apply interrupted by {sig}, nothing was changed ({stage.artifacts[start].name} stays live)"
    else:
        assert line == f"apply interrupted by {sig}, rolled back to {stage.artifacts[start].name}", line
    stage.assert_live(start)
    if point == "verified":
        assert stage.history() == history
    else:
        assert stage.history()[-1][2:] == [stage.artifacts[key].name,
                                           "failed" if point == "undoing" else "interrupted"]


@pytest.mark.parametrize("point", ["vassals-ready", "gigs-checked"])
def test_kill_9_of_the_backstage_command_never_leaves_its_agent_half_way(stage: FaultStage, point: str) -> None:
    start, target = stage.pair()
    run = stage.apply(target, env={SIGNAL_AT_ENV: f"{point}:SIGKILL:parent"})
    # The agent holds the command's stdout and stderr: the run ends when it has finished.
    assert run.code == -signal.SIGKILL
    no_traceback(run)
    stage.wait_unlocked()
    if point == "gigs-checked":
        stage.assert_live(target)
        assert "SIGTERM came after the new generation was proven live" in run.err
    else:
        assert run.line() == ("apply interrupted by SIGTERM (the `backstage` command that ran it has died), "
                              f"rolled back to {stage.artifacts[start].name}")
        stage.assert_live(start)


def test_a_failed_apply_after_a_killed_one_returns_to_what_runs(stage: FaultStage) -> None:
    start, target = stage.pair()
    # Killed after it proved `target` and began stopping `start`'s vassals: `target` is what runs.
    run = stage.apply(target, env={CRASH_POINT_ENV: "stopping-old"})
    assert run.code == 1
    leftovers = tuple(sorted(set(stage.desired(start)) - set(stage.desired(target))))
    stage.assert_live(target, extra_links=leftovers)
    assert len(set(stage.links()) - set(stage.desired(target))) == len(leftovers) - 1  # one was stopped
    broken = artifact_for(stage, "undoing", start)
    run = stage.apply(broken, "--ready-timeout=4")
    no_traceback(run)
    assert run.code == 1
    assert f"apply failed, rolled back to {stage.artifacts[target].name}: sess site" in run.err, run.err[:3000]
    stage.assert_live(target, extra_links=leftovers)
    run = stage.apply(target)
    assert run.code == 0, run.err
    stage.assert_live(target)


def test_ctrl_c_at_the_terminal_while_a_vassal_is_slow(stage: FaultStage) -> None:
    """The issue's case: Ctrl-C (SIGINT to the foreground group) while apply waits for a vassal."""
    start, target = stage.pair()
    key = artifact_for(stage, "waiting-ready", target)
    run = stage.apply(key, env={SIGNAL_AT_ENV: "waiting-ready:SIGINT:group"})
    assert run.code == 130
    no_traceback(run)
    assert "KeyboardInterrupt" not in run.err
    assert run.line() == f"apply interrupted by SIGINT, rolled back to {stage.artifacts[start].name}"
    stage.assert_live(start)
    assert not set(stage.links()) - set(stage.desired(start))  # the new vassal was unlinked


@pytest.mark.parametrize("point", ["waiting-ready", "checking-gigs", "undoing"])
def test_kill_9_of_the_agent_at_the_later_steps_and_then_rollback_converges(stage: FaultStage, point: str) -> None:
    """tests/test_apply.py kills the agent at the steps it always reaches; these need a failing artifact."""
    start, target = stage.pair()
    key = artifact_for(stage, point, target)
    run = stage.apply(key, "--ready-timeout=4", env={CRASH_POINT_ENV: point})
    assert run.code == 1  # killed
    if point == "checking-gigs":  # killed with nginx on the failing generation: roll back to what ran before
        assert stage.current() == key
        run = backstage("rollback", str(stage.state), *FaultStage.TIMEOUTS)
        assert run.code == 0, run.err
        assert f"rolling back to {stage.artifacts[start].name}" in run.err
    else:  # nothing was switched: the old generation serves, beside the new vassals
        assert stage.serving() == start[0] and stage.current() == start
        run = stage.apply(start)
        assert run.code == 0, run.err
    stage.assert_live(start)
