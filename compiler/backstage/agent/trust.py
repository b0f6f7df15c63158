"""Which directories apply may write into, as root, on a host where other users have accounts.

A directory is trusted when nobody but root (or the user running apply) can change what it holds or
where it leads: every component of its path is owned by root or that user, no component is a
symlink owned by anyone else, ancestors are not writable by group or others unless sticky (as /tmp),
and the directory itself is not writable by group or others at all. A missing directory is created
(0755) under a trusted parent. Everything apply writes lives in such directories, so another user
can neither plant a symlink there nor swap a file; nothing here follows a link it did not check.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .outcomes import Refused

MAX_LINKS = 40  # symlinks resolved along one path, as the kernel's own bound


def trusted_owners() -> set[int]:
    return {0, os.geteuid()}


def _owner(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


def _refuse(path: Path, info: os.stat_result, why: str) -> Refused:
    return Refused(f"{path} {why} (owner {_owner(info.st_uid)}, mode {stat.S_IMODE(info.st_mode):04o}); "
                   "apply writes only into directories that root alone can change: fix its owner and mode, "
                   "or choose another directory")


def directory(path: Path, what: str, create: bool = True, links: bool = True) -> Path:
    """Check (and, with `create`, make) the directory `path` that apply writes into; return it.

    `links`: whether the path may pass through symlinks owned by root (an administrator's /var/run,
    say); the directory itself is never a symlink when `links` is False. Refused otherwise, naming the
    path, its owner and its mode. With `create` False a missing directory is fine (a dry run).
    """
    if not path.is_absolute():
        raise Refused(f"{what} {path} is not an absolute path")
    _walk(Path("/"), path.parts[1:], what, create, links, [0])
    return path


def subdirectory(parent: Path, name: str, what: str, create: bool = True) -> Path:
    """A directory of apply's own inside a trusted one (generations/ in state_dir): never a symlink."""
    path = parent / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISLNK(info.st_mode):
            raise _refuse(path, info, f"is a symlink; {what} must be a real directory")
    return directory(path, what, create)


def _walk(current: Path, rest: tuple[str, ...], what: str, create: bool, links: bool, resolved: list[int]) -> None:
    trusted = trusted_owners()
    info = os.lstat(current)
    for part in rest:
        _check_component(current, info, what, last=False)
        step = current / part
        try:
            info = os.lstat(step)
        except FileNotFoundError:
            if not create:
                return
            try:
                os.mkdir(step, 0o755)
            except FileExistsError:
                pass  # made meanwhile: checked below like any other
            except OSError as exc:
                raise Refused(f"cannot create {what} {step}: {exc.strerror}") from None
            info = os.lstat(step)
            if info.st_uid in trusted and stat.S_ISDIR(info.st_mode):
                os.chmod(step, 0o755)  # mkdir's mode lost bits to the umask; this one is ours
                info = os.lstat(step)
        except OSError as exc:
            raise Refused(f"cannot reach {what} {step}: {exc.strerror}") from None
        if stat.S_ISLNK(info.st_mode):
            if info.st_uid not in trusted:
                raise _refuse(step, info, f"is a symlink another user owns, on the way to {what}")
            if not links:
                raise _refuse(step, info, f"is a symlink; {what} must be a real directory")
            resolved[0] += 1
            if resolved[0] > MAX_LINKS:
                raise Refused(f"{what}: too many symlinks on the way to {step}")
            target = Path(os.path.normpath(current / os.readlink(step)))
            # The link's target is checked from / like any path, then the walk goes on from there.
            _walk(Path("/"), target.parts[1:], what, create, links, resolved)
            current, info = target, os.lstat(target)
            continue
        current = step
    _check_component(current, info, what, last=True)


def _check_component(path: Path, info: os.stat_result, what: str, last: bool) -> None:
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(path, info, f"is not a directory, on the way to {what}" if not last else "is not a directory")
    if info.st_uid not in trusted_owners():
        raise _refuse(path, info, f"is owned by another user, on the way to {what}" if not last
                      else f"({what}) is owned by another user")
    writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and (last or not info.st_mode & stat.S_ISVTX):
        raise _refuse(path, info, f"is writable by other users, on the way to {what}" if not last
                      else f"({what}) is writable by other users")
