"""The benchmark harness cannot rot: its smoke run (N=100, one run, no Ansible) must work. No timing is asserted."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_benchmark_smoke_run_completes() -> None:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--smoke"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "backstage/floor" in done.stdout
