"""Commands the agent runs (installers, release steps, certbot): no shell, stdin from /dev/null, a session
of their own so that a timeout or a signal stops everything they started, output captured."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TAIL = 15  # lines of a failed command's output a failure quotes


@dataclass(frozen=True, slots=True)
class Done:
    code: int
    output: str  # stdout and stderr, interleaved as written
    timed_out: bool = False


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float, user: int | None = None,
         group: int | None = None, extra_groups: list[int] | None = None, umask: int = -1,
         started: Callable[[], None] | None = None) -> Done:
    """Run `argv` (no shell, stdin from /dev/null) in a session of its own, so that a timeout or an
    interruption kills everything it started; `started` is called once it runs (the tests' crash points)."""
    try:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True, user=user, group=group,
                                   extra_groups=extra_groups, umask=umask)
    except OSError as exc:
        return Done(127, f"{argv[0]}: {exc.strerror or exc}")
    output = b""
    try:
        if started:
            started()
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_session(process)
        with contextlib.suppress(subprocess.TimeoutExpired):
            output, _ = process.communicate(timeout=10)
        return Done(process.wait(), output.decode("utf-8", "replace"), timed_out=True)
    except BaseException:  # Interrupted (a stopping signal), or anything else: nothing is left running
        stop_session(process)
        raise
    return Done(process.returncode, output.decode("utf-8", "replace"))


def stop_session(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the command's whole session (a migration may roll back cleanly), SIGKILL to what is
    left of it 5 s later."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    # The command's own children (reparented once it died) may still be taking their SIGKILL: wait a
    # little until none is left, so that what runs next finds them gone.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)


def tail(output: str) -> str:
    lines = [line.rstrip() for line in output.splitlines() if line.strip()][-TAIL:]
    return "\n".join(f"    {line}" for line in lines) or "    (no output)"
