"""The uWSGI Emperor's stats socket: one JSON document per connection; connecting also wakes it."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from .probes import connect


def stats(address: str, timeout: float = 5.0) -> dict[str, Any]:
    """The Emperor's stats ("pid", and "vassals" with each vassal's "id" and "pid")."""
    with connect(address, timeout) as sock:
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    document = json.loads(b"".join(chunks))
    if not isinstance(document, dict):
        raise ValueError("the Emperor's stats are not a JSON object")
    return document


def wake(address: str) -> None:
    """Make the Emperor scan vassals_dir now instead of at its next tick (every 3 s by default)."""
    if not address:
        return
    with contextlib.suppress(OSError), connect(address, 2.0) as sock:
        while sock.recv(65536):
            pass


def vassal_pids(address: str) -> dict[str, int]:
    """Vassal file name -> pid of its uWSGI master, from the stats; empty when they cannot be read."""
    if not address:
        return {}
    try:
        vassals = stats(address, 2.0).get("vassals", [])
    except (OSError, ValueError):
        return {}
    found: dict[str, int] = {}
    for vassal in vassals if isinstance(vassals, list) else []:
        if isinstance(vassal, dict) and isinstance(vassal.get("pid"), int) and vassal["pid"] > 0:
            found[str(vassal.get("id", "")).rsplit("/", 1)[-1]] = vassal["pid"]
    return found


def trouble(address: str) -> str:
    """Why the Emperor may not have started a vassal, if its stats socket says so; "" if it answers."""
    if not address:
        return ""
    try:
        stats(address, 2.0)
    except TimeoutError:
        return f"the uWSGI Emperor does not answer on its stats socket {address}: is it stopped (SIGSTOP) or hung?"
    except (OSError, ValueError) as exc:
        return f"the uWSGI Emperor's stats socket {address} fails ({exc}): is the Emperor running?"
    return ""
