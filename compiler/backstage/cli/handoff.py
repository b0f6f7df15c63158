"""Handing an artifact to its own host agent: verify it first (a tampered install.sh must never run),
find a production's state on this host, and run the agent of the right generation.

The host-side work is the agent's (backstage.agent, shipped in every artifact as agent.pyz); this
module imports none of it, only the contract both sides share.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .. import contract


class HandoffError(Exception):
    """The artifact or the production's state cannot be handed to an agent; nothing was changed."""


def verify(artifact: Path) -> None:
    try:
        contract.verify(artifact)
    except contract.ContractError as refusal:
        raise HandoffError(f"refusing to apply: {refusal}") from None


def state_dir(production: str | Path) -> Path:
    """A production's state_dir, from its production file or from the directory itself."""
    path = Path(production)
    if path.is_dir():
        return path
    from ..phases import pipeline  # only when given a production file rather than its state_dir

    return Path(pipeline.check_file(path).production.state_dir)


def installer(state: Path) -> Path:
    """The install.sh to act on kept generations with: the live one's, else the newest kept one's."""
    current = state / "current"
    if (current / contract.INSTALLER).is_file():
        return current / contract.INSTALLER
    kept = sorted((state / "generations").glob(f"*/{contract.INSTALLER}"), key=lambda p: p.stat().st_mtime)
    if not kept:
        raise HandoffError(f"{state}: no generation was ever applied here")
    return kept[-1]


def run_installer(script: Path, *args: str) -> int:
    """Run an artifact's install.sh, letting its output through; returns its exit code."""
    return subprocess.run([str(script), *args], check=False).returncode
