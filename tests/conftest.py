from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis must not write into the repository (.hypothesis/ holds its example database and a
# Unicode cache): everything goes to a private temporary directory.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="backstage-hypothesis-"))
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=2000, deadline=None, database=None, suppress_health_check=_SUPPRESS,
                          print_blob=False)
settings.register_profile("thorough", settings.get_profile("ci"), max_examples=10000)
settings.register_profile("dev", settings.get_profile("ci"), max_examples=100)
settings.register_profile("default", settings.get_profile("ci"))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def golden_dir(case: str) -> Path:
    """A case's expected artifact tree, beside its input: examples/<case>/golden/."""
    return EXAMPLES / case / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite examples/<case>/golden/ from the examples instead of comparing")


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    """Run the real `backstage` command in a child process, as a user would."""
    done = subprocess.run([sys.executable, "-m", "backstage.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)
    return Run(done.returncode, done.stdout, done.stderr)


def sandbox_head(name: str, tmp: Path, host: dict[str, object]) -> str:
    """The [production] and [host] tables of a production applied to a sandbox (Sandbox.host_table()),
    with its state, run and log directories under `tmp`. JSON strings are valid TOML strings here."""
    q = json.dumps
    return f"""\
[production]
name = {q(name)}
state_dir = {q(str(tmp / "state"))}
run_dir = {q(str(tmp / "run"))}
log_dir = {q(str(tmp / "log"))}

""" + host_table(host)


def host_table(host: dict[str, object]) -> str:
    """The [host] table that plugs a production into a sandbox (Sandbox.host_table())."""
    q = json.dumps
    return f"""\
[host]
vassals_dir = {q(host["vassals_dir"])}
nginx_dir = {q(host["nginx_dir"])}
nginx = {q(host["nginx"])}
nginx_user = {q(host["nginx_user"])}
emperor_stats = {q(host["emperor_stats"])}
uwsgi = {q(host["uwsgi"])}
"""


def example_cases() -> list[str]:
    return sorted(p.parent.name for p in EXAMPLES.glob("*/production.toml"))


def require_binary(name: str) -> str:
    """Real components are required: a missing one fails the test loudly, it never skips it."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if not path:
        pytest.fail(f"{name} is not installed; .ci/run installs it (apt-get install {name})")
    return path
