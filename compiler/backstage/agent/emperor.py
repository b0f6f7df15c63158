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
