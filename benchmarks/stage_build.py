"""Stage build time: uv against venv + pip, for Django and ten small pure-Python distributions from a
warm cache (issue 11). A benchmark, not a test: it prints medians and asserts nothing.

    python benchmarks/stage_build.py

It drives the host agent's store (backstage.agent.store.prepare) through the same hand-made plans
as tests/test_store.py, in a temporary directory.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from test_store import TIMED, Site, tool  # noqa: E402


def main() -> int:
    times: dict[str, list[float]] = {"uv": [], "pip": []}
    with tempfile.TemporaryDirectory(prefix="backstage-stage-bench-") as scratch:
        tmp_path = Path(scratch)
        for run in range(4):  # the first of each warms the installer's cache and is not counted
            for installer, uv in (("uv", tool("uv")), ("pip", None)):
                site = Site(tmp_path / f"{installer}-{run}")
                site.add_stage(TIMED)
                started = time.monotonic()
                site.prepare(uv=uv)
                if run:
                    times[installer].append(time.monotonic() - started)
                shutil.rmtree(site.store)
    uv, pip = statistics.median(times["uv"]), statistics.median(times["pip"])
    print(f"Stage build, Django + 10 small packages, warm cache, median of 3: "
          f"uv {uv:.2f} s {[round(t, 2) for t in times['uv']]}, "
          f"venv + pip {pip:.2f} s {[round(t, 2) for t in times['pip']]}; pip/uv {pip / uv:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
