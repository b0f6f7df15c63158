"""A production's place on the host: its generations, the `current` link, the history, the lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..contract import STORE, ContractError, Plan, copy_verified, verify
from ..files import remove_tree, write_all, write_file
from . import trust
from .outcomes import Refused

GENERATIONS = "generations"
CURRENT = "current"
HISTORY = "history"
LOCK = "lock"
OWNER = "production"  # the name of the one production this state_dir belongs to
INCOMING = "incoming"  # `backstage apply` copies an artifact here, verifies the copy and runs only it
# history: one line per event, "<seq>\t<UTC time>\t<generation>\t<event>", appended and fsynced.
# <seq> rises by one with every line: it, never the time (two applies can share a second) nor the name,
# orders generations. <event>: start (an apply or rollback began), ok (its Gigs were proven through
# nginx: from here on it is what runs), failed (it was undone), interrupted (a signal stopped it and it
# was undone). Lines from before <seq> existed ("<UTC time>\t<generation>\t<event>") are read too,
# numbered by their place in the file.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
EVENTS = ("start", "ok", "failed", "interrupted")


@dataclass(frozen=True, slots=True)
class Entry:
    """One history line."""

    seq: int
    when: str
    name: str
    event: str


class State:
    """The production's state under state_dir, and its links in the host's vassals and nginx directories."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.production = plan.production
        self.root = Path(plan.state_dir)
        self.generations = self.root / GENERATIONS
        self.current = self.root / CURRENT
        self.history = self.root / HISTORY
        self.run_dir = Path(plan.run_dir)
        self.log_dir = Path(plan.log_dir)
        self.vassals_dir = Path(plan.host.vassals_dir)
        self.nginx_link = Path(plan.host.nginx_dir) / plan.nginx_link

    def prepare(self, create: bool = True) -> None:
        """Check every directory apply writes into (trust.py), creating the missing ones with `create`;
        and refuse a state_dir that belongs to another production."""
        trust.directory(self.root, "state_dir", create)
        trust.subdirectory(self.root, GENERATIONS, "state_dir/generations", create)
        trust.subdirectory(self.root, STORE, "state_dir/store", create)
        trust.directory(self.run_dir, "run_dir", create)
        trust.directory(self.log_dir, "log_dir", create)
        trust.directory(self.vassals_dir, "[host].vassals_dir", create)
        trust.directory(self.nginx_link.parent, "[host].nginx_dir", create)
        self.claim(create)

    def claim(self, write: bool) -> None:
        """One owner per state_dir: the first apply records its production there; another's is refused."""
        owner = self.root / OWNER
        try:
            recorded = _read_small(owner).strip()
        except FileNotFoundError:
            others = sorted(p.name for p in _entries_of(self.generations)
                            if not p.name.startswith((".", f"{self.production}-")))
            if others:  # a state_dir from before owners were recorded, holding another's generations
                raise Refused(f"state_dir {self.root} holds generations of another production ({others[0]}); "
                              f"give production {self.production} a state_dir of its own") from None
            if write:
                write_file(owner, f"{self.production}\n".encode(), 0o444)
            return
        except (OSError, ValueError) as exc:
            raise Refused(f"cannot read {owner}: {exc}") from None
        if recorded != self.production:
            raise Refused(f"state_dir {self.root} belongs to production {recorded}, not {self.production}; "
                          "give each production a state_dir of its own")

    @contextlib.contextmanager
    def lock(self, wait: float) -> Iterator[None]:
        """Hold the production's lock; refuse after `wait` seconds if another process holds it.
        The directories are checked (and made) first: the lock file lives in state_dir."""
        self.prepare(create=True)
        try:
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise Refused(f"cannot open the lock {self.root / LOCK}: {exc.strerror}") from None
        with os.fdopen(fd, "a+") as handle:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "another process"
                        raise Refused(f"production {self.production} is being changed by {holder}; "
                                      f"waited {wait:.0f} s") from None
                    time.sleep(0.2)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            yield

    def current_name(self) -> str | None:
        try:
            return Path(os.readlink(self.current)).name
        except OSError:
            return None

    def install(self, artifact: Path) -> Path:
        """Copy the artifact into generations/, atomically; an existing copy is reused (checked again).

        The bytes copied are the bytes verified (contract.copy_verified), and the copy is verified once
        more where it lands: what runs is what was checked, whatever happens to the original.
        """
        target = self.generations / artifact.name
        if os.path.lexists(target):
            try:
                verify(target)
            except ContractError as exc:
                raise Refused(f"the kept generation is damaged: {exc}; remove {target}") from None
            return target
        for stale in self.generations.glob(".tmp-*"):
            remove_tree(stale)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.generations))
        os.rmdir(tmp)
        try:
            copy_verified(artifact, tmp)
            verify(tmp, artifact.name)
        except ContractError as exc:
            with contextlib.suppress(FileNotFoundError):
                remove_tree(tmp)
            raise Refused(str(exc)) from None
        os.rename(tmp, target)
        return target

    def last_good(self) -> str | None:
        """The generation most recently made live successfully, if it is still kept."""
        for entry in reversed(self.entries()):
            if entry.event == "ok" and (self.generations / entry.name).is_dir():
                return entry.name
        return None

    def live_vassals(self) -> dict[str, Path]:
        """This production's vassal links in vassals_dir; other productions' vassals are never looked at."""
        prefix = f"{self.production}--"
        if not self.vassals_dir.is_dir():
            return {}
        return {p.name: p for p in sorted(self.vassals_dir.iterdir())
                if p.name.startswith(prefix) and p.name.endswith(".ini") and p.is_symlink()}

    def record(self, name: str, event: str) -> None:
        """Append one history line, durably; OSError (a full or read-only disk) is the caller's to report."""
        entries = self.entries()
        seq = entries[-1].seq + 1 if entries else 1
        line = f"{seq}\t{time.strftime(TIME_FORMAT, time.gmtime())}\t{name}\t{event}\n".encode()
        fd = os.open(self.history, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[Entry]:
        """Each well-formed history line, oldest first, with a strictly increasing `seq`: its own number
        when it has one above the line before's, else the one after that line's (older lines have none)."""
        try:
            lines = self.history.read_text(errors="replace").splitlines()
        except OSError:
            return []
        found: list[Entry] = []
        for line in lines:
            fields = line.split("\t")
            if len(fields) == 4 and fields[0].isdigit():
                number, when, name, event = int(fields[0]), fields[1], fields[2], fields[3]
            elif len(fields) == 3:
                number, when, name, event = 0, fields[0], fields[1], fields[2]
            else:
                continue
            after = found[-1].seq + 1 if found else 1
            found.append(Entry(max(number, after), when, name, event))
        return found


def _read_small(path: Path, limit: int = 4096) -> str:
    """A small file of apply's own, read without following a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        return os.read(fd, limit).decode()
    finally:
        os.close(fd)


def _entries_of(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except FileNotFoundError:
        return []
