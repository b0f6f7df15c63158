"""One simulated host of tests/fleet.py, run inside that host's namespaces; not a test module.

tests/fleet.py starts it, one per host, as

    ip netns exec NS unshare --mount --propagation private --pid --fork --mount-proc --uts --kill-child \\
        PYTHON tests/fleet_host.py --name web1 --root HOSTDIR --mount-at /srv/bsfleet --ready HOSTDIR/ready.json \\
        --sshd-config HOSTDIR/ssh/sshd_config --sshd-log HOSTDIR/ssh/sshd.log --http-port 8080 --stats-port 9191

so it starts as pid 1 of a pid namespace of its own, in a mount namespace of its own and in the host's
network namespace. It then:

- forks: pid 1 stays behind as the namespace's init (it reaps orphans and forwards TERM, INT, HUP, USR1
  and USR2 to the worker); when pid 1 exits, the kernel kills whatever is left in the namespace;
- the worker sets the hostname (--name) and bind-mounts HOSTDIR/fs onto --mount-at, so every host sees
  its own tree at the same absolute path, which the root namespace never sees;
- starts the host's sshd (`sshd -D -f --sshd-config`) after that mount, so everything Ansible runs over
  ssh shares this host's mount, pid, network and UTS namespaces;
- starts a TestSandbox (private nginx + uWSGI Emperor) rooted at --mount-at/sandbox, on the fixed
  ports --http-port and --stats-port (127.0.0.1 of this network namespace), so that every host's
  host_table() is the same;
- writes --ready (JSON, atomically): name, hostname, mount_at, host_table, http_port, stats_port, listen,
  pids (as seen inside the host), sshd_running, stopped, and seq (incremented on every rewrite);
- then waits. SIGUSR1 stops sshd, SIGUSR2 starts it again (each rewrites --ready); SIGTERM or SIGINT
  stops the sandbox and sshd, kills whatever else still runs in the host, writes --ready with
  "stopped": true and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SSHD = "/usr/sbin/sshd"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def import_paths() -> None:
    """tests/ (harness, conftest) and compiler/ (backstage, also installed editable) on sys.path."""
    for path in (str(REPO / "compiler"), str(TESTS)):
        if path not in sys.path:
            sys.path.insert(0, path)


def log(message: str) -> None:
    print(f"fleet_host[{os.getpid()}] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def be_init(worker: int) -> None:
    """Pid 1's life: forward signals to the worker, reap every child; exit with the worker's status."""

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == worker:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


def sethostname(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    encoded = name.encode()
    if libc.sethostname(encoded, len(encoded)) != 0:
        raise OSError(ctypes.get_errno(), f"sethostname({name!r})")


def tcp_listening(port: int) -> bool:
    """Whether something listens on TCP `port` in this network namespace (per /proc/net/tcp{,6})."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[1].endswith(wanted) and fields[3] == "0A":
                    return True
    return False


def mounted_at(path: Path) -> bool:
    """Whether something is mounted at `path` (a bind mount from the same filesystem included)."""
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == str(path) for line in handle)


def namespace_pids() -> list[int]:
    """Every live process of this pid namespace (/proc is this namespace's own) but pid 1 and this one."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, os.getpid()):
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            found.append(int(entry))
    return found


class Host:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mount_at = Path(args.mount_at)
        self.fs = Path(args.root) / "fs"
        self.ready = Path(args.ready)
        self.sshd: subprocess.Popen[bytes] | None = None
        self.sshd_output: IO[bytes] | None = None
        self.sandbox: Any = None  # a harness.TestSandbox, imported once the paths are set
        self.seq = 0
        self.pending: list[int] = []
        self.stopped = False

    # -- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        sethostname(self.args.name)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        self.fs.mkdir(parents=True, exist_ok=True)
        self.mount_at.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)
        subprocess.run(["mount", "--bind", str(self.fs), str(self.mount_at)], check=True)
        if not mounted_at(self.mount_at):
            raise RuntimeError(f"{self.mount_at} is not a mount point after the bind mount")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.start_sshd()
        import_paths()
        from harness import TestSandbox

        self.sandbox = TestSandbox(self.mount_at / "sandbox", http_port=self.args.http_port)
        self.sandbox.stats_port = self.args.stats_port  # fixed, so that every host's host_table() is the same
        self.sandbox.start()
        log(f"sandbox up: nginx on {self.sandbox.listen}, Emperor stats on {self.sandbox.emperor_stats}")

    def start_sshd(self, timeout: float = 15.0) -> None:
        if self.sshd is not None and self.sshd.poll() is None:
            return
        config = self.args.sshd_config
        checked = subprocess.run([SSHD, "-t", "-f", config], capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            raise RuntimeError(f"sshd -t -f {config} failed: {checked.stdout}{checked.stderr}")
        if self.sshd_output is None:
            self.sshd_output = open(Path(self.args.sshd_log).with_suffix(".stdout"), "ab")  # noqa: SIM115
        self.sshd = subprocess.Popen([SSHD, "-D", "-f", config, "-E", self.args.sshd_log], stdin=subprocess.DEVNULL,
                                     stdout=self.sshd_output, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not tcp_listening(self.args.ssh_port):
            if self.sshd.poll() is not None:
                raise RuntimeError(f"sshd exited with status {self.sshd.returncode}; see {self.args.sshd_log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd does not listen on port {self.args.ssh_port} after {timeout} s")
            time.sleep(0.02)
        log(f"sshd {self.sshd.pid} listening on port {self.args.ssh_port}")

    def stop_sshd(self, timeout: float = 10.0) -> None:
        """Stop the listening sshd (sessions already open go on); nothing listens on the ssh port after."""
        if self.sshd is None:
            return
        if self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(timeout)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()
        self.sshd = None
        deadline = time.monotonic() + timeout
        while tcp_listening(self.args.ssh_port) and time.monotonic() < deadline:
            time.sleep(0.02)
        log("sshd stopped")

    # -- state ---------------------------------------------------------------------------------

    def write_ready(self) -> None:
        self.seq += 1
        sandbox = self.sandbox
        running = sandbox is not None and sandbox._nginx is not None
        state = {
            "name": self.args.name,
            "hostname": os.uname().nodename,
            "mount_at": str(self.mount_at),
            "root": str(self.fs),
            "host_table": sandbox.host_table() if sandbox is not None else {},
            "http_port": self.args.http_port,
            "stats_port": self.args.stats_port,
            "listen": sandbox.listen if sandbox is not None else "",
            "ssh_port": self.args.ssh_port,
            "pids": {
                "init": 1,
                "host": os.getpid(),
                "sshd": self.sshd.pid if self.sshd is not None else None,
                "nginx": sandbox.nginx_master_pid() if running else None,
                "emperor": sandbox.emperor_master_pid() if running else None,
            },
            "sshd_running": self.sshd is not None and self.sshd.poll() is None,
            "stopped": self.stopped,
            "seq": self.seq,
        }
        temporary = self.ready.with_name(self.ready.name + ".tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(temporary, self.ready)

    # -- running -------------------------------------------------------------------------------

    def on_signal(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)

    def serve(self) -> None:
        while True:
            while self.pending:
                signum = self.pending.pop(0)
                if signum in (signal.SIGTERM, signal.SIGINT):
                    log(f"got {signal.Signals(signum).name}: stopping")
                    return
                if signum == signal.SIGUSR1:
                    self.stop_sshd()
                elif signum == signal.SIGUSR2:
                    self.start_sshd()
                self.write_ready()
            time.sleep(0.05)

    # -- teardown ------------------------------------------------------------------------------

    def teardown(self) -> None:
        if self.sandbox is not None:
            try:
                self.sandbox.stop()
            except Exception:
                log("sandbox.stop() failed:\n" + traceback.format_exc())
        self.stop_sshd()
        self.kill_everything_else()
        if self.sshd_output is not None:
            self.sshd_output.close()
        self.stopped = True
        with contextlib.suppress(Exception):
            self.write_ready()

    def kill_everything_else(self, timeout: float = 5.0) -> None:
        """TERM, then KILL, whatever else runs in this host (ssh sessions, agents, stray vassals)."""
        left = namespace_pids()
        if left:
            log(f"terminating leftovers {left}")
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while (left := namespace_pids()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            log(f"killing leftover {pid}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while namespace_pids() and time.monotonic() < deadline:
            time.sleep(0.05)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="the host's name, also its hostname")
    parser.add_argument("--root", required=True, help="the host's directory; ROOT/fs is mounted at --mount-at")
    parser.add_argument("--mount-at", default="/srv/bsfleet")
    parser.add_argument("--ready", required=True, help="the JSON state file to write")
    parser.add_argument("--sshd-config", required=True)
    parser.add_argument("--sshd-log", required=True)
    parser.add_argument("--ssh-port", type=int, default=22)
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--stats-port", type=int, default=9191)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if os.getpid() == 1:
        worker = os.fork()
        if worker:
            be_init(worker)
    host = Host(args)
    for sig in FORWARDED:
        signal.signal(sig, host.on_signal)
    try:
        host.setup()
        host.write_ready()
        log("ready")
        host.serve()
    except Exception:
        log("failed:\n" + traceback.format_exc())
        return 1
    finally:
        host.teardown()
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
