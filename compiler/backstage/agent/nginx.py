"""nginx on the host: test a configuration, reload it, and tell when the reload has finished."""

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


def test_servers(command: Sequence[str], servers: Path) -> None:
    """`nginx -t` of `servers`/*.conf alone, in a private prefix, before the host is touched."""
    with tempfile.TemporaryDirectory(prefix="backstage-nginx-t-") as tmp:
        conf = Path(tmp, "nginx.conf")
        temps = "".join(f"    {kind}_temp_path {tmp}/{kind};\n" for kind in TEMP_KINDS)
        conf.write_text(f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\nevents {{}}\n"
                        f"http {{\n{temps}    access_log off;\n    include {servers}/*.conf;\n}}\n")
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


def reload(command: Sequence[str], wait: float) -> bool:
    """`nginx -s reload`, then wait until the workers that served the old configuration have exited.

    Only then may the vassals they routed to stop: an old worker still finishing a request must find
    its upstream alive. The reloaded master is the one that has workers it did not have before.
    Returns False if the old workers were still running after `wait` seconds.
    """
    before = workers()
    done = run([*command, "-s", "reload"])
    if done.returncode != 0:
        raise NginxError("nginx -s reload failed:\n" + done.stderr.strip())
    deadline = time.monotonic() + wait
    reloaded: set[int] = set()
    while time.monotonic() < deadline:
        now = workers()
        reloaded |= {parent for pid, parent in now.items() if pid not in before}
        old = [pid for pid, parent in before.items() if parent in reloaded and pid in now]
        if reloaded and not old:
            return True
        time.sleep(0.05)
    return False
