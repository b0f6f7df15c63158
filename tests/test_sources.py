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
