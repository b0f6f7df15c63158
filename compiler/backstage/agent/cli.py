"""The agent's command line, as install.sh passes it on: ARTIFACT apply|rollback|renew|generations|gc.

Exit codes: 0 done; 1 failed (and undone); 2 refused, nothing changed; 3 a bug (one line; set
BACKSTAGE_DEBUG=1 for a traceback); 128 + N stopped by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP),
after undoing what it had begun. Every ending short of success is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

from ..contract import ContractError, Timeouts, flag, read_plan
from ..timeouts import seconds
from . import acme
from .generations import gc, generation_zones, generations, listing, rollback_target
from .outcomes import SIGNALS, Interrupted, Refused, out, say, watch_parent
from .state import State
from .switch import describe, switch

GC_LOCK_WAIT = Timeouts().lock_wait  # gc and renew: how long they wait for an apply
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_BUG = 3


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="install.sh")
    parser.add_argument("artifact", type=Path)
    verbs = parser.add_subparsers(dest="verb", required=True)
    apply = verbs.add_parser("apply", help="make this artifact live")
    apply.add_argument("--expect-live", metavar="GENERATION",
                       help="refuse unless this generation ('' for none) is live (a saved plan's)")
    apply.add_argument("--json", action="store_true", help="with --dry-run: the plan as one JSON document")
    rollback = verbs.add_parser("rollback", help="switch back to an earlier generation")
    rollback.add_argument("--to", help="a kept generation's name or hash prefix (default: the previous one)")
    rollback.add_argument("--json", action="store_true", help="with --dry-run: the plan as one JSON document")
    defaults = Timeouts()
    for sub in (apply, rollback):
        sub.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
        sub.add_argument("--force", action="store_true", help="make a DNS change larger than the guard allows")
        for field in fields(Timeouts):
            sub.add_argument(flag(field.name), dest=field.name, type=seconds, default=getattr(defaults, field.name),
                             metavar="SECONDS")
    renew = verbs.add_parser("renew", help="renew the live generation's ACME certificates that are due")
    renew.add_argument("--force", action="store_true", help="renew every one now")
    renew.add_argument(flag("drain"), dest="drain", type=seconds, default=defaults.drain, metavar="SECONDS")
    listed = verbs.add_parser("generations", help="list kept generations")
    listed.add_argument("--json", action="store_true", help="as one JSON document")
    collect = verbs.add_parser("gc", help="delete old generations")
    collect.add_argument("--keep", type=int, required=True)
    return parser


def timeouts(args: argparse.Namespace) -> Timeouts:
    return Timeouts(**{f.name: float(getattr(args, f.name)) for f in fields(Timeouts)})


def main(argv: list[str] | None = None) -> int:
    """Run one verb and return its exit code (see the module's docstring)."""
    SIGNALS.install()
    watch_parent()
    args = parser().parse_args(argv)
    try:
        return run(args)
    except (Refused, ContractError) as refusal:
        say(f"refused: {refusal}")
        return EXIT_REFUSED
    except Interrupted as stop:  # before a switch changed anything: it undoes its own
        say(f"{args.verb} {stop}; nothing was changed")
        return stop.code
    except OSError as exc:  # outside a switch: reading state, gc
        say(f"{args.verb} failed: {describe(exc)}")
        return EXIT_FAILED
    except Exception as exc:
        if os.environ.get("BACKSTAGE_DEBUG"):
            raise
        say(f"{args.verb}: {describe(exc)} (set BACKSTAGE_DEBUG=1 for a traceback)")
        return EXIT_BUG
    finally:
        _flush()


def run(args: argparse.Namespace) -> int:
    artifact: Path = args.artifact.resolve()
    if args.verb == "apply":
        return switch(artifact, timeouts(args), dry_run=args.dry_run, force=args.force, expect_live=args.expect_live,
                      as_json=args.json and args.dry_run)
    state = State(read_plan(artifact))
    if args.verb == "rollback":
        chosen = timeouts(args)
        if args.dry_run:  # no lock: a dry run neither waits nor writes
            target = rollback_target(state, args.to)
            if args.json:  # the plan's "artifact" names the target; stdout is the one document
                say(f"would roll back to {target.name}")
            else:
                out(f"would roll back to {target.name}")
            return switch(target, chosen, dry_run=True, force=args.force, as_json=args.json)
        with state.lock(chosen.lock_wait):  # the target is chosen and switched to under one lock
            target = rollback_target(state, args.to)
            say(f"rolling back to {target.name}")
            return switch(target, chosen, locked=True, force=args.force)
    if args.verb == "renew":
        with state.lock(GC_LOCK_WAIT):
            if state.current_name() != artifact.name:
                out("no generation is live: nothing to renew")
                return 0
            return acme.renew(state, args.force, args.drain)
    if args.verb == "generations":
        if args.json:
            out(json.dumps(listing(state), indent=1, sort_keys=True))
            return 0
        for g in generations(state):
            zones = generation_zones(state, g.name)
            out(f"{'*' if g.current else ' '} {g.name}  {g.applied or '(never live)'}"
                + (f"  dns: {', '.join(zones)}" if zones else ""))
        return 0
    with state.lock(GC_LOCK_WAIT):
        for name in gc(state, args.keep):
            out(f"removed {name}")
    return 0


def _flush() -> None:
    """Flush stdout now, so that a closed pipe or terminal cannot turn the exit code into 120 at exit."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
