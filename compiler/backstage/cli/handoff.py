"""Handing an artifact to its own host agent: verify it first (a tampered install.sh must never run),
find a production's state on this host, and run the agent of the right generation.

The host-side work is the artifact's own agent (agent.pyz). Before running it as root, this module
checks, with the installed backstage's own code, what that agent will trust: the artifact (the
contract's verify) and state_dir (agent/trust.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import contract
from ..agent import trust
from ..agent.outcomes import Refused
from ..agent.state import INCOMING
from ..errors import HandoffError
from ..files import remove_tree

STAGE_PREFIX = ".apply-"  # state_dir/incoming/.apply-XXXXXXXX/<artifact>: one apply's verified copy
# The copy each running apply holds, and the open (and flocked) directory that says so: run_installer
# hands that very descriptor to the agent running from the copy, so the lock lasts as long as either lives.
_held: dict[Path, int] = {}


def _cannot_copy(parent: Path, exc: OSError) -> HandoffError:
    return HandoffError(f"cannot copy the artifact into {parent}: {exc.strerror}; free space there (or make it "
                        "writable) and apply again; nothing was changed")


def _open_directory(name: str | Path, dir_fd: int | None = None) -> int:
    """An fd of the directory `name` itself, never of what a link there points at (ELOOP/ENOTDIR then)."""
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _locked(fd: int) -> bool:
    """Take the exclusive flock on `fd` if nobody holds it; False when someone does."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise
    return True


def _new_stage(incoming: Path) -> tuple[Path, int]:
    """Sweep the copies no running apply holds out of `incoming`, and make a fresh one held by us: its
    directory, and an fd of it with an exclusive flock that every apply keeps (with its agent) until
    the copy is removed.

    Copies are left behind when the `backstage` command dies without its `finally` (kill -9, or
    SIGTERM before it runs the agent); nothing else would ever remove them. A copy is stale exactly when
    nobody holds its flock: the command holds it from the moment the directory exists, and the agent it
    starts inherits the same open file (so an agent undoing a switch after its command was killed keeps
    its copy). So that no sweep sees a copy between its mkdir and its flock, each apply makes its copy
    under an exclusive flock of incoming/ itself, which the sweep holds too while it claims the stale
    copies (by taking their flock, so that a second sweep leaves them alone); it removes them once
    incoming/ is free again. No time or pid is guessed at, and nothing in incoming/ but real `.apply-*`
    directories is touched; removing one never follows a link (files.remove_tree). Best effort: a copy
    that cannot be removed now is tried again by the next apply.
    """
    claimed: list[tuple[str, int]] = []
    try:
        top = _open_directory(incoming)
        try:
            fcntl.flock(top, fcntl.LOCK_EX)  # held only while a copy is made or claimed: never for long
            with os.scandir(top) as entries:
                names = [entry.name for entry in entries
                         if entry.name.startswith(STAGE_PREFIX) and entry.is_dir(follow_symlinks=False)]
            for name in names:
                try:
                    fd = _open_directory(name, dir_fd=top)
                except OSError:
                    continue  # gone meanwhile, or no longer a directory: not ours to judge
                try:
                    stale = _locked(fd)
                except OSError:
                    stale = False
                if stale:
                    claimed.append((name, fd))
                else:
                    os.close(fd)
            stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=incoming))
            try:
                held = _open_directory(stage)
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fresh: nobody else can hold it
            except OSError:
                with contextlib.suppress(OSError):
                    remove_tree(stage)
                raise
        finally:
            os.close(top)
        for name, fd in claimed:
            with contextlib.suppress(OSError):
                found, opened = os.lstat(incoming / name), os.fstat(fd)
                if (found.st_dev, found.st_ino) == (opened.st_dev, opened.st_ino):  # the very one claimed
                    remove_tree(incoming / name)
        return stage, held
    finally:
        for _, fd in claimed:
            os.close(fd)


@contextlib.contextmanager
def staged(artifact: Path, dry_run: bool) -> Iterator[Path]:
    """A verified copy of `artifact` to run instead of it: verify what runs, run what was verified.

    The copy goes into a fresh root-only directory under state_dir/incoming/ (a dry run, which must
    write nothing there, uses one under the system's temporary directory); the bytes written are the
    bytes verified, so a file changed or swapped in the original afterwards changes nothing. The
    original's apply.json is only read to find state_dir; the copy's must name the same one. Copies
    that killed applies left in incoming/ are removed first (_new_stage); this one is held, with its
    agent, until it is removed here.
    """
    try:
        # Read and verified first, once, so a refused artifact leaves the host as it was; these very
        # bytes are what is copied below.
        found = contract.read_tree(artifact)
        contract.check_tree(artifact, found, artifact.name)
        state = Path(contract.read_plan(artifact).state_dir)
        if dry_run:
            trust.directory(state, "state_dir", create=False)
            parent = Path(tempfile.gettempdir())
        else:
            trust.directory(state, "state_dir")
            parent = trust.subdirectory(state, INCOMING, "state_dir/incoming")
    except (contract.ContractError, Refused) as refusal:
        raise HandoffError(f"refusing to apply: {refusal}") from None
    held: int | None = None
    try:
        if dry_run:
            stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=parent))
        else:
            stage, held = _new_stage(parent)
    except OSError as exc:
        raise _cannot_copy(parent, exc) from None
    copy = stage / artifact.name
    try:
        if held is not None:
            _held[copy] = held
        try:
            contract.copy_verified(artifact, copy, found)
            if contract.read_plan(copy).state_dir != str(state):
                raise contract.ContractError(f"{artifact}: apply.json changed while it was copied")
        except contract.ContractError as refusal:
            raise HandoffError(f"refusing to apply: {refusal}") from None
        except OSError as exc:
            raise _cannot_copy(parent, exc) from None
        hook = os.environ.get(contract.AFTER_COPY_ENV)
        if hook:  # tests change the original here, after its copy was verified
            subprocess.run(["sh", "-c", hook, "sh", str(artifact)], check=True)
        yield copy
    finally:
        try:
            remove_tree(stage)  # still held: no sweep takes it meanwhile
        finally:
            _held.pop(copy, None)
            if held is not None:
                os.close(held)


def state_dir(production: str | Path) -> Path:
    """A production's state_dir, from its production file or from the directory itself."""
    path = Path(production)
    if path.is_dir():
        return path
    from ..phases import pipeline  # only when given a production file rather than its state_dir

    return Path(pipeline.check_file(path).production.state_dir)


def live_restarts(state: Path) -> dict[str, int]:
    """Each Sess's restart count in the generation live at `state` ({} when none is, or it cannot be
    read: counts then start again from 0, which starts no vassal anew that would not be anyway)."""
    try:
        trust.directory(state, "state_dir", create=False)
        plan = contract.read_plan(state / "current")
    except (Refused, contract.ContractError, OSError):
        return {}
    return {v.sess: v.restart for v in plan.vassals if v.restart}


def installer(state: Path) -> Path:
    """The install.sh to act on kept generations with: the live one's, else the newest kept one's.

    It runs as root, so state_dir must be one only root can change, and the generation is verified
    against its manifest and name first.
    """
    try:
        trust.directory(state, "state_dir", create=False)
    except Refused as refusal:
        raise HandoffError(f"refusing to run a kept generation: {refusal}") from None
    current = state / "current"
    if (current / contract.INSTALLER).is_file():
        chosen = current.resolve()
    else:
        kept = sorted((state / "generations").glob(f"*/{contract.INSTALLER}"), key=lambda p: p.stat().st_mtime)
        if not kept:
            raise HandoffError(f"{state}: no generation was ever applied here")
        chosen = kept[-1].parent
    if chosen.parent != (state / "generations").resolve():
        raise HandoffError(f"refusing to run a kept generation: {state}/current points outside generations/")
    try:
        contract.verify(chosen)
    except contract.ContractError as refusal:
        raise HandoffError(f"refusing to run a kept generation: {refusal}") from None
    return chosen / contract.INSTALLER


def run_installer(script: Path, *args: str) -> int:
    """Run an artifact's install.sh, letting its output through; returns its exit code (128 + N when
    signal N stopped the agent: 129 SIGHUP, 130 SIGINT, 143 SIGTERM).

    The agent never runs on alone: it runs in a session of its own, so a terminal's Ctrl-C or a signal
    to this process's group reaches it only through here, and SIGINT, SIGTERM and SIGHUP sent here are
    forwarded to it and waited for (it undoes an unfinished switch first, then exits). It also holds the
    read end of a pipe whose write end only this process has (its fd in contract.PARENT_FD_ENV): if this
    process dies, even by kill -9, the pipe closes and the agent stops as on SIGTERM. Older agents
    ignore the variable. An agent run from an apply's copy (staged) also inherits the flocked fd that
    keeps that copy from being swept while it runs.
    """
    import signal

    stopping = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    received: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    read_end, write_end = os.pipe()
    held = _held.get(script.parent)
    previous = {signum: signal.signal(signum, forward) for signum in stopping}
    try:
        try:
            kept = (read_end,) if held is None else (read_end, held)
            child = subprocess.Popen([str(script), *args], pass_fds=kept, start_new_session=True,
                                     env={**os.environ, contract.PARENT_FD_ENV: str(read_end)})
        finally:
            os.close(read_end)
        for signum in received:  # arrived while it was being started
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(write_end)
    return code
