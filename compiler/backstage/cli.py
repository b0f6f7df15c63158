"""The `backstage` command line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence

from . import __version__, artifact, check, graph, load, model
from .errors import InputError, diagnostics_json

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
    loaded = load.load_file(path)
    check.check(loaded)
    return model.build(loaded.data)


def _graph(args: argparse.Namespace) -> int:
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
    sys.stdout.write(json.dumps(check.schema(), indent=2, ensure_ascii=False) + "\n")
    return 0


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
