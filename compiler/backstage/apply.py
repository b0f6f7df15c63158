"""apply: hand an artifact to its own install.sh, and find a production's state on a host.

The host-side work lives in host/install.py, which every artifact carries; this module only checks
the artifact first (a tampered install.sh must never run) and locates things. It imports no renderer.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .host import install


class ApplyError(Exception):
    pass


def verify(artifact: Path) -> None:
    try:
        install.verify(artifact)
    except install.Refused as refusal:
        raise ApplyError(f"refusing to apply: {refusal}") from None


def state_dir(production: str | Path) -> Path:
    """A production's state_dir, from its production file or from the directory itself."""
    path = Path(production)
    if path.is_dir():
        return path
    from . import check, load, model  # only when given a production file rather than its state_dir

    loaded = load.load_file(path)
    check.check(loaded)
    return Path(model.build(loaded.data).state_dir)


def installer(state: Path) -> Path:
    """The install.sh to act on kept generations with: the live one's, else the newest kept one's."""
    current = state / "current"
    if (current / "install.sh").is_file():
        return current / "install.sh"
    kept = sorted((state / "generations").glob("*/install.sh"), key=lambda p: p.stat().st_mtime)
    if not kept:
        raise ApplyError(f"{state}: no generation was ever applied here")
    return kept[-1]


def run_installer(script: Path, *args: str) -> int:
    """Run an artifact's install.sh, letting its output through; returns its exit code."""
    return subprocess.run([str(script), *args], check=False).returncode
