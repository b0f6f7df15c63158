"""Kept generations: their order, which one a rollback (or a failed apply) goes back to, which are in use,
and gc."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract import ContractError, read_plan
from ..files import remove_tree
from . import store
from .outcomes import Refused
from .state import State


@dataclass(frozen=True, slots=True)
class Generation:
    name: str
    applied: str  # when it first went live ("" if never)
    current: bool
    seq: int = 0  # the history number of the line where it first went live (0 if never): its order


def generations(state: State) -> list[Generation]:
    """Kept generations in the order they first went live (never-live ones first), like Nix's numbers:
    by the history's sequence numbers, never by time (two can go live in one second) or by name."""
    current = state.current_name()
    first_live: dict[str, tuple[int, str]] = {}
    for entry in state.entries():
        if entry.event == "ok":
            first_live.setdefault(entry.name, (entry.seq, entry.when))
    names = sorted((p.name for p in _kept(state)), key=lambda n: (first_live.get(n, (0, ""))[0], n))
    return [Generation(n, first_live.get(n, (0, ""))[1], n == current, first_live.get(n, (0, ""))[0])
            for n in names]


LISTING_FORMAT = 1


def listing(state: State) -> dict[str, Any]:
    """`generations --json`: the kept generations in their order, as one document ("format": 1). `seq`
    and `applied` are 0 and None for one that never went live; `dns` is the zones it writes records into."""
    return {"format": LISTING_FORMAT,
            "generations": [{"name": g.name, "seq": g.seq, "applied": g.applied or None, "live": g.current,
                             "dns": generation_zones(state, g.name)} for g in generations(state)]}


def _kept(state: State) -> list[Path]:
    try:
        return [p for p in state.generations.iterdir() if not p.name.startswith(".")]
    except OSError:
        return []


def vassal_files(state: State, name: str) -> set[str] | None:
    """The vassal files of the kept generation `name`, from its plan; None if it cannot be read."""
    try:
        return set(read_plan(state.generations / name).vassal_files())
    except ContractError:
        return None


def generation_zones(state: State, name: str) -> list[str]:
    """The DNS zones the kept generation `name` writes records into ([] without a Producer)."""
    try:
        plan = read_plan(state.generations / name)
    except ContractError:
        return []
    return [z.zone for z in plan.producer.zones] if plan.producer else []


def complete(state: State, name: str, linked: set[str]) -> bool:
    """Whether every vassal of generation `name` is linked: it could serve at once."""
    files = vassal_files(state, name)
    return files is not None and files <= linked


def return_target(state: State) -> str | None:
    """The generation an apply that fails goes back to: what actually runs, not merely what was last
    marked ok. That is the generation most recently proven live (`ok`) if all its vassals are still
    linked; else the one `current` names, which is what nginx's configuration on disk is (an older
    agent, killed while stopping the last ok one's vassals after proving `current`, left that); else
    the last ok one (None on a first apply).

    This agent stops old vassals only after recording the new generation ok, so the first choice holds
    whatever killed an earlier run; the second covers histories written by older agents.
    """
    last_good = state.last_good()
    if last_good and complete(state, last_good, set(state.live_vassals())):
        return last_good
    current = state.current_name()
    if current and (state.generations / current).is_dir():
        return current
    return last_good


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
    if entries and entries[-1].event == "start":
        # An apply was interrupted (killed): back to what runs, or ran, before it.
        target = return_target(state)
        if target:
            return state.generations / target
    live = [g.name for g in kept if g.seq]
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
    """Delete every generation but the live one, the `keep` most recent others (by sequence number: the
    order in which they first went live; never-live ones count as the oldest) and those a vassal link
    uses; then every store path no kept generation refers to. Returns the names removed."""
    if keep < 0:
        raise Refused(f"--keep must be 0 or more, not {keep}")
    ordered = [g.name for g in generations(state)]
    live = state.current_name()
    others = [name for name in ordered if name != live]
    kept = set(others[max(len(others) - keep, 0):])
    used = in_use(state)  # the live one (`current`), and every generation a vassal link points into
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
    # Then the store: every path no kept generation refers to (an unreadable plan keeps everything).
    left = [state.generations / n for n in ordered if n not in removed]
    removed += store.collect(Path(state.plan.store_dir), store.referenced(left))
    return removed
