"""A rebuild after a small change renders only what the change reaches, and gives the very artifact a
clean build of the same input gives, byte for byte."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from backstage.phases import pipeline
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import generate

N = 300


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _edit(text: str, table: str, key: str, old: str, new: str) -> str:
    head = text.index(f"[{table}]\n")
    at = text.index(f"{key} = {old}", head)
    assert at < text.find("\n[", head + 1), f"{table} has no {key} = {old}"
    return text[:at] + f"{key} = {new}" + text[at + len(f"{key} = {old}"):]


@pytest.fixture(scope="module")
def production() -> str:
    return generate.to_toml(generate.generate(N))


def _first(text: str, prefix: str, key: str) -> tuple[str, str]:
    """The first table named [prefix...] that sets `key`, and its value as written."""
    for block in text.split("\n["):
        header, _, body = block.partition("]\n")
        if header.startswith(prefix):
            for line in body.splitlines():
                if line.startswith(f"{key} = "):
                    return header, line.removeprefix(f"{key} = ")
    raise AssertionError(f"no [{prefix}...] with {key}")


@pytest.mark.parametrize("change", ["gig path", "sess processes", "venue aliases"])
def test_a_rebuild_renders_only_what_changed_and_equals_a_clean_build(
        production: str, change: str, tmp_path: Path) -> None:
    source = tmp_path / "production.toml"
    source.write_text(production)
    out = tmp_path / "out"
    first = pipeline.build(source, out)
    assert first.reused == 0 and first.rendered > N // 2
    if change == "gig path":
        table, old = _first(production, "gigs.", "path")
        edited = _edit(production, table, "path", old, '"/moved-here/"')
        expected = 1  # its Venue's server file
    elif change == "sess processes":
        # A Sess nobody needs: its own vassal changes, and the server files that route to it (their
        # upstream is the vassal's socket, whose name holds the vassal's hash).
        table, old = _first(production, "sesses.", "processes")
        edited = _edit(production, table, "processes", old, "7")
        expected = None
    else:
        table, old = _first(production, "venues.", "aliases")
        edited = _edit(production, table, "aliases", old, '["alias.changed.test"]')
        expected = None
    source.write_text(edited)
    again = pipeline.build(source, out)
    clean = pipeline.build(source, tmp_path / "clean")
    assert again.path.name == clean.path.name
    assert tree(again.path) == tree(clean.path)
    assert again.path.name != first.path.name
    assert again.rendered + again.reused == first.rendered
    if expected is not None:
        assert again.rendered == expected, (again.rendered, again.reused)
    assert 1 <= again.rendered <= first.rendered // 10, (again.rendered, again.reused)


def test_a_memo_from_another_compiler_is_not_used(production: str, tmp_path: Path) -> None:
    source = tmp_path / "production.toml"
    source.write_text(production)
    out = tmp_path / "out"
    pipeline.build(source, out)
    memo = out / ".cache" / "renders.json"
    kept = json.loads(memo.read_text())
    kept["compiler"] = "0" + kept["compiler"][1:]
    memo.write_text(json.dumps(kept))
    source.write_text(production.replace("\n[gigs.", "\n# a comment\n[gigs.", 1))
    again = pipeline.build(source, out)
    assert again.reused == 0
