"""Kept generations: their order, which one a rollback goes to, which are in use, and gc."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..files import remove_tree
from .outcomes import Refused
from .state import State


@dataclass(frozen=True, slots=True)
class Generation:
    name: str
    applied: str  # when it first went live ("" if never)
    current: bool


def generations(state: State) -> list[Generation]:
    """Kept generations in the order they first went live (never-live ones first), like Nix's numbers."""
    current = state.current_name()
    first_live: dict[str, str] = {}
    for when, name, outcome in state.entries():
        if outcome == "ok":
            first_live.setdefault(name, when)
    names = sorted((p.name for p in state.generations.glob("*") if not p.name.startswith(".")),
                   key=lambda n: (first_live.get(n, ""), n))
    return [Generation(n, first_live.get(n, ""), n == current) for n in names]


def rollback_target(state: State, wanted: str | None) -> Path:
    """The generation to roll back to: `wanted` (a name or hash prefix), else the one before the current."""
    kept = generations(state)
    known = [g.name for g in kept]
    if wanted:
        matches = [n for n in known if n == wanted or n.rsplit("-", 1)[-1].startswith(wanted)]
        if len(matches) != 1:
            raise Refused(f"no single kept generation matches {wanted!r}; kept: {', '.join(known) or 'none'}")
        return state.generations / matches[0]
    entries = state.entries()
    last_good = state.last_good()
    if entries and entries[-1][2] == "start" and last_good:
        return state.generations / last_good  # an apply was interrupted: back to what was live before it
    live = [g.name for g in kept if g.applied]
    current = state.current_name()
    if current in live and live.index(current) > 0:
        return state.generations / live[live.index(current) - 1]
    raise Refused("there is no earlier generation to roll back to")


def in_use(state: State) -> set[str]:
    """Generations that a live link points into: `current`, and every vassal link."""
    current = state.current_name()
    used = {current} if current is not None else set()
    for path in state.live_vassals().values():
        target = Path(os.readlink(path))
        if target.is_absolute() and state.generations in target.parents:
            used.add(target.relative_to(state.generations).parts[0])
    return used


def gc(state: State, keep: int) -> list[str]:
    """Delete generations beyond the newest `keep` that nothing uses; returns their names."""
    ordered = [g.name for g in generations(state)]
    kept = set(ordered[-keep:]) if keep > 0 else set()
    used = in_use(state)
    removed = []
    for name in ordered:
        if name in kept or name in used:
            continue
        # Renamed first: a gc killed mid-way leaves a .tmp- directory, which install sweeps, and never
        # a half-deleted generation that a later apply of the same artifact would take as whole.
        doomed = state.generations / f".tmp-gc-{name}"
        os.rename(state.generations / name, doomed)
        remove_tree(doomed)
        removed.append(name)
    return removed
