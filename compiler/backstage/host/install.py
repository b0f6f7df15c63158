"""Host side of backstage: makes one artifact live, with zero downtime, and can undo it.

This file is copied verbatim into every artifact and run there by install.sh with the host's Python 3
(standard library only): a host needs no backstage. The switch follows the procedure that lost no
request in ../shared/notes/uwsgi-nginx-facts.md:

1. verify the artifact against its manifest and its own name, and `nginx -t` it hermetically;
2. take the production's lock;
3. start the vassals that are new (their names carry a content hash, so a changed Sess is new too)
   and wait until each answers a real request; unchanged vassals are never touched;
4. point `current` at the generation, `nginx -t` the host, reload, wait for the old workers to exit;
5. check every Gig through nginx; on failure undo steps 4 and 3;
6. only then stop the vassals that left.

Every step is idempotent and state lives only in links, so a run killed at any point leaves nginx on
the old or the new generation with all of that generation's vassals running; running again converges.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMAT = 1
MANIFEST = "manifest.json"
PLAN = "apply.json"
CRASH_POINT = "BACKSTAGE_TEST_CRASH_AT"  # tests kill -9 the switch at a named point through this


class Refused(Exception):
    """The artifact or the host is not in a state to apply; nothing was changed."""


class Failed(Exception):
    """The switch failed and was undone; the host serves what it served before."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_POINT) == name:
        os.kill(os.getpid(), 9)


# ---------------------------------------------------------------------------------------------- verify

def tree_hash(entries: Iterator[tuple[str, int, bytes]]) -> str:
    """The artifact's identity: sha256 over each (path, mode, content), sorted by path."""
    digest = hashlib.sha256()
    for path, mode, content in sorted(entries):
        digest.update(f"{path}\0{mode:o}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def verify(artifact: Path, name: str | None = None) -> dict[str, Any]:
    """Refuse an artifact whose files differ in any way from what its manifest and name promise.

    `name` is the name the tree must hash to, when it is checked under another (a copy in progress).
    """
    try:
        manifest = json.loads((artifact / MANIFEST).read_bytes())
    except (OSError, ValueError) as exc:
        raise Refused(f"{artifact}: unreadable {MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise Refused(f"{artifact}: {MANIFEST} is not a backstage manifest")
    if manifest.get("format") != FORMAT:
        raise Refused(f"{artifact}: artifact format {manifest.get('format')!r} (backstage "
                      f"{manifest.get('backstage')!r}) is not format {FORMAT}; use the matching backstage")
    found: dict[str, tuple[int, bytes]] = {}
    for root, dirs, files in os.walk(artifact):
        for entry in dirs + files:
            path = Path(root, entry)
            rel = str(path.relative_to(artifact))
            if path.is_symlink():
                raise Refused(f"{artifact}: {rel} is a symlink (to {os.readlink(path)}); artifacts hold none")
            if entry in files:
                found[rel] = (path.stat().st_mode & 0o777, path.read_bytes())
    try:
        listed = {f["path"]: f for f in manifest["files"]}
    except (TypeError, KeyError):
        raise Refused(f"{artifact}: {MANIFEST} lists its files wrongly") from None
    missing = sorted(set(listed) - set(found))
    extra = sorted(set(found) - set(listed) - {MANIFEST})
    if missing or extra:
        raise Refused(f"{artifact}: files missing {missing or '[]'}, files not in the manifest {extra or '[]'}")
    for rel, entry in sorted(listed.items()):
        mode, content = found[rel]
        if hashlib.sha256(content).hexdigest() != entry.get("sha256") or f"{mode:04o}" != entry.get("mode"):
            raise Refused(f"{artifact}: {rel} was changed after the build (content or mode)")
    expected = tree_hash((rel, mode, content) for rel, (mode, content) in found.items())
    hashed = f"{manifest.get('production')}-{expected[:32]}"
    if (name or artifact.name) != hashed:
        raise Refused(f"{artifact}: the manifest does not match the artifact (its content hashes to {hashed})")
    return manifest


def read_plan(artifact: Path) -> dict[str, Any]:
    try:
        plan = json.loads((artifact / PLAN).read_text())
    except (OSError, ValueError) as exc:
        raise Refused(f"{artifact}: unreadable {PLAN}: {exc}") from None
    if not isinstance(plan, dict):
        raise Refused(f"{artifact}: {PLAN} is not a backstage plan")
    return plan


def nginx_command(plan: dict[str, Any]) -> list[str]:
    return list(plan["host"]["nginx"])


def hermetic_nginx_test(plan: dict[str, Any], generation: Path) -> None:
    """`nginx -t` of this generation's servers alone, in a private prefix, before the host is touched."""
    with tempfile.TemporaryDirectory(prefix="backstage-nginx-t-") as tmp:
        conf = Path(tmp, "nginx.conf")
        temps = "".join(f"    {kind}_temp_path {tmp}/{kind};\n"
                        for kind in ("client_body", "proxy", "uwsgi", "fastcgi", "scgi"))
        conf.write_text(f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\nevents {{}}\n"
                        f"http {{\n{temps}    access_log off;\n    include {generation}/nginx/*.conf;\n}}\n")
        done = run([*nginx_command(plan), "-t", "-p", tmp, "-c", str(conf)])
        if done.returncode != 0:
            raise Refused("nginx -t of the new generation failed:\n" + done.stderr.strip())


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    except OSError as exc:
        return subprocess.CompletedProcess(command, 127, "", f"{command[0]}: {exc.strerror}")


# ----------------------------------------------------------------------------------------------- state

class State:
    """The production's place on the host: generations, the `current` link, history, the lock."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.production: str = plan["production"]
        self.root = Path(plan["state_dir"])
        self.generations = self.root / "generations"
        self.current = self.root / "current"
        self.history = self.root / "history"
        self.vassals_dir = Path(plan["host"]["vassals_dir"])
        self.nginx_link = Path(plan["host"]["nginx_dir"]) / plan["nginx_link"]

    @contextlib.contextmanager
    def lock(self, wait: float) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "a+") as handle:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "another process"
                        raise Refused(f"production {self.production} is being changed by {holder}; "
                                      f"waited {wait:.0f} s") from None
                    time.sleep(0.2)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            yield

    def current_name(self) -> str | None:
        try:
            return Path(os.readlink(self.current)).name
        except OSError:
            return None

    def install(self, artifact: Path) -> Path:
        """Copy the artifact into generations/, atomically; an existing copy is reused."""
        target = self.generations / artifact.name
        if target.is_dir():
            return target
        self.generations.mkdir(parents=True, exist_ok=True)
        for stale in self.generations.glob(".tmp-*"):
            remove_tree(stale)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.generations))
        os.rmdir(tmp)
        shutil.copytree(artifact, tmp, symlinks=True)
        verify(tmp, artifact.name)  # what lands in generations/ is checked, not only its source
        os.rename(tmp, target)
        return target

    def last_good(self) -> str | None:
        """The generation most recently made live successfully, if it is still kept."""
        for _, name, outcome in reversed(self.entries()):
            if outcome == "ok" and (self.generations / name).is_dir():
                return name
        return None

    def live_vassals(self) -> dict[str, Path]:
        """This production's vassal links in vassals_dir; other productions' vassals are never looked at."""
        prefix = f"{self.production}--"
        if not self.vassals_dir.is_dir():
            return {}
        return {p.name: p for p in sorted(self.vassals_dir.iterdir())
                if p.name.startswith(prefix) and p.name.endswith(".ini") and p.is_symlink()}

    def record(self, name: str, outcome: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\t{name}\t{outcome}\n"
        with open(self.history, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def entries(self) -> list[tuple[str, str, str]]:
        try:
            lines = self.history.read_text().splitlines()
        except OSError:
            return []
        return [tuple(line.split("\t", 2)) for line in lines if line.count("\t") == 2]  # type: ignore[misc]


def link(target: Path, at: Path) -> None:
    """Point `at` to `target` atomically: readers see the old or the new link, never none."""
    at.parent.mkdir(parents=True, exist_ok=True)
    tmp = at.with_name(f".{at.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, at)


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def remove_tree(path: Path) -> None:
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    os.chmod(path, 0o755)
    shutil.rmtree(path)


# ---------------------------------------------------------------------------------------------- probes

def uwsgi_request(address: str, host: str, path: str, timeout: float) -> int:
    """One request in the uwsgi protocol; returns the HTTP status the app answered."""
    query = ""
    if "?" in path:
        path, query = path.split("?", 1)
    env = {"REQUEST_METHOD": "GET", "REQUEST_URI": path + (f"?{query}" if query else ""), "PATH_INFO": path,
           "QUERY_STRING": query, "SCRIPT_NAME": "", "SERVER_NAME": host, "SERVER_PORT": "80",
           "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": host, "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http"}
    body = b"".join(struct.pack("<H", len(k.encode())) + k.encode() + struct.pack("<H", len(v.encode())) + v.encode()
                    for k, v in env.items())
    with connect(address, timeout) as sock:
        sock.sendall(struct.pack("<BHB", 0, len(body), 0) + body)
        return read_status(sock)


def http_request(address: str, host: str, path: str, timeout: float, tls: bool = False) -> int:
    """One HTTP/1.1 request on a new connection (TLS with SNI when asked); returns its status."""
    with connect(address, timeout) as raw:
        sock = raw
        if tls:
            import ssl  # only TLS Venues need it

            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # a health check, not a trust decision
            sock = context.wrap_socket(raw, server_hostname=host)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return read_status(sock)


def connect(address: str, timeout: float) -> socket.socket:
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = address.removeprefix("unix:")
    else:
        ip, port = address.rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (ip, int(port))
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except OSError:
        sock.close()
        raise
    return sock


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the connection closed before a status line")
        data += chunk
    return int(data.split(b"\r\n", 1)[0].split()[1])


def vassal_answers(vassal: dict[str, Any], timeout: float = 5.0) -> int:
    request = uwsgi_request if vassal["protocol"] == "uwsgi" else http_request
    return request(vassal["address"], vassal["health_host"], vassal["health_path"], timeout)


def gig_answers(gig: dict[str, Any], timeout: float = 5.0) -> int:
    return http_request(gig["connect"], gig["host"], gig["url"], timeout, tls=gig["tls"])


def wake_emperor(plan: dict[str, Any]) -> None:
    """A connection to the Emperor's stats socket makes it scan vassals_dir at once instead of in 3 s."""
    address = plan["host"].get("emperor_stats")
    if not address:
        return
    with contextlib.suppress(OSError), connect(address, 2.0) as sock:
        while sock.recv(65536):
            pass


# ---------------------------------------------------------------------------------------------- nginx

def nginx_workers() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, title) of every nginx worker process on the host."""
    found: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if title.startswith("nginx: worker process"):
            found[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), title)
    return found


def reload_nginx(plan: dict[str, Any], wait: float) -> None:
    """Reload, then wait until the workers that served the old configuration have exited.

    Only then may the vassals they routed to stop: an old worker still finishing a request must
    find its upstream alive.
    """
    before = nginx_workers()
    done = run([*nginx_command(plan), "-s", "reload"])
    if done.returncode != 0:
        raise Failed("nginx -s reload failed:\n" + done.stderr.strip())
    deadline = time.monotonic() + wait
    reloaded: set[int] = set()
    while time.monotonic() < deadline:
        now = nginx_workers()
        # The reloaded master is the one with workers it did not have before.
        reloaded |= {parent for pid, (parent, _) in now.items() if pid not in before}
        old = [pid for pid, (parent, _) in before.items() if parent in reloaded and pid in now]
        if reloaded and not old:
            return
        time.sleep(0.05)
    say(f"warning: old nginx workers still running after {wait:.0f} s; going on")


def nginx_test_host(plan: dict[str, Any]) -> None:
    done = run([*nginx_command(plan), "-t"])
    if done.returncode != 0:
        raise Failed("nginx -t of the host configuration failed:\n" + done.stderr.strip())


# ---------------------------------------------------------------------------------------------- switch

def log_tail(plan: dict[str, Any], sess: str, lines: int = 20) -> str:
    path = Path(plan["log_dir"], f"{sess}.log")
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n" + "\n".join("    " + line for line in text)


def wait_ready(plan: dict[str, Any], vassals: list[dict[str, Any]], timeout: float) -> None:
    pending = {v["stem"]: v for v in vassals}
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
            raise Failed(f"sess {vassal['sess']} ({vassal['stem']}) did not answer within {timeout:.0f} s "
                         f"({last.get(vassal['stem'], 'no answer')})\n" + log_tail(plan, vassal["sess"]))
        time.sleep(0.1)


def check_gigs(plan: dict[str, Any], timeout: float) -> None:
    for gig in plan["gigs"]:
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
                raise Failed(f"gig {gig['name']} (http://{gig['host']}{gig['url']} via {gig['connect']}) "
                             f"{problem}\n" + log_tail(plan, gig["sess"]))
            time.sleep(0.2)


def plan_switch(state: State, plan: dict[str, Any]) -> dict[str, list[str]]:
    desired = sorted(v["stem"] + ".ini" for v in plan["vassals"])
    live = state.live_vassals()
    return {
        "start": [n for n in desired if n not in live],
        "keep": [n for n in desired if n in live],
        "stop": sorted(n for n in live if n not in desired),
    }


def port_clashes(state: State, plan: dict[str, Any], steps: dict[str, list[str]]) -> list[str]:
    """New vassals that would bind a TCP port a vassal on its way out still holds.

    Blue/green needs both vassals listening at once; on one port they cannot, so such a switch could
    not be made without dropping requests, and is refused.
    """
    leaving: dict[str, str] = {}
    for name in steps["stop"]:
        with contextlib.suppress(OSError):
            for line in (state.vassals_dir / name).read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() in ("socket", "http-socket") and not value.strip().startswith("/"):
                    leaving[value.strip()] = name
    starting = {v["stem"] + ".ini": v["address"] for v in plan["vassals"]}
    return [f"{name} binds {starting[name]}, which {leaving[starting[name]]} holds until it stops"
            for name in steps["start"] if starting[name] in leaving]


def sweep_sockets(state: State, plan: dict[str, Any]) -> None:
    """Remove this production's sockets that no live vassal owns.

    uWSGI's `vacuum` removes a socket when its vassal stops, except when the vassal dropped to a
    `uid` that may not write run_dir; blue/green names would then pile up, one per change.
    """
    live = {name.removesuffix(".ini") for name in state.live_vassals()}
    for sock in Path(plan["run_dir"]).glob(f"{state.production}--*.sock"):
        if sock.name.removesuffix(".sock") not in live and sock.is_socket():
            unlink(sock)


def switch(artifact: Path, options: argparse.Namespace, locked: bool = False) -> int:
    verify(artifact)
    plan = read_plan(artifact)
    state = State(plan)
    hermetic_nginx_test(plan, artifact)
    crash_point("verified")
    with contextlib.nullcontext() if locked else state.lock(options.lock_wait):
        steps = plan_switch(state, plan)
        clashes = port_clashes(state, plan, steps)
        if clashes:
            raise Refused("a changed Sess keeps its TCP port, so old and new cannot run side by side: "
                          + "; ".join(clashes) + ". Give it a new port, or drop `port` for a unix socket.")
        if options.dry_run:
            for verb in ("start", "keep", "stop"):
                for name in steps[verb]:
                    print(f"{verb:5} vassal {name}")
            print("nginx: test and reload")
            return 0
        # After an interrupted apply `current` may already name the new generation: undo to what was live.
        previous = state.last_good() or state.current_name()
        state.record(artifact.name, "start")
        generation = state.install(artifact)
        crash_point("installed")
        for directory in (plan["run_dir"], plan["log_dir"]):
            Path(directory).mkdir(parents=True, exist_ok=True)
        sweep_sockets(state, plan)
        try:
            go_live(state, plan, generation, steps, previous, options)
        except Failed as failure:
            state.record(artifact.name, "failed")
            say(f"apply failed, rolled back to {previous or 'nothing'}: {failure}")
            return 1
        state.record(artifact.name, "ok")
    for verb in ("start", "keep", "stop"):
        print(f"{verb:5} {len(steps[verb])} vassal(s)" + "".join(f"\n      {n}" for n in steps[verb]))
    print(f"live: {generation}")
    return 0


def go_live(state: State, plan: dict[str, Any], generation: Path, steps: dict[str, list[str]],
            previous: str | None, options: argparse.Namespace) -> None:
    by_file = {v["stem"] + ".ini": v for v in plan["vassals"]}
    started = list(steps["start"])
    for name in started:
        link(generation / "uwsgi" / name, state.vassals_dir / name)
    wake_emperor(plan)
    crash_point("vassals-linked")
    try:
        wait_ready(plan, [by_file[n] for n in steps["start"] + steps["keep"]], options.ready_timeout)
    except Failed:
        stop_vassals(state, plan, started)
        raise
    crash_point("vassals-ready")
    had_link = state.nginx_link.is_symlink()
    link(Path("generations") / generation.name, state.current)
    link(state.current / "include.conf", state.nginx_link)
    crash_point("current-switched")
    try:
        nginx_test_host(plan)
    except Failed:
        restore(state, plan, previous, had_link, reload=False, options=options)
        stop_vassals(state, plan, started)
        raise
    try:
        reload_nginx(plan, options.drain_timeout)
        crash_point("nginx-reloaded")
        check_gigs(plan, options.health_timeout)
    except Failed:
        restore(state, plan, previous, had_link, reload=True, options=options)
        stop_vassals(state, plan, started)
        raise
    crash_point("gigs-checked")
    for index, name in enumerate(steps["stop"]):
        unlink(state.vassals_dir / name)
        if index == 0:
            crash_point("stopping-old")
    wake_emperor(plan)


def restore(state: State, plan: dict[str, Any], previous: str | None, had_link: bool, reload: bool,
            options: argparse.Namespace) -> None:
    if previous:
        link(Path("generations") / previous, state.current)
    else:
        unlink(state.current)
    if not had_link:
        unlink(state.nginx_link)
    if reload:
        with contextlib.suppress(Failed):
            nginx_test_host(plan)
            reload_nginx(plan, options.drain_timeout)


def stop_vassals(state: State, plan: dict[str, Any], names: list[str]) -> None:
    for name in names:
        unlink(state.vassals_dir / name)
    wake_emperor(plan)


# ----------------------------------------------------------------------------------- generations and gc

def generations(state: State) -> list[dict[str, Any]]:
    """Kept generations in the order they first went live (never-live ones first), like Nix's numbers."""
    current = state.current_name()
    first_live: dict[str, str] = {}
    for when, name, outcome in state.entries():
        if outcome == "ok":
            first_live.setdefault(name, when)
    names = sorted((p.name for p in state.generations.glob("*") if not p.name.startswith(".")),
                   key=lambda n: (first_live.get(n, ""), n))
    return [{"name": n, "applied": first_live.get(n, ""), "current": n == current} for n in names]


def rollback_target(state: State, wanted: str | None) -> Path:
    kept = generations(state)
    known = [g["name"] for g in kept]
    if wanted:
        matches = [n for n in known if n == wanted or n.rsplit("-", 1)[-1].startswith(wanted)]
        if len(matches) != 1:
            raise Refused(f"no single kept generation matches {wanted!r}; kept: {', '.join(known) or 'none'}")
        return state.generations / matches[0]
    entries = state.entries()
    last_good = state.last_good()
    if entries and entries[-1][2] == "start" and last_good:
        return state.generations / last_good  # an apply was interrupted: back to what was live before it
    live = [g["name"] for g in kept if g["applied"]]
    current = state.current_name()
    if current in live and live.index(current) > 0:
        return state.generations / live[live.index(current) - 1]
    raise Refused("there is no earlier generation to roll back to")


def in_use(state: State) -> set[str]:
    """Generations that a live link points into: `current`, and every vassal link."""
    used = {state.current_name()} - {None}
    for path in state.live_vassals().values():
        target = Path(os.readlink(path))
        if target.is_absolute() and state.generations in target.parents:
            used.add(target.relative_to(state.generations).parts[0])
    return used  # type: ignore[return-value]


def gc(state: State, keep: int) -> list[str]:
    ordered = [g["name"] for g in generations(state)]
    kept = set(ordered[-keep:]) if keep > 0 else set()
    used = in_use(state)
    removed = []
    for name in ordered:
        if name in kept or name in used:
            continue
        # Renamed first: a gc killed mid-way leaves a .tmp- directory, which install sweeps, and never
        # a half-deleted generation that a later apply of the same artifact would take as whole.
        doomed = state.generations / f".tmp-gc-{name}"
        os.rename(state.generations / name, doomed)
        remove_tree(doomed)
        removed.append(name)
    return removed


# ------------------------------------------------------------------------------------------------- cli

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="install.sh")
    parser.add_argument("artifact", type=Path)
    verbs = parser.add_subparsers(dest="verb", required=True)
    apply = verbs.add_parser("apply", help="make this artifact live")
    rollback = verbs.add_parser("rollback", help="switch back to an earlier generation")
    rollback.add_argument("--to", help="a kept generation's name or hash prefix (default: the previous one)")
    for sub in (apply, rollback):
        sub.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
        for flag, default in (("--ready-timeout", 60.0), ("--health-timeout", 15.0), ("--drain-timeout", 60.0),
                              ("--lock-wait", 300.0)):
            sub.add_argument(flag, type=float, default=default, metavar="SECONDS")
    verbs.add_parser("generations", help="list kept generations")
    collect = verbs.add_parser("gc", help="delete old generations")
    collect.add_argument("--keep", type=int, required=True)
    args = parser.parse_args(argv)
    artifact = args.artifact.resolve()
    try:
        if args.verb == "apply":
            return switch(artifact, args)
        state = State(read_plan(artifact))
        if args.verb == "rollback":
            with state.lock(args.lock_wait):  # the target is chosen and switched to under one lock
                target = rollback_target(state, args.to)
                say(f"rolling back to {target.name}")
                return switch(target, args, locked=True)
        if args.verb == "generations":
            for g in generations(state):
                print(f"{'*' if g['current'] else ' '} {g['name']}  {g['applied'] or '(never live)'}")
            return 0
        with state.lock(300.0):
            for name in gc(state, args.keep):
                print(f"removed {name}")
        return 0
    except Refused as refusal:
        say(f"refused: {refusal}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
