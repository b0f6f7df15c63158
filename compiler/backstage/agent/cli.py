"""The agent's command line, as install.sh passes it on: ARTIFACT apply|rollback|generations|gc."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from ..contract import ContractError, Timeouts, flag, read_plan
from .generations import gc, generations, rollback_target
from .outcomes import Refused, say
from .state import State
from .switch import switch

GC_LOCK_WAIT = Timeouts().lock_wait


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="install.sh")
    parser.add_argument("artifact", type=Path)
    verbs = parser.add_subparsers(dest="verb", required=True)
    apply = verbs.add_parser("apply", help="make this artifact live")
    rollback = verbs.add_parser("rollback", help="switch back to an earlier generation")
    rollback.add_argument("--to", help="a kept generation's name or hash prefix (default: the previous one)")
    defaults = Timeouts()
    for sub in (apply, rollback):
        sub.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
        for field in fields(Timeouts):
            sub.add_argument(flag(field.name), dest=field.name, type=float, default=getattr(defaults, field.name),
                             metavar="SECONDS")
    verbs.add_parser("generations", help="list kept generations")
    collect = verbs.add_parser("gc", help="delete old generations")
    collect.add_argument("--keep", type=int, required=True)
    return parser


def timeouts(args: argparse.Namespace) -> Timeouts:
    return Timeouts(**{f.name: float(getattr(args, f.name)) for f in fields(Timeouts)})


def main(argv: list[str] | None = None) -> int:
    """Run one verb; exit 0 done, 1 failed and rolled back, 2 refused with nothing changed."""
    args = parser().parse_args(argv)
    artifact: Path = args.artifact.resolve()
    try:
        if args.verb == "apply":
            return switch(artifact, timeouts(args), dry_run=args.dry_run)
        state = State(read_plan(artifact))
        if args.verb == "rollback":
            chosen = timeouts(args)
            with state.lock(chosen.lock_wait):  # the target is chosen and switched to under one lock
                target = rollback_target(state, args.to)
                say(f"rolling back to {target.name}")
                return switch(target, chosen, dry_run=args.dry_run, locked=True)
        if args.verb == "generations":
            for g in generations(state):
                print(f"{'*' if g.current else ' '} {g.name}  {g.applied or '(never live)'}")
            return 0
        with state.lock(GC_LOCK_WAIT):
            for name in gc(state, args.keep):
                print(f"removed {name}")
        return 0
    except (Refused, ContractError) as refusal:
        say(f"refused: {refusal}")
        return 2
