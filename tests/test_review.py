"""`backstage diff`: what a change does, in words; secrets never in clear; byte-stable; --json format 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import EXAMPLES, run_cli

JAZZCLUB = EXAMPLES / "jazzclub"


def _copy(tmp: Path, name: str, *edits: tuple[str, str]) -> Path:
    """The jazzclub example (with the files it reads) under tmp/name, with `edits` to its production file."""
    target = tmp / name
    shutil.copytree(JAZZCLUB, target, ignore=shutil.ignore_patterns("golden"))
    production = target / "production.toml"
    text = production.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    production.write_text(text)
    return production


def test_diff_of_two_production_files_in_words(tmp_path: Path) -> None:
    old = _copy(tmp_path, "old")
    new = _copy(tmp_path, "new",
                ('aliases = ["www.example.com", "xn--bcher-kva.example"]',
                 'aliases = ["www.example.com", "www.example.org"]'),
                ('[gigs.api-live]\nvenue = "example"\nsess = "api"',
                 '[gigs.api-live]\nvenue = "example"\nsess = "search"'),
                ('requirements = ["Django>=5.2,<6", "six==1.16.0"]',
                 'requirements = ["Django>=5.2,<6", "six==1.17.0"]'))
    run = run_cli("diff", str(old), str(new))
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert "venue example: alias www.example.org added" in lines
    assert "venue example: alias xn--bcher-kva.example removed" in lines
    assert "gig api-live: now routed to sess search (was api)" in lines
    assert "stage tools: requirements changed: +six==1.17.0 -six==1.16.0" in lines
    assert any(line.startswith("impact: start ") and "nginx: test and reload" in line for line in lines), lines
    assert run_cli("diff", str(old), str(new)).out == run.out  # byte-stable
    same = run_cli("diff", str(old), str(old))
    assert same.out.splitlines()[0] == "no change" and "nothing to switch" in same.out


def test_secret_values_are_never_shown(tmp_path: Path) -> None:
    old = _copy(tmp_path, "old", ('[acts.api]\n', '[acts.api]\nenv = { API_KEY = "hunter2", MODE = "a" }\n'))
    new = _copy(tmp_path, "new", ('[acts.api]\n', '[acts.api]\nenv = { API_KEY = "swordfish", MODE = "b" }\n'))
    run = run_cli("diff", str(old), str(new), "--json")
    assert run.code == 0, run.err
    assert "hunter2" not in run.out and "swordfish" not in run.out
    result = json.loads(run.out)
    assert result["format"] == 1
    changes = {(c["kind"], c["name"], c["change"]) for c in result["changes"]}
    assert ("act", "api", "env API_KEY changed") in changes
    assert ("act", "api", "env MODE changed: a → b") in changes


def test_diff_of_two_artifacts(tmp_path: Path) -> None:
    old = _copy(tmp_path, "old")
    new = _copy(tmp_path, "new", ('[gigs.api-live]\nvenue = "example"\nsess = "api"',
                                  '[gigs.api-live]\nvenue = "example"\nsess = "search"'))
    for production, out in ((old, "a"), (new, "b")):
        assert run_cli("build", str(production), "-o", str(tmp_path / out)).code == 0
    run = run_cli("diff", str(tmp_path / "a"), str(tmp_path / "b"))
    assert run.code == 0, run.err
    assert "gig api-live: now routed to sess search (was api)" in run.out.splitlines()
    assert "venue example: server changed" in run.out.splitlines()
