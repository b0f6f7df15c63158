"""nginx on the host: test a configuration, reload it, and tell whether the reload took and when it finished."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import procfs

WORKER_TITLE = "nginx: worker process"  # "... is shutting down" once retired by a reload
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
    """pid -> parent pid of every nginx worker process on the host, retiring ones included."""
    found: dict[int, int] = {}
    for pid in procfs.pids():
        if procfs.title(pid).startswith(WORKER_TITLE) and (stat := procfs.stat(pid)) and stat.state != "Z":
            found[pid] = stat.ppid
    return found


def masters(command: Sequence[str], known: dict[int, int]) -> set[int]:
    """The masters (parents of `known` workers) that `command` acts on: those whose title holds the
    command's own arguments (`-p`, `-c` ... as the host's nginx setting gives them). When none does
    (a plain `nginx`, or a master started with other arguments), every master."""
    parents = set(known.values())
    tail = " ".join(command[1:])
    if tail:
        mine = {pid for pid in parents if tail in procfs.title(pid)}
        if mine:
            return mine
    return parents


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
    that is the proof: NginxError if none appeared within `wait` seconds (or the error log, when `-e`
    names it, shows the refusal first). Only then may the vassals the old workers routed to stop: an old
    worker still finishing a request must find its upstream alive. Returns False if old workers were
    still running after `wait` seconds.
    """
    before = workers()
    ours = masters(command, before)
    log = error_log(command)
    offset = _size(log)
    done = run([*command, "-s", "reload"])
    if done.returncode != 0:
        raise NotSent("nginx -s reload failed:\n" + done.stderr.strip())
    deadline = time.monotonic() + wait
    took = False
    while True:
        now = workers()
        if not ours:  # no worker was running before: the master is whichever has workers now
            ours = masters(command, now)
        took = took or any(pid not in before and parent in ours for pid, parent in now.items())
        if took and not any(parent in ours and pid in now for pid, parent in before.items()):
            return True
        if not took and _refused(errors := _emergencies(log, offset)):
            raise NginxError(_not_taken(ours, wait, errors))
        if time.monotonic() >= deadline:
            if took:
                return False
            raise NginxError(_not_taken(ours, wait, _emergencies(log, offset)))
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
