"""Handing an artifact to its own host agent: verify it first (a tampered install.sh must never run),
find a production's state on this host, and run the agent of the right generation.

The host-side work is the artifact's own agent (agent.pyz). Before running it as root, this module
checks, with the installed backstage's own code, what that agent will trust: the artifact (the
contract's verify) and state_dir (agent/trust.py).
"""

from __future__ import annotations

import contextlib
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


def _cannot_copy(parent: Path, exc: OSError) -> HandoffError:
    return HandoffError(f"cannot copy the artifact into {parent}: {exc.strerror}; free space there (or make it "
                        "writable) and apply again; nothing was changed")


@contextlib.contextmanager
def staged(artifact: Path, dry_run: bool) -> Iterator[Path]:
    """A verified copy of `artifact` to run instead of it: verify what runs, run what was verified.

    The copy goes into a fresh root-only directory under state_dir/incoming/ (a dry run, which must
    write nothing there, uses one under the system's temporary directory); the bytes written are the
    bytes verified, so a file changed or swapped in the original afterwards changes nothing. The
    original's apply.json is only read to find state_dir; the copy's must name the same one.
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
    try:
        stage = Path(tempfile.mkdtemp(prefix=".apply-", dir=parent))
    except OSError as exc:
        raise _cannot_copy(parent, exc) from None
    try:
        copy = stage / artifact.name
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
        remove_tree(stage)


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
    ignore the variable.
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
    previous = {signum: signal.signal(signum, forward) for signum in stopping}
    try:
        try:
            child = subprocess.Popen([str(script), *args], pass_fds=(read_end,), start_new_session=True,
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
