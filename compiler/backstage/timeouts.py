"""How long a switch waits: the one place the defaults are stated, shared by the compiler's CLI and the
host agent (contract re-exports them). Apart from contract, so that the CLI's parser needs no more."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["Timeouts", "flag"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a switch waits, in seconds; the one place their defaults are stated."""

    ready: float = 60.0  # a new vassal to answer a real request
    health: float = 15.0  # each Gig to answer through nginx
    drain: float = 60.0  # old nginx workers to exit before vassals stop
    lock_wait: float = 300.0  # another apply of the same production to finish

    HELP: ClassVar[dict[str, str]] = {
        "ready": "how long a new vassal may take to answer",
        "health": "how long each Gig may take to answer through nginx",
        "drain": "how long to wait for old nginx workers before stopping vassals",
        "lock_wait": "how long to wait for another apply of the production",
    }

    def flags(self) -> list[str]:
        """The command-line form both CLIs share: --ready-timeout=S ..."""
        return [f"{flag(name)}={getattr(self, name)}" for name in self.HELP]


def flag(field_name: str) -> str:
    return "--lock-wait" if field_name == "lock_wait" else f"--{field_name}-timeout"


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, finite and 0 or more (nan or inf would wait forever)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number of seconds, 0 or more")
    return value
