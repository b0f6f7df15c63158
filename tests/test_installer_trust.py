"""install.sh runs as root, so it runs only a Python no other user can change: a Stage virtualenv's
bin/python3 that another user owns, or that sits in a directory others can write, is passed over for
the next interpreter (python3 on PATH), with a line saying why. A dry run shows it: it runs the agent
and changes nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, run_cli

PRODUCTION = """\
[production]
name = "pc"
state_dir = "{tmp}/state"
run_dir = "{tmp}/run"
log_dir = "{tmp}/log"

[stages.main]
virtualenv = "{venv}"

[acts.site]
wsgi = "showcase.wsgi:application"
path = "{app}"

[sesses.site]
act = "site"
stage = "main"
"""


def _interpreter(venv: Path, marker: Path) -> None:
    """A bin/python3 that leaves `marker` when it runs, then runs the real Python."""
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python3"
    python.write_text(f"#!/bin/sh\nid -u > {marker}\nexec {sys.executable} \"$@\"\n")
    python.chmod(0o755)


@pytest.mark.parametrize("whose", ["root's", "another user's", "in a directory others can write"])
def test_install_sh_runs_only_a_python_no_other_user_can_change(whose: str, tmp_path: Path) -> None:
    assert os.geteuid() == 0, "this test runs as root, as the suite does"
    tmp_path.chmod(0o755)
    venv, marker = tmp_path / "venv", tmp_path / "ran"
    _interpreter(venv, marker)
    if whose == "another user's":
        os.chown(venv / "bin" / "python3", 65534, 65534)
    elif whose == "in a directory others can write":
        (venv / "bin").chmod(0o777)
    source = tmp_path / "production.toml"
    source.write_text(PRODUCTION.format(tmp=tmp_path, venv=venv, app=EXAMPLES / "apps" / "showcase"))
    built = run_cli("build", str(source), "-o", str(tmp_path / "build"))
    assert built.code == 0, built.err
    run = run_cli("apply", "--dry-run", built.out.strip())
    assert run.code == 0, run.err
    assert "start vassal" in run.out + run.err  # the agent ran, from some Python
    if whose == "root's":
        assert marker.read_text().strip() == "0"
        assert "install.sh: not running" not in run.err
    else:
        assert not marker.exists(), "root ran a Python another user can change"
        assert f"install.sh: not running {venv}/bin/python3" in run.err, run.err
    assert not (tmp_path / "state").exists()
