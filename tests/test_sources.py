"""Act sources and Stage lock files (version 2): what is copied, what is refused at its line, and the
build cache seeing a changed source."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from backstage.errors import InputError
from backstage.phases import pipeline
from conftest import run_cli

BASE = """\
[production]
name = "club"

[stages.main]
requirements = ["Django>=5.2,<6"]

[acts.web]
wsgi = "web.wsgi"
source = "app"
{extra}
[sesses.web]
act = "web"
stage = "main"
"""


def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "web").mkdir(parents=True)
    (root / "web" / "__init__.py").write_text("")
    (root / "web" / "wsgi.py").write_text("application = None\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)
    return root


def compiled(tmp_path: Path, extra: str = "") -> dict[str, tuple[int, bytes]]:
    path = tmp_path / "production.toml"
    path.write_text(BASE.format(extra=extra))
    files = pipeline.compile(path).files
    return {rel.removeprefix("acts/web/"): (f.mode, f.content) for rel, f in files.items() if rel.startswith("acts/")}


def refused(tmp_path: Path, text: str) -> list[tuple[str, int, str]]:
    path = tmp_path / "production.toml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        pipeline.compile(path)
    return [(d.code, d.line, d.path) for d in caught.value.diagnostics]


def test_source_files_are_copied_read_only_keeping_the_executable_bit(tmp_path: Path) -> None:
    app(tmp_path)
    files = compiled(tmp_path)
    assert files == {"run.sh": (0o555, b"#!/bin/sh\n"), "web/__init__.py": (0o444, b""),
                     "web/wsgi.py": (0o444, b"application = None\n")}


def test_git_ignored_and_excluded_files_are_left_out(tmp_path: Path) -> None:
    root = app(tmp_path)
    (root / "web" / "__pycache__").mkdir()
    (root / "web" / "__pycache__" / "wsgi.cpython-311.pyc").write_bytes(b"\0")
    (root / "local.sqlite3").write_text("db")
    (root / "media").mkdir()
    (root / "media" / "upload.png").write_text("png")
    (root / ".gitignore").write_text("*.sqlite3\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    files = compiled(tmp_path, 'exclude = ["/media/", "run.sh"]\n')
    assert sorted(files) == [".gitignore", "web/__init__.py", "web/wsgi.py"]


def test_an_unchanged_act_keeps_its_store_path_and_a_changed_one_gets_a_new_one(tmp_path: Path) -> None:
    root = app(tmp_path)
    path = tmp_path / "production.toml"
    path.write_text(BASE.format(extra=""))
    before = pipeline.compile(path).files["apply.json"].content
    assert pipeline.compile(path).files["apply.json"].content == before
    (root / "web" / "wsgi.py").write_text("application = 1\n")
    assert pipeline.compile(path).files["apply.json"].content != before


def test_a_symlink_leaving_the_source_is_refused_at_its_line(tmp_path: Path) -> None:
    root = app(tmp_path)
    os.symlink("/etc/passwd", root / "web" / "passwd")
    assert refused(tmp_path, BASE.format(extra="")) == [("BS211", 9, "acts.web.source")]


def test_a_fifo_in_the_source_is_refused(tmp_path: Path) -> None:
    root = app(tmp_path)
    os.mkfifo(root / "pipe")
    assert refused(tmp_path, BASE.format(extra="")) == [("BS211", 9, "acts.web.source")]


def test_a_missing_source_and_a_missing_lock_are_both_reported(tmp_path: Path) -> None:
    text = BASE.format(extra="").replace('requirements = ["Django>=5.2,<6"]', 'lock = "no-such.lock"')
    assert refused(tmp_path, text) == [("BS212", 5, "stages.main.lock"), ("BS211", 9, "acts.web.source")]


@pytest.mark.parametrize(("change", "code", "line", "key"), [
    (('source = "app"', 'source = "app"\npath = "/srv/web"'), "BS209", 9, "acts.web.source"),
    (('source = "app"', ''), "BS209", 7, "acts.web"),
    (('requirements = ["Django>=5.2,<6"]', 'requirements = ["Django"]\nvirtualenv = "/srv/venv"'), "BS210", 5,
     "stages.main.requirements"),
    (('requirements = ["Django>=5.2,<6"]', 'requirements = ["Django"]\nlock = "x.lock"'), "BS210", 5,
     "stages.main.requirements"),
    (('requirements = ["Django>=5.2,<6"]', 'virtualenv = "/srv/venv"\npython = "python3.11"'), "BS210", 6,
     "stages.main.python"),
    (('source = "app"', 'path = "/srv/web"\n[acts.web.django]\ncollectstatic = "/static/"'), "BS213", 11,
     "acts.web.django.collectstatic"),
    (('source = "app"', 'source = "app"\n[acts.web.django]\nrelease = [["/bin/sh", "-c", "id"]]'), "BS213", 11,
     "acts.web.django.release[0][0]"),
])
def test_version_2_rules(change: tuple[str, str], code: str, line: int, key: str, tmp_path: Path) -> None:
    app(tmp_path)
    text = BASE.format(extra="").replace(*change)
    assert (code, line, key) in refused(tmp_path, text)


def test_the_build_cache_sees_a_changed_source(tmp_path: Path) -> None:
    root = app(tmp_path)
    path = tmp_path / "production.toml"
    path.write_text(BASE.format(extra=""))
    first = run_cli("build", str(path), "-o", str(tmp_path / "out"))
    again = run_cli("build", str(path), "-o", str(tmp_path / "out"))
    assert "unchanged:" in again.err and again.out == first.out
    (root / "web" / "wsgi.py").write_text("application = 2\n")
    changed = run_cli("build", str(path), "-o", str(tmp_path / "out"))
    assert "built:" in changed.err and changed.out != first.out
    (root / "web" / "new.py").write_text("")
    added = run_cli("build", str(path), "-o", str(tmp_path / "out"))
    assert "built:" in added.err and added.out != changed.out


def _build(path: Path, out: Path) -> tuple[str, str]:
    """(artifact path, summary line) of `backstage build`, which must succeed."""
    run = run_cli("build", str(path), "-o", str(out))
    assert run.code == 0, run.err
    return run.out.strip(), run.err.splitlines()[0]


def _clean(path: Path, tmp_path: Path) -> str:
    """The artifact a build into a fresh OUT gives: its name."""
    fresh = tmp_path / f"clean-{len(list(tmp_path.glob('clean-*')))}"
    return Path(_build(path, fresh)[0]).name


def test_the_same_file_in_another_directory_reads_that_directorys_sources(tmp_path: Path) -> None:
    for side in ("a", "b"):
        app(tmp_path / side)
        (tmp_path / side / "production.toml").write_text(BASE.format(extra=""))
    (tmp_path / "b" / "app" / "web" / "wsgi.py").write_text("application = 'b'\n")
    out = tmp_path / "out"
    first, _ = _build(tmp_path / "a" / "production.toml", out)
    second, said = _build(tmp_path / "b" / "production.toml", out)
    assert said.startswith("built:") and Path(second).name == _clean(tmp_path / "b" / "production.toml", tmp_path)
    assert second != first


def test_a_changed_ignore_rule_outside_the_source_rebuilds(tmp_path: Path) -> None:
    root = app(tmp_path / "repo")
    (root / "notes.txt").write_text("kept out once the parent ignores it\n")
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    path = tmp_path / "repo" / "production.toml"
    path.write_text(BASE.format(extra=""))
    out = tmp_path / "out"
    first, _ = _build(path, out)
    assert (Path(first) / "acts" / "web" / "notes.txt").is_file()
    (tmp_path / "repo" / ".gitignore").write_text("notes.txt\n")
    again, said = _build(path, out)
    assert said.startswith("built:") and not (Path(again) / "acts" / "web" / "notes.txt").exists()
    assert Path(again).name == _clean(path, tmp_path)


def test_a_lock_behind_a_symlink_rebuilds_when_the_file_it_names_changes(tmp_path: Path) -> None:
    app(tmp_path)
    (tmp_path / "v1.lock").write_text("django==5.2.1\n")
    (tmp_path / "requirements.lock").symlink_to("v1.lock")
    path = tmp_path / "production.toml"
    path.write_text(BASE.format(extra="").replace('requirements = ["Django>=5.2,<6"]', 'lock = "requirements.lock"'))
    out = tmp_path / "out"
    first, _ = _build(path, out)
    with open(tmp_path / "v1.lock", "a") as lock:
        lock.write("six==1.17.0\n")
    again, said = _build(path, out)
    assert said.startswith("built:") and again != first and Path(again).name == _clean(path, tmp_path)


def test_an_edit_keeping_size_and_mtime_rebuilds(tmp_path: Path) -> None:
    root = app(tmp_path)
    path = tmp_path / "production.toml"
    path.write_text(BASE.format(extra=""))
    out = tmp_path / "out"
    first, _ = _build(path, out)
    wsgi = root / "web" / "wsgi.py"
    before = wsgi.stat()
    wsgi.write_text("application = Nope\n")
    assert wsgi.stat().st_size == before.st_size
    os.utime(wsgi, ns=(before.st_atime_ns, before.st_mtime_ns))
    again, said = _build(path, out)
    assert said.startswith("built:") and again != first


def test_a_source_git_cannot_list_is_refused_not_copied_whole(tmp_path: Path) -> None:
    root = app(tmp_path)
    (root / ".env").write_text("SECRET=1\n")
    (root / ".gitignore").write_text(".env\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    path = tmp_path / "production.toml"
    path.write_text(BASE.format(extra=""))
    run = run_cli("build", str(path), "-o", str(tmp_path / "out"), env={**os.environ, "PATH": "/nonexistent"})
    assert run.code == 1 and "Traceback" not in run.err, run.err
    assert "BS211" in run.err and "is in a git work tree, but git cannot list it" in run.err, run.err
    assert not (tmp_path / "out").exists()


def _copied_output(artifact: Path) -> list[str]:
    code = artifact / "acts" / "web"
    return [str(p.relative_to(code)) for p in code.rglob("*") if p.relative_to(code).parts[0] == "artifacts"]


def test_a_build_into_its_own_source_leaves_its_output_out(tmp_path: Path) -> None:
    root = app(tmp_path)
    (root / "deploy").mkdir()
    path = root / "deploy" / "production.toml"
    path.write_text(BASE.format(extra="").replace('source = "app"', 'source = ".."'))
    out = root / "artifacts"  # inside the source, as `backstage build` from the app's root makes it
    first, _ = _build(path, out)
    assert not _copied_output(Path(first))
    assert (out / "CACHEDIR.TAG").read_bytes().startswith(b"Signature: 8a477f597d28d172789f06886806bc55")
    again, said = _build(path, out)
    assert said.startswith("unchanged:") and again == first
    (root / "web" / "wsgi.py").write_text("application = 3\n")
    third, said = _build(path, out)
    assert said.startswith("built:") and not _copied_output(Path(third))
    assert Path(third).name == _clean(path, tmp_path)
