"""What a Sess's environment needs from the host: its secrets' files and its Act's data directory.

A secret is read by the vassal itself when it starts (the entry point, as the Stage's user) and by the
agent for release steps; its value never enters the artifact, the store, a log or the history. Before a
switch changes anything, every secret file must be a regular file (not a symlink) that root or the
Stage's user owns, that no one else can read (group read only for the Stage's own group), that the
Stage's user can read, in a directory no other user can change, and that holds no NUL byte.

A data directory is created when missing (its missing parents root's, 0755; itself the Stage's user's
and group's, 0750) and is otherwise used as it is, if it is a real directory owned by that user and not
writable by everyone. Nothing ever removes one.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterable
from pathlib import Path

from ..contract import DataPlan, Plan, SecretPlan
from . import trust
from .outcomes import Failed, Refused

MAX_SECRET = 1 << 20  # bytes: a secret is a key or a password, not a file to ship


def user_id(name: str) -> int:
    """A Stage's `uid` (a name or a number) as a number; KeyError("user 'x'") when there is no such user."""
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise KeyError(f"user {name!r}") from None


def group_id(name: str) -> int:
    """A Stage's `gid` as a number; KeyError("group 'x'") when there is no such group."""
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise KeyError(f"group {name!r}") from None


def _ids(uid: str, gid: str) -> tuple[int, int]:
    """The numeric user and group a Stage runs as; for "" the applying user's (root's on a host: the
    vassal keeps the Emperor's), whose primary group is the default group."""
    user = user_id(uid) if uid else os.geteuid()
    if gid:
        group = group_id(gid)
    elif not uid:
        group = os.getegid()
    else:
        try:
            group = pwd.getpwuid(user).pw_gid
        except KeyError:
            group = user
    return user, group


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check(plan: Plan) -> None:
    """Refuse the plan, naming each file, when a secret or a data directory could not be used safely."""
    problems = [p for s in plan.secrets if (p := secret_problem(s))]
    problems += [p for d in plan.data if (p := data_problem(d))]
    if problems:
        raise Refused("; ".join(problems) + "; nothing was changed")


def secret_problem(secret: SecretPlan) -> str:
    what = f"secret {secret.name} of sess {secret.sess}: {secret.path}"
    try:
        user, group = _ids(secret.uid, secret.gid)
    except KeyError as exc:
        return f"{what}: the Stage's {exc.args[0]} does not exist on this host"
    path = Path(secret.path)
    try:
        trust.directory(path.parent, f"the directory of {what}", create=False)
    except Refused as exc:
        return f"{what}: {exc}"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return (f"{what} does not exist; write the value into it (mode 0600, owned by "
                f"{_name(user)}), then apply again")
    except OSError as exc:
        return f"{what}: {exc.strerror}"
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return f"{what} is a symlink; give the file itself"
    if not stat.S_ISREG(info.st_mode):
        return f"{what} is not a regular file"
    if info.st_uid not in (0, user):
        return (f"{what} is owned by {_name(info.st_uid)}, who could read and change it; "
                f"chown it to root or {_name(user)}")
    if mode & stat.S_IROTH:
        return f"{what} is readable by every user (mode {mode:04o}); chmod o-r it"
    if mode & stat.S_IRGRP and info.st_gid != group:
        return (f"{what} is readable by group {_group(info.st_gid)} (mode {mode:04o}); chmod g-r it, "
                f"or give it the Stage's group {_group(group)}")
    readable = user == 0 or (info.st_uid == user and mode & stat.S_IRUSR) or (
        info.st_gid == group and mode & stat.S_IRGRP)
    if not readable:
        return (f"{what} cannot be read by {_name(user)}, whom the vassal runs as (owner "
                f"{_name(info.st_uid)}, mode {mode:04o}); chown it to {_name(user)} with mode 0400 or 0600")
    if blocked := _unsearchable(path.parent, user, group):
        return (f"{what} cannot be reached by {_name(user)}, whom the vassal runs as: {blocked} is not "
                f"searchable for it; chmod o+x {blocked}, or give it group {_group(group)} with g+x")
    try:
        value = _read(path)
    except OSError as exc:
        return f"{what}: {exc.strerror}"
    if b"\0" in value:
        return f"{what} holds a NUL byte, which no environment variable can hold"
    return ""


def _unsearchable(directory: Path, user: int, group: int) -> str:
    """The first directory from / to `directory` that `user` (primary group `group`) may not pass."""
    if user == 0:
        return ""
    try:
        groups = set(os.getgrouplist(pwd.getpwuid(user).pw_name, group))
    except KeyError:
        groups = {group}
    for step in [*reversed(directory.parents), directory]:
        info = os.stat(step)
        if info.st_uid == user:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return str(step)
    return ""


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as secret:
        if not stat.S_ISREG(os.fstat(secret.fileno()).st_mode):
            raise OSError(0, "not a regular file")
        value = secret.read(MAX_SECRET + 1)
    if len(value) > MAX_SECRET:
        raise OSError(0, f"larger than {MAX_SECRET} bytes")
    return value


def values(secrets: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(variable, value) of each (variable, file): the file's content without one trailing newline, as the
    entry point reads it; its bytes survive as str through the surrogateescape round trip."""
    found = []
    for name, path in secrets:
        try:
            value = _read(Path(path))
        except OSError as exc:
            raise Failed(f"secret {name}: cannot read {path}: {exc.strerror}") from None
        found.append((name, os.fsdecode(value.removesuffix(b"\n"))))
    return found


def data_problem(data: DataPlan) -> str:
    what = f"the data directory of act {data.act}, {data.path}"
    try:
        user, _ = _ids(data.uid, data.gid)
    except KeyError as exc:
        return f"{what}: the Stage's {exc.args[0]} does not exist on this host"
    path = Path(data.path)
    try:
        trust.directory(path.parent, f"the parent of {what}", create=False)
        info = os.lstat(path)
    except Refused as exc:
        return str(exc)
    except FileNotFoundError:
        return ""  # made by make_data
    except OSError as exc:
        return f"{what}: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode):
        return f"{what} is a symlink; give the directory itself"
    if not stat.S_ISDIR(info.st_mode):
        return f"{what} is not a directory"
    if info.st_uid != user:
        return (f"{what} is owned by {_name(info.st_uid)}, not by {_name(user)}, whom the app runs as; "
                f"chown it, or remove it and apply creates it")
    if info.st_mode & stat.S_IWOTH:
        return f"{what} is writable by every user (mode {stat.S_IMODE(info.st_mode):04o}); chmod o-w it"
    return ""


def make_data(plan: Plan) -> list[str]:
    """Create each missing data directory; returns the paths made. check() accepted them first."""
    made = []
    for data in plan.data:
        path = Path(data.path)
        trust.directory(path.parent, f"the parent of the data directory of act {data.act}")
        user, group = _ids(data.uid, data.gid)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if problem := data_problem(data):
                raise Refused(problem) from None
            continue
        # Made just now in a directory only root can change: it is ours, and no link.
        os.chown(path, user, group)
        os.chmod(path, 0o750)
        made.append(str(path))
    return made
