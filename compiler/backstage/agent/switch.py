"""The switch: make a generation live by the procedure in the package docstring, or undo it.

Whatever stops a switch before its point of no return is met the same way: a step that fails (Failed),
a full or read-only disk (OSError), a signal (outcomes.Interrupted), a bug. Everything the switch
changed, as its Progress records, is undone, newest first, with signals held so that the undo is never
cut short; the history says `failed` or `interrupted`, and one line says what failed and what was done.
The point of no return is the history's `ok` line, written once every Gig has answered through nginx
after nginx took the new configuration; nothing old is stopped before it, and past it the switch
completes whatever arrives. kill -9 at any point leaves links from which the next run converges
(generations.return_target tells it what actually runs).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import ContractError, Plan, Timeouts, VassalPlan, read_plan, verify
from ..files import link, remove_tree, unlink
from . import acme, applog, dns, emperor, environment, nginx, procfs, store
from .generations import return_target
from .outcomes import SIGNALS, Failed, Interrupted, Refused, crash_point, out, say
from .probes import gig_answers, vassal_answers
from .state import GENERATIONS, State

UWSGI = "uwsgi"  # an artifact's and a generation's directory of vassal files
NGINX = "nginx"  # ... and of server files
INCLUDE = "include.conf"  # the file the production's link in nginx_dir points at, through `current`
STOP_WAIT = 10.0  # at most this long, after an undo, for the vassals it unlinked to exit
HEALTHY = 400  # a readiness or Gig check passes below this status (a redirect is fine, a 400 or 404 is not)


@dataclass(frozen=True, slots=True)
class Steps:
    """Vassal files (`<stem>.ini`) to start, to keep running untouched, and to stop once nginx has left them."""

    start: tuple[str, ...]
    keep: tuple[str, ...]
    stop: tuple[str, ...]

    def by_verb(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (("start", self.start), ("keep", self.keep), ("stop", self.stop))


@dataclass
class Progress:
    """What a switch has changed so far: exactly what an undo must put back."""

    previous: str | None  # the generation to return to (generations.return_target)
    before: str | None  # what `current` named when the switch began
    had_nginx_link: bool
    installing: bool = False  # copying the artifact into generations/ (a partial copy to remove)
    started: list[str] = field(default_factory=list)  # vassal links added (or being added)
    challenges: bool = False  # the nginx link may point at state_dir/acme.conf (ACME challenges)
    switched: bool = False  # `current` and the nginx link may point at the new generation
    reload_sent: bool = False  # nginx may have been told to load the new generation
    dns_sent: list[dns.ZoneChange] = field(default_factory=list)  # zones PATCHed (or being PATCHed)

    def changed(self, state: State) -> bool:
        """Whether anything that serves was touched (an added link, `current`), not only begun."""
        return (self.switched or self.challenges or bool(self.dns_sent)
                or any(os.path.lexists(state.vassals_dir / name) for name in self.started))


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


def _split(address: str) -> tuple[str, int]:
    ip, port = address.rsplit(":", 1)
    return ip, int(port)


def _who(pids: Iterable[int]) -> str:
    """The processes `pids`, by pid and title; a title is whatever its process says, so control
    characters (a newline that would start a line of apply's own) are shown as spaces."""
    described = [f"pid {pid} ({''.join(c if c.isprintable() else ' ' for c in procfs.title(pid)[:60]) or '?'})"
                 for pid in pids]
    return ", ".join(described[:3]) or "another process"


def taken_ports(state: State, steps: Steps) -> list[str]:
    """New vassals whose TCP address cannot be bound: another process listens there (or the address is
    not this host's). Their vassal would fail to start while the other process answered its readiness
    checks, so the switch is refused before anything changes."""
    by_file = state.plan.vassal_files()
    problems = []
    for name in steps.start:
        vassal = by_file[name]
        if not vassal.tcp:
            continue
        ip, port = _split(vassal.address)
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uWSGI binds
            try:
                probe.bind((ip, port))
                continue
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    why = f"{_who(procfs.holders(procfs.tcp_listeners(ip, port)))} already listens there"
                else:
                    why = exc.strerror or str(exc)
        problems.append(f"sess {vassal.sess} cannot bind its port {vassal.address}: {why}")
    return problems


def sweep_sockets(state: State) -> None:
    """Remove this production's sockets that no live vassal owns and no process listens on, and link
    temporaries a killed run left.

    uWSGI's `vacuum` removes a socket when its vassal stops, except when the vassal dropped to a
    `uid` that may not write run_dir; blue/green names would then pile up, one per change. A socket
    still listened on is kept: its vassal's link may be gone while the Emperor has not yet stopped it
    (a run killed right after unlinking it), and linking it again makes the Emperor keep it.
    """
    live = {name.removesuffix(".ini") for name in state.live_vassals()}
    listening: set[str] | None = None
    for sock in state.run_dir.glob(f"{state.production}--*.sock"):
        if sock.name.removesuffix(".sock") not in live and sock.is_socket():
            if listening is None:
                listening = procfs.unix_listening()
            if str(sock) not in listening:
                unlink(sock)
    for stale in state.vassals_dir.glob(f".{state.production}--*.tmp"):
        if stale.is_symlink():
            unlink(stale)


# ------------------------------------------------------------------------------------------ probing

def log_problem(plan: Plan, sess: str, offset: int) -> str:
    """The app's own error lines since `offset`, or why its log could not be written."""
    log = applog.path(plan, sess)
    if not log.exists():
        return f"(no log at {log}{_disk_trouble(Path(plan.log_dir))})"
    return applog.excerpt(plan, sess, offset)


def _disk_trouble(directory: Path) -> str:
    """Why a vassal may not have been able to write into `directory`, if its filesystem says so."""
    try:
        fs = os.statvfs(directory)
    except OSError as exc:
        return f": {directory}: {exc.strerror}"
    if fs.f_flag & os.ST_RDONLY:
        return f": {directory} is on a read-only filesystem"
    if fs.f_bavail == 0 or (fs.f_files and fs.f_favail == 0):
        return f": {directory}'s filesystem is full; free space there and apply again"
    return ""


def emperor_pids(state: State, ask: bool = True) -> tuple[set[int], dict[str, int]]:
    """The Emperor's pids and (when `ask`ed) from its stats, vassal file name -> pid of that vassal's master.

    The Emperor is the stats' "pid" when that process belongs to root (or to the user applying). Else
    (not `ask`ed, no stats socket, one that does not answer, or one that names another user's process)
    every process of root or of that user that runs the host's uWSGI binary or was started with
    `--emperor`. A title alone proves nothing: any user sets their own, but not their uid.
    """
    trusted = {0, os.geteuid()}
    address = state.plan.host.emperor_stats if ask else ""
    document: dict[str, Any] = {}
    if address:
        try:
            document = emperor.stats(address, 2.0)
        except (OSError, ValueError):
            document = {}
    pid = document.get("pid")
    if isinstance(pid, int) and pid > 1 and procfs.owned_by(pid, trusted):
        vassals = document.get("vassals", [])
        named = {str(v.get("id", "")).rsplit("/", 1)[-1]: v["pid"]
                 for v in (vassals if isinstance(vassals, list) else [])
                 if isinstance(v, dict) and isinstance(v.get("pid"), int) and v["pid"] > 0}
        return {pid}, named
    found = shutil.which(state.plan.host.uwsgi)
    binary = os.path.realpath(found) if found else None
    return {p for p in procfs.pids() if procfs.owned_by(p, trusted)
            and ("--emperor" in procfs.cmdline(p) or (binary is not None and procfs.runs(p, binary)))}, {}


def stage_uids(state: State, files: Iterable[str]) -> set[int]:
    """The uids the vassals `files` drop to (their files' `uid =`, the Stage's), from the installed
    generations' copies of those files (a vassal file's name holds its content's hash)."""
    found: set[int] = set()
    for name in files:
        for path in sorted(state.generations.glob(f"*/{UWSGI}/{name}")):
            try:
                text = path.read_text()
            except OSError:
                continue
            for line in text.splitlines():
                key, sep, value = line.partition("=")
                if sep and key.strip() == "uid" and not line.startswith((";", "#")):
                    with contextlib.suppress(KeyError):  # no such user: the vassal does not start
                        found.add(environment.user_id(value.strip()))
            break
    return found


def vassal_processes(state: State, files: Iterable[str], stats: bool = True) -> set[int]:
    """The processes of the vassals `files`: each one's master and the master's descendants (its workers).

    A master is a child of the Emperor (emperor_pids; without `stats` the Emperor is not asked) that its
    stats name for the file or that runs `--ini .../<file>`; every process counted belongs to root, to the user applying
    or to the vassal's Stage uid. Any user can give their own process a vassal's command line, but not
    make it the Emperor's child or give it another uid (README, Safety 7).
    """
    files = set(files)
    emperors, named = emperor_pids(state, ask=stats)
    if not emperors:
        return set()
    trusted = {0, os.geteuid()} | stage_uids(state, files)
    tree = procfs.parents()
    roots = {pid for name, pid in named.items() if name in files}
    for pid, parent in tree.items():
        if parent in emperors:
            command = procfs.cmdline(pid)
            if "--ini" in command[:-1] and Path(command[command.index("--ini") + 1]).name in files:
                roots.add(pid)
    roots = {pid for pid in roots if tree.get(pid) in emperors and procfs.owned_by(pid, trusted)}
    return roots | {pid for pid in tree if procfs.descends(pid, roots, tree) and procfs.owned_by(pid, trusted)}


def wrong_process(state: State, vassal: VassalPlan) -> str:
    """For a TCP vassal that answered: "" if the listening socket that answered is its vassal's own,
    else who holds it. When /proc cannot tell (another network namespace), the answer is trusted."""
    if not vassal.tcp:
        return ""  # the socket's path holds the vassal's own content hash, in run_dir
    ip, port = _split(vassal.address)
    inodes = procfs.tcp_listeners(ip, port)
    if not inodes or any(procfs.socket_inodes(pid) & inodes for pid in vassal_processes(state, [vassal.file])):
        return ""
    holders = procfs.holders(inodes)
    return f"{vassal.address} is held by {_who(holders)}, not by its vassal" if holders else ""


def wait_ready(state: State, vassals: Iterable[VassalPlan], timeout: float, offsets: dict[str, int]) -> None:
    """Wait until every vassal answers a real request with a status below 400, from its own process.
    `offsets`: each Sess's log size before its vassals started (what a failure quotes comes after)."""
    plan = state.plan
    pending = {v.stem: v for v in vassals}
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    while pending:
        for stem, vassal in list(pending.items()):
            try:
                status = vassal_answers(vassal, timeout=2.0)
                if status < HEALTHY:
                    if wrong := wrong_process(state, vassal):
                        raise Failed(f"sess {vassal.sess} ({stem}) is not what answers at its address: {wrong}; "
                                     "free the port or give the Sess another `port`")
                    del pending[stem]
                    continue
                lines = applog.since(plan, vassal.sess, offsets.get(vassal.sess, 0)) if status == 400 else []
                last[stem] = applog.status_problem(status, lines)
                if applog.refused_host(lines) is not None:  # the settings refuse it: waiting changes nothing
                    raise Failed(f"sess {vassal.sess} ({stem}) {last[stem]}\n"
                                 + log_problem(plan, vassal.sess, offsets.get(vassal.sess, 0)))
            except (OSError, ValueError, IndexError) as exc:
                last[stem] = f"{type(exc).__name__}: {exc}"
        if not pending:
            return
        crash_point("waiting-ready")
        if time.monotonic() >= deadline:
            vassal, *others = pending.values()
            trouble = emperor.trouble(plan.host.emperor_stats)
            also = f"; also waiting for sess {', '.join(v.sess for v in others)}" if others else ""
            raise Failed(f"sess {vassal.sess} ({vassal.stem}) did not answer within {timeout:.0f} s "
                         f"({last.get(vassal.stem, 'no answer')}){also}" + (f"; {trouble}" if trouble else "")
                         + "\n" + log_problem(plan, vassal.sess, offsets.get(vassal.sess, 0)))
        time.sleep(0.1)


def check_gigs(plan: Plan, timeout: float, offsets: dict[str, int]) -> None:
    """Wait until each Gig answers through nginx with a status below 400, each within `timeout`."""
    for gig in plan.gigs:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = gig_answers(gig)
                problem = "" if status < HEALTHY else applog.status_problem(
                    status, applog.since(plan, gig.sess, offsets.get(gig.sess, 0)) if status == 400 else [])
            except (OSError, ValueError, IndexError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if not problem:
                break
            crash_point("checking-gigs")
            if time.monotonic() >= deadline:
                raise Failed(f"gig {gig.name} (http://{gig.host}{gig.url} via {gig.connect}) "
                             f"{problem}\n" + log_problem(plan, gig.sess, offsets.get(gig.sess, 0)))
            time.sleep(0.2)


# ---------------------------------------------------------------------------------------- the host

def nginx_test_host(plan: Plan) -> None:
    try:
        nginx.test(plan.host.nginx, "the host configuration")
    except nginx.NginxError as exc:
        raise Failed(str(exc)) from None


def reload_nginx(plan: Plan, wait: float, progress: Progress) -> None:
    """Reload nginx and prove it took; if old workers still run after `wait` seconds, go on with a warning."""
    progress.reload_sent = True
    try:
        finished = nginx.reload(plan.host.nginx, wait)
    except nginx.NotSent as exc:
        progress.reload_sent = False
        raise Failed(str(exc)) from None
    except nginx.NginxError as exc:
        raise Failed(str(exc)) from None
    if not finished:
        say(f"warning: old nginx workers still running after {wait:.0f} s; going on")


def wake_emperor(plan: Plan) -> None:
    emperor.wake(plan.host.emperor_stats)


def point(at: Path, target: Path) -> None:
    """Make the link `at` point at `target`, writing nothing when it already does (a full disk allows it)."""
    try:
        if os.readlink(at) == str(target):
            return
    except OSError:
        pass
    link(target, at)


def describe(exc: BaseException) -> str:
    """What stopped a switch, for its one line."""
    if isinstance(exc, OSError):
        path = exc.filename2 or exc.filename  # symlink(target, path), rename(tmp, path): path is written
        where = f"{path}: " if path else ""
        hint = {errno.ENOSPC: "; free space there and apply again", errno.EDQUOT: "; raise the quota or free space",
                errno.EROFS: "; that filesystem is read-only"}.get(exc.errno or 0, "")
        return f"cannot write {where}{exc.strerror or exc}{hint}"
    if isinstance(exc, Failed | Refused | ContractError | Interrupted):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc} (please report it)"


# -------------------------------------------------------------------------------------- the switch

def switch(artifact: Path, timeouts: Timeouts, dry_run: bool = False, locked: bool = False,
           force: bool = False, expect_live: str | None = None, as_json: bool = False) -> int:
    """Make `artifact` live; returns the exit code. Refused (or ContractError) means nothing changed.

    `locked`: the caller already holds the production's lock (a rollback chooses its target under it).
    A dry run takes no lock, waits for none and writes nothing. `force`: a DNS change over the guard's
    share is made (dns.py).
    """
    verify(artifact)
    plan = read_plan(artifact)
    state = State(plan)
    try:
        nginx.test_servers(plan.host.nginx, servers_to_test(plan, artifact))
    except nginx.NginxError as exc:
        raise Refused(str(exc)) from None
    crash_point("verified")
    if dry_run:
        return dry_run_switch(state, artifact, force, as_json)
    if locked:
        return locked_switch(state, artifact, timeouts, force, expect_live)
    with state.lock(timeouts.lock_wait):
        return locked_switch(state, artifact, timeouts, force, expect_live)


def servers_to_test(plan: Plan, artifact: Path) -> list[Path]:
    """The artifact's server files, an ACME Venue's challenge file in place of its own while its
    certificate is missing (the host's `nginx -t` tests the TLS server once certbot got it)."""
    files = {path.name: path for path in sorted((artifact / NGINX).glob("*.conf"))}
    for cert in acme.missing(plan):
        files[f"{cert.venue}.conf"] = artifact / cert.challenge
    return [files[name] for name in sorted(files)]


def refuse_unstartable(state: State, steps: Steps) -> None:
    environment.check(state.plan)  # secrets and data directories
    clashes = port_clashes(state, steps)
    if clashes:
        raise Refused("a changed Sess keeps its TCP port, so old and new cannot run side by side: "
                      + "; ".join(clashes) + ". Give it a new port, or drop `port` for a unix socket.")
    taken = taken_ports(state, steps)
    if taken:
        raise Refused("; ".join(taken) + ". Free the port or give the Sess another `port`; nothing was changed.")


def dry_run_switch(state: State, artifact: Path, force: bool, as_json: bool = False) -> int:
    """Print what applying the artifact would do now, in lines or (`as_json`) as one JSON document."""
    steps = plan_steps(state)
    refuse_unstartable(state, steps)
    zone_changes = dns.prepare(state, artifact, force)
    root = Path(state.plan.store_dir)
    reasons = start_reasons(state, artifact, steps)
    ca = state.plan.acme.directory if state.plan.acme else ""
    found: dict[str, Any] = {
        "format": 1,
        "artifact": artifact.name,
        "state_dir": str(state.root),
        "state_dir_exists": os.path.lexists(state.root),
        "live": state.current_name() or None,
        "build": [name for name in sorted(state.plan.store_paths()) if not store.complete(root / name)],
        "certificates": [{"venue": cert.venue, "names": list(cert.names), "ca": ca}
                         for cert in acme.missing(state.plan)],
        "steps": [{"kind": step.kind, "act": step.act, "argv": list(step.argv)} for step in state.plan.steps
                  if step.kind != "collectstatic" or not store.complete(root / step.static)],
        "vassals": {verb: [{"file": name, "why": reasons.get(name)} for name in names]
                    for verb, names in steps.by_verb()},
        "nginx": "test and reload",
        "dns": [{"zone": zone_change.zone, "verb": change.verb, "name": change.rrset.name,
                 "type": change.rrset.type, "ttl": change.rrset.ttl, "records": list(change.rrset.records)}
                for zone_change in zone_changes for change in zone_change.changes],
    }
    if as_json:
        out(json.dumps(found, indent=1, sort_keys=True))
        return 0
    if not found["state_dir_exists"]:
        out(f"state_dir {state.root} does not exist yet: apply would create it")
    out(f"live  {found['live'] or 'nothing'}")
    for name in found["build"]:
        out(f"build store path {name}")
    for cert in found["certificates"]:
        out(f"get   the certificate of venue {cert['venue']} ({', '.join(cert['names'])}) from {cert['ca'] or '?'}")
    for step in found["steps"]:
        out(f"run   {step['kind']} of act {step['act']}: {' '.join(step['argv'])}")
    for verb, vassals in found["vassals"].items():
        for vassal in vassals:
            out(f"{verb:5} vassal {vassal['file']}" + (f" ({vassal['why']})" if vassal["why"] else ""))
    out(f"nginx: {found['nginx']}")
    for zone_change in zone_changes:
        for change in zone_change.changes:
            out(f"dns   {change.describe()}")
    return 0


def start_reasons(state: State, artifact: Path, steps: Steps) -> dict[str, str]:
    """Why each vassal to start is started: a new Sess, or which settings of its running vassal differ
    (its file's `key = value` lines; a changed environment or code shows as its entry's wsgi-file)."""
    running: dict[str, Path] = {}
    plans: dict[str, Plan | None] = {}
    for name in steps.stop + steps.keep:
        vassal = linked_vassal(state, name, plans)
        if vassal is not None:
            running.setdefault(vassal.sess, state.vassals_dir / name)
    reasons = {}
    by_file = state.plan.vassal_files()
    for name in steps.start:
        sess = by_file[name].sess
        old = running.get(sess)
        if old is None:
            reasons[name] = f"new sess {sess}"
            continue
        try:
            before, after = _settings(old.read_text()), _settings((artifact / UWSGI / name).read_text())
        except OSError:
            reasons[name] = f"sess {sess} changed"
            continue
        keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        reasons[name] = f"sess {sess} changed: {', '.join(keys) if keys else 'restarted (apply --restart)'}"
    return reasons


def _settings(text: str) -> dict[str, list[str]]:
    """A vassal file's options (repeatable ones as lists); the socket, which holds the file's own hash,
    is left out."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith((";", "#", "[")) and key.strip() not in ("socket", "http-socket"):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def locked_switch(state: State, artifact: Path, timeouts: Timeouts, force: bool = False,
                  expect_live: str | None = None) -> int:
    if expect_live is not None and (state.current_name() or "") != expect_live:
        raise Refused(f"the saved plan is stale: it was made while {expect_live or 'nothing'} was live, and "
                      f"{state.current_name() or 'nothing'} is live now; make a new plan (backstage plan)")
    steps = plan_steps(state)
    refuse_unstartable(state, steps)
    zone_changes = dns.prepare(state, artifact, force)  # read-only: PowerDNS's zones, what would change
    progress = Progress(previous=return_target(state), before=state.current_name(),
                        had_nginx_link=state.nginx_link.is_symlink())
    try:
        state.record(artifact.name, "start")
        progress.installing = True
        generation = state.install(artifact)
        progress.installing = False
        crash_point("installed")
        sweep_sockets(state)
        # The store before any new vassal starts: Acts, built Stages, collectstatic, migrate, release.
        # It changes nothing that serves; a failure here is undone like any other.
        store.prepare(state.plan, generation)
        get_certificates(state, generation, progress, timeouts)
        go_live(state, generation, steps, progress, timeouts)
        # DNS last: only once the web side is proven, and inside the same lock; undone with it.
        dns.send(state.plan.producer, zone_changes, progress.dns_sent)
        SIGNALS.hold()  # from here on a signal only waits for the switch to finish
        state.record(artifact.name, "ok")  # the point of no return
    except (Exception, Interrupted) as stop:
        try:
            return undone(state, artifact.name, progress, stop, timeouts)
        except Interrupted:  # it came before undone() held signals; it is remembered: undo again, held
            return undone(state, artifact.name, progress, stop, timeouts)
    crash_point("gigs-checked")
    warnings = []
    for index, name in enumerate(steps.stop):
        try:
            unlink(state.vassals_dir / name)
        except OSError as exc:
            warnings.append(f"warning: {describe(exc)}: vassal {name} keeps running until the next apply")
        if index == 0:
            crash_point("stopping-old")
    wake_emperor(state.plan)
    for verb, names in steps.by_verb():
        out(f"{verb:5} {len(names)} vassal(s)" + "".join(f"\n      {n}" for n in names))
    for zone_change in zone_changes:
        out(f"dns   zone {zone_change.zone}: {len(zone_change.changes)} RRset(s) changed"
            + "".join(f"\n      {c.describe()}" for c in zone_change.changes))
    for warning in warnings:
        say(warning)
    if SIGNALS.received is not None:
        say(f"{SIGNALS.name()} came after the new generation was proven live; the switch was finished")
    out(f"live: {generation}")
    return 0


def get_certificates(state: State, generation: Path, progress: Progress, timeouts: Timeouts) -> None:
    """Before any vassal starts: the certificates the generation's ACME Venues lack, their challenges
    served meanwhile through state_dir/acme.conf (acme.py)."""
    acme.prepare(state.plan)

    def serve(config: Path) -> None:
        progress.challenges = True
        point(state.nginx_link, config)
        crash_point("challenges-linked")
        nginx_test_host(state.plan)
        reload_nginx(state.plan, timeouts.drain, progress)
        crash_point("challenges-served")

    acme.obtain(state, generation, serve)
    crash_point("certificates")


def go_live(state: State, generation: Path, steps: Steps, progress: Progress, timeouts: Timeouts) -> None:
    """Steps 3 to 5 of the switch, recording each change in `progress` before making it."""
    plan = state.plan
    by_file = plan.vassal_files()
    offsets = applog.offsets(plan)
    for name in steps.start:
        progress.started.append(name)
        link(generation / UWSGI / name, state.vassals_dir / name)
    wake_emperor(plan)
    crash_point("vassals-linked")
    wait_ready(state, [by_file[n] for n in steps.start + steps.keep], timeouts.ready, offsets)
    crash_point("vassals-ready")
    progress.switched = True
    point(state.current, Path(GENERATIONS) / generation.name)
    point(state.nginx_link, state.current / INCLUDE)
    crash_point("current-switched")
    nginx_test_host(plan)
    reload_nginx(plan, timeouts.drain, progress)
    crash_point("nginx-reloaded")
    check_gigs(plan, timeouts.health, offsets)


def undone(state: State, name: str, progress: Progress, stop: BaseException, timeouts: Timeouts) -> int:
    """Undo what `progress` records, write the history, say what happened in one line; the exit code."""
    with SIGNALS.held():
        changed = progress.changed(state)
        crash_point("undoing")
        notes = undo(state, progress, timeouts)
        event = "interrupted" if isinstance(stop, Interrupted) else "failed"
        try:
            state.record(name, event)
        except OSError as exc:
            notes.append(f"the history could not be written ({describe(exc)})")
    reason, _, details = describe(stop).partition("\n")
    if not changed:
        where = f"nothing was changed ({progress.before or 'nothing'} stays live)"
    elif progress.previous:
        where = f"rolled back to {progress.previous}"
    else:
        where = "nothing was live before; removed what it added"
    but = "".join(f"; but {note}" for note in notes)
    if isinstance(stop, Interrupted):
        say(f"apply {stop}, {where}{but}")
        return stop.code
    # A signal that came while the failure was being undone waited for the undo; its code says so.
    late = f"; {SIGNALS.name()} arrived during the undo, which was finished first" if SIGNALS.received else ""
    code = 128 + SIGNALS.received if SIGNALS.received else 1
    if isinstance(stop, Refused | ContractError) and not changed:
        say(f"refused: {reason}{but}{late}")
        return code if SIGNALS.received else 2
    say(f"apply failed, {where}: {reason}{but}{late}" + (f"\n{details}" if details else ""))
    return code


def undo(state: State, progress: Progress, timeouts: Timeouts) -> list[str]:
    """Put back what `progress` records, newest first; returns what could not be put back.

    The vassals the switch started are stopped only once nginx is known not to route to them: it was
    never told about them, or it has taken the previous configuration back. Otherwise they are kept
    running (serving nothing, or serving what nginx still routes to them) until a later run.
    """
    plan = state.plan
    notes: list[str] = dns.undo(plan.producer, progress.dns_sent)  # the last change made, so the first undone
    if progress.installing:
        for partial in state.generations.glob(".tmp-*"):
            try:
                remove_tree(partial)
            except OSError as exc:
                notes.append(f"a partial copy is left: {describe(exc)}")
    if progress.switched or progress.challenges:
        try:
            if progress.switched and progress.previous:
                point(state.current, Path(GENERATIONS) / progress.previous)
            elif progress.switched:
                unlink(state.current)
            if not progress.had_nginx_link:
                unlink(state.nginx_link)
            else:
                point(state.nginx_link, state.current / INCLUDE)
        except OSError as exc:
            notes.append(f"`current` could not be pointed back ({describe(exc)}); run rollback once it can")
    nginx_back = True
    if progress.reload_sent:
        try:
            nginx.test(plan.host.nginx, "the host configuration")
            nginx.reload(plan.host.nginx, timeouts.drain)
        except nginx.NginxError as exc:
            nginx_back = False
            first = str(exc).splitlines()[0]
            notes.append(f"nginx did not reload back either ({first}); the new vassals are kept running "
                         "so that whatever nginx routes to answers; run apply or rollback again once nginx does")
    if progress.started and nginx_back:
        try:
            stop_vassals(state, progress.started)
        except OSError as exc:
            notes.append(f"the new vassals could not be unlinked ({describe(exc)}); run apply again once they can")
        else:
            wait_stopped(state, progress.started, min(timeouts.ready, STOP_WAIT))
    return notes


def stop_vassals(state: State, names: Iterable[str]) -> None:
    for name in names:
        if os.path.lexists(state.vassals_dir / name):  # a read-only directory refuses even a missing name
            unlink(state.vassals_dir / name)
    wake_emperor(state.plan)


def wait_stopped(state: State, names: list[str], timeout: float) -> None:
    """Wait (at most `timeout`) until the unlinked vassals' processes have exited, so that a run right
    after finds their ports and names free."""
    deadline = time.monotonic() + timeout
    while vassal_processes(state, names, stats=False) and time.monotonic() < deadline:
        time.sleep(0.1)
