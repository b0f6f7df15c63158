"""`backstage try`: build a production and run it live in a private sandbox on 127.0.0.1.

The production is built as written, except for what plugs it into a host: [host], its three
directories, each Venue's listen (all on the sandbox's one port; TLS dropped) and the Stages' uid/gid
(the sandbox runs as you). --path-map moves absolute paths, so an example can run from a checkout.
The file is checked as written first; the changes are then an overlay on the loaded file, checked
again: an error in a value the overlay set is reported as `backstage try: ...`, every other error at
its line in the file.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import compile as compile_production
from ..contract import INSTALLER
from ..errors import CONTROL
from ..files import remove_tree
from ..phases import artifact
from ..phases.load import KeyPath
from ..phases.pipeline import check_file
from . import handoff
from .sandbox import Sandbox, SandboxError

__all__ = ["SandboxError", "overlay", "parse_path_map", "run"]

LABEL = "backstage try"
PathMap = list[tuple[str, str]]


def parse_path_map(items: list[str]) -> PathMap:
    maps = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old.startswith("/"):
            raise ValueError(f"--path-map wants /ABSOLUTE=DIR, got {item!r}")
        maps.append((old.rstrip("/"), str(Path(new).resolve())))
    return maps


def _moved(path: str, maps: PathMap) -> str:
    for old, new in maps:
        if path == old or path.startswith(old + "/"):
            return new + path[len(old):]
    return path


def _entries(data: dict[str, Any], table: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The entries of a [table.NAME] table that are tables; anything else is left for check to report."""
    entries = data.get(table)
    if isinstance(entries, dict):
        for name, entry in entries.items():
            if isinstance(entry, dict):
                yield name, entry


def _missing_here(virtualenv: str) -> bool:
    """Whether a well-formed virtualenv path has no bin/ on this machine (a malformed one is check's)."""
    return os.path.isabs(virtualenv) and not CONTROL.search(virtualenv) and not Path(virtualenv, "bin").is_dir()


def overlay(sandbox: Sandbox, root: Path, maps: PathMap) -> Callable[[dict[str, Any]], list[KeyPath]]:
    """The pipeline's overlay: plug the loaded production into `sandbox`, returning the key paths it set."""

    def plug(data: dict[str, Any]) -> list[KeyPath]:
        placed: list[KeyPath] = []

        def put(table: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
            """Set table[path[-1]] (path: its key path in the file) to value, noting the path if it changed."""
            if table.get(path[-1]) != value:
                table[path[-1]] = value
                placed.append(path)

        production = data.get("production")
        if isinstance(production, dict):
            for key in ("state_dir", "run_dir", "log_dir"):
                put(production, ("production", key), str(root / key.removesuffix("_dir")))
        data["host"] = sandbox.host_table()
        placed.append(("host",))
        for name, venue in _entries(data, "venues"):
            put(venue, ("venues", name, "listen"), sandbox.listen)
            venue.pop("tls", None)
        for name, stage in _entries(data, "stages"):
            stage.pop("uid", None)
            stage.pop("gid", None)
            virtualenv = stage.get("virtualenv")
            if isinstance(virtualenv, str):
                virtualenv = _moved(virtualenv, maps)
                if _missing_here(virtualenv):
                    virtualenv = sys.prefix  # not on this machine: run with backstage's own Python
                put(stage, ("stages", name, "virtualenv"), virtualenv)
        for name, act in _entries(data, "acts"):
            if isinstance(act.get("path"), str):
                put(act, ("acts", name, "path"), _moved(act["path"], maps))
            static = act.get("static")
            if isinstance(static, dict):
                for prefix, directory in static.items():
                    if isinstance(directory, str):
                        put(static, ("acts", name, "static", prefix), _moved(directory, maps))
        return placed

    return plug


def run(production_file: str, port: int | None, maps: PathMap) -> int:
    # The file as written first: its own errors, in the keys the overlay replaces too, at their lines,
    # and before a missing nginx or uWSGI is reported.
    check_file(production_file)
    root = Path(tempfile.mkdtemp(prefix="bs-try-"))
    try:
        sandbox = Sandbox(root / "sandbox", http_port=port)
        compiled = compile_production(production_file, overlay=overlay(sandbox, root, maps), overlay_label=LABEL)
        production = compiled.production
        with sandbox:
            built = artifact.write(compiled.files, root / "build", compiled.name)
            if handoff.run_installer(built / INSTALLER, "apply") != 0:
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
        remove_tree(root)
