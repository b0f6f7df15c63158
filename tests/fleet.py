"""Several simulated Linux hosts on this one machine, for rolling a production out over real ssh (Ansible).

    with Fleet(tmp_path / "fleet", ["web1", "web2", "web3"]) as fleet:
        inventory = fleet.write_inventory(tmp_path / "inventory.json")   # for `ansible -i` / ansible-playbook
        web1 = fleet["web1"]
        ...build a production with [host] = web1.host_table and every listen = web1.listen...
        assert web1.http_get("show.test", "/").status == 200

Host i (1-based, in the order of `names`) is:
- a network namespace bs{pid}h{i} (lo up) joined to the root namespace by a veth pair: NET.{i}.1/30 on
  the root side (bs{pid}r{i}), NET.{i}.2/30 inside (eth0), NET the first free of 10.231-10.239. Nothing
  else is routed: a test reaches only loopback and these addresses.
- tests/fleet_host.py, run there as pid 1 of its own pid namespace, in its own mount and UTS namespaces
  (hostname = the host's name). It bind-mounts ROOT = tmp/NAME/fs onto /srv/bsfleet (only inside: the root
  namespace sees an empty /srv/bsfleet), then starts the host's sshd (0.0.0.0:22 in the netns, root login
  with the fleet's key only) and a TestSandbox rooted at /srv/bsfleet/sandbox: nginx on 127.0.0.1:8080
  and the Emperor's stats on 127.0.0.1:9191, both of the host's own netns. So every host has the same
  host_table; whatever Ansible starts over ssh lives in that host's namespaces.

Reaching a host:
- over ssh from the root namespace: `ssh *fleet.ssh_args root@host.address CMD` (`fleet.ssh(name, CMD)`);
- running a command inside the host: `host.run(argv)` (nsenter into its net, mount, pid and UTS namespaces);
- its nginx: `host.http_get(host_header, path)`, a GET to ITS 127.0.0.1:8080 made by a Python run inside
  the host via `run()` (nginx listens on the host's loopback only, like the sandbox it is);
- its files: `host.real_path("/srv/bsfleet/...")` is the same file seen from the root namespace.

Processes of a host live in the host's own pid namespace: the agent's scans of /proc (vassals by their
`--ini`, nginx masters by their arguments, builders by their paths) see only that host, although every
host uses the same paths. Everything outside /srv/bsfleet (/tmp, /root, /usr, the repo) is shared.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from harness import Response

__all__ = ["MOUNT_AT", "Fleet", "FleetError", "FleetHost"]

MOUNT_AT = Path("/srv/bsfleet")
NETS = tuple(f"10.{n}" for n in range(231, 240))  # the first one no other Fleet uses (a benchmark beside CI)
HOST_SCRIPT = Path(__file__).resolve().parent / "fleet_host.py"
PR_SET_PDEATHSIG = 1
_NAMES = re.compile(r"^bs(\d+)[hrp]\d+$")

_HTTP_GET = """\
import base64, http.client, json, sys
port, host, path, timeout = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
connection.request("GET", path, headers={"Host": host, "Connection": "close"})
reply = connection.getresponse()
body = reply.read()
print(json.dumps({"status": reply.status, "headers": reply.getheaders(), "body": base64.b64encode(body).decode()}))
"""


class FleetError(RuntimeError):
    """A simulated host failed to start, to answer or to stop."""


def _real_python() -> str:
    """The interpreter to give Ansible (ansible_python_interpreter): the test's own, by its real path (a
    pyenv shim first on the hosts' PATH would fail); a virtualenv's bin/python is kept as is, not resolved
    (resolving it would drop the virtualenv)."""
    if sys.prefix != sys.base_prefix:
        return sys.executable
    return os.path.realpath(sys.executable)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise FleetError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def _netns_pids(netns: str) -> list[int]:
    done = _ip("netns", "pids", netns, check=False)
    return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []


def _kill_until_gone(pids: Sequence[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL `pids`; those still alive after `timeout`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the Fleet's process dies (unshare --kill-child passes it on,
    and the death of a host's pid 1 kills its whole pid namespace)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"({error.strerror})"


@dataclass
class FleetHost:
    """One simulated host. `address` and `ssh_port` are what Ansible connects to."""

    name: str
    index: int
    netns: str
    address: str
    dir: Path  # on the real filesystem: fleet_host.py's log, ready.json, ssh/ (sshd_config, host key, log)
    root: Path  # dir/fs: what the host sees at mount_at
    mount_at: Path
    ssh_port: int = 22
    process: subprocess.Popen[bytes] | None = None  # `ip netns exec ... unshare ...` (unshare's pid)
    pid: int = 0  # fleet_host.py's pid 1 in the root pid namespace: run() enters its namespaces
    state: dict[str, Any] = field(default_factory=dict)  # the last ready.json read
    _log: IO[bytes] | None = None

    @property
    def root_veth(self) -> str:
        return self.netns.replace("h", "r", 1)

    @property
    def ready_file(self) -> Path:
        return self.dir / "ready.json"

    @property
    def log_file(self) -> Path:
        return self.dir / "fleet_host.log"

    @property
    def sshd_log(self) -> Path:
        return self.dir / "ssh" / "sshd.log"

    @property
    def host_table(self) -> dict[str, object]:
        """The [host] table of a production applied to this host (the same on every host of a fleet)."""
        return dict(self.state["host_table"])

    @property
    def http_port(self) -> int:
        return int(self.state["http_port"])

    @property
    def stats_port(self) -> int:
        return int(self.state["stats_port"])

    @property
    def listen(self) -> str:
        """The `listen` to give every Venue: "127.0.0.1:PORT", the host's own loopback."""
        return str(self.state["listen"])

    def read_state(self) -> dict[str, Any]:
        try:
            self.state = json.loads(self.ready_file.read_text())
        except (OSError, ValueError):
            return {}
        return self.state

    def real_path(self, inside: str | Path) -> Path:
        """Where a path under mount_at, as the host sees it, is on the real filesystem."""
        return self.root / Path(inside).relative_to(self.mount_at)

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` as a command run inside this host's namespaces (net, mount, pid, UTS), from /."""
        if not self.pid:
            raise FleetError(f"host {self.name} is not running")
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "-p", "-u", "--wd=/", "--", *argv]

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0, check: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside this host (as root, with this process's environment plus `env`)."""
        return subprocess.run(self.command(argv), input=input, capture_output=True, text=True, timeout=timeout,
                              check=check, env=os.environ | (env or {}))

    def http_get(self, host: str, path: str = "/", timeout: float = 10.0) -> Response:
        """One GET to this host's nginx on its own 127.0.0.1:http_port with this Host header. Raises OSError
        (ConnectionError) when nothing answers there."""
        done = self.run([sys.executable, "-c", _HTTP_GET, str(self.http_port), host, path, str(timeout)],
                        timeout=timeout + 10)
        if done.returncode != 0:
            raise ConnectionError(f"GET http://{host}{path} on {self.name}: {done.stderr.strip()}")
        reply = json.loads(done.stdout)
        return Response(reply["status"], {k.lower(): v for k, v in reply["headers"]}, base64.b64decode(reply["body"]))


class Fleet:
    """Simulated hosts `names` under `tmp` (see the module's docstring); a context manager."""

    def __init__(self, tmp: Path, names: Sequence[str], *, mount_at: Path = MOUNT_AT, http_port: int = 8080,
                 stats_port: int = 9191, start_timeout: float = 30.0) -> None:
        if not names or len(set(names)) != len(names) or len(names) > 250:
            raise ValueError(f"need 1 to 250 distinct host names, not {names!r}")
        self.tmp = Path(tmp).resolve()
        self.mount_at = Path(mount_at)
        self.http_port = http_port
        self.stats_port = stats_port
        self.start_timeout = start_timeout
        self.python = _real_python()
        self.net = NETS[0]
        self.key_file = self.tmp / "id_ed25519"
        self.known_hosts = self.tmp / "known_hosts"
        me = os.getpid()
        self.hosts = [
            FleetHost(name=name, index=i, netns=f"bs{me}h{i}", address=f"{NETS[0]}.{i}.2", dir=self.tmp / name,
                      root=self.tmp / name / "fs", mount_at=self.mount_at)
            for i, name in enumerate(names, start=1)
        ]

    # -- access --------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> FleetHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def __iter__(self) -> Iterator[FleetHost]:
        return iter(self.hosts)

    @property
    def ssh_args(self) -> list[str]:
        """The ssh options every connection to a host takes: this fleet's key only, its own known_hosts
        (filled with every host's key, and checked), no multiplexing (stop_sshd takes effect at once),
        no ~/.ssh/config, no prompt."""
        options = {
            "BatchMode": "yes",
            "IdentitiesOnly": "yes",
            "IdentityFile": str(self.key_file),
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
            "ControlMaster": "no",
            "ControlPath": "none",
            "ConnectTimeout": "5",
            "LogLevel": "ERROR",
        }
        return ["-F", "/dev/null", *(arg for key, value in options.items() for arg in ("-o", f"{key}={value}"))]

    def ssh_command(self, name: str, command: str) -> list[str]:
        host = self[name]
        return ["ssh", *self.ssh_args, "-p", str(host.ssh_port), f"root@{host.address}", command]

    def ssh(self, name: str, command: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`command` (a shell command line) run on host `name` over ssh as root."""
        return subprocess.run(self.ssh_command(name, command), capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)

    def inventory_vars(self) -> dict[str, str]:
        """The connection variables for every host of an Ansible inventory (ansible_host comes per host)."""
        return {
            "ansible_connection": "ssh",
            "ansible_user": "root",
            "ansible_port": "22",
            "ansible_python_interpreter": self.python,
            "ansible_ssh_private_key_file": str(self.key_file),
            # replaces Ansible's "-C -o ControlMaster=auto -o ControlPersist=60s": no lingering masters
            "ansible_ssh_args": "-o ControlMaster=no -o ControlPath=none",
            "ansible_ssh_common_args": shlex.join(self.ssh_args),
            "ansible_ssh_pipelining": "true",
            "ansible_remote_tmp": str(self.mount_at / ".ansible" / "tmp"),  # per host, not the shared /root
        }

    def ansible_env(self, home: Path) -> dict[str, str]:
        """What connects `backstage apply`'s Ansible to these hosts: Ansible's own environment variables,
        as an operator would set them in ansible.cfg (ANSIBLE_HOME: `home`, not ~/.ansible)."""
        return {
            "ANSIBLE_HOME": str(home),
            "ANSIBLE_REMOTE_USER": "root",
            "ANSIBLE_PRIVATE_KEY_FILE": str(self.key_file),
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o ControlPath=none",
            "ANSIBLE_SSH_COMMON_ARGS": shlex.join(self.ssh_args),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_REMOTE_TMP": str(self.mount_at / ".ansible" / "tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_TIMEOUT": "60",
        }

    def production_head(self, name: str, batch: int = 1, max_failed: int = 0) -> str:
        """The [production], [host] and [hosts.*] tables of a production on these hosts: every path under
        mount_at (each host its own), ssh as root without become, the hosts' own Python."""
        from conftest import host_table

        text = f"""\
[production]
name = {json.dumps(name)}
state_dir = "{self.mount_at}/state"
run_dir = "{self.mount_at}/run"
log_dir = "{self.mount_at}/log"
rollout = {{ batch = {batch}, max_failed = {max_failed} }}

""" + host_table(self.hosts[0].host_table)
        for host in self.hosts:
            text += f"""
[hosts.{host.name}]
address = "{host.address}"
python = {json.dumps(self.python)}
become = false
"""
        return text

    def inventory(self, group: str = "fleet") -> dict[str, Any]:
        """An Ansible YAML/JSON inventory: every host in `group`, with inventory_vars()."""
        return {group: {"hosts": {host.name: {"ansible_host": host.address} for host in self.hosts},
                        "vars": self.inventory_vars()}}

    def write_inventory(self, path: Path, group: str = "fleet") -> Path:
        """inventory() as a file Ansible's yaml plugin reads (JSON is YAML; name it *.json or *.yml)."""
        path.write_text(json.dumps(self.inventory(group), indent=2) + "\n")
        return path

    # -- ssh on and off ------------------------------------------------------------------------

    def _ask(self, name: str, sig: signal.Signals, sshd_running: bool, timeout: float = 15.0) -> None:
        host = self[name]
        before = int(host.read_state().get("seq", 0))
        os.kill(host.pid, sig)  # pid 1 forwards it to the worker
        deadline = time.monotonic() + timeout
        while not (int(host.read_state().get("seq", 0)) > before and host.state["sshd_running"] == sshd_running):
            if host.process is None or host.process.poll() is not None or time.monotonic() > deadline:
                raise FleetError(f"host {name} did not {'start' if sshd_running else 'stop'} its sshd\n"
                                 + self._logs(host))
            time.sleep(0.02)

    def stop_sshd(self, name: str) -> None:
        """Stop host `name`'s sshd: nothing listens on its port 22 afterwards (new connections are refused;
        sessions already open go on). nginx, the Emperor and the vassals keep running."""
        self._ask(name, signal.SIGUSR1, sshd_running=False)

    def start_sshd(self, name: str) -> None:
        """Start host `name`'s sshd again; it accepts connections when this returns."""
        self._ask(name, signal.SIGUSR2, sshd_running=True)

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._remove_stale()
            self._check_free()
            self.tmp.mkdir(parents=True, exist_ok=True)
            self.mount_at.mkdir(parents=True, exist_ok=True)
            self._keys()
            for host in self.hosts:
                self._network(host)
                self._launch(host)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _remove_stale(self) -> None:
        """Namespaces and veths an earlier Fleet left behind (its process is dead): kill, delete."""
        for line in _ip("netns", "list").stdout.splitlines():
            netns = line.split()[0] if line.split() else ""
            found = _NAMES.match(netns)
            if found and not _alive(int(found.group(1))):
                _kill_until_gone(_netns_pids(netns))
                _ip("netns", "del", netns, check=False)
        for line in _ip("-o", "link", "show").stdout.splitlines():
            parts = line.split(":")
            link = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
            found = _NAMES.match(link)
            if found and not _alive(int(found.group(1))):
                _ip("link", "del", link, check=False)

    def _check_free(self) -> None:
        """Take the first of NETS no address or route here uses, and give the hosts their addresses in it."""
        lines = (_ip("-o", "addr").stdout + _ip("route", "show", "table", "all").stdout).splitlines()
        for net in NETS:
            if not any(f" {net}." in f" {line}" for line in lines):
                self.net = net
                for host in self.hosts:
                    host.address = f"{net}.{host.index}.2"
                return
        raise FleetError(f"every one of {NETS[0]}..{NETS[-1]} is already in use here (other Fleets?)")

    def _keys(self) -> None:
        if not self.key_file.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-tests", "-f",
                            str(self.key_file)], check=True, capture_output=True)
        public = self.key_file.with_suffix(".pub").read_text()
        known = []
        for host in self.hosts:
            ssh = host.dir / "ssh"
            ssh.mkdir(parents=True, exist_ok=True)
            host.root.mkdir(parents=True, exist_ok=True)
            host.root.chmod(0o755)  # the host's /srv/bsfleet: root-owned 0755, as apply trusts
            host_key = ssh / "ssh_host_ed25519_key"
            if not host_key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(host_key)],
                               check=True, capture_output=True)
            (ssh / "authorized_keys").write_text(public)
            (ssh / "sshd_config").write_text(f"""\
Port {host.ssh_port}
ListenAddress 0.0.0.0
HostKey {host_key}
PidFile {ssh / "sshd.pid"}
AuthorizedKeysFile {ssh / "authorized_keys"}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
            key_type, key = host_key.with_suffix(".pub").read_text().split()[:2]
            known.append(f"{host.address} {key_type} {key}\n")
        self.known_hosts.write_text("".join(known))

    def _network(self, host: FleetHost) -> None:
        peer = host.netns.replace("h", "p", 1)
        _ip("netns", "add", host.netns)
        _ip("-n", host.netns, "link", "set", "lo", "up")
        _ip("link", "add", host.root_veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", host.netns)
        _ip("-n", host.netns, "link", "set", peer, "name", "eth0")
        _ip("addr", "add", f"{self.net}.{host.index}.1/30", "dev", host.root_veth)
        _ip("-n", host.netns, "addr", "add", f"{host.address}/30", "dev", "eth0")
        _ip("link", "set", host.root_veth, "up")
        _ip("-n", host.netns, "link", "set", "eth0", "up")

    def _launch(self, host: FleetHost) -> None:
        host.ready_file.unlink(missing_ok=True)
        host._log = open(host.log_file, "ab")  # noqa: SIM115 -- closed in stop()
        command = [
            "ip", "netns", "exec", host.netns,
            "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "--uts",
            "--kill-child",
            sys.executable, str(HOST_SCRIPT), "--name", host.name, "--root", str(host.dir),
            "--mount-at", str(self.mount_at), "--ready", str(host.ready_file),
            "--sshd-config", str(host.dir / "ssh" / "sshd_config"), "--sshd-log", str(host.sshd_log),
            "--ssh-port", str(host.ssh_port), "--http-port", str(self.http_port), "--stats-port", str(self.stats_port),
        ]
        host.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=host._log, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=_die_with_parent)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        waiting = list(self.hosts)
        while waiting:
            for host in list(waiting):
                assert host.process is not None
                if not host.pid:
                    children = _children(host.process.pid)  # ip netns exec execs unshare, which forks pid 1
                    host.pid = children[0] if children else 0
                if host.pid and host.read_state().get("seq") and not host.state.get("stopped"):
                    waiting.remove(host)
                elif host.process.poll() is not None:
                    raise FleetError(f"host {host.name} exited with status {host.process.returncode} before it was "
                                     f"ready\n{self._logs(host)}")
            if waiting and time.monotonic() > deadline:
                raise FleetError(f"hosts {[h.name for h in waiting]} not ready after {self.start_timeout} s\n"
                                 + "\n".join(self._logs(host) for host in waiting))
            time.sleep(0.05)

    def _logs(self, host: FleetHost) -> str:
        parts = [f"--- {host.log_file} ---\n{_tail(host.log_file)}", f"--- {host.sshd_log} ---\n{_tail(host.sshd_log)}"]
        sandbox = host.root / "sandbox"
        for log in (sandbox / "nginx" / "error.log", sandbox / "emperor.log"):
            if log.exists():
                parts.append(f"--- {log} ---\n{_tail(log)}")
        return "\n".join(parts)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every host (its sandbox, sshd, everything else in it), then delete its veth and netns.
        Safe after a failed start and when called twice. Raises FleetError if anything survived."""
        problems: list[str] = []
        for host in self.hosts:
            if host.process is not None and host.process.poll() is None:
                if host.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(host.pid, signal.SIGTERM)
                else:
                    host.process.kill()  # unshare's --kill-child takes pid 1, and with it the pid namespace
        deadline = time.monotonic() + timeout
        for host in self.hosts:
            if host.process is None:
                continue
            try:
                host.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                problems.append(f"host {host.name} did not stop within {timeout} s; killed\n{self._logs(host)}")
                if host.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(host.pid, signal.SIGKILL)
                host.process.kill()
                host.process.wait()
            if host.process.returncode not in (0, None) and not problems:
                problems.append(f"host {host.name} exited with status {host.process.returncode}\n{self._logs(host)}")
        for host in self.hosts:
            left = _netns_pids(host.netns)
            if left:
                problems.append(f"host {host.name}: processes {left} were left in {host.netns}; killed")
                if survivors := _kill_until_gone(left):
                    problems.append(f"host {host.name}: processes {survivors} survive SIGKILL")
            _ip("netns", "del", host.netns, check=False)
            _ip("link", "del", host.root_veth, check=False)  # gone with the netns already, normally
            if host._log is not None:
                host._log.close()
                host._log = None
            host.pid = 0
        if strays := self._strays():
            problems.append(f"processes naming the fleet's directory were left: {strays}; killed")
            _kill_until_gone(strays)
        if problems:
            raise FleetError("\n".join(problems))

    def _strays(self) -> list[int]:
        """Processes (but this one and its ancestors) whose command line names this fleet's directory."""
        spared = {0, 1}
        pid = os.getpid()
        while pid > 1:
            spared.add(pid)
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    pid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
        needle = str(self.tmp).encode()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in spared and _alive(int(entry)):
                with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if needle in handle.read():
                        found.append(int(entry))
        return found
