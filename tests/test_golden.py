"""Each example renders to exactly its committed golden tree; update with --update-golden."""

from __future__ import annotations

import shutil
from pathlib import Path

import backstage
import pytest
from backstage.phases import agentzip, layout
from conftest import EXAMPLES, example_cases, golden_dir

# Packed from the package into every artifact: compared with its source, not kept in golden trees.
VERBATIM = {"agent.pyz": agentzip.payload()}


def rendered(case: str) -> dict[str, bytes]:
    files = dict(backstage.compile(EXAMPLES / case / "production.toml").files)
    for name, content in VERBATIM.items():
        assert files.pop(name).content == content
    return {path: f.content for path, f in files.items()}


def golden_tree(case: str) -> dict[str, bytes]:
    root = golden_dir(case)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", example_cases())
def test_example_matches_golden(case: str, request: pytest.FixtureRequest) -> None:
    files = rendered(case)
    if request.config.getoption("--update-golden"):
        target = golden_dir(case)
        shutil.rmtree(target, ignore_errors=True)
        for rel, content in files.items():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_bytes(content)
    golden = golden_tree(case)
    assert sorted(files) == sorted(golden), f"file list of {case} differs from examples/{case}/golden"
    for rel, content in files.items():
        assert content == golden[rel], f"{case}/{rel} differs from golden; rerun with --update-golden if intended"


def test_every_example_has_a_golden_tree() -> None:
    assert {p.parent.name for p in EXAMPLES.glob("*/golden") if p.is_dir()} == set(example_cases())


def test_there_are_at_least_three_cases() -> None:
    assert {"minimal", "jazzclub", "shared-alpha", "shared-beta"} <= set(example_cases())


def test_shared_host_productions_never_clash() -> None:
    alpha, beta = (rendered(c) for c in ("shared-alpha", "shared-beta"))
    productions = [backstage.compile(EXAMPLES / c / "production.toml").production
                   for c in ("shared-alpha", "shared-beta")]
    a, b = productions
    assert a.host.vassals_dir == b.host.vassals_dir and a.host.nginx_dir == b.host.nginx_dir
    # What lands in the shared directories: vassal links and the nginx include link.
    vassal_names = [{Path(p).name for p in files if p.startswith("uwsgi/")} for files in (alpha, beta)]
    assert vassal_names[0] and vassal_names[1] and not vassal_names[0] & vassal_names[1]
    assert layout.nginx_link_name(a.name) != layout.nginx_link_name(b.name)
    assert len({a.state_dir, b.state_dir, a.run_dir, b.run_dir, a.log_dir, b.log_dir}) == 6
    hosts = [{h for v in p.venues.values() for h in v.hosts} for p in productions]
    assert not hosts[0] & hosts[1]
    sockets = [{line for f, c in files.items() if f.startswith("uwsgi/")
                for line in c.decode().splitlines() if line.startswith("socket")} for files in (alpha, beta)]
    assert not sockets[0] & sockets[1]


def test_closed_venue_answers_503() -> None:
    text = rendered("jazzclub")["nginx/sunday.conf"].decode()
    assert 'return 503 "closed\\n";' in text and "uwsgi_pass" not in text
