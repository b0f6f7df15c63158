"""How a run of the agent ends short of success, what it says on the way, the signals that stop it, and
the tests' hooks.

Signals: SIGINT, SIGTERM and SIGHUP raise Interrupted where the run is, so that a switch not yet proven
is undone before the agent exits (with 128 + the signal's number: 130, 143, 129). Only the first one
raises: any later one, and any one that arrives while `Signals.held()` (an undo under way, or a switch
past its point of no return), is only remembered, so an undo is never cut short. The agent also
watches a pipe from the `backstage` command that started it (PARENT_FD_ENV): if that process dies,
even by kill -9, the agent is stopped as by SIGTERM instead of running on alone.

Test hooks, both read at the named points of a switch (`crash_point`):
- CRASH_POINT_ENV=POINT: the agent kills itself with SIGKILL there;
- SIGNAL_AT_ENV=POINT:SIGNAME[:WHOM][,...]: it sends SIGNAME there, to WHOM: `self` (the default),
  `parent` (the `backstage` command), `group` (the parent's process group, as a terminal's Ctrl-C), or
  a pid; for a stopping signal it then waits (up to 5 s) until the signal has reached it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

from ..contract import CRASH_POINT_ENV, PARENT_FD_ENV, SIGNAL_AT_ENV

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Refused(Exception):
    """The artifact or the host is not in a state to apply; nothing was changed."""


class Failed(Exception):
    """The switch failed and was undone; the host serves what it served before."""


class Interrupted(BaseException):
    """A stopping signal reached the agent. A BaseException, so that no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"interrupted by {self.name}" + (f" ({SIGNALS.cause})" if SIGNALS.cause else "")


class Signals:
    """SIGINT, SIGTERM and SIGHUP, turned into Interrupted (see the module's docstring)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.cause = ""
        self._held = 0

    def install(self) -> None:
        for signum in STOPPING:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            return
        self.received = signum
        if not self._held:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Remember, never raise, while the block runs (an undo: it must finish)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1

    def hold(self) -> None:
        """Remember, never raise, from now on: the switch is past its point of no return."""
        self._held += 1

    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""


SIGNALS = Signals()


def watch_parent() -> None:
    """Stop as by SIGTERM when the `backstage` command that started this agent dies (see PARENT_FD_ENV)."""
    value = os.environ.get(PARENT_FD_ENV, "")
    if not value.isdigit():
        return
    fd = int(value)

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            return  # not a pipe we were given: nothing to watch
        SIGNALS.cause = "the `backstage` command that ran it has died"
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        os.fstat(fd)
    except OSError:
        return
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def say(message: str) -> None:
    """A line on stderr; a closed terminal or pipe never stops the agent half-way."""
    with contextlib.suppress(OSError, ValueError):
        print(message, file=sys.stderr, flush=True)


def out(message: str) -> None:
    """A line on stdout, likewise."""
    with contextlib.suppress(OSError, ValueError):
        print(message, flush=True)


_fired: set[str] = set()


def crash_point(name: str) -> None:
    """The tests' hooks at a named point of a switch (see the module's docstring); each fires once."""
    if os.environ.get(CRASH_POINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    for spec in filter(None, os.environ.get(SIGNAL_AT_ENV, "").split(",")):
        point, _, rest = spec.partition(":")
        if point != name or spec in _fired:
            continue
        _fired.add(spec)
        signame, _, whom = rest.partition(":")
        signum = signal.Signals[signame]
        if whom in ("", "self"):
            os.kill(os.getpid(), signum)
        elif whom == "parent":
            os.kill(os.getppid(), signum)
        elif whom == "group":
            os.killpg(os.getpgid(os.getppid()), signum)
        else:
            os.kill(int(whom), signum)
            continue
        if signum in STOPPING or signum == signal.SIGKILL:
            deadline = time.monotonic() + 5.0
            while SIGNALS.received is None and time.monotonic() < deadline:
                time.sleep(0.01)
