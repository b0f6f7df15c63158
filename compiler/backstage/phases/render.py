"""Phase 7, render: model -> file contents, through the targets' templates, and the host's plan.

Every `{{ }}` is escaped for its target and, where a slot has rules of its own, by that slot's filter
(backstage.targets). Nothing edits rendered text afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import pickle
import re
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

from .. import contract, targets
from ..targets import entry
from . import dns, layout
from . import graph as graphs
from .layout import EXECUTABLE, File
from .model import Act, Gig, Production, Sess, Stage


@dataclass(frozen=True, slots=True)
class Vassal:
    """One Sess as uWSGI will run it: its content-hashed name and its address for nginx and needers."""

    sess: str
    stem: str
    bind: str
    upstream: str
    address: str


# The vassal's name hashes its own text. A unix socket's path holds that name, so the text is hashed
# with the bind slot holding a placeholder, which is filled afterwards (see targets.Placeholder).
_BIND = targets.Placeholder("\x00bind\x00")


class Memo:
    """Template output of an earlier build, by a fingerprint of the template and everything it was given:
    a rebuild renders again only the files whose inputs changed (a one-Gig change: its Venue's server
    file and the vassals whose environment names the Venue), and reuses the rest as they were, chunk for
    chunk. The fingerprint is the repr of the values themselves, not where they came from, so a reused
    text is the text a fresh render would give (the compiler's own version is checked by whoever keeps
    the memo: artifact.earlier_renders)."""

    def __init__(self, earlier: Mapping[str, list[str]] | None = None) -> None:
        self.earlier = earlier or {}
        self.now: dict[str, list[str]] = {}
        self.reused = 0
        self.rendered = 0
        self._reprs: dict[int, tuple[object, str]] = {}  # id -> (the model, its repr): one Stage serves many

    def _repr(self, value: object) -> str:
        kept = self._reprs.get(id(value))
        if kept is None or kept[0] is not value:
            kept = self._reprs[id(value)] = (value, repr(value))
        return kept[1]

    def _recall(self, key: str, make: Callable[[], list[str]]) -> tuple[list[str], bool]:
        """What an earlier build (or this one) made for `key`, else `make()`; and whether it was recalled."""
        found = self.now.get(key) or self.earlier.get(key)
        recalled = found is not None
        self.now[key] = found = found if found is not None else make()
        return found, recalled

    def chunks(self, template: Any, context: Mapping[str, object]) -> list[str]:
        # Every value in a context is a scalar, a container or a frozen model whose repr shows all it holds
        # (an Act's files by their digest); the compiler's own version is checked with the memo. The key
        # is the template's name and each (name, repr) joined by NUL, which no repr holds (it escapes one).
        parts = [template.name]
        for name, value in sorted(context.items()):
            parts += (name, repr(value) if type(value) in _PLAIN else self._repr(value))
        key = hashlib.sha256("\0".join(parts).encode()).hexdigest()
        found, recalled = self._recall(key, lambda: _runs(template.render(context)))
        if recalled:
            self.reused += 1
        else:
            self.rendered += 1
        return found

    def value(self, kind: str, inputs: object, make: Callable[[], str]) -> str:
        """`make()`, or what it gave an earlier build for the same inputs (not counted as a render)."""
        found, _ = self._recall(hashlib.sha256(repr((kind, inputs)).encode()).hexdigest(), lambda: [make()])
        return found[0]


# Values repr'd where they are met; any other (a model, or the one uwsgi_params text every server holds)
# is repr'd once per build, by identity.
_PLAIN = frozenset({str, int, bool, float, type(None), list, tuple, dict, targets.Placeholder})


def _environment_text(env: Environment, secrets: list[tuple[str, str]], app: str) -> str:
    return entry.environment_file(env, secrets, app).decode("ascii")


def _runs(text: str) -> list[str]:
    """The text, split so that each placeholder's marker is a chunk of its own, as the placeholder is filled
    chunk by chunk. A marker holds NUL, which neither template text nor any escaped value can hold
    (every target refuses control characters), so the NULs found are the markers' own."""
    if "\x00" not in text:
        return [text]
    return [part for part in _MARKER.split(text) if part]


_MARKER = re.compile("(\x00[^\x00]*\x00)")


@dataclass(frozen=True, slots=True)
class Stores:
    """Where each Act's code and each Stage's environment live on the host, and the store paths of
    the Acts with `source`, the built Stages and the collected static files, with their inputs."""

    code: dict[str, str]  # act -> the directory its code runs from
    environment: dict[str, str]  # stage -> its virtualenv
    acts: dict[str, str]  # act -> store name (source Acts)
    stages: dict[str, tuple[str, bytes]]  # stage -> (store name, requirements file) (built Stages)
    static: dict[tuple[str, str], str]  # (act, stage) -> store name of its collectstatic output


def _stores(production: Production) -> Stores:
    state = production.state_dir
    acts = {a.name: layout.act_store(a.name, a.source.files) for a in production.acts.values() if a.source}
    code = {a.name: layout.store_path(state, acts[a.name]) if a.source else str(a.path)
            for a in production.acts.values()}
    stages: dict[str, tuple[str, bytes]] = {}
    for stage in production.stages.values():
        if stage.built:
            requirements = stage.lock if stage.lock is not None else _requirements_file(production, stage)
            stages[stage.name] = (layout.stage_store(stage.name, requirements, stage.lock is not None,
                                                     str(stage.python), production.host.uwsgi), requirements)
    environment = {s.name: layout.store_path(state, stages[s.name][0]) if s.built else str(s.virtualenv)
                   for s in production.stages.values()}
    static: dict[tuple[str, str], str] = {}
    for sess in production.sesses.values():
        act = production.acts[sess.act]
        if act.django and act.django.collectstatic:
            static[(act.name, sess.stage)] = layout.static_store(act.name, code[act.name], environment[sess.stage],
                                                                 act.settings or "")
    return Stores(code, environment, acts, stages, static)


def _requirements_file(production: Production, stage: Stage) -> bytes:
    text = targets.template("pip", "requirements.txt.j2").render(production=production.name, stage=stage)
    return text.encode()


def render(production: Production, graph: graphs.Graph, restarts: Mapping[str, int] | None = None,
           memo: Memo | None = None) -> dict[str, File]:
    """Every rendered file of the artifact, keyed by relative path (artifact adds the agent and manifest).

    `restarts`: Sess -> how often `apply --restart` started it afresh (written into its vassal file, so
    a new count is a new vassal); a count of 0 writes nothing."""
    files: dict[str, File] = {}
    memo = memo or Memo()
    hosts = _hosts_by_sess(production)
    stores = _stores(production)
    vassals = _render_vassals(production, graph, hosts, stores, restarts or {}, memo)
    files.update((f"uwsgi/{v.stem}.ini", File(text)) for v, text, _ in vassals.values())
    for name, (_, _, rendered) in vassals.items():
        files[f"{_entry_files(name)}/{entry.ENTRY}"] = File(entry.entry_point())
        files[f"{_entry_files(name)}/{entry.ENVIRONMENT}"] = File(rendered.environment_file)
    addresses = {name: v for name, (v, _, _) in vassals.items()}
    environments = {name: rendered for name, (_, _, rendered) in vassals.items()}
    booked: dict[str, list[Gig]] = {name: [] for name in production.venues}
    for gig in production.gigs.values():
        booked[gig.venue].append(gig)
    venues = list(booked)

    def planned() -> bytes:
        return plan(production, hosts, addresses, stores, environments, restarts or {}).to_json()

    # The plan needs every vassal and no server: a child of its own writes it while the servers render.
    with _Child(lambda: iter([planned()]), len(vassals) >= PARALLEL_FROM) as planning:
        texts = _in_two_processes(venues, lambda name: _render_venue(production, name, booked[name], addresses,
                                                                     stores, memo), memo)
        sent = planning.result()
    files[contract.PLAN] = File(sent[0] if sent else planned())
    files.update((f"nginx/{name}.conf", File(text)) for name, text in zip(venues, texts, strict=True))
    for venue in production.venues.values():
        if venue.tls and venue.tls.acme:
            files[_challenge_path(venue.name)] = File(targets.template("nginx", "challenge.conf.j2").render(
                production=production.name, venue=venue, acme_root=_acme_root(production)).encode())
    for zone, rrsets in _zones(production).items():
        files[_zone_path(zone)] = File(contract.zone_json(zone, rrsets))
    include = targets.template("nginx", "include.conf.j2").render(
        production=production.name, pattern=layout.in_dir(production.state_dir, "current/nginx/*.conf"))
    files["include.conf"] = File(include.encode())
    pythons = sorted({layout.in_dir(stage.virtualenv, "bin/python3") if stage.virtualenv else str(stage.python)
                      for stage in production.stages.values()})
    script = targets.template("shell", "install.sh.j2").render(production=production.name,
                                                                pythons=[*pythons, "python3"])
    files[contract.INSTALLER] = File(script.encode(), EXECUTABLE)
    for name, (_, requirements) in stores.stages.items():
        files[_requirements_path(name)] = File(requirements)
    for act in production.acts.values():
        if act.source:
            files.update((f"{_act_files(act.name)}/{rel}", File(content, mode))
                         for rel, mode, content in act.source.files)
    return dict(sorted(files.items()))


def _requirements_path(stage: str) -> str:
    return f"stages/{stage}/requirements.txt"


def _act_files(act: str) -> str:
    return f"acts/{act}"


def _entry_files(sess: str) -> str:
    return f"entries/{sess}"


def _hosts_by_sess(production: Production) -> dict[str, list[str]]:
    hosts: dict[str, set[str]] = {}
    for gig in production.gigs.values():
        hosts.setdefault(gig.sess, set()).update(production.venues[gig.venue].hosts)
    return {sess: sorted(names) for sess, names in hosts.items()}


Environment = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Rendered:
    """A Sess's environment: the variables, the secrets' files, and the entry point's environment.json
    holding both, installed as the store path `store`."""

    env: Environment
    secrets: Environment
    environment_file: bytes
    store: str


def _render_vassals(production: Production, graph: graphs.Graph, hosts: dict[str, list[str]],
                    stores: Stores, restarts: Mapping[str, int],
                    memo: Memo) -> dict[str, tuple[Vassal, bytes, Rendered]]:
    """Each Sess's vassal, its file and its environment, rendered after the Sesses it needs (their
    addresses are in it)."""
    template = targets.template("uwsgi", "vassal.ini.j2")
    vassals: dict[str, Vassal] = {}  # of the Sesses done so far

    def one(name: str) -> tuple[Vassal, bytes, Rendered]:
        sess = production.sesses[name]
        act = production.acts[sess.act]
        env = _environment(production, sess, hosts.get(name, []), vassals, stores)
        app, secrets = f"{act.module}:{act.callable}", list(act.secrets)
        environment_file = memo.value("environment.json", (env, secrets, app), functools.partial(
            _environment_text, env, secrets, app)).encode("ascii")
        store = layout.entry_store(name, [(entry.ENTRY, layout.READ_ONLY, entry.entry_point()),
                                          (entry.ENVIRONMENT, layout.READ_ONLY, environment_file)])
        context = _vassal_context(production, sess, stores, layout.store_path(production.state_dir, store))
        # A TCP bind is written (and hashed) as itself, so a changed port is a new vassal.
        bind = layout.tcp_address(sess.port) if sess.port else _BIND
        context |= {"bind": bind, "restart": restarts.get(name, 0),
                    "socket_option": "http-socket" if sess.protocol == "http" else "socket"}
        chunks = memo.chunks(template, context)
        vassal = _address(production, sess, hashlib.sha256("".join(chunks).encode()).hexdigest()[: layout.HASH_LENGTH])
        path = targets.escape("uwsgi", vassal.bind)
        text = "".join(path if chunk == _BIND else chunk for chunk in chunks)
        return vassal, text.encode(), Rendered(env, list(act.secrets), environment_file, store)

    # Another host's Sesses are left out (a production on several hosts). Those that need none are
    # rendered first, and may be in two processes; the rest after the Sesses they need, in order.
    order = [name for name in graphs.sesses_needed_first(graph) if name in production.sesses]
    free = [name for name in order if not production.sesses[name].needs]
    done = dict(zip(free, _in_two_processes(free, one, memo), strict=True))
    vassals.update((name, result[0]) for name, result in done.items())
    for name in order:
        if name not in done:
            done[name] = one(name)
            vassals[name] = done[name][0]
    return dict(sorted(done.items()))


def _environment(production: Production, sess: Sess, hosts: list[str], needed: dict[str, Vassal],
                 stores: Stores) -> Environment:
    """The variables a Sess's app (and its release steps) get, in order: the Act's `env`, then backstage's."""
    act = production.acts[sess.act]
    stage = production.stages[sess.stage]
    env = list(act.env)
    if act.settings:
        env.append(("DJANGO_SETTINGS_MODULE", act.settings))
    static = stores.static.get((act.name, stage.name))
    if static:
        env.append(("BACKSTAGE_STATIC_ROOT", layout.store_path(production.state_dir, static)))
    if act.source and "PYTHONDONTWRITEBYTECODE" not in dict(act.env):
        env.append(("PYTHONDONTWRITEBYTECODE", "1"))  # the store is immutable: no __pycache__ written into it
    if act.data:
        env.append(("BACKSTAGE_DATA_DIR", act.data))
    if hosts:
        env.append(("BACKSTAGE_HOSTS", " ".join(hosts)))
    for other in sess.needs:
        prefix = layout.env_prefix(other)
        env.append((f"{prefix}_ADDRESS", needed[other].address))
        env.append((f"{prefix}_PROTOCOL", production.sesses[other].protocol))
    return env


def _vassal_context(production: Production, sess: Sess, stores: Stores, entry_store: str) -> dict[str, object]:
    act = production.acts[sess.act]
    stage = production.stages[sess.stage]
    return {
        "production": production.name,
        "sess": sess,
        "act": act,
        "stage": stage,
        "entry": layout.in_dir(entry_store, entry.ENTRY),
        "code": stores.code[act.name],
        "environment": stores.environment[stage.name],
        "socket_owner": stage.uid or production.host.nginx_user,
        "nginx_user": production.host.nginx_user,
        "logto": layout.in_dir(production.log_dir, f"{sess.name}.log"),
        "options": list(sess.uwsgi),
    }


def _address(production: Production, sess: Sess, content_hash: str) -> Vassal:
    stem = layout.vassal_stem(production.name, sess.name, content_hash)
    if sess.port:
        bind = layout.tcp_address(sess.port)
        address = bind
        upstream = f"http://{bind}/" if sess.protocol == "http" else bind
    else:
        bind = layout.socket_path(production.run_dir, production.name, sess.name, content_hash)
        address = f"unix:{bind}"
        upstream = f"http://unix:{bind}:/" if sess.protocol == "http" else address
    return Vassal(sess.name, stem, bind, upstream, address)


def _acme_root(production: Production) -> str:
    """The webroot certbot writes HTTP-01 challenges into, served by every TLS Venue's plain-HTTP side."""
    return layout.in_dir(production.state_dir, contract.ACME_WEBROOT)


def fleet(production: Production) -> dict[str, File]:
    """The files of an artifact of several hosts besides each host's own artifact: fleet.json (the
    hosts, rollout and DNS) and the fleet's dns/<zone>.json (each Venue's names at its hosts' addresses)."""
    assert production.fleet is not None
    files = {_zone_path(zone): File(contract.zone_json(zone, rrsets)) for zone, rrsets in _zones(production).items()}
    producer = _producer_plan(production)
    hosts = tuple(contract.FleetHostPlan(h.name, h.address, h.ssh_host, h.ssh_user or "", h.ssh_port, h.become,
                                         h.python or "", h.state_dir) for h in production.fleet.hosts)
    plan = contract.FleetPlan(production.name, hosts, production.fleet.batch, production.fleet.max_failed, producer)
    files[contract.FLEET] = File(plan.to_json())
    return dict(sorted(files.items()))


def _producer_plan(production: Production) -> contract.ProducerPlan | None:
    producer = production.producer
    if producer is None:
        return None
    return contract.ProducerPlan(producer.api, producer.api_key_file, producer.server, f"backstage:{production.name}",
                                 tuple(contract.ZonePlan(dns.canonical(z), _zone_path(dns.canonical(z)))
                                       for z in producer.zones))


def _zone_path(zone: str) -> str:
    return f"{contract.DNS}/{zone.rstrip('.')}.json"


def _zones(production: Production) -> dict[str, list[contract.RRset]]:
    """Each [producer] zone's RRsets (absolute zone name -> RRsets): an A record (and AAAA) for every
    Venue name inside it, pointing at the host, and the zone's extra records."""
    producer = production.producer
    if producer is None:
        return {}
    found: dict[str, dict[tuple[str, str], tuple[int, set[str]]]] = {dns.canonical(z): {} for z in producer.zones}
    for venue in production.venues.values():
        hosts = ([h.host for h in production.fleet.hosts if h.name in venue.on_hosts] if production.fleet
                 else [production.host])
        for name in venue.hosts:
            zone = dns.zone_of(name, producer.zones)
            if zone is None:
                continue
            rrsets = found[dns.canonical(zone)]
            for rtype, addresses in (("A", [h.address for h in hosts]), ("AAAA", [h.address6 for h in hosts])):
                for address in filter(None, addresses):
                    rrsets.setdefault((dns.canonical(name), rtype), (producer.ttl, set()))[1].add(address)
    for zone, records in producer.zones.items():
        for record in records:
            ttl = record.ttl or producer.ttl
            found[dns.canonical(zone)].setdefault((record.name, record.type), (ttl, set()))[1].add(record.content)
    return {zone: [contract.RRset(name, rtype, ttl, tuple(sorted(contents)))
                   for (name, rtype), (ttl, contents) in sorted(rrsets.items())]
            for zone, rrsets in sorted(found.items())}


def _challenge_path(venue: str) -> str:
    return f"{contract.CHALLENGES}/{venue}.conf"


@cache
def _uwsgi_params() -> targets.Verbatim:
    """The artifact's own uwsgi_params: fixed template text, rendered once and written into each location."""
    return targets.Verbatim(targets.template("nginx", "uwsgi_params.j2").render())


PARALLEL_FROM = 400  # from this many files of a kind on, a second process renders some of them
PARTS = 64  # what such a round is cut into: each process takes the next part left (at most 256: a byte each)
_Result = TypeVar("_Result")


def may_fork() -> bool:
    """Whether a second process would help and is safe: a second CPU, and no other thread (a fork copies
    only the calling thread, so a lock another thread held would stay held in the child). Linux only
    (the CPUs this process may use, and memfd for a child's results): elsewhere one process does it all."""
    if not (hasattr(os, "sched_getaffinity") and hasattr(os, "memfd_create")):
        return False
    return len(os.sched_getaffinity(0)) > 1 and threading.active_count() == 1


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) off while the block runs: one that comes meanwhile raises KeyboardInterrupt
    only as the block ends. For what must not be cut in half: a child forked and its pid noted, a
    temporary directory made and noted, a clean-up. Where the signal mask cannot be set, it does nothing."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def fork_child(work: Callable[[], None]) -> int | None:
    """Run `work()` in a forked child, which exits 0 if it returned and 1 if it raised, never returning
    here nor running this process's cleanup. The child's pid (0 is never returned), or None when no
    process could be made (EAGAIN, ENOMEM): then the caller does the work itself.

    Call it inside `interrupts_held()`, noting the pid before the block ends, so that a Ctrl-C cannot
    come between the fork and the note. In the child, Ctrl-C (SIGINT) simply ends it (unless this
    process ignores it): it never raises there, so the child never runs on into this process's code;
    this process, stopped by the same Ctrl-C (or by one sent to it alone), kills it and reaps it."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    try:
        pid = os.fork()
    except OSError:
        return None
    if pid:
        return pid
    code = 1
    try:
        if not ignored:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        work()
        code = 0
    finally:
        os._exit(code)


def reap(pid: int) -> None:
    """Kill the child `pid` if it still runs, and reap it; nothing if it was reaped already. Only a child
    not yet reaped is killed: its pid cannot have gone to another process meanwhile."""
    with interrupts_held():
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        except ChildProcessError:  # reaped already (a Ctrl-C came after the wait, before it was noted)
            pass


class _Child(Generic[_Result]):
    """`work()` in a forked child (if `fork`, and a process can be made) while this process goes on. The
    child pickles each value `work` yields as soon as it is made, into an anonymous memory file
    (memfd) this process reads once the child has exited: the child never waits for this process to
    read, and little is left to do when it ends. The child is made as the `with` block is entered;
    leaving it, by an error or Ctrl-C too, kills the child if it still runs and reaps it."""

    def __init__(self, work: Callable[[], Iterator[_Result]], fork: bool = True) -> None:
        self.work, self.fork = work, fork
        self.pid: int | None = None
        self.sent = -1

    def __enter__(self) -> _Child[_Result]:
        if not (self.fork and may_fork()):
            return self
        try:
            with interrupts_held():  # the descriptor and the pid noted before a Ctrl-C can come
                try:
                    self.sent = os.memfd_create("backstage-render", os.MFD_CLOEXEC)
                except OSError:  # no descriptor or memory to spare: the caller does the work itself
                    return self
                sent, work = self.sent, self.work

                def child() -> None:
                    with open(sent, "wb", closefd=False) as out:
                        for value in work():
                            pickle.dump(value, out, 5)

                self.pid = fork_child(child)
                if self.pid is None:  # no process to spare
                    self._close()
        except BaseException:  # Ctrl-C as the child was made: `with` will not call __exit__
            self.__exit__()
            raise
        return self

    def result(self) -> list[_Result] | None:
        """What the child yielded, in order; None if there was no child or it failed in any way (the
        caller then does the work itself)."""
        if self.pid is None:
            return None
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:  # cannot be, unless something else reaped it: it failed, to us
            status = 1
        self.pid = None
        values: list[_Result] = []
        with open(self.sent, "rb", closefd=False) as back:
            if status != 0:
                return None
            back.seek(0)
            while back.peek(1):
                values.append(pickle.load(back))
        return values

    def _close(self) -> None:
        if self.sent >= 0:
            sent, self.sent = self.sent, -1
            os.close(sent)

    def __exit__(self, *exc: object) -> None:
        with interrupts_held():
            if self.pid is not None:  # the block ended before result(): the child goes
                reap(self.pid)
                self.pid = None
            self._close()


def _in_two_processes(items: list[str], work: Callable[[str], _Result], memo: Memo) -> list[_Result]:
    """[work(item) for item in items], shared with a forked child when there are PARALLEL_FROM items or
    more (and a second CPU, and no other thread to fork away from). The items are cut into PARTS parts
    and each process takes the next part left until none is, so whichever runs faster does more: the
    parts wait in a pipe both processes read, one byte each, and a byte read by one is never read by
    the other. `work` must depend on nothing the other items' work changes but the memo. The child
    sends back each part's results and what it added to the memo; if it fails in any way, this process
    does the parts it took. Either way the results are the same: rendering is a pure function of the
    model."""
    if len(items) < PARALLEL_FROM or not may_fork():
        return [work(item) for item in items]
    parts = [items[len(items) * i // PARTS: len(items) * (i + 1) // PARTS] for i in range(PARTS)]
    try:
        left, filling = os.pipe()
    except OSError:  # no descriptor to spare
        return [work(item) for item in items]
    try:
        os.write(filling, bytes(range(PARTS)))  # far less than a pipe holds: written at once
    finally:
        os.close(filling)  # so that a read of an emptied pipe ends (b""), in both processes

    def child() -> Iterator[tuple[int, list[_Result], dict[str, list[str]], int, int]]:
        while part := os.read(left, 1):
            before, rendered, reused = len(memo.now), memo.rendered, memo.reused
            results = [work(item) for item in parts[part[0]]]
            # memo.now only grows, in order: what this part added is what follows `before`
            added = dict(itertools.islice(memo.now.items(), before, None))
            yield part[0], results, added, memo.rendered - rendered, memo.reused - reused

    done: dict[int, list[_Result]] = {}
    try:
        with _Child(child) as other:
            while part := os.read(left, 1):
                done[part[0]] = [work(item) for item in parts[part[0]]]
            sent = other.result() or []
    finally:
        os.close(left)
    for index, results, added, rendered, reused in sent:
        if index in done or len(results) != len(parts[index]):
            raise RuntimeError(f"render: the child sent back part {index}, which it was not given")
        done[index] = results
        memo.now.update(added)
        memo.rendered += rendered
        memo.reused += reused
    for index, missing in enumerate(parts):  # those a failed child took (or all, if no child could be made)
        if index not in done:
            done[index] = [work(item) for item in missing]
    return [result for index in range(PARTS) for result in done[index]]


def _render_venue(production: Production, venue_name: str, gigs: list[Gig], vassals: dict[str, Vassal],
                  stores: Stores, memo: Memo) -> bytes:
    locations: list[dict[str, object]] = []
    for gig in gigs:
        sess = production.sesses[gig.sess]
        venue = production.venues[venue_name]
        locations.append({
            "kind": sess.protocol,
            "gig": gig.name,
            "sess": sess.name,
            "path": gig.path,
            "script_name": gig.path.rstrip("/"),
            "upstream": vassals[sess.name].upstream,
            "body_size": gig.client_max_body_size,  # the Venue's is set on the server
            "read_timeout": gig.read_timeout or venue.read_timeout,
        })
        act = production.acts[sess.act]
        served = [(prefix, directory, False) for prefix, directory in act.static]
        static = stores.static.get((act.name, sess.stage))
        if act.django and act.django.collectstatic and static:
            # Collected files are immutable per generation (a new collection is a new store path).
            served.append((act.django.collectstatic, layout.store_path(production.state_dir, static) + "/", True))
        for prefix, directory, cached in served:
            locations.append({"kind": "static", "gig": gig.name, "path": layout.url_join(gig.path, prefix),
                              "directory": directory, "cache": cached})
    locations.sort(key=lambda loc: str(loc["path"]))
    venue = production.venues[venue_name]
    context = {
        "uwsgi_params": _uwsgi_params(),
        "production": production.name,
        "venue": venue,
        "locations": locations,
        "has_root": any(loc["path"] == "/" for loc in locations),
        "hsts": f"max-age={venue.hsts}" if venue.tls and venue.hsts else "",
        "https_port": layout.listen_port(venue.listen.rpartition(":")[2]) if venue.redirect_http else None,
        "acme_root": _acme_root(production),
    }
    return "".join(memo.chunks(targets.template("nginx", "venue.conf.j2"), context)).encode()


def plan(production: Production, hosts: dict[str, list[str]], vassals: dict[str, Vassal], stores: Stores,
         environments: dict[str, Rendered], restarts: Mapping[str, int]) -> contract.Plan:
    """What the host agent needs to switch, probe and check (apply.json)."""
    host = production.host
    played = _played(production)
    return contract.Plan(
        production=production.name,
        state_dir=production.state_dir,
        run_dir=production.run_dir,
        log_dir=production.log_dir,
        nginx_link=layout.nginx_link_name(production.name),
        host=contract.HostPlan(host.vassals_dir, host.nginx_dir, host.nginx, host.nginx_user, host.emperor_stats,
                               host.uwsgi),
        vassals=tuple(
            contract.VassalPlan(
                sess=v.sess, stem=v.stem, protocol=production.sesses[v.sess].protocol, address=v.address,
                health_host=(hosts.get(v.sess) or ["localhost"])[0],
                health_path=production.acts[production.sesses[v.sess].act].health, restart=restarts.get(v.sess, 0))
            for v in vassals.values()),
        gigs=tuple(
            contract.GigPlan(
                name=gig.name, sess=gig.sess, host=production.venues[gig.venue].domain,
                connect=layout.connect_address(production.venues[gig.venue].listen),
                tls=production.venues[gig.venue].tls is not None,
                url=layout.url_join(gig.path, production.acts[production.sesses[gig.sess].act].health))
            for gig in production.gigs.values()),
        acts=tuple(contract.ActPlan(name, store, _act_files(name)) for name, store in sorted(stores.acts.items())),
        stages=tuple(
            contract.StagePlan(name, store, str(production.stages[name].python), _requirements_path(name),
                               production.stages[name].lock is not None)
            for name, (store, _) in sorted(stores.stages.items())),
        steps=tuple(_steps(production, stores, environments, played)),
        entries=tuple(contract.EntryPlan(name, rendered.store, _entry_files(name))
                      for name, rendered in sorted(environments.items())),
        secrets=tuple(_secrets(production, environments)),
        data=tuple(_data(production, played)),
        acme=contract.AcmePlan(host.acme.directory, host.acme.email or "", host.acme.certbot) if host.acme else None,
        certificates=tuple(
            contract.CertificatePlan(venue.name, venue.hosts, venue.tls.certificate, venue.tls.key,
                                     _challenge_path(venue.name))
            for venue in production.venues.values() if venue.tls and venue.tls.acme),
        producer=_producer_plan(production),
    )


def _secrets(production: Production, environments: dict[str, Rendered]) -> list[contract.SecretPlan]:
    """Each Sess's secret files, with the user and group its vassal reads them as."""
    found = []
    for name, rendered in sorted(environments.items()):
        stage = production.stages[production.sesses[name].stage]
        found += [contract.SecretPlan(name, variable, path, stage.uid or "", stage.gid or "")
                  for variable, path in rendered.secrets]
    return found


def _played(production: Production) -> dict[str, list[Sess]]:
    """Act -> the Sesses that play it, by name (each Act's first is the one its release steps run as)."""
    played: dict[str, list[Sess]] = {}
    for sess in production.sesses.values():
        played.setdefault(sess.act, []).append(sess)
    return played


def _data(production: Production, played: dict[str, list[Sess]]) -> list[contract.DataPlan]:
    """Each played Act's data directory, owned as its Stage runs (check made the Stages of one Act agree)."""
    found = []
    for act in production.acts.values():
        if act.data and act.name in played:
            stage = production.stages[played[act.name][0].stage]
            found.append(contract.DataPlan(act.name, act.data, stage.uid or "", stage.gid or ""))
    return found


def _steps(production: Production, stores: Stores, environments: dict[str, Rendered],
           played: dict[str, list[Sess]]) -> list[contract.StepPlan]:
    """Each Act's release steps, run as its first Sess (by name) would run: its environment, its Stage.
    collectstatic once per Stage the Act plays on; migrate and release once per Act. Acts no Sess plays
    run nothing."""
    steps: list[contract.StepPlan] = []
    for act in production.acts.values():
        sesses = played.get(act.name, [])
        if not act.django or not sesses:
            continue
        first = sesses[0]

        def step(kind: str, argv: tuple[str, ...], sess: Sess, static: str = "", *, a: Act = act) -> None:
            stage = production.stages[sess.stage]
            steps.append(contract.StepPlan(
                act=a.name, sess=sess.name, kind=kind, argv=_command(argv, stores.environment[stage.name]),  # type: ignore[arg-type]
                cwd=stores.code[a.name], env=tuple(environments[sess.name].env), uid=stage.uid or "",
                gid=stage.gid or "", static=static, secrets=tuple(environments[sess.name].secrets)))

        manage = act.django.manage
        if act.django.collectstatic:
            for stage_name in sorted({s.stage for s in sesses}):
                sess = next(s for s in sesses if s.stage == stage_name)
                step("collectstatic", (manage, "collectstatic", "--noinput"), sess,
                     stores.static[(act.name, stage_name)])
        if act.django.migrate:
            step("migrate", (manage, "migrate", "--noinput"), first)
        for argv in act.django.release:
            step("release", argv, first)
    return steps


def _command(argv: tuple[str, ...], environment: str) -> tuple[str, ...]:
    """A script of the Act's code (ending in .py) runs with the Stage's python; a bare name is a command
    the Stage installs (its bin/); anything else is a path in the Act's code."""
    first, rest = argv[0], argv[1:]
    if first.endswith(".py"):
        return (layout.in_dir(environment, "bin/python"), first, *rest)
    if "/" not in first:
        return (layout.in_dir(environment, f"bin/{first}"), *rest)
    return argv
