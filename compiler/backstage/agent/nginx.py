"""nginx on the host: test a configuration, reload it, and tell whether the reload took and when it finished."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import procfs

WORKER_TITLE = "nginx: worker process"  # "... is shutting down" once retired by a reload
MASTER_TITLE = "nginx: master process"
TEMP_KINDS = ("client_body", "proxy", "uwsgi", "fastcgi", "scgi")


class NginxError(Exception):
    """nginx refused a configuration or a signal; the message holds what it printed."""


class NotSent(NginxError):
    """`nginx -s reload` failed: the master was never told to reload, and runs what it ran."""


def run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(command), capture_output=True, text=True, timeout=120, check=False)
    except OSError as exc:
        return subprocess.CompletedProcess(list(command), 127, "", f"{command[0]}: {exc.strerror}")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(command), 124, "", f"{command[0]}: no answer in 120 s")


def test(command: Sequence[str], what: str) -> None:
    """`nginx -t` with the host's own configuration."""
    done = run([*command, "-t"])
    if done.returncode != 0:
        raise NginxError(f"nginx -t of {what} failed:\n" + done.stderr.strip())


def test_servers(command: Sequence[str], servers: Sequence[Path]) -> None:
    """`nginx -t` of the server files `servers` alone, in a private prefix, before the host is touched."""
    with tempfile.TemporaryDirectory(prefix="backstage-nginx-t-") as tmp:
        conf = Path(tmp, "nginx.conf")
        temps = "".join(f"    {kind}_temp_path {tmp}/{kind};\n" for kind in TEMP_KINDS)
        conf.write_text(f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\nevents {{}}\n"
                        f"http {{\n{temps}    access_log off;\n"
                        + "".join(f'    include "{path}";\n' for path in servers) + "}\n")
        done = run([*command, "-t", "-p", tmp, "-c", str(conf)])
        if done.returncode != 0:
            raise NginxError("nginx -t of the new generation failed:\n" + done.stderr.strip())


def workers() -> dict[int, int]:
    """pid -> parent pid of every process on the host titled as an nginx worker, retiring ones included.
    Any user can give a process that title: what proves a reload is `workers_of(masters(...))`."""
    found: dict[int, int] = {}
    for pid in procfs.pids():
        if procfs.title(pid).startswith(WORKER_TITLE) and (stat := procfs.stat(pid)) and stat.state != "Z":
            found[pid] = stat.ppid
    return found


def program(command: Sequence[str]) -> str | None:
    """The nginx executable `command` runs (its first word, looked up in PATH as exec would)."""
    found = shutil.which(command[0]) if command else None
    return os.path.realpath(found) if found else None


def masters(command: Sequence[str]) -> set[int]:
    """The nginx masters `command` acts on: processes of root (or of the user applying) that run the
    executable `command` names and that nginx titled as a master; of those, the ones whose title holds
    the command's own arguments (`-p`, `-c` ... as the host's nginx setting gives them), when any does
    (a plain `nginx`, or a master started with other arguments: every one). A title alone proves
    nothing, any user sets their own; a process's uid and the program it runs cannot be faked."""
    executable = program(command)
    if executable is None:
        return set()
    trusted = {0, os.geteuid()}
    found = {pid for pid in procfs.pids() if procfs.title(pid).startswith(MASTER_TITLE)
             and procfs.owned_by(pid, trusted) and procfs.runs(pid, executable)}
    tail = " ".join(command[1:])
    if tail:
        mine = {pid for pid in found if tail in procfs.title(pid)}
        if mine:
            return mine
    return found


def workers_of(ours: set[int]) -> dict[int, int]:
    """pid -> parent pid of the workers (retiring ones included) that the masters `ours` started: their
    children titled as workers. The workers run as nginx's `user`, but only a master makes its children."""
    found: dict[int, int] = {}
    if not ours:
        return found
    for pid in procfs.pids():
        if ((stat := procfs.stat(pid)) and stat.ppid in ours and stat.state != "Z"
                and procfs.title(pid).startswith(WORKER_TITLE)):
            found[pid] = stat.ppid
    return found


def error_log(command: Sequence[str]) -> Path | None:
    """The error log `command` names with -e, if it does (else nginx's own, which we do not guess)."""
    parts = list(command)
    if "-e" in parts[:-1]:
        return Path(parts[parts.index("-e") + 1])
    return None


def _size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path else 0
    except OSError:
        return 0


def _emergencies(path: Path | None, offset: int) -> list[str]:
    """The [emerg] lines written to the error log after `offset`."""
    if path is None:
        return []
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read(65536).decode("utf-8", "replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if "[emerg]" in line]


def _refused(lines: list[str]) -> bool:
    """Whether these [emerg] lines end a reload: a failed bind() is retried a few times, each logged,
    before "still could not bind()"; any other [emerg] ends it at once."""
    return any("bind()" not in line or "still could not bind" in line for line in lines)


def reload(command: Sequence[str], wait: float) -> bool:
    """`nginx -s reload`, then wait until the master has taken the new configuration and the workers that
    served the old one have exited.

    nginx exits 0 from `-s reload` even when its master then refuses the configuration (a port it cannot
    bind: one another process holds, or one moved between `*:P` and `A:P`), keeping the old one; the
    error is only in its log. New workers appear only when the master accepted the configuration, so
    that is the proof: new children of the master itself (`masters`; not merely processes titled as
    workers, which anyone can start), and, read after them, no refusal in the error log (when `-e` names
    it) since the reload. The master writes a refusal before it goes back to starting workers, so a
    worker it restarted with the old configuration after a refusal is never taken for the new one.
    NginxError if the log shows a refusal, or no new worker appeared within `wait` seconds. Only then
    may the vassals the old workers routed to stop: an old worker still finishing a request must find
    its upstream alive. Returns False if old workers were still running after `wait` seconds.
    """
    ours = masters(command)
    before = workers_of(ours)
    log = error_log(command)
    offset = _size(log)
    done = run([*command, "-s", "reload"])
    if done.returncode != 0:
        raise NotSent("nginx -s reload failed:\n" + done.stderr.strip())
    deadline = time.monotonic() + wait
    took = False
    while True:
        if not ours:  # no master was found before the signal: whichever runs now
            ours = masters(command)
        now = workers_of(ours)
        fresh = any(pid not in before for pid in now)
        errors = _emergencies(log, offset)  # read after the workers: a refusal is logged before a restart
        if _refused(errors):
            raise NginxError(_not_taken(ours, wait, errors))
        took = took or fresh
        if took and not any(pid in now for pid in before):
            return True
        if time.monotonic() >= deadline:
            if took:
                return False
            raise NginxError(_not_taken(ours, wait, errors))
        time.sleep(0.05)


def _not_taken(ours: set[int], wait: float, errors: list[str]) -> str:
    stopped = sorted(pid for pid in ours if (found := procfs.stat(pid)) and found.state in ("T", "t"))
    if errors:
        why = f"; its error log says: {errors[0]}"  # the first names the address of a failed bind()
    elif stopped:
        why = f"; the master (pid {', '.join(map(str, stopped))}) is stopped (SIGSTOP): continue it (SIGCONT)"
    else:
        why = "; is its master busy or hung? its error log may say why"
    return f"nginx did not take the new configuration: no new worker within {wait:.0f} s of `nginx -s reload`{why}"
