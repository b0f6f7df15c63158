"""The host agent as one deterministic zipapp, agent.pyz, for every artifact to carry.

It packs backstage/contract.py, files.py, timeouts.py and backstage/agent/*.py, read as bytes from this
package's directory and never imported (the compiler does not import the host agent), behind a
`__main__.py` that runs backstage.agent.cli. Members are sorted, dated 1980-01-01, mode 0444 and
stored uncompressed (zlib's output may differ between machines), so the same sources give the same
bytes on every machine, and so the same artifact name.
"""

from __future__ import annotations

import functools
import io
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # compiler/backstage
SHARED = ("contract.py", "files.py", "timeouts.py")  # the modules the agent shares with the compiler
AGENT = "agent"
MAIN = b"import sys\n\nfrom backstage.agent.cli import main\n\nsys.exit(main())\n"
INIT = b'"""backstage: the host agent\'s copy of the package (contract, files, timeouts and agent only)."""\n'
DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold
MODE = 0o100444  # a regular file, read-only for all


def sources() -> list[Path]:
    """The package's files the zipapp packs, in member order; a build cache may key on their content."""
    agent = sorted(p for p in (PACKAGE / AGENT).glob("*.py") if p.stem.isidentifier())
    return [PACKAGE / name for name in SHARED] + agent


def members() -> dict[str, bytes]:
    """Member name -> content, the synthesized __main__.py and backstage/__init__.py included."""
    packed = {"__main__.py": MAIN, "backstage/__init__.py": INIT}
    for path in sources():
        packed[path.relative_to(PACKAGE.parent).as_posix()] = path.read_bytes()
    return packed


@functools.cache
def payload() -> bytes:
    """agent.pyz's bytes; `python3 -I agent.pyz ARTIFACT VERB ...` runs the agent."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, content in sorted(members().items()):
            info = zipfile.ZipInfo(name, date_time=DATE)
            info.create_system = 3  # Unix, so external_attr holds a mode
            info.external_attr = MODE << 16
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, content)
    return buffer.getvalue()
