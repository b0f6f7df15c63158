"""Atomic links and read-only trees: the two file operations both the compiler and the host agent need.

Standard library only: it ships inside every artifact's agent.pyz beside contract.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


def link(target: Path, at: Path) -> None:
    """Point `at` to `target` atomically: readers see the old or the new link, never none."""
    at.parent.mkdir(parents=True, exist_ok=True)
    tmp = at.with_name(f".{at.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, at)


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def remove_tree(path: Path) -> None:
    """Delete a tree whose directories are read-only (artifacts and generations are 0555)."""
    if path.is_symlink():
        path.unlink()  # a link is removed, never followed
        return
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            inner = os.path.join(root, d)
            if not os.path.islink(inner):  # chmod follows links: never touch what one points at
                os.chmod(inner, 0o755)
    os.chmod(path, 0o755)
    shutil.rmtree(path)
