"""The `backstage` command line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, apply, artifact
from .errors import InputError, diagnostics_json

if TYPE_CHECKING:
    from . import model

# Verbs import the phases they need: `build` of unchanged input must not pay for jsonschema or networkx.

EXIT_INPUT = 1
EXIT_USAGE = 2


class UsageError(Exception):
    pass


def _build(args: argparse.Namespace) -> int:
    built = artifact.build(args.file, args.output)
    print(built.path)
    print(f"{'unchanged' if built.cached else 'built'}: {built.summary}", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    _load_checked(args.file)
    print(f"{args.file}: ok", file=sys.stderr)
    return 0


def _load_checked(path: str) -> model.Production:
    from . import check, load, model

    loaded = load.load_file(path)
    check.check(loaded)
    return model.build(loaded.data)


def _graph(args: argparse.Namespace) -> int:
    from . import graph

    production = _load_checked(args.file)
    dot = graph.to_dot(production, graph.build(production))
    if args.format == "dot":
        sys.stdout.write(dot)
        return 0
    if not shutil.which("dot"):
        raise UsageError("--format svg needs Graphviz's `dot` on PATH (Debian: apt-get install graphviz)")
    svg = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, check=True).stdout
    sys.stdout.buffer.write(svg)
    return 0


def _schema(args: argparse.Namespace) -> int:
    from . import check

    sys.stdout.write(json.dumps(check.schema(), indent=2, ensure_ascii=False) + "\n")
    return 0


def _timeouts(args: argparse.Namespace) -> list[str]:
    return [f"--ready-timeout={args.ready_timeout}", f"--health-timeout={args.health_timeout}",
            f"--drain-timeout={args.drain_timeout}", f"--lock-wait={args.lock_wait}"]


def _installer_exit(code: int) -> int:
    # install.sh: 0 done, 1 failed and rolled back, 2 refused before changing anything.
    return 0 if code == 0 else EXIT_INPUT


def _apply(args: argparse.Namespace) -> int:
    target = Path(args.artifact)
    if (target / "result").is_symlink():
        target = target / "result"
    target = target.resolve()
    apply.verify(target)
    extra = ["--dry-run"] if args.dry_run else []
    return _installer_exit(apply.run_installer(target / "install.sh", "apply", *extra, *_timeouts(args)))


def _rollback(args: argparse.Namespace) -> int:
    script = apply.installer(apply.state_dir(args.production))
    extra = (["--to", args.to] if args.to else []) + (["--dry-run"] if args.dry_run else [])
    return _installer_exit(apply.run_installer(script, "rollback", *extra, *_timeouts(args)))


def _generations(args: argparse.Namespace) -> int:
    return _installer_exit(apply.run_installer(apply.installer(apply.state_dir(args.production)), "generations"))


def _gc(args: argparse.Namespace) -> int:
    if args.keep < 1:
        raise UsageError("--keep must be at least 1")
    script = apply.installer(apply.state_dir(args.production))
    return _installer_exit(apply.run_installer(script, "gc", f"--keep={args.keep}"))


def _try(args: argparse.Namespace) -> int:
    from . import tryout  # only `try` needs the sandbox

    try:
        maps = tryout.parse_path_map(args.path_map)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        return tryout.run(args.file, args.port, maps)
    except tryout.SandboxError as exc:
        print(f"backstage try: {exc}", file=sys.stderr)
        return EXIT_INPUT


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="backstage", description="Compile and deploy WSGI productions.")
    top.add_argument("--version", action="version", version=f"backstage {__version__}")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, run: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run)
        return sub

    sub = verb("build", _build, "Compile a production file into an artifact directory.")
    sub.add_argument("file", help="the production file (production.toml)")
    sub.add_argument("-o", "--output", default="build", help="output directory (default: ./build)")
    sub.add_argument("--json", action="store_true", help="print input errors as JSON objects")
    sub = verb("check", _check, "Check a production file without writing anything.")
    sub.add_argument("file")
    sub.add_argument("--json", action="store_true", help="print input errors as JSON objects")
    sub = verb("graph", _graph, "Print the production's graph as Graphviz DOT (or SVG).")
    sub.add_argument("file")
    sub.add_argument("--format", choices=("dot", "svg"), default="dot")
    verb("schema", _schema, "Print the JSON Schema of production files.")

    def switch_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
        sub.add_argument("--ready-timeout", type=float, default=60.0, metavar="S",
                         help="how long a new vassal may take to answer (default 60)")
        sub.add_argument("--health-timeout", type=float, default=15.0, metavar="S",
                         help="how long each Gig may take to answer through nginx (default 15)")
        sub.add_argument("--drain-timeout", type=float, default=60.0, metavar="S",
                         help="how long to wait for old nginx workers before stopping vassals (default 60)")
        sub.add_argument("--lock-wait", type=float, default=300.0, metavar="S",
                         help="how long to wait for another apply of the production (default 300)")

    sub = verb("apply", _apply, "Make an artifact live on this host, with zero downtime.")
    sub.add_argument("artifact", help="an artifact directory, or a build directory holding `result`")
    switch_options(sub)
    sub = verb("rollback", _rollback, "Switch back to the previous (or any kept) generation.")
    sub.add_argument("production", help="the production file or its state_dir")
    sub.add_argument("--to", metavar="HASH", help="a kept generation's name or hash prefix")
    switch_options(sub)
    sub = verb("generations", _generations, "List the generations kept on this host.")
    sub.add_argument("production", help="the production file or its state_dir")
    sub = verb("gc", _gc, "Delete old generations; never the current one or one a live link uses.")
    sub.add_argument("production", help="the production file or its state_dir")
    sub.add_argument("--keep", type=int, required=True, metavar="N", help="how many recent generations to keep")
    sub = verb("try", _try, "Build a production and run it live in a private sandbox on 127.0.0.1.")
    sub.add_argument("file")
    sub.add_argument("--port", type=int, help="the port every Venue listens on (default: a free one)")
    sub.add_argument("--path-map", action="append", default=[], metavar="/ABSOLUTE=DIR",
                     help="run paths under /ABSOLUTE from DIR instead (repeatable)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except InputError as exc:
        if getattr(args, "json", False):
            print(diagnostics_json(exc.diagnostics))
        else:
            for diagnostic in exc.diagnostics:
                print(diagnostic, file=sys.stderr)
            print(f"backstage: {len(exc.diagnostics)} error(s); nothing was written", file=sys.stderr)
        return EXIT_INPUT
    except apply.ApplyError as exc:
        print(f"backstage: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except UsageError as exc:
        print(f"backstage: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug in backstage: say so in one line, never with a traceback
        if os.environ.get("BACKSTAGE_DEBUG"):
            raise
        print(f"backstage: internal error: {type(exc).__name__}: {exc} "
              "(set BACKSTAGE_DEBUG=1 for a traceback, and please report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
