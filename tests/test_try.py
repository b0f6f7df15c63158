"""`backstage try` runs a production live in a private sandbox and stops it all on Ctrl-C: the showcase
(code copied from `source`, Stage built from requirements, static files collected into the store);
then, with a small WSGI app of the test's own, what a rehearsal must get right: the uWSGI it runs (the
Stage's own, or a plain word on how to get one), the Stages' uid when run as root, the sandbox kept with
--keep, each Act's data inside the sandbox, and the logs of a failed apply printed before they go.
Real nginx, a real compiled uWSGI; nothing is mocked and nothing skips.

tests/test_try_signals.py holds the stops by signal; both use the helpers here.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import backstage
from backstage import compile as compile_production
from backstage.agent import procfs
from backstage.cli.rehearsal import overlay
from backstage.cli.sandbox import Sandbox, find_components
from backstage.files import remove_tree
from conftest import EXAMPLES
from harness import free_port, http_get

q = json.dumps  # a JSON string of plain paths is a valid TOML basic string

APP = """\
import os


def application(environ, start_response):
    data = os.environ.get("BACKSTAGE_DATA_DIR", "")
    if environ.get("PATH_INFO") == "/write":
        with open(os.path.join(data, "hits"), "a") as hits:
            hits.write("hit\\n")
    body = f"uid={os.getuid()} data={data} secret={os.environ.get('TRY_SECRET', '')}\\n"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
"""


def write_app(directory: Path) -> Path:
    """A WSGI app (module `tryapp`) that says which uid it runs as, its data directory and its secret,
    and appends to `hits` in its data directory on GET /write."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tryapp.py").write_text(APP)
    return directory


def write_production(path: Path, app: Path, *, virtualenv: str = sys.prefix, stage: str = "", act: str = "",
                     extra: str = "") -> Path:
    """One Stage `main`, one Act `site` (the app above), one Sess, one Venue `try.test` with a Gig."""
    path.write_text(f"""\
[production]
name = "trytest"

[stages.main]
virtualenv = {q(virtualenv)}
{stage}
[acts.site]
wsgi = "tryapp"
path = {q(str(app))}
{act}
[sesses.site]
act = "site"
stage = "main"

[venues.www]
domain = "try.test"

[gigs.site]
venue = "www"
sess = "site"
{extra}""")
    return path


def as_background_job() -> None:
    # What a shell does for a background job (`backstage try f.toml &`), before it execs the command.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


class Tried:
    """A running `backstage try`, in a session of its own; its stdout and stderr read as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, background: bool = False) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backstage.cli", "try", *args], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env=os.environ | (env or {}), preexec_fn=as_background_job if background else None)
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._readers = [threading.Thread(target=self._read, args=(self.process.stdout, self.out, True)),
                         threading.Thread(target=self._read, args=(self.process.stderr, self.err, False))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object, into: list[str], queued: bool) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line)
            if queued:
                self._lines.put(line)
        if queued:
            self._lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first stdout line (from here on) that matches `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{self.text()}") from None
            if line is None:
                self.process.wait(10)
                raise AssertionError(f"try exited ({self.process.returncode}) before printing {pattern!r}:\n"
                                     f"{self.text()}")
            if found := re.search(pattern, line):
                return found

    def live(self, timeout: float = 60) -> Path:
        """Wait until it says it is live; the sandbox's root."""
        return Path(self.wait_for(r"is live in (\S+); Ctrl-C stops it\.", timeout)[1])

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = 60) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()  # it cleans up on SIGTERM; SIGKILL would leave its sandbox running
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            raise AssertionError(f"try did not exit within {timeout} s:\n{self.text()}") from None
        for reader in self._readers:
            reader.join(10)
        return code

    def text(self) -> str:
        return "".join(self.out) + "--- stderr ---\n" + "".join(self.err)

    def stop(self) -> None:
        """For a test's `finally`: whatever happened, no `try` runs on."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(AssertionError):
                self.finish()
        for reader in self._readers:
            reader.join(10)


def mentioning(root: Path) -> list[str]:
    """Every process whose command line names a path under `root` (the sandbox's nginx, Emperor and
    vassals all do; nginx's workers are children of its master)."""
    found = []
    me = os.getpid()
    inside = f"{root}/"
    masters = set()
    for pid in procfs.pids():
        if pid != me and inside in procfs.title(pid) and procfs.alive(pid):
            found.append(f"{pid}: {procfs.title(pid)}")
            masters.add(pid)
    for pid in procfs.pids():
        stat = procfs.stat(pid)
        if stat and stat.ppid in masters and pid not in masters and stat.state != "Z":
            found.append(f"{pid} (child of {stat.ppid}): {procfs.title(pid)}")
    return found


def wait_gone(root: Path, timeout: float = 5.0) -> list[str]:
    """The processes still naming `root` after `timeout` (none, when everything stopped)."""
    deadline = time.monotonic() + timeout
    while (left := mentioning(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def assert_nothing_left(root: Path) -> None:
    assert wait_gone(root) == [], "processes outlived `try`"
    assert not os.path.lexists(root), f"{root} is still there"


@contextlib.contextmanager
def public_dir(prefix: str) -> Iterator[Path]:
    """A directory every user may enter (pytest's own are 0700), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        mounts = [inner for inner in path.iterdir() if os.path.ismount(inner)]
        assert not mounts, f"{mounts} still mounted: {path} left in place"  # never delete through a mount
        remove_tree(path)




def pids_where(root: Path, test: Callable[[list[str]], bool]) -> list[int]:
    inside = f"{root}/"
    return [pid for pid in procfs.pids() if inside in procfs.title(pid) and test(procfs.cmdline(pid))]


# ------------------------------------------------------------------------------------------------ tests

def test_try_serves_the_showcase_and_stops_cleanly_on_ctrl_c() -> None:
    find_components()
    port = free_port()
    # The showcase's code is a `source` and its Stage is built from requirements: nothing to map.
    command = [sys.executable, "-m", "backstage.cli", "try", str(EXAMPLES / "showcase" / "production.toml"),
               "--port", str(port)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in child.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "Ctrl-C stops it." in line:
                break
        root = Path(re.search(r"is live in (\S+);", "".join(lines))[1])  # type: ignore[index]
        gigs = [child.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        assert any(f"curl -H 'Host: showcase.test' http://127.0.0.1:{port}/api/" in g for g in gigs), gigs
        assert http_get(port, "showcase.test", "/").text.startswith("showcase v1 script_name= ")
        assert http_get(port, "www.showcase.test", "/api/x").text.startswith("showcase v1 script_name=/api ")
        assert http_get(port, "showcase.test", "/static/hello.txt").status == 200
        closed = http_get(port, "later.showcase.test", "/")
        assert (closed.status, closed.text) == (503, "closed\n")
    finally:
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=60)
    assert code == 0, child.stderr.read()  # type: ignore[union-attr]
    assert_nothing_left(root)
    try:
        http_get(port, "showcase.test", "/", timeout=2)
        raise AssertionError("something still answers on the sandbox's port")
    except OSError:
        pass


def test_try_without_a_compiled_uwsgi_says_plainly_how_to_get_one(tmp_path: Path) -> None:
    # backstage run by a Python that has no uwsgi beside it (a virtualenv of the tests' own Python), with
    # a PATH that has none and a Stage whose virtualenv has none either.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    path = f"{venv}/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert shutil.which("uwsgi", path=path) is None, "this machine has a system-wide uwsgi: the test needs none"
    production = write_production(tmp_path / "production.toml", write_app(tmp_path / "app"), virtualenv=str(venv))
    env = {k: v for k, v in os.environ.items() if k not in ("BACKSTAGE_UWSGI", "VIRTUAL_ENV")}
    # That virtualenv sees the base interpreter's packages, not the tests' own virtualenv's: backstage and
    # what it imports are put on its path (the tests' site-packages hold no uwsgi program, only its module).
    env |= {"PATH": path, "TMPDIR": str(tmp_path),
            "PYTHONPATH": os.pathsep.join([str(Path(backstage.__file__).resolve().parent.parent),
                                           *site.getsitepackages()])}
    command = [str(venv / "bin" / "python"), "-m", "backstage.cli", "try", str(production)]

    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1, done.stderr
    message = " ".join(done.stderr.split())
    assert message.startswith("backstage try: cannot start a sandbox: a compiled uWSGI runs the Emperor and "
                              "every vassal, and none was found (looked for "
                              f"{venv}/bin/uwsgi (the Stage's virtualenv), uwsgi on PATH)."), message
    assert f"Install one into the Stage's virtualenv (`{venv}/bin/python -m pip install uwsgi`) or " \
           "system-wide (`pip install uwsgi`)" in message, message
    assert "The `pyuwsgi` wheel does not work: it cannot run as an Emperor." in message, message
    assert "test" not in message.replace(str(tmp_path), ""), message  # said to a user, not to the test suite
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("bs-try-*")), "a sandbox directory was made and left"

    # BACKSTAGE_UWSGI names the one to use: pointing nowhere, it is what the message is about.
    nowhere = tmp_path / "nowhere" / "uwsgi"
    done = subprocess.run(command, capture_output=True, text=True, env=env | {"BACKSTAGE_UWSGI": str(nowhere)},
                          timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"backstage try: cannot start a sandbox: BACKSTAGE_UWSGI={nowhere} is not a "
                                  "compiled uWSGI: point it at one, or unset it"), done.stderr
    assert f"rejected {nowhere}: no such file" in done.stderr, done.stderr


def test_try_runs_the_stage_own_uwsgi(tmp_path: Path) -> None:
    find_components()
    assert (Path(sys.prefix) / "bin" / "uwsgi").is_file(), f"no compiled uWSGI in {sys.prefix}/bin"
    app = write_app(tmp_path / "app")
    production = write_production(tmp_path / "production.toml", app, virtualenv=sys.prefix)
    port = free_port()
    tried = Tried(str(production), "--port", str(port))
    try:
        root = tried.live()
        assert http_get(port, "try.test", "/").status == 200
        emperors = pids_where(root, lambda command: "--emperor" in command)
        assert emperors and all(procfs.cmdline(pid)[0] == str(Path(sys.prefix) / "bin" / "uwsgi") for pid in emperors)
        tried.signal(signal.SIGINT)
        assert tried.finish() == 0, tried.text()
    finally:
        tried.stop()
    assert_nothing_left(root)


def test_try_as_root_keeps_the_stages_uid_and_gid(tmp_path: Path) -> None:
    """As on a host, the vassals drop to the Stage's user and group (checked in what `try` runs: the vassal
    file its overlay compiles). Running a vassal as `nobody` end to end needs a Stage interpreter that
    `nobody` can read, which a pyenv Python under /root is not."""
    assert os.geteuid() == 0, "this test runs as root, as the suite does"
    app = write_app(tmp_path / "app")
    production = write_production(tmp_path / "production.toml", app, stage='uid = "nobody"\ngid = "nogroup"')
    sandbox = Sandbox(tmp_path / "sandbox", http_port=free_port())
    notices: list[str] = []
    compiled = compile_production(str(production), overlay=overlay(sandbox, tmp_path / "root", [], notices=notices),
                                  overlay_label="backstage try")
    (ini,) = [f.content.decode() for path, f in compiled.files.items() if path.startswith("uwsgi/")]
    assert "\nuid = nobody\n" in ini and "\ngid = nogroup\n" in ini, ini
    assert not notices, notices


def test_try_keep_keeps_the_sandbox_and_each_act_data_lives_in_it(tmp_path: Path) -> None:
    find_components()
    app = write_app(tmp_path / "app")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "site").write_text("s3cret value\n")
    (secrets / "site").chmod(0o600)
    mapped = tmp_path / "mapped"
    mapped.mkdir()
    real_data = "/var/lib/bs-try-test-site"
    # Two Acts: one whose data the sandbox takes in, one whose data a --path-map moves (where it goes).
    # The Stage's user does not exist here: it cannot be rehearsed, and `try` says so. A TLS Venue is
    # served as plain HTTP on the sandbox's port, its TLS-only keys dropped with its `tls`.
    production = write_production(
        tmp_path / "production.toml", app, stage='uid = "bs-try-no-such-user"',
        act=f'data = {q(real_data)}\nsecrets = {{ TRY_SECRET = "/etc/bs-try-test/site" }}',
        extra=f"""
[acts.other]
wsgi = "tryapp"
path = {q(str(app))}
data = "/srv/bs-try-test/other"

[sesses.other]
act = "other"
stage = "main"

[venues.other]
domain = "other.try.test"
tls = {{ certificate = "/etc/bs-try-test/none.pem", key = "/etc/bs-try-test/none.key" }}
redirect_http = true
http_listen = 8080

[gigs.other]
venue = "other"
sess = "other"
""")
    port = free_port()
    tried = Tried(str(production), "--port", str(port), "--keep", "--path-map", f"/etc/bs-try-test={secrets}",
                  "--path-map", f"/srv/bs-try-test={mapped}")
    try:
        root = tried.live()
        assert http_get(port, "try.test", "/write").text == f"uid=0 data={root}/data/site secret=s3cret value\n"
        assert http_get(port, "other.try.test", "/write").text == f"uid=0 data={mapped}/other secret=\n"
        tried.wait_for(rf"^  data of act site: {re.escape(str(root))}/data/site \(in the sandbox; "
                       rf"{re.escape(real_data)} is not touched\)$")
        tried.wait_for(rf"^  data of act other: {re.escape(str(mapped))}/other "
                       r"\(--path-map of /srv/bs-try-test/other\)$")
        tried.signal(signal.SIGTERM)
        assert tried.finish() == 0, tried.text()
    finally:
        tried.stop()
    try:
        assert f"backstage try: kept the sandbox for inspection: {root}\n" in tried.err, tried.text()
        assert ("backstage try: stage main: user 'bs-try-no-such-user' does not exist on this machine, so its "
                "`uid` is not used here\n") in tried.err, tried.text()
        assert wait_gone(root) == [], "processes outlived `try`"
        assert (root / "data" / "site" / "hits").read_text() == "hit\n"
        assert "GET /write" in (root / "log" / "site.log").read_text()
        assert (mapped / "other" / "hits").read_text() == "hit\n"
        assert not os.path.lexists(real_data)
    finally:
        remove_tree(root)


def test_a_failed_apply_prints_the_sandbox_logs_it_names_before_removing_them(tmp_path: Path) -> None:
    find_components()
    app = write_app(tmp_path / "app")
    # A Django app whose settings refuse the Venue's host: the health check gets Django's 400, and the
    # agent's message names the app's log inside the sandbox.
    (app / "trysettings.py").write_text('SECRET_KEY = "x" * 50\nALLOWED_HOSTS = ["elsewhere.invalid"]\n'
                                        'MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]\n'
                                        'ROOT_URLCONF = "trysettings"\nurlpatterns = []\nDEBUG = False\n')
    (app / "trywsgi.py").write_text("from django.core.wsgi import get_wsgi_application\n\n"
                                    "application = get_wsgi_application()\n")
    production = tmp_path / "production.toml"
    write_production(production, app, act='settings = "trysettings"\n[acts.site.django]\nrelease = []')
    production.write_text(production.read_text().replace('wsgi = "tryapp"', 'wsgi = "trywsgi"'))
    tried = Tried(str(production))
    try:
        code = tried.finish(90)
    finally:
        tried.stop()
    err = "".join(tried.err)
    assert code == 1, tried.text()
    roots = set(re.findall(rf"{re.escape(tempfile.gettempdir())}/bs-try-[^/\s]+", tried.text()))
    assert len(roots) == 1, roots
    root = Path(roots.pop())
    assert "Django refused the host 'try.test'" in err, err
    header = "backstage try: the sandbox's logs (removed with the sandbox; --keep keeps them):\n"
    assert header in err, err
    after = err[err.index(header):]
    # Every log the output names is quoted after that line, the lines themselves, before its removal.
    named = set(re.findall(rf"{re.escape(str(root))}/\S+?\.log", tried.text()))
    assert f"{root}/log/site.log" in named, named
    for log in named:
        assert f"--- {log} (last " in after, (log, after)
    site = after[after.index(f"--- {root}/log/site.log"):]
    assert "Invalid HTTP_HOST header: 'try.test'" in site.split("\n---")[0], site
    assert_nothing_left(root)
