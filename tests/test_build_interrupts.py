"""Ctrl-C during `backstage build`, at any moment: it ends with 130 and at most one short line, never a
traceback nor "internal error", leaves no temporary directory in OUT and no child running.

The real command is interrupted as a terminal does it (SIGINT to its process group), once or twice in a
row, at moments spread over a build of a generated production; and, at moments no timing can aim at
reliably, in this process: just after a child is reaped, during the clean-up, during the imports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from backstage import files
from backstage.phases import artifact, pipeline, render
from conftest import REPO
from test_incremental import _record_forks

sys.path.insert(0, str(REPO / "benchmarks"))
import generate

GIGS = 1500  # enough for the write phase to last: its ~2800 files are written by a child (OVERLAP_FROM)
BAD = ("Traceback", "internal error", "Exception ignored", "Error")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **extra}


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and an ignored signal stays so across exec: the
    # command must get Ctrl-C as from a terminal, whatever this test run was started from.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _session(sid: int) -> list[int]:
    """The processes left in the session `sid` (the command's own, made by start_new_session)."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            left.append(int(entry.name))
    return left


def _leftovers(out: Path) -> list[str]:
    if not out.exists():
        return []
    cache = out / ".cache"
    names = [p.name for p in out.iterdir() if p.name.startswith(".")]
    names += [f".cache/{p.name}" for p in cache.iterdir() if p.name.startswith(".")] if cache.is_dir() else []
    return sorted(n for n in names if n != ".cache")


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("interrupts") / "production.toml"
    source.write_text(generate.to_toml(generate.generate(GIGS)))
    return source


@pytest.fixture(scope="module")
def duration(production: Path) -> float:
    """How long an uninterrupted build of `production` takes here (from the start of the process)."""
    out = production.parent / "calibration"
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "backstage.cli", "build", str(production), "-o", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    files.remove_tree(next(out.glob("bench-*")))
    return time.monotonic() - start


def _interrupted(production: Path, out: Path, delay: float, gap: float | None) -> tuple[int, str]:
    """Build into `out`, sending SIGINT to the command's group after `delay` s (and again `gap` s later);
    check that it ends as a Ctrl-C must end it, and return its exit code and stderr."""
    process = subprocess.Popen([sys.executable, "-m", "backstage.cli", "build", str(production), "-o", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                               start_new_session=True, preexec_fn=_default_sigint)
    try:
        time.sleep(delay)
        try:
            os.killpg(process.pid, signal.SIGINT)
            if gap is not None:
                time.sleep(gap)
                os.killpg(process.pid, signal.SIGINT)
        except ProcessLookupError:  # the build had ended
            pass
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    stray: list[int] = []
    for _ in range(50):  # a child that outlived the command would still be there after a while
        stray = _session(process.pid)
        if not stray:
            break
        time.sleep(0.01)
    for pid in stray:
        os.kill(pid, signal.SIGKILL)
    what = f"delay {delay:.3f} s, gap {gap}: exit {process.returncode}, stray {stray}, stderr {err!r}"
    assert process.returncode in (0, 130), what
    assert not any(word in err for word in BAD), what
    if process.returncode == 130:
        assert len(err.splitlines()) <= 1, what
    else:
        assert "built: " in err, what
    assert stray == [], what
    assert _leftovers(out) == [], what
    return process.returncode, err


# Moments spread over the build (fractions of an uninterrupted one): loading and checking, rendering
# in two processes, the write phase with its child, the very end.
MOMENTS = (0.3, 0.6, 0.8, 0.9, 0.97)


def test_one_ctrl_c_at_any_moment_stops_the_build_cleanly(production: Path, duration: float, tmp_path: Path) -> None:
    codes = [_interrupted(production, tmp_path / f"out{i}", duration * moment, None)[0]
             for i, moment in enumerate(MOMENTS)]
    assert codes.count(130) >= 2, codes  # not all came after the end


def test_two_ctrl_c_in_a_row_stop_the_build_cleanly(production: Path, duration: float, tmp_path: Path) -> None:
    """The second Ctrl-C comes while the first one's clean-up runs: it must not cut it short."""
    codes = [_interrupted(production, tmp_path / f"out{i}", duration * moment, gap)[0]
             for i, (moment, gap) in enumerate(zip(MOMENTS, (0.0, 0.005, 0.001, 0.02, 0.01),
                                                   strict=True))]
    assert codes.count(130) >= 2, codes


# ---------------------------------------------------------------------------------- the command's start

@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_while_the_command_starts_prints_no_traceback(tmp_path: Path, signals: int) -> None:
    """Ctrl-C while `backstage` imports its modules, before main() runs: no traceback, 130. (A module of
    the standard library that the command imports first, shadowed here, sends it at that moment.)"""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "argparse.py").write_text(
        "import os, signal, time\n"
        f"for _ in range({signals}):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(5)\n"
        "raise SystemExit('not interrupted')\n")
    path = os.pathsep.join([str(shadow), *filter(None, [os.environ.get("PYTHONPATH")])])
    done = subprocess.run([sys.executable, "-m", "backstage.cli", "build", "nowhere.toml"], cwd=tmp_path,
                          capture_output=True, text=True, env=_env(PYTHONPATH=path), timeout=60,
                          preexec_fn=_default_sigint)
    assert (done.returncode, done.stderr) == (130, ""), done


# ------------------------------------------------------------------- moments no timing hits reliably

@pytest.fixture
def small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 300-Gig production whose build forks (renders and the writer child) even in this process."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("these tests need two CPUs: with one, render and the writer never fork")
    monkeypatch.setattr(render, "may_fork", lambda: True)  # other tests' idle threads would stop a fork
    monkeypatch.setattr(render, "PARALLEL_FROM", 2)
    monkeypatch.setattr(artifact, "OVERLAP_FROM", 2)
    source = tmp_path / "production.toml"
    source.write_text(generate.to_toml(generate.generate(300)))
    return source


RENDER_FORKS = 3  # render's children (test_incremental.FORKS): then the writer's


def _reaped(pids: list[int]) -> bool:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        return False
    return True


def test_ctrl_c_just_after_the_writer_child_is_reaped(small: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The reviewer's ~1 in 3: Ctrl-C lands after waitpid reaped the writer, before that was noted."""
    children = _record_forks(monkeypatch)
    finishing = threading.Event()
    keep, waitpid = artifact.keep_renders, os.waitpid

    def noted(*args: object) -> None:
        keep(*args)  # type: ignore[arg-type]
        finishing.set()  # `finish` waits for the writer next

    def reaped_then_interrupted(pid: int, options: int) -> tuple[int, int]:
        done = waitpid(pid, options)
        if finishing.is_set() and options == 0:
            raise KeyboardInterrupt
        return done
    monkeypatch.setattr(artifact, "keep_renders", noted)
    monkeypatch.setattr(os, "waitpid", reaped_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build(small, tmp_path / "out")
    monkeypatch.setattr(os, "waitpid", waitpid)
    assert finishing.is_set() and children and _reaped(children)
    assert _leftovers(tmp_path / "out") == [] and not list((tmp_path / "out").glob("bench-*"))


def _ctrl_c() -> None:
    """Ctrl-C to this thread (a signal to the process could go to another thread pytest has)."""
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def test_a_second_ctrl_c_does_not_cut_the_clean_up_short(small: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A first Ctrl-C as the manifest is made, with the writer child at work; a second one as its
    temporary directory is being removed: the directory goes all the same, and the child is reaped."""
    assert threading.current_thread() is threading.main_thread(), "signals come to the main thread only"
    children = _record_forks(monkeypatch)
    remove_tree = files.remove_tree
    removed: list[Path] = []

    def interrupted(*args: object) -> object:
        raise KeyboardInterrupt

    def interrupted_again(path: Path) -> None:
        _ctrl_c()
        for _ in range(1000):  # the handler runs between two bytecodes: here, before the tree is gone
            pass
        remove_tree(path)
        removed.append(path)
    monkeypatch.setattr(artifact, "assemble", interrupted)
    monkeypatch.setattr(files, "remove_tree", interrupted_again)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build(small, tmp_path / "out")
    assert removed and children and _reaped(children)
    assert _leftovers(tmp_path / "out") == []


def test_ctrl_c_as_the_writer_child_is_made(small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C just after the fork, before its pid is noted: the child is killed and reaped all the same,
    and the temporary directory it was writing goes."""
    assert threading.current_thread() is threading.main_thread(), "signals come to the main thread only"
    children = _record_forks(monkeypatch)
    fork_child = render.fork_child
    made: list[int | None] = []

    def interrupted(work: object) -> int | None:
        pid = fork_child(work)  # type: ignore[arg-type]
        made.append(pid)
        if len(made) == RENDER_FORKS + 1:  # the writer
            _ctrl_c()
            for _ in range(1000):
                pass
        return pid
    monkeypatch.setattr(render, "fork_child", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build(small, tmp_path / "out")
    assert len(made) == RENDER_FORKS + 1 and children and _reaped(children)
    assert _leftovers(tmp_path / "out") == []
