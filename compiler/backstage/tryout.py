"""`backstage try`: build a production and run it live in a private sandbox on 127.0.0.1.

The production is built as written, except for what plugs it into a host: [host], its three
directories, each Venue's listen (all on the sandbox's one port; TLS dropped) and the Stages' uid/gid
(the sandbox runs as you). --path-map moves absolute paths, so an example can run from a checkout.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import apply, artifact, check, load, model
from .sandbox import Sandbox, SandboxError

__all__ = ["SandboxError", "parse_path_map", "run"]


def parse_path_map(items: list[str]) -> list[tuple[str, str]]:
    maps = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old.startswith("/"):
            raise ValueError(f"--path-map wants /ABSOLUTE=DIR, got {item!r}")
        maps.append((old.rstrip("/"), str(Path(new).resolve())))
    return maps


def _moved(path: str, maps: list[tuple[str, str]]) -> str:
    for old, new in maps:
        if path == old or path.startswith(old + "/"):
            return new + path[len(old):]
    return path


def sandboxed(data: dict[str, Any], sandbox: Sandbox, root: Path, maps: list[tuple[str, str]]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    data["production"].update(state_dir=str(root / "state"), run_dir=str(root / "run"), log_dir=str(root / "log"))
    data["host"] = sandbox.host_table()
    for venue in data.get("venues", {}).values():
        venue["listen"] = sandbox.listen
        venue.pop("tls", None)
    for stage in data.get("stages", {}).values():
        stage.pop("uid", None)
        stage.pop("gid", None)
        stage["virtualenv"] = _moved(stage["virtualenv"], maps)
        if not Path(stage["virtualenv"], "bin").is_dir():
            stage["virtualenv"] = sys.prefix  # not on this machine: run with backstage's own Python
    for act in data.get("acts", {}).values():
        act["path"] = _moved(act["path"], maps)
        act["static"] = {prefix: _moved(d, maps) for prefix, d in act.get("static", {}).items()}
    return data


def run(production_file: str, port: int | None, maps: list[tuple[str, str]]) -> int:
    loaded = load.load_file(production_file)
    check.check(loaded)
    root = Path(tempfile.mkdtemp(prefix="bs-try-"))
    try:
        with Sandbox(root / "sandbox", http_port=port) as sandbox:
            data = sandboxed(loaded.data, sandbox, root, maps)
            check.check(load.Loaded(data, loaded.source, loaded.input_hash))
            production = model.build(data)
            files = artifact.assemble(production, loaded.input_hash)
            built = artifact.write(files, root / "build", f"{production.name}-{artifact.tree_hash(files)[:32]}")
            if apply.run_installer(built / "install.sh", "apply") != 0:
                return 1
            print(f"{production.name} is live in {root}; Ctrl-C stops it.")
            for gig in production.gigs.values():
                venue = production.venues[gig.venue]
                print(f"  gig {gig.name}: curl -H 'Host: {venue.domain}' http://{sandbox.listen}{gig.path}")
            for venue in production.venues.values():
                if not any(g.venue == venue.name for g in production.gigs.values()):
                    print(f"  venue {venue.name} (closed): curl -H 'Host: {venue.domain}' http://{sandbox.listen}/")
            sys.stdout.flush()
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("stopping", file=sys.stderr)
        return 0
    finally:
        artifact.remove_tree(root)
