"""`backstage try`: build a production and run it live in a private sandbox on 127.0.0.1.

The production is built as written, except for what plugs it into a host: [host], its three
directories, each Venue's listen (all on the sandbox's one port; TLS, its plain-HTTP side and HSTS
dropped) and each Act's `data` (a directory in the sandbox, so a rehearsal never writes into the real
one, a live database say).
Run as root, the Stages keep their uid/gid, so the vassals drop to them as in production and a
permission problem shows here first; run as another user, they are dropped (the vassals run as that
user), which is said. --path-map moves absolute paths (Act paths, static directories, virtualenvs,
secret files, data directories), so an example can run from a checkout. The file is checked as
written first; the changes are then an overlay on the loaded file, checked again: an error in a value
the overlay set is reported as `backstage try: ...`, every other error at its line in the file.

SIGINT, SIGTERM and SIGHUP stop it whenever they come; their handlers are installed explicitly, as a
shell starts a background job (`backstage try f.toml &`) with SIGINT ignored. Whatever the sandbox
started is stopped and its directory removed (kept with --keep); the exit status is 0 for a stop asked
for once the production is live, 128 + N for one before, and 1 when the apply failed (after the
sandbox's logs are printed: the directory that holds them is about to go).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from .. import compile as compile_production
from ..agent.applog import ACCESS
from ..agent.outcomes import Interrupted
from ..contract import INSTALLER
from ..errors import CONTROL
from ..files import remove_tree
from ..phases import artifact
from ..phases.load import KeyPath
from ..phases.model import Production
from ..phases.pipeline import check_file
from . import handoff
from .sandbox import TAG, Sandbox, SandboxError, find_components

__all__ = ["SandboxError", "overlay", "parse_path_map", "run"]

LABEL = "backstage try"
PathMap = list[tuple[str, str]]
STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOPPED_EXITS = tuple(128 + signum for signum in STOPPING)  # the agent stopped by one of them, after undoing
TLS_ONLY = ("tls", "redirect_http", "http_listen")  # a Venue's keys that go with its TLS (dropped here)
LOG_LINES = 12  # of each sandbox log printed after a failed apply


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


def _virtualenv_here(virtualenv: str, maps: PathMap) -> str:
    """Where a Stage's `virtualenv` is on this machine: moved by the maps; backstage's own Python's
    prefix if it is not here."""
    moved = _moved(virtualenv, maps)
    return sys.prefix if _missing_here(moved) else moved


def _account_missing(value: Any, lookup: Callable[[str], object]) -> bool:
    """Whether a uid/gid names a user or group this machine does not have (a number always exists)."""
    if not isinstance(value, str) or not value or value.isdigit():
        return False
    try:
        lookup(value)
    except KeyError:
        return True
    return False


def _me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def overlay(sandbox: Sandbox, root: Path, maps: PathMap, summary: list[str] | None = None,
            notices: list[str] | None = None) -> Callable[[dict[str, Any]], list[KeyPath]]:
    """The pipeline's overlay: plug the loaded production into `sandbox`, returning the key paths it set.

    `summary` gets a line for each thing a user should know once it is live (where each Act's data
    went); `notices`, one for each thing to say before it starts (uid/gid not used).
    """
    summary = [] if summary is None else summary
    notices = [] if notices is None else notices

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
        if data.pop("producer", None) is not None:  # a rehearsal writes no DNS
            placed.append(("producer",))
        for name, venue in _entries(data, "venues"):
            put(venue, ("venues", name, "listen"), sandbox.listen)
            for key in TLS_ONLY:
                venue.pop(key, None)
            if "hsts" in venue:
                venue["hsts"] = 0  # plain HTTP sends none (the model wants the key; its default is 0)
        dropped = False
        for name, stage in _entries(data, "stages"):
            if os.geteuid() != 0:
                dropped = dropped or "uid" in stage or "gid" in stage
                stage.pop("uid", None)
                stage.pop("gid", None)
            else:
                # As root the vassals drop to the Stage's user, as in production; an account this
                # machine lacks cannot be rehearsed.
                for key, lookup, what in (("uid", pwd.getpwnam, "user"), ("gid", grp.getgrnam, "group")):
                    if _account_missing(stage.get(key), lookup):
                        notices.append(f"{LABEL}: stage {name}: {what} {stage[key]!r} does not exist on this "
                                       f"machine, so its `{key}` is not used here")
                        stage.pop(key)
            virtualenv = stage.get("virtualenv")
            if isinstance(virtualenv, str):
                put(stage, ("stages", name, "virtualenv"), _virtualenv_here(virtualenv, maps))
        if dropped:
            notices.append(f"{LABEL}: not running as root, so the Stages' uid/gid are not used: the vassals run "
                           f"as {_me()}")
        for name, act in _entries(data, "acts"):
            if isinstance(act.get("path"), str):
                put(act, ("acts", name, "path"), _moved(act["path"], maps))
            static = act.get("static")
            if isinstance(static, dict):
                for prefix, directory in static.items():
                    if isinstance(directory, str):
                        put(static, ("acts", name, "static", prefix), _moved(directory, maps))
            secrets = act.get("secrets")
            if isinstance(secrets, dict):
                for variable, file in secrets.items():
                    if isinstance(file, str):
                        put(secrets, ("acts", name, "secrets", variable), _moved(file, maps))
            given = act.get("data")
            if isinstance(given, str):
                moved = _moved(given, maps)
                if moved != given:
                    summary.append(f"data of act {name}: {moved} (--path-map of {given})")
                else:
                    moved = str(root / "data" / name)
                    summary.append(f"data of act {name}: {moved} (in the sandbox; {given} is not touched)")
                put(act, ("acts", name, "data"), moved)
        return placed

    return plug


# ------------------------------------------------------------------------------------------ signals

class _Signals:
    """SIGINT, SIGTERM and SIGHUP while `try` runs, whatever their inherited disposition (a background
    job's SIGINT is ignored). The first one raises Interrupted where the run is, or, inside `held()`, as that
    block ends; any later one is only noted, so the clean-up that the first one started is never cut
    short."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._held = False
        self._pending: int | None = None

    def __enter__(self) -> _Signals:
        for signum in STOPPING:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            if self._held:
                self._pending = signum
            else:
                raise Interrupted(signum)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A block no stop may cut in two (making a directory and noting it for removal)."""
        self._held = True
        try:
            yield
        finally:
            self._held = False
        if self._pending is not None:
            raise Interrupted(self._pending)


# ------------------------------------------------------------------------------------------ the run

def _stage_environments(production: Production, maps: PathMap) -> list[str]:
    """The Stages' own virtualenvs on this machine (built Stages have none until apply builds them)."""
    return [_virtualenv_here(stage.virtualenv, maps) for stage in production.stages.values() if stage.virtualenv]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Rehearsal:
    def __init__(self, production_file: str, port: int | None, maps: PathMap, keep: bool) -> None:
        self.production_file = production_file
        self.port = port
        self.maps = maps
        self.keep = keep
        self.root: Path | None = None
        self.sandbox: Sandbox | None = None
        self.name = "the production"
        self.started = False
        self.live = False
        self.cleaned = False

    def perform(self, signals: _Signals) -> int:
        """Build, start and apply; returns only when that failed (a stop raises Interrupted)."""
        # The file as written first: its own errors, in the keys the overlay replaces too, at their
        # lines, and before a missing nginx or uWSGI is reported.
        checked = check_file(self.production_file)
        self.name = checked.production.name
        components = find_components(_stage_environments(checked.production, self.maps))
        with signals.held():
            self.root = root = Path(tempfile.mkdtemp(prefix="bs-try-"))
        root.chmod(0o755)  # as a host's /var/lib: the Stages' users reach their code, store paths and data
        self.sandbox = sandbox = Sandbox(root / "sandbox", http_port=self.port, components=components)
        summary: list[str] = []
        notices: list[str] = []
        compiled = compile_production(self.production_file, overlay=overlay(sandbox, root, self.maps, summary, notices),
                                      overlay_label=LABEL)
        for notice in notices:
            _say(notice)
        self.started = True  # from here on the sandbox has something to inspect (for --keep)
        sandbox.start()
        built = artifact.write(compiled.files, root / "build", compiled.name)
        code, stop = self._apply(signals, sandbox, built / INSTALLER)
        if stop is not None:
            # Forwarded to the agent, which undid its switch (or, stopped while its Python was still
            # starting, never began one; or finished it, past the point of no return): stop here too.
            _say(f"{LABEL}: stopped by {signal.Signals(stop).name} before {self.name} went live")
            return 128 + stop
        if code != 0:
            self._print_logs(sandbox, root)
            return 1
        self.live = True  # from here on, a stop is what the user asked for: exit 0
        self._print_live(compiled.production, sandbox, root, summary)
        while True:
            time.sleep(3600)

    @staticmethod
    def _apply(signals: _Signals, sandbox: Sandbox, installer: Path) -> tuple[int, int | None]:
        """Run the artifact's agent; its exit code, and the stopping signal that came meanwhile, if any.

        run_installer forwards SIGINT, SIGTERM and SIGHUP to the agent with handlers of its own; the
        signal wake-up fd sees them all the same, so a stop is known whatever the agent made of it.
        """
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        previous = signal.set_wakeup_fd(write)
        # The agent and whatever it starts carry the sandbox's token, so stop() finds any of them left.
        os.environ[TAG] = sandbox.token
        try:
            code = handoff.run_installer(installer, "apply")
        finally:
            with signals.held():
                os.environ.pop(TAG, None)
                signal.set_wakeup_fd(previous)
                try:
                    arrived = os.read(read, 4096)
                except BlockingIOError:
                    arrived = b""
                os.close(read)
                os.close(write)
        stop = next((signum for signum in arrived if signum in STOPPING), None)
        if stop is None and -code in STOPPING:  # killed by it before its Python could handle it
            stop = -code
        if stop is None and code in STOPPED_EXITS:
            stop = code - 128
        if stop is not None:
            signals.received = signals.received or stop  # any later one only noted: the clean-up runs whole
        return code, stop

    def _print_live(self, production: Production, sandbox: Sandbox, root: Path, summary: list[str]) -> None:
        print(f"{production.name} is live in {root}; Ctrl-C stops it.")
        for gig in production.gigs.values():
            venue = production.venues[gig.venue]
            print(f"  gig {gig.name}: curl -H 'Host: {venue.domain}' http://{sandbox.listen}{gig.path}")
        for venue in production.venues.values():
            if not any(g.venue == venue.name for g in production.gigs.values()):
                print(f"  venue {venue.name} (closed): curl -H 'Host: {venue.domain}' http://{sandbox.listen}/")
        for line in summary:
            print(f"  {line}")
        sys.stdout.flush()

    def _print_logs(self, sandbox: Sandbox, root: Path) -> None:
        """The ends of the sandbox's logs, which the messages above may name: printed before they go.
        Request lines are left out, and of the Emperor's log all but its own events (spawned, cursed...)."""
        logs = [*((log, "") for log in sorted((root / "log").glob("*.log"))),
                (sandbox.emperor_log, "[emperor]"), (sandbox.nginx_error_log, "")]
        shown = [(log, lines) for log, only in logs if (lines := _tail(log, only))]
        if not shown:
            return
        where = f"kept in {root}" if self.keep else "removed with the sandbox; --keep keeps them"
        _say(f"{LABEL}: the sandbox's logs ({where}):")
        for log, lines in shown:
            _say(f"--- {log} (last {len(lines)} lines) ---")
            for line in lines:
                _say(f"    {line}")

    def stopped(self, stop: Interrupted) -> int:
        """Say so, and return the exit status: 0 for a stop once live (what the user asked for)."""
        if self.live:
            _say(f"stopping ({stop.name})")
            return 0
        _say(f"{LABEL}: stopped by {stop.name} before {self.name} went live")
        return stop.code

    def clean_up(self) -> bool:
        """Stop whatever the sandbox started and remove its directory (unless --keep); True if nothing was
        left running. Safe to call again after an interrupted call."""
        if self.cleaned:
            return True
        clean = True
        if self.sandbox is not None:
            try:
                self.sandbox.stop()
            except SandboxError as exc:
                _say(f"{LABEL}: {exc}")
                clean = False
        if self.root is not None:
            if self.keep and self.started:
                _say(f"{LABEL}: kept the sandbox for inspection: {self.root}")
            elif os.path.lexists(self.root):
                remove_tree(self.root)
        self.cleaned = True
        return clean


def _tail(path: Path, only: str = "") -> list[str]:
    """The last LOG_LINES lines of a log that are not uWSGI's request lines (with `only`: that hold it)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    lines = [line for line in text.splitlines() if line.strip() and not ACCESS.match(line) and only in line]
    return lines[-LOG_LINES:]


def run(production_file: str, port: int | None, maps: PathMap, keep: bool = False) -> int:
    """Rehearse `production_file` until a stopping signal; see the module's docstring for the exit status."""
    rehearsal = _Rehearsal(production_file, port, maps, keep)
    code, clean = 1, True
    try:
        with _Signals() as signals:
            try:
                try:
                    code = rehearsal.perform(signals)
                except SandboxError as exc:  # said before the sandbox, whose logs it quotes, is removed
                    _say(f"{LABEL}: {exc}")
                    code = 1
                except Interrupted as stop:
                    code = rehearsal.stopped(stop)
                finally:
                    clean = rehearsal.clean_up()
            except Interrupted as stop:
                # The first signal came during the clean-up (or just before it): it was cut short, and
                # no signal raises any more, so this one finishes.
                code = rehearsal.stopped(stop)
                clean = rehearsal.clean_up()
    except Interrupted as stop:  # while the handlers were being put back: everything was done already
        code = stop.code
    return code if clean else 1
