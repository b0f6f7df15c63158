"""A production on several hosts, rolled out through Ansible (the `hosts` extra: ansible-core).

backstage writes an inventory and a short playbook into a private working directory (printed, and
kept with --keep-ansible for review), packs each host's own artifact into one tar archive, and runs
`ansible-playbook` once per batch of `rollout.batch` hosts, in the order [hosts] declares them. On each
host the playbook ships the archive (one file: Ansible's `copy` of a tree does not scale), unpacks it
under state_dir/incoming/ and runs that artifact's own install.sh, whose agent switches the host with
every single-host guarantee (a host that fails undoes its own switch). Each host reports its exit
code back; the stop rule is backstage's, not Ansible's (`max_fail_percentage` has had batch bugs): once
more than `rollout.max_failed` hosts failed (or were unreachable), no further batch starts, and with
`--atomic` the hosts already switched roll back. DNS (the Producer) is written once, from here, after
every host switched; if that fails, every switched host rolls back. One rollout of a production at a
time: a lock in the controller's state directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import contract
from ..agent import dns
from ..agent.outcomes import Refused

ANSIBLE_HINT = "install the `hosts` extra: pip install 'backstage[hosts]' (ansible-core)"
PLAYBOOK = """\
# backstage: {verb} on a batch of the hosts of production {production}. Generated; reviewable.
- name: backstage {verb} {production}
  hosts: all
  gather_facts: false
  tasks:
    - name: backstage {verb}
      block:
{ship}        - name: run the host's own agent
          ansible.builtin.command:
            argv: "{{{{ bs_command }}}}"
          register: bs_result
          changed_when: bs_result.rc == 0
          failed_when: bs_result.rc != 0
      always:
        - name: report to backstage
          ansible.builtin.copy:
            content: "{{{{ {{'rc': bs_result.rc | default(-1), 'stdout': bs_result.stdout | default(''),
                       'stderr': bs_result.stderr | default(bs_result.msg | default(''))}} | to_json }}}}"
            dest: "{{{{ bs_report }}}}"
            mode: "0600"
          delegate_to: localhost
          become: false
{clean}"""
SHIP = """\
        - name: the incoming directory
          ansible.builtin.file:
            path: "{{ bs_incoming }}"
            state: directory
            mode: "0700"
        - name: ship the host's artifact (one archive)
          ansible.builtin.copy:
            src: "{{ bs_archive }}"
            dest: "{{ bs_incoming }}/{{ bs_name }}.tar"
            mode: "0600"
        - name: unpack it
          ansible.builtin.unarchive:
            src: "{{ bs_incoming }}/{{ bs_name }}.tar"
            dest: "{{ bs_incoming }}"
            remote_src: true
"""
CLEAN = """\
        - name: remove the shipped copy (the agent kept its own in generations/)
          ansible.builtin.file:
            path: "{{ item }}"
            state: absent
          loop:
            - "{{ bs_incoming }}/{{ bs_name }}"
            - "{{ bs_incoming }}/{{ bs_name }}.tar"
"""


class FleetError(Exception):
    """The rollout cannot start (no Ansible, another rollout, a refused DNS change); nothing changed."""


@dataclass(frozen=True, slots=True)
class Outcome:
    host: str
    code: int  # the agent's exit code; -1: the host never reported (unreachable, or Ansible failed first)
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def line(self) -> str:
        """The agent's one line, or why there is none."""
        if self.code == -1:
            return (self.stderr.strip().splitlines() or ["no report: unreachable over ssh, or Ansible failed "
                                                          "before the agent ran (see its output above)"])[-1]
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[0] if lines else f"exit {self.code}"


def is_fleet(artifact: Path) -> bool:
    return (artifact / contract.FLEET).is_file()


def ansible_playbook() -> str:
    beside = Path(sys.executable).parent / "ansible-playbook"  # the extra installed into this environment
    found = str(beside) if beside.is_file() else shutil.which("ansible-playbook")
    if not found:
        raise FleetError(f"ansible-playbook not found: {ANSIBLE_HINT}")
    return found


@contextlib.contextmanager
def fleet_lock(production: str) -> Iterator[None]:
    """One rollout of a production at a time from this controller (its user's state directory)."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "backstage"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = base / f"{production}.rollout.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = handle.read().strip() or "another process"
            raise FleetError(f"production {production} is being rolled out by {holder} ({path})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield


def _archive(source: Path, target: Path) -> None:
    """One uncompressed tar of a host's artifact directory (modes kept; owner root on extraction)."""
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(source, arcname=source.name, filter=lambda info: _owned_by_root(info))


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


class Rollout:
    """One run against the fleet of `plan`, in `workdir` (inventory, playbooks, archives, reports)."""

    def __init__(self, artifact: Path | None, plan: contract.FleetPlan, workdir: Path) -> None:
        self.artifact = artifact
        self.plan = plan
        self.workdir = workdir
        self.playbook_command = ansible_playbook()
        self.names: dict[str, str] = {}  # host -> its artifact's directory name
        if artifact is not None:
            for host in plan.hosts:
                own = contract.host_artifact(artifact, host.name)
                self.names[host.name] = own.name
                archive = workdir / f"{own.name}.tar"
                if not archive.exists():
                    _archive(own, archive)
        (workdir / "inventory").mkdir()
        self.inventory = workdir / "inventory" / "hosts.json"
        self.inventory.write_text(json.dumps(self._inventory(), indent=1, sort_keys=True) + "\n")

    def _inventory(self) -> dict[str, object]:
        hosts: dict[str, dict[str, object]] = {}
        for host in self.plan.hosts:
            entry: dict[str, object] = {"ansible_host": host.ssh_host, "ansible_port": host.ssh_port,
                                        "ansible_become": host.become,
                                        "bs_incoming": f"{host.state_dir.rstrip('/')}/incoming/ansible",
                                        "bs_state_dir": host.state_dir,
                                        "bs_report": str(self.workdir / f"report-{host.name}.json")}
            if host.ssh_user:
                entry["ansible_user"] = host.ssh_user
            if host.python:
                entry["ansible_python_interpreter"] = host.python
            if host.name in self.names:
                entry["bs_name"] = self.names[host.name]
                entry["bs_archive"] = str(self.workdir / f"{self.names[host.name]}.tar")
            hosts[host.name] = entry
        return {"all": {"hosts": hosts}}

    def run(self, verb: str, hosts: Sequence[str], agent_args: Sequence[str], ship: bool) -> list[Outcome]:
        """Run the agent's `verb` on `hosts` (one ansible-playbook run), shipping the artifact first if
        `ship`; returns each host's outcome, in `hosts` order."""
        playbook = self.workdir / f"{verb}.yml"
        playbook.write_text(PLAYBOOK.format(verb=verb, production=self.plan.production, ship=SHIP if ship else "",
                                            clean=CLEAN if ship else ""))
        for host in hosts:
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / f"report-{host}.json").unlink()
        # Each host's command (the agent's verb and flags) is a host variable of this run, in the
        # host_vars directory Ansible reads beside the inventory.
        host_vars = self.inventory.parent / "host_vars"
        host_vars.mkdir(exist_ok=True)
        for host in hosts:
            (host_vars / f"{host}.json").write_text(
                json.dumps({"bs_command": self._command(host, verb, agent_args, ship)}) + "\n")
        env = {**os.environ, "ANSIBLE_RETRY_FILES_ENABLED": "False"}
        command = [self.playbook_command, "-i", str(self.inventory), "--limit", ",".join(hosts), str(playbook)]
        print(f"ansible: {verb} on {', '.join(hosts)}", file=sys.stderr, flush=True)
        subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr, check=False)
        return [self._outcome(host) for host in hosts]

    def _command(self, host: str, verb: str, agent_args: Sequence[str], ship: bool) -> list[str]:
        state_dir = next(h.state_dir for h in self.plan.hosts if h.name == host).rstrip("/")
        if ship:
            script = f"{state_dir}/incoming/ansible/{self.names[host]}/{contract.INSTALLER}"
        else:  # rollback, generations, gc: the live generation's own agent
            script = f"{state_dir}/current/{contract.INSTALLER}"
        return ["sh", script, verb, *agent_args]

    def _outcome(self, host: str) -> Outcome:
        try:
            report = json.loads((self.workdir / f"report-{host}.json").read_text())
        except (OSError, ValueError):
            return Outcome(host, -1, "", "")
        return Outcome(host, int(report.get("rc", -1)), str(report.get("stdout", "")), str(report.get("stderr", "")))


def _say(outcome: Outcome, what: str) -> None:
    for line in outcome.stdout.splitlines():
        print(f"{outcome.host}: {line}")
    if outcome.ok:
        print(f"host {outcome.host}: {what}", file=sys.stderr)
    else:
        print(f"host {outcome.host}: failed: {outcome.line()}", file=sys.stderr)


def _batches(hosts: Sequence[str], size: int) -> list[list[str]]:
    return [list(hosts[i:i + size]) for i in range(0, len(hosts), size)]


def _dns_changes(plan: contract.FleetPlan, artifact: Path, force: bool) -> list[dns.ZoneChange]:
    """The fleet's DNS change, worked out (read-only) before any host is touched."""
    producer = plan.producer
    if producer is None:
        return []
    api = dns.Api(producer)
    found = []
    for item in producer.zones:
        zone, wanted = contract.read_zone((artifact / item.file).read_bytes())
        try:
            change = dns.zone_change(producer, zone, api.zone(zone), wanted, force)
        except dns.ApiError as exc:
            raise FleetError(f"zone {zone}: {exc}") from None
        except Refused as exc:
            raise FleetError(str(exc)) from None
        if change.changes:
            found.append(change)
    return found


def apply(artifact: Path, agent_args: Sequence[str], *, dry_run: bool, atomic: bool, force: bool,
          keep: bool = False) -> int:
    """Roll `artifact` (an artifact of several hosts) out; returns the exit code."""
    contract.verify(artifact)
    plan = contract.FleetPlan.from_json((artifact / contract.FLEET).read_bytes())
    order = [h.name for h in plan.hosts]
    with fleet_lock(plan.production), _workdir(keep) as workdir:
        try:
            changes = _dns_changes(plan, artifact, force)
        except Refused as exc:
            raise FleetError(str(exc)) from None
        rollout = Rollout(artifact, plan, workdir)
        if dry_run:
            outcomes = rollout.run("apply", order, [*agent_args, "--dry-run"], ship=True)
            for outcome in outcomes:
                _say(outcome, "plan printed")
            for change in changes:
                for item in change.changes:
                    print(f"dns   {item.describe()}")
            return 0 if all(o.ok for o in outcomes) else 1
        switched: list[str] = []
        failed: list[Outcome] = []
        for batch in _batches(order, plan.batch):
            for outcome in rollout.run("apply", batch, agent_args, ship=True):
                _say(outcome, f"live ({rollout.names[outcome.host]})")
                if outcome.ok:
                    switched.append(outcome.host)
                else:
                    failed.append(outcome)
            if len(failed) > plan.max_failed:
                break
        untouched = [h for h in order if h not in switched and h not in {o.host for o in failed}]
        if len(failed) > plan.max_failed:
            names = ", ".join(f"{o.host} ({o.line()})" for o in failed)
            tail = f"; not started on {', '.join(untouched)}" if untouched else ""
            if atomic and switched:
                back = _roll_back(rollout, switched)
                print(f"backstage: rollout stopped: {len(failed)} host(s) failed: {names}{tail}; --atomic: "
                      f"{back}", file=sys.stderr)
            else:
                kept = f"; still on the new generation: {', '.join(switched)}" if switched else ""
                print(f"backstage: rollout stopped: {len(failed)} host(s) failed: {names}{tail}{kept}",
                      file=sys.stderr)
            return 1
        if changes and plan.producer is not None:
            sent: list[dns.ZoneChange] = []
            try:
                for change in changes:
                    sent.append(change)
                    dns.Api(plan.producer).patch(change.zone, dns.forward(plan.producer, change))
            except dns.ApiError as exc:
                notes = dns.undo(plan.producer, sent[:-1] if exc.unsent else sent)
                back = _roll_back(rollout, switched)
                print(f"backstage: DNS failed: zone {sent[-1].zone}: {exc}; {back}"
                      + "".join(f"; but {n}" for n in notes), file=sys.stderr)
                return 1
            for change in changes:
                print(f"dns   zone {change.zone}: {len(change.changes)} RRset(s) changed")
        if failed:
            print(f"backstage: {len(failed)} host(s) failed (at most {plan.max_failed} tolerated): "
                  + ", ".join(f"{o.host} ({o.line()})" for o in failed), file=sys.stderr)
            return 1
        print(f"live on {len(switched)} host(s): {', '.join(switched)}", file=sys.stderr)
        return 0


def _roll_back(rollout: Rollout, hosts: list[str]) -> str:
    outcomes = rollout.run("rollback", hosts, [], ship=False)
    back = [o.host for o in outcomes if o.ok]
    stuck = [f"{o.host} ({o.line()})" for o in outcomes if not o.ok]
    return (f"rolled back {', '.join(back) or 'no host'}"
            + (f"; could not roll back {', '.join(stuck)}" if stuck else ""))


def verb_on_hosts(plan: contract.FleetPlan, verb: str, agent_args: Sequence[str], keep: bool = False) -> int:
    """rollback, generations or gc on every host (in batches for rollback), through each one's live agent."""
    order = [h.name for h in plan.hosts]
    with contextlib.ExitStack() as stack:
        if verb != "generations":
            stack.enter_context(fleet_lock(plan.production))
        workdir = stack.enter_context(_workdir(keep))
        rollout = Rollout(None, plan, workdir)
        failed = []
        for batch in _batches(order, plan.batch if verb == "rollback" else len(order)):
            for outcome in rollout.run(verb, batch, agent_args, ship=False):
                _say(outcome, "done")
                if not outcome.ok:
                    failed.append(outcome)
            if verb == "rollback" and len(failed) > plan.max_failed:
                break
        if failed:
            print("backstage: failed on " + ", ".join(f"{o.host} ({o.line()})" for o in failed), file=sys.stderr)
            return 1
        return 0


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="backstage-ansible-"))
    try:
        yield path
    finally:
        if keep:
            print(f"ansible files kept in {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)
