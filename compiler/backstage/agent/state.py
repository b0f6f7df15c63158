"""A production's place on the host: its generations, the `current` link, the history, the lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..contract import Plan, verify
from ..files import remove_tree
from .outcomes import Refused

GENERATIONS = "generations"
CURRENT = "current"
HISTORY = "history"
LOCK = "lock"
# history: one line per event, "<UTC time>\t<generation>\t<start|ok|failed>".
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


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

    @contextlib.contextmanager
    def lock(self, wait: float) -> Iterator[None]:
        """Hold the production's lock; refuse after `wait` seconds if another process holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+") as handle:
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
        """Copy the artifact into generations/, atomically; an existing copy is reused."""
        target = self.generations / artifact.name
        if target.is_dir():
            return target
        self.generations.mkdir(parents=True, exist_ok=True)
        for stale in self.generations.glob(".tmp-*"):
            remove_tree(stale)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.generations))
        os.rmdir(tmp)
        shutil.copytree(artifact, tmp, symlinks=True)
        verify(tmp, artifact.name)  # what lands in generations/ is checked, not only its source
        os.rename(tmp, target)
        return target

    def last_good(self) -> str | None:
        """The generation most recently made live successfully, if it is still kept."""
        for _, name, outcome in reversed(self.entries()):
            if outcome == "ok" and (self.generations / name).is_dir():
                return name
        return None

    def live_vassals(self) -> dict[str, Path]:
        """This production's vassal links in vassals_dir; other productions' vassals are never looked at."""
        prefix = f"{self.production}--"
        if not self.vassals_dir.is_dir():
            return {}
        return {p.name: p for p in sorted(self.vassals_dir.iterdir())
                if p.name.startswith(prefix) and p.name.endswith(".ini") and p.is_symlink()}

    def record(self, name: str, outcome: str) -> None:
        line = f"{time.strftime(TIME_FORMAT, time.gmtime())}\t{name}\t{outcome}\n"
        with open(self.history, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def entries(self) -> list[tuple[str, str, str]]:
        """(time, generation, outcome) of each well-formed history line, oldest first."""
        try:
            lines = self.history.read_text().splitlines()
        except OSError:
            return []
        found = []
        for line in lines:
            if line.count("\t") == 2:
                when, name, outcome = line.split("\t", 2)
                found.append((when, name, outcome))
        return found
