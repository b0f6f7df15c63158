"""The `backstage` command: build, determinism, caching, graph, schema, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from backstage import contract
from backstage.files import remove_tree
from backstage.phases import cache
from backstage.phases.layout import File
from conftest import EXAMPLES, REPO, example_cases, run_cli


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (stat.S_IMODE(p.stat().st_mode), p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", example_cases())
def test_builds_are_byte_identical_across_dirs_hash_seeds_and_locales(case: str, tmp_path: Path) -> None:
    source = EXAMPLES / case / "production.toml"
    first = run_cli("build", str(source), "-o", str(tmp_path / "one"),
                    env=os.environ | {"PYTHONHASHSEED": "1", "LC_ALL": "C"})
    # The examples with what they point at (Act sources, lock files), outside any git work tree.
    shutil.copytree(EXAMPLES, tmp_path / "elsewhere", ignore=shutil.ignore_patterns("golden"))
    copy = tmp_path / "elsewhere" / case / "production.toml"
    second = run_cli("build", "production.toml", "-o", str(tmp_path / "two"), cwd=copy.parent,
                     env=os.environ | {"PYTHONHASHSEED": "4242", "LC_ALL": "C.UTF-8", "TZ": "Asia/Tokyo"})
    assert first.code == 0 and second.code == 0, first.err + second.err
    one, two = Path(first.out.strip()), Path(second.out.strip())
    assert one.name == two.name
    assert tree(one) == tree(two)
    assert str(tmp_path) not in "".join(c.decode(errors="replace") for _, c in tree(one).values())


def test_build_prints_path_and_summary_and_links_result(tmp_path: Path) -> None:
    run = run_cli("build", str(EXAMPLES / "jazzclub" / "production.toml"), "-o", str(tmp_path / "out"))
    assert run.code == 0, run.err
    path = Path(run.out.strip())
    assert path.parent == tmp_path / "out" and path.name.startswith("jazzclub-")
    assert "built: 4 vassals, 4 venues (1 closed), 5 gigs" in run.err
    result = tmp_path / "out" / "result"
    assert result.is_symlink() and os.readlink(result) == path.name
    files = tree(path)
    assert files["install.sh"][0] == 0o555
    assert all(mode == 0o444 for name, (mode, _) in files.items()
               if name != "install.sh" and not name.startswith("acts/"))
    assert files["acts/blog/manage.py"][0] == 0o555 and files["acts/blog/blog/settings.py"][0] == 0o444
    manifest = json.loads(files["manifest.json"][1])
    assert manifest["production"] == "jazzclub"
    assert [f["path"] for f in manifest["files"]] == sorted(n for n in files if n != "manifest.json")


def test_default_output_is_artifacts_in_the_working_directory(tmp_path: Path) -> None:
    run = run_cli("build", str(EXAMPLES / "minimal" / "production.toml"), cwd=tmp_path)
    assert run.code == 0, run.err
    assert Path(run.out.strip()).parent == Path("artifacts") and (tmp_path / "artifacts" / "result").is_symlink()
    assert not (tmp_path / "build").exists()  # setuptools' directory is left alone


def test_the_artifact_name_is_the_hash_of_its_content(tmp_path: Path) -> None:
    run = run_cli("build", str(EXAMPLES / "minimal" / "production.toml"), "-o", str(tmp_path))
    path = Path(run.out.strip())
    found = {rel: File(content, mode) for rel, (mode, content) in tree(path).items()}
    tree_hash = contract.tree_hash((rel, f.mode, f.content) for rel, f in found.items())
    assert path.name == f"minimal-{tree_hash[:32]}"


def test_rebuilding_identical_input_is_a_noop_with_the_same_path(tmp_path: Path) -> None:
    source = tmp_path / "production.toml"
    source.write_bytes((EXAMPLES / "minimal" / "production.toml").read_bytes())
    first = run_cli("build", str(source), "-o", str(tmp_path / "out"))
    artifact_dir = Path(first.out.strip())
    before = artifact_dir.stat().st_mtime_ns
    second = run_cli("build", str(source), "-o", str(tmp_path / "out"))
    assert second.out == first.out and "unchanged:" in second.err
    assert artifact_dir.stat().st_mtime_ns == before
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("minimal-")] == [artifact_dir.name]



_IMPORTED = """\
import sys
from backstage.cli import main
code = main(sys.argv[1:])
print(" ".join(sorted(name for name in sys.modules if name.split(".")[0] in
                      {"backstage", "jinja2", "jsonschema", "networkx", "tomllib", "subprocess"})))
sys.exit(code)
"""


def test_each_build_imports_only_what_it_needs(tmp_path: Path) -> None:
    """A build imports no jsonschema, networkx or tomllib (the fast paths read and check a valid file),
    and a rebuild of unchanged input none of the phases, contract or Jinja2: the cache answers it. (The
    copy is in no git work tree: a source in one has git asked what it lists, by a subprocess.)"""
    shutil.copytree(EXAMPLES / "jazzclub", tmp_path / "jazzclub")
    command = [sys.executable, "-c", _IMPORTED, "build", str(tmp_path / "jazzclub" / "production.toml"),
               "-o", str(tmp_path / "out")]
    full, unchanged = (subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
                       for _ in range(2))
    assert {"backstage.phases.render", "jinja2"} <= set(full)
    assert not {"jsonschema", "networkx", "tomllib"} & {name.split(".")[0] for name in full}, full
    assert unchanged and "backstage.phases.cache" in unchanged
    assert not [name for name in unchanged if name.split(".")[0] in {"jinja2", "jsonschema", "networkx", "tomllib"}
                or name in {"backstage.contract", "backstage.phases.artifact", "backstage.phases.render",
                            "backstage.phases.check", "backstage.phases.model", "subprocess"}], unchanged


def test_the_cache_knows_the_manifest_by_its_contract_name() -> None:
    assert cache.MANIFEST == contract.MANIFEST

def test_a_changed_input_always_rebuilds(tmp_path: Path) -> None:
    source = tmp_path / "production.toml"
    text = (EXAMPLES / "minimal" / "production.toml").read_text()
    source.write_text(text)
    first = run_cli("build", str(source), "-o", str(tmp_path / "out"))
    source.write_text(text.replace('domain = "example.org"', 'domain = "example.net"'))
    second = run_cli("build", str(source), "-o", str(tmp_path / "out"))
    assert second.code == 0 and "built:" in second.err and second.out != first.out
    assert b"example.net" in (Path(second.out.strip()) / "nginx" / "www.conf").read_bytes()
    assert os.readlink(tmp_path / "out" / "result") == Path(second.out.strip()).name


def test_a_cache_entry_without_its_artifact_rebuilds(tmp_path: Path) -> None:
    source = str(EXAMPLES / "minimal" / "production.toml")
    first = Path(run_cli("build", source, "-o", str(tmp_path)).out.strip())
    remove_tree(first)
    second = run_cli("build", source, "-o", str(tmp_path))
    assert "built:" in second.err and Path(second.out.strip()) == first and first.is_dir()


def test_bad_input_exits_1_without_traceback_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[production]\nname = "x y"\n')
    run = run_cli("build", str(bad), "-o", str(tmp_path / "out"))
    assert run.code == 1
    assert f"{bad}:2:1: BS122 production.name:" in run.err
    assert "Traceback" not in run.err + run.out
    assert not (tmp_path / "out").exists()


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    run = run_cli("build", str(tmp_path / "nope.toml"), "-o", str(tmp_path / "out"))
    assert run.code == 1 and "BS001" in run.err and not (tmp_path / "out").exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_cli("build").code == 2
    assert run_cli("frobnicate").code == 2
    assert run_cli("graph", str(EXAMPLES / "minimal" / "production.toml"), "--format", "png").code == 2


def test_json_errors_for_editors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[production]\nname = "ok"\nfoo = 1\n')
    run = run_cli("build", "--json", str(bad), "-o", str(tmp_path / "out"))
    assert run.code == 1
    errors = json.loads(run.out)
    assert errors["format"] == 1
    assert errors["errors"] == [{"file": str(bad), "line": 3, "col": 1, "code": "BS101", "path": "production.foo",
                                 "message": "unknown key `foo`",
                                 "hint": "allowed keys: log_dir, name, rollout, run_dir, state_dir"}]


def test_graph_prints_dot_with_needs_edges() -> None:
    run = run_cli("graph", str(EXAMPLES / "jazzclub" / "production.toml"))
    assert run.code == 0
    assert run.out.startswith('digraph "jazzclub" {')
    assert '"sess:blog" -> "sess:api" [label="needs"];' in run.out
    assert '"gig:blog-live" -> "venue:example" [label="at"];' in run.out
    assert '"venue:sunday"' in run.out


def test_graph_svg_uses_graphviz() -> None:
    run = run_cli("graph", str(EXAMPLES / "minimal" / "production.toml"), "--format", "svg")
    assert run.code == 0, run.err
    assert "<svg" in run.out and "gig site" in run.out


def test_schema_prints_the_shipped_schema() -> None:
    run = run_cli("schema")
    assert json.loads(run.out) == json.loads((REPO / "schema" / "production.schema.json").read_text())


def test_check_verb_writes_nothing(tmp_path: Path) -> None:
    run = run_cli("check", str(EXAMPLES / "jazzclub" / "production.toml"), cwd=tmp_path)
    assert run.code == 0 and list(tmp_path.iterdir()) == []
