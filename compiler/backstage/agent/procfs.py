"""Reading /proc: processes, their parents, sessions, titles and environments (Linux only)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Stat:
    state: str
    ppid: int
    pgrp: int
    session: int


def pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def stat(pid: int) -> Stat | None:
    """The process's state and parentage, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2:].split()
    return Stat(fields[0], int(fields[1]), int(fields[2]), int(fields[3]))


def alive(pid: int) -> bool:
    found = stat(pid)
    return found is not None and found.state != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def title(pid: int) -> str:
    """The process title as `ps` shows it (nginx rewrites its own: "nginx: worker process")."""
    return " ".join(cmdline(pid)).strip()


def environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def children(parent: int) -> list[int]:
    return sorted(pid for pid in pids() if (found := stat(pid)) and found.ppid == parent and found.state != "Z")
