"""The `backstage` command line.

Exit codes: 0 done; 1 bad input, a refused artifact, or a failed apply that was undone (the message
says which); 2 wrong usage; 3 a bug in backstage (one line; BACKSTAGE_DEBUG=1 for a traceback);
129, 130, 143: apply stopped by SIGHUP, SIGINT or SIGTERM, after undoing the switch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__, timeouts
from ..errors import HandoffError, InputError

if TYPE_CHECKING:
    from .. import contract

# Verbs import the phases they need: `build` of unchanged input must not pay for jsonschema or networkx,
# nor for contract's dataclasses, nor any verb but those that run an agent for the handoff (subprocess,
# the agent's trust checks).

EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_BUG = 3
EXIT_INTERRUPTED = 130
SIGNAL_EXITS = (129, 130, 143)  # SIGHUP, SIGINT, SIGTERM stopped the agent; it undid the switch first
DEFAULT_OUTPUT = "artifacts"  # not ./build: that is setuptools' own directory


class UsageError(Exception):
    pass


JSON_FORMAT = 1  # every document a verb prints with --json carries "format": JSON_FORMAT


def _print_json(document: dict[str, object]) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False))


def _build(args: argparse.Namespace) -> int:
    from ..phases import cache, pipeline

    built = pipeline.build(args.file, args.output)
    if args.json:
        _print_json({"format": JSON_FORMAT, "artifact": str(built.path), "unchanged": built.cached, "errors": []})
    else:
        print(built.path)
    reused = f"; {built.reused} of {built.rendered + built.reused} files as the last build rendered them" \
        if built.reused else ""
    print(f"{'unchanged' if built.cached else 'built'}: {built.summary}{reused}", file=sys.stderr)
    why = cache.distrusted(Path(args.output))
    if why:
        print(f"note: the build cache was not used: {why}; remove it to have rebuilds reuse the last build",
              file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..phases import pipeline

    pipeline.check_file(args.file)
    if args.json:
        _print_json({"format": JSON_FORMAT, "errors": []})
    else:
        print(f"{args.file}: ok", file=sys.stderr)
    return 0


def _graph(args: argparse.Namespace) -> int:
    from ..phases import graph, pipeline

    checked = pipeline.check_file(args.file)
    dot = graph.to_dot(checked.production.name, checked.graph)
    if args.format == "dot":
        sys.stdout.write(dot)
        return 0
    if not shutil.which("dot"):
        raise UsageError("--format svg needs Graphviz's `dot` on PATH (Debian: apt-get install graphviz)")
    import subprocess

    svg = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, check=True).stdout
    sys.stdout.buffer.write(svg)
    return 0


def _schema(args: argparse.Namespace) -> int:
    from ..phases import schema

    sys.stdout.write(json.dumps(schema.document(), indent=2, ensure_ascii=False) + "\n")
    return 0


def _timeouts(args: argparse.Namespace) -> list[str]:
    return timeouts.Timeouts(**{f.name: getattr(args, f.name) for f in fields(timeouts.Timeouts)}).flags()


def _installer_exit(code: int) -> int:
    # The agent: 0 done, 1 failed and undone, 2 refused before changing anything, 3 a bug in it,
    # 128 + N stopped by signal N (after undoing); those pass through (3 as this command's own bug
    # code), the rest is 1.
    if code in (0, EXIT_BUG) or code in SIGNAL_EXITS:
        return code
    return EXIT_INPUT


PLAN_FORMAT = 1


def _plan(args: argparse.Namespace) -> int:
    """`apply --dry-run`, and with --save a plan file that `apply --plan` holds the host to."""
    from .. import contract
    from . import fleet  # only productions on several hosts need Ansible's side

    args.dry_run, args.atomic, args.restart, args.keep_ansible, args.plan = True, False, [], False, None
    if args.save:
        _savable(args.save)  # before the agent runs: a plan that cannot be saved is not made
    code = _apply(args)
    if code == 0 and args.save:
        target = _artifact_dir(Path(args.artifact), args.output)
        state = Path(contract.read_plan(target).state_dir) if not fleet.is_fleet(target) else None
        if state is None:
            raise UsageError("--save: a saved plan is for a production on one host")
        try:
            live = Path(os.readlink(state / "current")).name
        except OSError:
            live = ""
        try:
            Path(args.save).write_text(json.dumps({"format": PLAN_FORMAT, "artifact": target.name, "live": live,
                                                   "state_dir": str(state)}, indent=1, sort_keys=True) + "\n")
        except OSError as exc:
            raise HandoffError(f"--save {args.save}: cannot write the plan: {exc.strerror or exc}") from None
        print(f"plan saved to {args.save}: apply it with `backstage apply --plan {args.save} {args.artifact}`",
              file=sys.stderr)
    return code


def _savable(path: str) -> None:
    """Refuse (exit 2) a --save FILE that could not be written: a directory, a FIFO (the write would wait
    for a reader), or a file in no directory this user can write to. A character device (/dev/stdout) is
    written to."""
    where = Path(path)
    if where.is_dir():
        raise UsageError(f"--save {path}: it is a directory; give the path of the file to save the plan in")
    if where.exists() and not (where.is_file() or where.is_char_device()):
        raise UsageError(f"--save {path}: it is not a regular file; give the path of the file to save the plan in")
    parent = where.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"--save {path}: {parent} {'is not a directory' if parent.exists() else 'does not exist'}; "
                         "give a file in an existing directory")
    effective = os.access in os.supports_effective_ids
    if not os.access(where if where.exists() else parent, os.W_OK, effective_ids=effective):
        raise UsageError(f"--save {path}: not writable by this user; give a file you can write")


def _diff(args: argparse.Namespace) -> int:
    from .. import contract
    from . import review

    try:
        result = review.diff(review.load(Path(args.old)), review.load(Path(args.new)))
    except contract.ContractError as exc:
        raise HandoffError(f"cannot compare: {exc}") from None
    sys.stdout.write(json.dumps(result, indent=1, sort_keys=True, ensure_ascii=False) + "\n" if args.json
                     else review.text(result))
    return 0


def _route(args: argparse.Namespace) -> int:
    from .. import contract
    from . import review, route

    if args.unreachable != (len(args.target) == 1):
        raise UsageError("give URL PRODUCTION, or --unreachable PRODUCTION")
    try:
        side = review.load(Path(args.target[-1]))
        if args.unreachable:
            lines, document = route.unreachable(side.files)
        else:
            address = side.production.host.address if side.production is not None else None
            lines, document = route.route(side.files, args.target[0], address=args.address, host=args.host,
                                          default_address=address or "")
    except route.RouteError as exc:
        raise UsageError(str(exc)) from None
    except contract.ContractError as exc:
        raise HandoffError(f"cannot route: {exc}") from None
    sys.stdout.write(route.dumps(document) if args.json else "\n".join(lines) + "\n")
    return 0


def _artifact_dir(target: Path, output: str) -> Path:
    """The artifact directory `apply` and `plan` act on (a production file's newest build)."""
    if target.is_file():
        target = Path(output)
    if (target / "result").is_symlink():
        target = target / "result"
    return target.resolve()


PLAN_LIMIT = 1 << 20  # a saved plan is a few hundred bytes


def _saved_plan(path: str, artifact: Path) -> str:
    """The generation a saved plan saw live; refused if it is not a plan of `artifact`."""
    from ..phases import load

    def refuse(what: str) -> UsageError:  # as before: exit 2, like argparse's own "can't open" of a file
        return UsageError(f"--plan {path}: {what}; give a file saved by `backstage plan --save FILE`")

    try:
        raw = load.read_regular(path, PLAN_LIMIT + 1)
    except OSError as exc:
        raise refuse(f"cannot be read: {exc.strerror or exc}") from None
    if len(raw) > PLAN_LIMIT:
        raise refuse(f"it is over {PLAN_LIMIT} bytes, too large for a saved plan")
    try:
        saved = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise refuse("it is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise refuse(f"it is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(saved, dict) or saved.get("format") != PLAN_FORMAT:
        raise refuse(f'it is not a backstage plan (a JSON object with "format": {PLAN_FORMAT})')
    live, name = saved.get("live"), saved.get("artifact")
    if not isinstance(live, str) or not isinstance(name, str):
        raise refuse('it is not a backstage plan: its "live" and "artifact" must be strings')
    if name != artifact.name:
        raise HandoffError(f"refusing to apply: the plan {path} is for {name}, not {artifact.name}")
    return live


def _apply(args: argparse.Namespace) -> int:
    from .. import contract
    from . import fleet, handoff  # fleet: only productions on several hosts need Ansible's side

    target = Path(args.artifact)
    if target.is_file():  # a production file: build it here first, as `build` would
        target = _build_for_apply(target, args.restart, args.output)
    elif args.restart:
        raise UsageError("--restart needs the production file, not an artifact (an artifact's vassals are "
                         f"fixed): backstage apply --restart {args.restart[0]} production.toml")
    if (target / "result").is_symlink():
        target = target / "result"
    target = target.resolve()
    if fleet.is_fleet(target):
        if getattr(args, "json", False):
            raise UsageError("--json: the plan of a production on several hosts is printed host by host, in "
                             "words only")
        try:
            return fleet.apply(target, _timeouts(args), dry_run=args.dry_run, atomic=args.atomic, force=args.force,
                               keep=args.keep_ansible)
        except (fleet.FleetError, contract.ContractError) as exc:
            raise HandoffError(f"refusing to roll out: {exc}") from None
    if args.atomic:
        raise UsageError("--atomic applies to a production on several hosts ([hosts])")
    extra = (["--dry-run"] if args.dry_run else []) + (["--force"] if args.force else [])
    if getattr(args, "json", False):
        if not args.dry_run:
            raise UsageError("--json prints a plan: give it with --dry-run (or use `backstage plan --json`)")
        extra.append("--json")
    if args.plan:
        extra.append(f"--expect-live={_saved_plan(args.plan, target)}")
    with handoff.staged(target, args.dry_run) as copy:
        return _installer_exit(handoff.run_installer(copy / contract.INSTALLER, "apply", *extra, *_timeouts(args)))


def _build_for_apply(production: Path, restart: list[str], output: str) -> Path:
    """Build a production file into `output` for apply, carrying the live generation's restart counts
    (so a Sess restarted before is not started anew again) and counting one more for each `restart`."""
    from ..phases import pipeline
    from . import handoff

    counts = handoff.live_restarts(handoff.state_dir(production))
    for sess in restart:
        counts[sess] = counts.get(sess, 0) + 1
    try:
        built = pipeline.build(production, output, counts)
    except pipeline.UnknownSess as exc:
        raise UsageError(f"--restart: {exc}") from None
    print(f"{'unchanged' if built.cached else 'built'}: {built.path}", file=sys.stderr)
    return built.path


def _fleet_plan(production: str) -> contract.FleetPlan | None:
    """The fleet plan of a production file with [hosts] (compiled in memory), else None."""
    path = Path(production)
    if not path.is_file():
        return None
    from .. import contract
    from ..phases import pipeline

    compiled = pipeline.compile(path)
    raw = compiled.files.get(contract.FLEET)
    return contract.FleetPlan.from_json(raw.content) if raw else None


def _on_fleet(args: argparse.Namespace, verb: str, agent_args: list[str]) -> int | None:
    from . import fleet  # only productions on several hosts need Ansible's side

    plan = _fleet_plan(args.production)
    if plan is None:
        return None
    try:
        return fleet.verb_on_hosts(plan, verb, agent_args)
    except fleet.FleetError as exc:
        raise HandoffError(str(exc)) from None


def _json_on_one_host(args: argparse.Namespace, verb: str) -> list[str]:
    """The agent's --json for `verb`, refused for a production on several hosts (printed host by host)."""
    if not args.json:
        return []
    if _fleet_plan(args.production) is not None:
        raise UsageError(f"--json: {verb} of a production on several hosts is printed host by host, in words only")
    return ["--json"]


def _rollback(args: argparse.Namespace) -> int:
    from . import handoff

    if args.json and not args.dry_run:
        raise UsageError("--json prints a plan: give it with --dry-run")
    extra = ((["--to", args.to] if args.to else []) + (["--dry-run"] if args.dry_run else [])
             + (["--force"] if args.force else []) + _json_on_one_host(args, "rollback"))
    on_fleet = _on_fleet(args, "rollback", [*extra, *_timeouts(args)])
    if on_fleet is not None:
        return on_fleet
    script = handoff.installer(handoff.state_dir(args.production))
    return _installer_exit(handoff.run_installer(script, "rollback", *extra, *_timeouts(args)))


def _renew(args: argparse.Namespace) -> int:
    from . import handoff

    script = handoff.installer(handoff.state_dir(args.production))
    extra = ["--force"] if args.force else []
    return _installer_exit(handoff.run_installer(script, "renew", *extra, f"--drain-timeout={args.drain_timeout}"))


def _generations(args: argparse.Namespace) -> int:
    from . import handoff

    extra = _json_on_one_host(args, "generations")
    on_fleet = _on_fleet(args, "generations", [])
    if on_fleet is not None:
        return on_fleet
    script = handoff.installer(handoff.state_dir(args.production))
    return _installer_exit(handoff.run_installer(script, "generations", *extra))


def _gc(args: argparse.Namespace) -> int:
    from . import handoff

    if args.keep < 0:
        raise UsageError(f"--keep must be 0 or more, not {args.keep} (0 keeps the live generation only)")
    on_fleet = _on_fleet(args, "gc", [f"--keep={args.keep}"])
    if on_fleet is not None:
        return on_fleet
    script = handoff.installer(handoff.state_dir(args.production))
    return _installer_exit(handoff.run_installer(script, "gc", f"--keep={args.keep}"))


def _try(args: argparse.Namespace) -> int:
    from . import rehearsal  # only `try` needs the sandbox

    try:
        maps = rehearsal.parse_path_map(args.path_map)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        return rehearsal.run(args.file, args.port, maps, keep=args.keep)
    except rehearsal.SandboxError as exc:
        print(f"backstage try: {exc}", file=sys.stderr)
        return EXIT_INPUT


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="backstage", description="Compile and deploy WSGI productions.",
                                  epilog="exit codes: 0 done; 1 bad input, refused artifact or failed apply "
                                         "(undone); 2 usage; 3 internal error; 129/130/143 apply stopped by "
                                         "SIGHUP/SIGINT/SIGTERM (undone)")
    top.add_argument("--version", action="version", version=f"backstage {__version__}")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, run: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run)
        return sub

    sub = verb("build", _build, "Compile a production file into an artifact directory.")
    sub.add_argument("file", help="the production file (production.toml)")
    sub.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                     help=f"output directory (default: ./{DEFAULT_OUTPUT}; OUTPUT/result links to the newest build)")
    sub.add_argument("--json", action="store_true",
                     help='print the artifact, or the input errors, as one JSON document ("format": 1)')
    sub = verb("check", _check, "Check a production file without writing anything.")
    sub.add_argument("file")
    sub.add_argument("--json", action="store_true",
                     help='print the input errors (none: []) as one JSON document ("format": 1)')
    sub = verb("graph", _graph, "Print the production's graph as Graphviz DOT (or SVG).")
    sub.add_argument("file")
    sub.add_argument("--format", choices=("dot", "svg"), default="dot")
    verb("schema", _schema, "Print the JSON Schema of production files.")

    def switch_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
        sub.add_argument("--force", action="store_true",
                         help="make a DNS change of more than 30%% of a zone's RRsets (when it holds 10 or more)")
        defaults = timeouts.Timeouts()
        for name, text in timeouts.Timeouts.HELP.items():
            default = getattr(defaults, name)
            sub.add_argument(timeouts.flag(name), dest=name, type=timeouts.seconds, default=default, metavar="S",
                             help=f"{text} (default {default:g})")

    sub = verb("apply", _apply, "Make an artifact live on this host, with zero downtime.")
    sub.add_argument("artifact", help="an artifact directory, a build directory holding `result`, or a "
                                      f"production file (built into ./{DEFAULT_OUTPUT} first)")
    sub.add_argument("--restart", action="append", default=[], metavar="SESS",
                     help="start a fresh vassal for SESS, blue/green, even if nothing changed (a secret file "
                          "changed, say); needs the production file; repeatable")
    sub.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                     help=f"where a production file is built (default: ./{DEFAULT_OUTPUT})")
    sub.add_argument("--atomic", action="store_true",
                     help="with [hosts]: if the rollout stops, roll back the hosts already switched too")
    sub.add_argument("--keep-ansible", action="store_true",
                     help="with [hosts]: keep the generated inventory and playbooks (their directory is printed)")
    sub.add_argument("--plan", metavar="FILE",
                     help="a plan saved by `backstage plan --save`: refuse if what the host runs changed since")
    sub.add_argument("--json", action="store_true", help='with --dry-run: the plan as JSON ("format": 1)')
    switch_options(sub)
    sub = verb("plan", _plan, "Say what applying an artifact would do on this host now; change nothing.")
    sub.add_argument("artifact", help="an artifact directory, a build directory holding `result`, or a "
                                      "production file (built first)")
    sub.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                     help=f"where a production file is built (default: ./{DEFAULT_OUTPUT})")
    sub.add_argument("--save", metavar="FILE", help="also save the plan, for `apply --plan FILE`")
    sub.add_argument("--json", action="store_true", help='the plan as one JSON document ("format": 1)')
    sub.add_argument("--force", action="store_true", help="plan a DNS change over the 30%% guard")
    for name in timeouts.Timeouts.HELP:  # the agent's dry run takes them; a plan waits for nothing
        sub.add_argument(timeouts.flag(name), dest=name, type=timeouts.seconds,
                         default=getattr(timeouts.Timeouts(), name), metavar="S", help=argparse.SUPPRESS)
    sub = verb("rollback", _rollback, "Switch back to the previous (or any kept) generation.")
    sub.add_argument("production", help="the production file or its state_dir")
    sub.add_argument("--to", metavar="HASH", help="a kept generation's name or hash prefix")
    sub.add_argument("--json", action="store_true", help='with --dry-run: the plan as JSON ("format": 1)')
    switch_options(sub)
    sub = verb("renew", _renew, "Renew the live ACME certificates that are due; reload nginx only if one changed.")
    sub.add_argument("production", help="the production file or its state_dir")
    sub.add_argument("--force", action="store_true", help="renew every ACME certificate now, due or not")
    drain = timeouts.Timeouts().drain
    sub.add_argument(timeouts.flag("drain"), dest="drain_timeout", type=timeouts.seconds, default=drain, metavar="S",
                     help=f"{timeouts.Timeouts.HELP['drain']} (default {drain:g})")
    sub = verb("diff", _diff, "Say in words what changes from OLD to NEW (production files or artifacts).")
    sub.add_argument("old")
    sub.add_argument("new")
    sub.add_argument("--json", action="store_true", help='machine-readable ("format": 1)')
    sub = verb("route", _route, "Say which server, location, Gig and Sess answer a URL, by nginx's rules.")
    sub.add_argument("target", nargs="+", metavar="URL PRODUCTION",
                     help="the URL, then a production file or an artifact (with --unreachable: only the latter)")
    sub.add_argument("--address", metavar="IP", help="the IP address the connection goes to (default: the URL's "
                                                     "own, else the host's [host].address, else 127.0.0.1)")
    sub.add_argument("--host", metavar="NAME", help="with [hosts]: route on this host only (default: the hosts "
                                                    "that serve the URL's name)")
    sub.add_argument("--unreachable", action="store_true", help="list the locations no URL can reach")
    sub.add_argument("--json", action="store_true", help='machine-readable ("format": 1)')
    sub = verb("generations", _generations, "List the generations kept on this host.")
    sub.add_argument("production", help="the production file or its state_dir")
    sub.add_argument("--json", action="store_true", help='machine-readable ("format": 1)')
    sub = verb("gc", _gc, "Delete old generations; never the current one or one a live link uses.")
    sub.add_argument("production", help="the production file or its state_dir")
    sub.add_argument("--keep", type=int, required=True, metavar="N",
                     help="how many generations to keep besides the live one: the most recent by when they first "
                          "went live (0: the live one only)")
    sub = verb("try", _try, "Build a production and run it live in a private sandbox on 127.0.0.1.")
    sub.add_argument("file")
    sub.add_argument("--port", type=int, help="the port every Venue listens on (default: a free one)")
    sub.add_argument("--path-map", action="append", default=[], metavar="/ABSOLUTE=DIR",
                     help="run paths under /ABSOLUTE from DIR instead (repeatable)")
    sub.add_argument("--keep", action="store_true", help="keep the sandbox's directory (logs, data) after it stops")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Ctrl-C (SIGINT) stops it with EXIT_INTERRUPTED and no traceback: the first one
    raises KeyboardInterrupt, and any further one is ignored, so that the clean-up the first one set off
    (a build's temporary directory, its children) is never cut short. As the `backstage` command (see
    backstage._started_as_command), SIGINT stays ignored once this returns: the process is ending, and
    a Ctrl-C during the interpreter's exit would print a traceback; stopped by Ctrl-C, it exits here
    (130, once its output is flushed). Otherwise SIGINT's handler is given back."""
    import contextlib
    import signal

    from .. import _interrupted_at_start

    def interrupted(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    command = previous is _interrupted_at_start
    taken = previous is signal.default_int_handler or command  # not ignored, nor someone else's
    if taken:
        try:
            signal.signal(signal.SIGINT, interrupted)
        except ValueError:  # not the main thread: signals are not this call's to handle
            taken = False
    try:
        try:
            args = parser().parse_args(argv)
            code: int = args.run(args)
            return code
        except InputError as exc:
            if getattr(args, "json", False):
                _print_json({"format": JSON_FORMAT, "errors": [asdict(d) for d in exc.diagnostics]})
            else:
                for diagnostic in exc.diagnostics:
                    print(diagnostic, file=sys.stderr)
                print(f"backstage: {len(exc.diagnostics)} error(s); nothing was written", file=sys.stderr)
            return EXIT_INPUT
        except HandoffError as exc:
            print(f"backstage: {exc}", file=sys.stderr)
            return EXIT_INPUT
        except UsageError as exc:
            print(f"backstage: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except Exception as exc:  # a bug in backstage: say so in one line, never with a traceback
            if os.environ.get("BACKSTAGE_DEBUG"):
                raise
            print(f"backstage: internal error: {type(exc).__name__}: {exc} "
                  "(set BACKSTAGE_DEBUG=1 for a traceback, and please report it)", file=sys.stderr)
            return EXIT_BUG
    except KeyboardInterrupt:  # (also one that came while an error above was being reported)
        if taken:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if command:  # the interpreter's own exit would take the KeyboardInterrupt as unhandled (-SIGINT)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os._exit(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    finally:
        if command:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        elif taken:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
