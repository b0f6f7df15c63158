"""The switch: make a generation live by the procedure in the package docstring, or undo it on failure."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..contract import ContractError, Plan, Timeouts, VassalPlan, read_plan, verify
from ..files import link, unlink
from . import emperor, nginx
from .outcomes import Failed, Refused, crash_point, say
from .probes import gig_answers, vassal_answers
from .state import GENERATIONS, State

UWSGI = "uwsgi"  # an artifact's and a generation's directory of vassal files
NGINX = "nginx"  # ... and of server files
INCLUDE = "include.conf"  # the file the production's link in nginx_dir points at, through `current`


@dataclass(frozen=True, slots=True)
class Steps:
    """Vassal files (`<stem>.ini`) to start, to keep running untouched, and to stop once nginx has left them."""

    start: tuple[str, ...]
    keep: tuple[str, ...]
    stop: tuple[str, ...]

    def by_verb(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (("start", self.start), ("keep", self.keep), ("stop", self.stop))


def plan_steps(state: State) -> Steps:
    desired = sorted(v.file for v in state.plan.vassals)
    live = state.live_vassals()
    return Steps(
        start=tuple(n for n in desired if n not in live),
        keep=tuple(n for n in desired if n in live),
        stop=tuple(sorted(n for n in live if n not in desired)),
    )


def linked_vassal(state: State, name: str, plans: dict[str, Plan | None]) -> VassalPlan | None:
    """The plan of the vassal that the link `name` in vassals_dir runs, from the plan of the generation the
    link points into (generations/<gen>/uwsgi/<file>); None for a link pointing anywhere else.

    The link's own text is read and nothing is followed outside generations/. `plans` caches each
    generation's plan (None if unreadable) across calls.
    """
    try:
        text = os.readlink(state.vassals_dir / name)
    except OSError:
        return None
    target = Path(os.path.normpath(state.vassals_dir / text))  # an absolute text replaces vassals_dir
    generation = target.parent.parent
    if (target.parent.name != UWSGI or generation.parent != Path(os.path.normpath(state.generations))
            or generation.name.startswith(".") or generation.is_symlink()):
        return None
    if generation.name not in plans:
        try:
            plans[generation.name] = read_plan(generation)
        except ContractError:
            plans[generation.name] = None
    plan = plans[generation.name]
    return plan.vassal_files().get(target.name) if plan else None


def port_clashes(state: State, steps: Steps) -> list[str]:
    """New vassals that would bind a TCP port a vassal on its way out still holds.

    Blue/green needs both vassals listening at once; on one port they cannot, so such a switch could
    not be made without dropping requests, and is refused.
    """
    leaving: dict[str, str] = {}
    plans: dict[str, Plan | None] = {}
    for name in steps.stop:
        vassal = linked_vassal(state, name, plans)
        if vassal and vassal.tcp:
            leaving[vassal.address] = name
    starting = {v.file: v.address for v in state.plan.vassals}
    return [f"{name} binds {starting[name]}, which {leaving[starting[name]]} holds until it stops"
            for name in steps.start if starting[name] in leaving]


def sweep_sockets(state: State) -> None:
    """Remove this production's sockets that no live vassal owns.

    uWSGI's `vacuum` removes a socket when its vassal stops, except when the vassal dropped to a
    `uid` that may not write run_dir; blue/green names would then pile up, one per change.
    """
    live = {name.removesuffix(".ini") for name in state.live_vassals()}
    for sock in state.run_dir.glob(f"{state.production}--*.sock"):
        if sock.name.removesuffix(".sock") not in live and sock.is_socket():
            unlink(sock)


# ------------------------------------------------------------------------------------------ probing

def log_tail(plan: Plan, sess: str, lines: int = 20) -> str:
    path = Path(plan.log_dir, f"{sess}.log")
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n" + "\n".join("    " + line for line in text)


def wait_ready(plan: Plan, vassals: Iterable[VassalPlan], timeout: float) -> None:
    """Wait until every vassal answers a real request with a status below 500."""
    pending = {v.stem: v for v in vassals}
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    while pending:
        for stem, vassal in list(pending.items()):
            try:
                status = vassal_answers(vassal, timeout=2.0)
                if status < 500:
                    del pending[stem]
                    continue
                last[stem] = f"answered {status}"
            except (OSError, ValueError, IndexError) as exc:
                last[stem] = f"{type(exc).__name__}: {exc}"
        if not pending:
            return
        if time.monotonic() >= deadline:
            vassal = next(iter(pending.values()))
            raise Failed(f"sess {vassal.sess} ({vassal.stem}) did not answer within {timeout:.0f} s "
                         f"({last.get(vassal.stem, 'no answer')})\n" + log_tail(plan, vassal.sess))
        time.sleep(0.1)


def check_gigs(plan: Plan, timeout: float) -> None:
    """Wait until each Gig answers through nginx with a status below 500, each within `timeout`."""
    for gig in plan.gigs:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = gig_answers(gig)
                problem = f"answered {status}" if status >= 500 else ""
            except (OSError, ValueError, IndexError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if not problem:
                break
            if time.monotonic() >= deadline:
                raise Failed(f"gig {gig.name} (http://{gig.host}{gig.url} via {gig.connect}) "
                             f"{problem}\n" + log_tail(plan, gig.sess))
            time.sleep(0.2)


# ---------------------------------------------------------------------------------------- the host

def nginx_test_host(plan: Plan) -> None:
    try:
        nginx.test(plan.host.nginx, "the host configuration")
    except nginx.NginxError as exc:
        raise Failed(str(exc)) from None


def reload_nginx(plan: Plan, wait: float) -> None:
    """Reload nginx and wait for the old workers; after `wait` seconds go on, with a warning."""
    try:
        finished = nginx.reload(plan.host.nginx, wait)
    except nginx.NginxError as exc:
        raise Failed(str(exc)) from None
    if not finished:
        say(f"warning: old nginx workers still running after {wait:.0f} s; going on")


def wake_emperor(plan: Plan) -> None:
    emperor.wake(plan.host.emperor_stats)


# -------------------------------------------------------------------------------------- the switch

def switch(artifact: Path, timeouts: Timeouts, dry_run: bool = False, locked: bool = False) -> int:
    """Make `artifact` live; returns the exit code. Refused (or ContractError) means nothing changed.

    `locked`: the caller already holds the production's lock (a rollback chooses its target under it).
    """
    verify(artifact)
    plan = read_plan(artifact)
    state = State(plan)
    try:
        nginx.test_servers(plan.host.nginx, artifact / NGINX)
    except nginx.NginxError as exc:
        raise Refused(str(exc)) from None
    crash_point("verified")
    with contextlib.nullcontext() if locked else state.lock(timeouts.lock_wait):
        steps = plan_steps(state)
        clashes = port_clashes(state, steps)
        if clashes:
            raise Refused("a changed Sess keeps its TCP port, so old and new cannot run side by side: "
                          + "; ".join(clashes) + ". Give it a new port, or drop `port` for a unix socket.")
        if dry_run:
            for verb, names in steps.by_verb():
                for name in names:
                    print(f"{verb:5} vassal {name}")
            print("nginx: test and reload")
            return 0
        # After an interrupted apply `current` may already name the new generation: undo to what was live.
        previous = state.last_good() or state.current_name()
        state.record(artifact.name, "start")
        generation = state.install(artifact)
        crash_point("installed")
        for directory in (state.run_dir, state.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        sweep_sockets(state)
        try:
            go_live(state, generation, steps, previous, timeouts)
        except Failed as failure:
            state.record(artifact.name, "failed")
            say(f"apply failed, rolled back to {previous or 'nothing'}: {failure}")
            return 1
        state.record(artifact.name, "ok")
    for verb, names in steps.by_verb():
        print(f"{verb:5} {len(names)} vassal(s)" + "".join(f"\n      {n}" for n in names))
    print(f"live: {generation}")
    return 0


def go_live(state: State, generation: Path, steps: Steps, previous: str | None, timeouts: Timeouts) -> None:
    """Steps 3 to 6 of the switch; on Failed, what was changed has been undone."""
    plan = state.plan
    by_file = plan.vassal_files()
    started = list(steps.start)
    for name in started:
        link(generation / UWSGI / name, state.vassals_dir / name)
    wake_emperor(plan)
    crash_point("vassals-linked")
    try:
        wait_ready(plan, [by_file[n] for n in steps.start + steps.keep], timeouts.ready)
    except Failed:
        stop_vassals(state, started)
        raise
    crash_point("vassals-ready")
    had_link = state.nginx_link.is_symlink()
    link(Path(GENERATIONS) / generation.name, state.current)
    link(state.current / INCLUDE, state.nginx_link)
    crash_point("current-switched")
    try:
        nginx_test_host(plan)
    except Failed:
        restore(state, previous, had_link, reload=False, timeouts=timeouts)
        stop_vassals(state, started)
        raise
    try:
        reload_nginx(plan, timeouts.drain)
        crash_point("nginx-reloaded")
        check_gigs(plan, timeouts.health)
    except Failed:
        restore(state, previous, had_link, reload=True, timeouts=timeouts)
        stop_vassals(state, started)
        raise
    crash_point("gigs-checked")
    for index, name in enumerate(steps.stop):
        unlink(state.vassals_dir / name)
        if index == 0:
            crash_point("stopping-old")
    wake_emperor(plan)


def restore(state: State, previous: str | None, had_link: bool, reload: bool, timeouts: Timeouts) -> None:
    """Point `current` and the nginx link back at what they were, and reload nginx if it had seen the new."""
    if previous:
        link(Path(GENERATIONS) / previous, state.current)
    else:
        unlink(state.current)
    if not had_link:
        unlink(state.nginx_link)
    if reload:
        with contextlib.suppress(Failed):
            nginx_test_host(state.plan)
            reload_nginx(state.plan, timeouts.drain)


def stop_vassals(state: State, names: Iterable[str]) -> None:
    for name in names:
        unlink(state.vassals_dir / name)
    wake_emperor(state.plan)
