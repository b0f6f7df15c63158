"""Every reporting verb takes `--json`, and every JSON document it prints carries "format": 1 at the top:
build and check (their input errors too), plan and apply --dry-run, rollback --dry-run, generations,
diff and route."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from backstage.cli.sandbox import find_components
from conftest import EXAMPLES, run_cli
from harness import TestSandbox
from test_apply import apply, build, production

BAD = '[production]\nname = "ok"\nfoo = 1\n'
FOO_ERROR = {"line": 3, "col": 1, "code": "BS101", "path": "production.foo", "message": "unknown key `foo`",
             "hint": "allowed keys: log_dir, name, rollout, run_dir, state_dir"}


def document(out: str) -> dict[str, Any]:
    """stdout as one JSON object with "format": 1 at its top level."""
    found = json.loads(out)
    assert isinstance(found, dict), found
    assert found["format"] == 1, found
    return found


def example(tmp_path: Path, name: str = "minimal") -> Path:
    target = tmp_path / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("golden"))
    return target / "production.toml"


# ---- build and check: no host needed -----------------------------------------------------------------

def test_check_json_on_success_is_a_document_with_no_errors(tmp_path: Path) -> None:
    run = run_cli("check", str(example(tmp_path)), "--json")
    assert run.code == 0, run.err
    assert document(run.out) == {"format": 1, "errors": []}


@pytest.mark.parametrize("verb", ["check", "build"])
def test_input_errors_are_one_document_with_format_1(tmp_path: Path, verb: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    run = run_cli(verb, str(bad), "--json", *(["-o", str(tmp_path / "out")] if verb == "build" else []))
    assert run.code == 1
    assert document(run.out) == {"format": 1, "errors": [{"file": str(bad), **FOO_ERROR}]}
    assert not (tmp_path / "out").exists()


def test_build_json_names_the_artifact(tmp_path: Path) -> None:
    source, out = example(tmp_path), tmp_path / "out"
    first = document(run_cli("build", str(source), "-o", str(out), "--json").out)
    assert first["errors"] == [] and first["unchanged"] is False
    assert Path(first["artifact"]) == (out / "result").resolve()
    again = document(run_cli("build", str(source), "-o", str(out), "--json").out)
    assert again == {**first, "unchanged": True}
    assert run_cli("build", str(source), "-o", str(out)).out == f"{first['artifact']}\n"  # words: the path only


def test_diff_and_route_json_carry_format_1(tmp_path: Path) -> None:
    old, new = example(tmp_path / "old", "jazzclub"), example(tmp_path / "new", "jazzclub")
    assert document(run_cli("diff", str(old), str(new), "--json").out)["changes"] == []
    assert document(run_cli("route", "https://example.com/api", str(new), "--json").out)["answers"]
    assert "unreachable" in document(run_cli("route", "--unreachable", str(new), "--json").out)


def test_json_errors_of_other_verbs_are_documents_too(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    for argv in (["diff", str(bad), str(bad)], ["route", "http://example.org/", str(bad)]):
        run = run_cli(*argv, "--json")
        assert run.code == 1, argv
        assert document(run.out)["errors"][0]["code"] == "BS101", argv


def test_rollback_json_is_a_plan_only(tmp_path: Path) -> None:
    run = run_cli("rollback", str(tmp_path), "--json")
    assert run.code == 2 and "--dry-run" in run.err, run.err


# ---- the host's verbs: two generations applied to a sandbox ------------------------------------------

@dataclass
class Applied:
    state: Path
    artifacts: dict[int, Path]


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Applied]:
    find_components()
    tmp = tmp_path_factory.mktemp("json")
    with TestSandbox(tmp / "sandbox") as sandbox:
        artifacts = {gen: build(production(tmp, sandbox, gen), tmp / "build") for gen in (1, 2)}
        for gen in (1, 2):
            code, out, err = apply(artifacts[gen])
            assert code == 0, out + err
        yield Applied(tmp / "state", artifacts)


def test_generations_json(applied: Applied) -> None:
    run = run_cli("generations", str(applied.state), "--json")
    assert run.code == 0, run.err
    found = document(run.out)
    one, two = (applied.artifacts[gen].name for gen in (1, 2))
    assert [(g["name"], g["live"]) for g in found["generations"]] == [(one, False), (two, True)]
    assert all(g["seq"] > 0 and g["applied"] and g["dns"] == [] for g in found["generations"])
    assert found["generations"][0]["seq"] < found["generations"][1]["seq"]


def test_rollback_dry_run_json_is_the_plan_of_the_target(applied: Applied) -> None:
    run = run_cli("rollback", str(applied.state), "--dry-run", "--json")
    assert run.code == 0, run.err
    found = document(run.out)
    assert found["artifact"] == applied.artifacts[1].name and found["live"] == applied.artifacts[2].name
    assert f"would roll back to {applied.artifacts[1].name}" in run.err
    words = run_cli("rollback", str(applied.state), "--dry-run")
    assert words.out.splitlines()[0] == f"would roll back to {applied.artifacts[1].name}"


def test_plan_and_apply_dry_run_json(applied: Applied) -> None:
    planned = document(run_cli("plan", str(applied.artifacts[1]), "--json").out)
    assert planned["artifact"] == applied.artifacts[1].name
    dry = run_cli("apply", str(applied.artifacts[1]), "--dry-run", "--json")
    assert document(dry.out) == planned
