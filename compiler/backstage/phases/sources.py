"""Phase 5, sources: read what a checked production points at on the build machine.

An Act's `source` directory becomes a tree of files for the artifact (what git ignores left out when
it is in a git work tree, then `exclude`), and a Stage's `lock` file its bytes. Paths are relative to
the production file. Everything that cannot be used is reported at its key's line, all at once:
missing or unreadable paths, symlinks that leave the source, FIFOs, sockets and devices.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, InputError
from .cache import GitFailed, fingerprint, git_listing, is_tagged_cache
from .load import Source

MAX_FILES = 100_000
# Left out of every source: what Python and git write for themselves, which would make two copies of
# the same code differ.
ALWAYS_EXCLUDED = ("__pycache__/", "*.py[cod]", ".git/")
MAX_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class SourceTree:
    """An Act's files as the artifact holds them: (relative path, mode, content), sorted by path."""

    files: tuple[tuple[str, int, bytes], ...]

    def __repr__(self) -> str:  # by digest: a render memo keys on reprs, and sources can be large
        digest = hashlib.sha256(repr([(path, mode, hashlib.sha256(content).hexdigest())
                                      for path, mode, content in self.files]).encode()).hexdigest()
        return f"SourceTree(sha256={digest})"


@dataclass(frozen=True, slots=True)
class Gathered:
    acts: dict[str, SourceTree]
    locks: dict[str, bytes]
    inputs: tuple[str, ...]  # every file and directory read, for the build cache
    stamp: str  # their fingerprint, taken before they were read


def gather(data: dict[str, Any], source: Source, leave_out: Path | None = None) -> Gathered:
    """Every Act's source tree and Stage's lock. `leave_out`: the build's OUT, never part of a source
    (it is tagged as a cache directory once a build wrote into it, and those are always left out)."""
    base = Path(source.name).resolve().parent
    inputs = sorted({str(base / act["source"]) for act in data.get("acts", {}).values() if "source" in act}
                    | {str(base / stage["lock"]) for stage in data.get("stages", {}).values() if "lock" in stage})
    stamp = fingerprint(inputs)
    problems: list[Diagnostic] = []
    acts: dict[str, SourceTree] = {}
    locks: dict[str, bytes] = {}
    for name, act in sorted(data.get("acts", {}).items()):
        if "source" in act:
            where = ("acts", name, "source")
            try:
                acts[name] = _read_source(base / act["source"], act.get("exclude", []), leave_out)
            except _Unusable as exc:
                problems.append(source.diagnostic(where, "BS211", str(exc), exc.hint))
    for name, stage in sorted(data.get("stages", {}).items()):
        if "lock" in stage:
            path = base / stage["lock"]
            try:
                locks[name] = _read_regular(path)
            except _Unusable as exc:
                problems.append(source.diagnostic(("stages", name, "lock"), "BS212", str(exc), exc.hint))
    if problems:
        raise InputError(problems)
    return Gathered(acts, locks, tuple(inputs), stamp)


class _Unusable(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _read_regular(path: Path) -> bytes:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _Unusable(f"{path}: {exc.strerror}", "give a file that exists, relative to the production file") from None
    if not stat.S_ISREG(info.st_mode):
        raise _Unusable(f"{path} is not a regular file", "give the lock file itself")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Unusable(f"{path}: {exc.strerror}", "make it readable by the user running backstage") from None


def _read_source(root: Path, exclude: list[str], leave_out: Path | None = None) -> SourceTree:
    try:
        info = os.stat(root)
    except OSError as exc:
        raise _Unusable(f"{root}: {exc.strerror}",
                        "give the directory of the Act's code, relative to the production file") from None
    if not stat.S_ISDIR(info.st_mode):
        raise _Unusable(f"{root} is not a directory", "give the directory of the Act's code")
    try:
        listing = git_listing(root)
    except GitFailed as exc:
        raise _Unusable(f"{root} is in a git work tree, but {exc}",
                        "make `git -C <source> ls-files` work for the user building (installed, and the "
                        "repository trusted: git's safe.directory), so that what git ignores stays out") from None
    if listing is None:
        candidates = sorted(_walk(root))
    else:
        candidates = sorted({p for p in listing.decode("utf-8", "surrogateescape").split("\0") if p})
    candidates = _outside_caches(root, candidates, leave_out)
    import pathspec  # only builds that copy a source need it

    excluded = pathspec.GitIgnoreSpec.from_lines([*ALWAYS_EXCLUDED, *exclude])
    files: list[tuple[str, int, bytes]] = []
    total = 0
    real_root = root.resolve()
    for rel in candidates:
        if excluded.match_file(rel):
            continue
        path = root / rel
        try:
            entry = os.lstat(path)
        except FileNotFoundError:
            continue  # tracked by git but deleted in the work tree
        except OSError as exc:
            raise _Unusable(f"{path}: {exc.strerror}", "make the Act's files readable") from None
        if stat.S_ISLNK(entry.st_mode):
            target = Path(os.path.realpath(path))
            if not target.is_relative_to(real_root):
                raise _Unusable(f"{rel} is a symlink leaving the source (to {os.readlink(path)})",
                                "copy the file into the source, or add it to `exclude`")
            entry = os.stat(path)
        if stat.S_ISDIR(entry.st_mode):
            raise _Unusable(f"{rel} is a symlink to a directory",
                            "the artifact holds files only: replace the link by the directory, or `exclude` it")
        if not stat.S_ISREG(entry.st_mode):
            raise _Unusable(f"{rel} is not a regular file (a FIFO, socket or device)", "remove it, or `exclude` it")
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise _Unusable(f"{path}: {exc.strerror}", "make the Act's files readable") from None
        total += len(content)
        if len(files) >= MAX_FILES or total > MAX_BYTES:
            raise _Unusable(f"more than {MAX_FILES} files or {MAX_BYTES} bytes", "`exclude` what the app does not need")
        files.append((rel, 0o555 if entry.st_mode & 0o111 else 0o444, content))
    if not files:
        raise _Unusable(f"{root} holds no file to copy", "check `source` and `exclude`")
    return SourceTree(tuple(sorted(files)))


def _walk(root: Path) -> Iterator[str]:
    """Every non-directory entry under root, relative, not descending into symlinked directories."""
    for current, dirs, names in os.walk(root):
        here = Path(current)
        for name in dirs:
            if (here / name).is_symlink():
                names.append(name)  # reported as a link to a directory, never followed
        for name in names:
            yield str((here / name).relative_to(root))


def _outside_caches(root: Path, candidates: list[str], leave_out: Path | None) -> list[str]:
    """The candidates that are in no directory tagged as a cache (CACHEDIR.TAG: a build's OUT, among
    others) and not in `leave_out`."""
    real_root = Path(os.path.realpath(root))
    skipped = ""
    if leave_out is not None:
        out = Path(os.path.realpath(leave_out))
        if out == real_root:
            return []
        if out.is_relative_to(real_root):
            skipped = str(out.relative_to(real_root))
    tagged: dict[str, bool] = {"": False}

    def in_cache(directory: str) -> bool:
        if directory not in tagged:
            parent = os.path.dirname(directory)
            tagged[directory] = directory == skipped or in_cache(parent) or is_tagged_cache(root / directory)
        return tagged[directory]

    return [rel for rel in candidates if not in_cache(os.path.dirname(rel))]
