"""How a run of the agent ends short of success, what it says on the way, and the tests' crash points."""

from __future__ import annotations

import os
import signal
import sys

from ..contract import CRASH_POINT_ENV


class Refused(Exception):
    """The artifact or the host is not in a state to apply; nothing was changed."""


class Failed(Exception):
    """The switch failed and was undone; the host serves what it served before."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def crash_point(name: str) -> None:
    """Tests kill -9 the switch at a named point, through CRASH_POINT_ENV."""
    if os.environ.get(CRASH_POINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
