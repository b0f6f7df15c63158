"""`backstage apply` refuses an artifact that is not exactly what was built, before touching the host."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from backstage import contract
from conftest import run_cli

PRODUCTION = """\
[production]
name = "guarded"
state_dir = "{tmp}/state"
run_dir = "{tmp}/run"
log_dir = "{tmp}/log"

[host]
vassals_dir = "{tmp}/vassals"
nginx_dir = "{tmp}/sites"
nginx = ["/bin/false"]

[stages.main]
virtualenv = "/srv/venv"

[acts.site]
wsgi = "site.wsgi"
path = "/srv/site"

[sesses.site]
act = "site"
stage = "main"

[venues.www]
domain = "guarded.test"

[gigs.site]
venue = "www"
sess = "site"
"""


def writable_dirs(path: Path) -> None:
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    os.chmod(path, 0o755)


def rewrite(path: Path, text: str) -> None:
    """Change a file's bytes and keep its mode, as a careful forger would."""
    mode = path.stat().st_mode
    os.chmod(path, 0o644)
    path.write_text(text)
    os.chmod(path, mode)


def change_content(a: Path) -> str:
    rewrite(a / "nginx" / "www.conf", "server { listen 80; }\n")
    return "nginx/www.conf was changed after the build"


def change_mode(a: Path) -> str:
    os.chmod(a / "install.sh", 0o777)
    return "install.sh was changed after the build"


def add_file(a: Path) -> str:
    (a / "uwsgi" / "guarded--evil--00000000.ini").write_text("[uwsgi]\nexec-as-root = id\n")
    return "files not in the manifest ['uwsgi/guarded--evil--00000000.ini']"


def remove_file(a: Path) -> str:
    (a / "nginx" / "www.conf").unlink()
    return "files missing ['nginx/www.conf']"


def rewrite_manifest(a: Path) -> str:
    # A consistent forgery: a changed file and a manifest updated to match it. Only the name catches it.
    venue = a / "nginx" / "www.conf"
    rewrite(venue, venue.read_text().replace("server_tokens off;", "server_tokens on;"))
    manifest = json.loads((a / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == "nginx/www.conf":
            entry["sha256"] = hashlib.sha256(venue.read_bytes()).hexdigest()
    rewrite(a / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return "the manifest does not match the artifact"


def symlink_outside(a: Path) -> str:
    (a / "nginx" / "www.conf").unlink()
    (a / "nginx" / "www.conf").symlink_to("/etc/passwd")
    return "nginx/www.conf is a symlink (to /etc/passwd)"


def future_format(a: Path) -> str:
    manifest = json.loads((a / "manifest.json").read_text())
    manifest["format"], manifest["backstage"] = 99, "99.0.0"
    rewrite(a / "manifest.json", json.dumps(manifest))
    return f"artifact format 99 (backstage '99.0.0') is not format {contract.FORMAT}"


def fifo_inside(a: Path) -> str:
    os.mkfifo(a / "uwsgi" / "listen.fifo")  # reading it would block verification forever
    return "uwsgi/listen.fifo is a FIFO; artifacts hold regular files only"


def socket_inside(a: Path) -> str:
    import socket

    here = os.getcwd()
    os.chdir(a / "nginx")  # a relative name: the absolute path is longer than a socket address allows
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("x.sock")
    finally:
        os.chdir(here)
    return "nginx/x.sock is a socket; artifacts hold regular files only"


def deep_tree(a: Path) -> str:
    deep = a / "stages"
    deep.mkdir()
    for _ in range(1100):
        deep = deep / "d"
        deep.mkdir()
    return "is nested deeper than 16 levels"


def hard_link_outside(a: Path) -> str:
    outside = a.parent / "outside.conf"
    os.link(a / "nginx" / "www.conf", outside)  # the same file, reachable from outside the artifact
    return "nginx/www.conf has 2 hard links; artifacts hold files of one"


@pytest.mark.parametrize("tamper", [change_content, change_mode, add_file, remove_file, rewrite_manifest,
                                    symlink_outside, future_format, fifo_inside, socket_inside, deep_tree,
                                    hard_link_outside], ids=lambda f: f.__name__)
def test_apply_refuses_and_leaves_the_host_untouched(tamper: Callable[[Path], str], tmp_path: Path) -> None:
    source = tmp_path / "production.toml"
    source.write_text(PRODUCTION.format(tmp=tmp_path / "host"))
    built = run_cli("build", str(source), "-o", str(tmp_path / "build"))
    assert built.code == 0, built.err
    artifact = tmp_path / "copy" / Path(built.out.strip()).name
    shutil.copytree(Path(built.out.strip()), artifact)
    writable_dirs(artifact)
    message = tamper(artifact)
    try:
        run = run_cli("apply", str(artifact))
    finally:
        remove_deep(artifact / "stages" / "d")
    assert run.code == 1
    assert "refusing to apply" in run.err and message in run.err, run.err
    assert "Traceback" not in run.err
    assert not (tmp_path / "host").exists()


def remove_deep(top: Path) -> None:
    """Remove a chain of nested directories bottom-up without recursion (pytest's own clean-up of old
    temporary directories recurses, and would fail on 1,100 levels)."""
    chain = []
    while top.is_dir():
        chain.append(top)
        top = top / "d"
    for directory in reversed(chain):
        directory.rmdir()


def test_an_untampered_copy_passes_verification(tmp_path: Path) -> None:
    source = tmp_path / "production.toml"
    source.write_text(PRODUCTION.format(tmp=tmp_path / "host"))
    built = Path(run_cli("build", str(source), "-o", str(tmp_path / "build")).out.strip())
    from backstage import contract
    assert contract.verify(built).production == "guarded"
