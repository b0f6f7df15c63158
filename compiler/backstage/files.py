"""Atomic links and read-only trees: the two file operations both the compiler and the host agent need.

Standard library only: it ships inside every artifact's agent.pyz beside contract.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path


def link(target: Path, at: Path) -> None:
    """Point `at` to `target` atomically: readers see the old or the new link, never none."""
    at.parent.mkdir(parents=True, exist_ok=True)
    tmp = at.with_name(f".{at.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, at)


def write_all(fd: int, content: bytes) -> None:
    """Write every byte to `fd` (os.write may write fewer than it is given)."""
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view):]


def write_file(path: Path, content: bytes, mode: int) -> None:
    """Replace the small file `path` atomically with `content`: written to a temporary beside it (never
    through a link), synced, then renamed over it, so a reader sees the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        write_all(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


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


def write_tree(base: Path, entries: Iterable[tuple[str, int, bytes]], *, seal_base: bool = True) -> None:
    """Create (path, mode, content) files under the existing, empty directory `base`, each with O_EXCL
    (never through a link), then make every directory read-only (0555; `base` too unless `seal_base` is
    false, for a caller that adds files to it afterwards)."""
    dirs: set[str] = set()
    umask = os.umask(0)
    os.umask(umask)
    for rel, mode, content in entries:
        parent = os.path.dirname(rel)
        while parent and parent not in dirs:
            os.makedirs(os.path.join(base, parent), mode=0o755, exist_ok=True)
            dirs.add(parent)
            parent = os.path.dirname(parent)
        path = os.path.join(base, rel)
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            write_all(handle, content)
            if mode & umask:  # the mode given at creation lost bits to the umask: the manifest has them
                os.fchmod(handle, mode)
        finally:
            os.close(handle)
    for directory in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
        os.chmod(os.path.join(base, directory), 0o555)
    if seal_base:
        os.chmod(base, 0o555)
