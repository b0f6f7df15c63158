"""Environment, secrets and data on a real host (Debian's nginx, a compiled uWSGI Emperor): env values of
every character class and secret files of any bytes reach os.environ of a real vassal exactly, never
through uWSGI's parser and never into the artifact, the store, a log or the history; bad secret files and
data directories are refused before anything changes; `apply --restart` starts a Sess afresh blue/green;
health means below 400, and failures quote the app's own error.

One sandbox and one production (two Sesses of a small WSGI app) are shared; each test first brings the
host where it needs it.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import sandbox_head
from harness import Run, TestSandbox, backstage
from loadgen import Load, Target

APP = '''
import json
import os


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if os.environ.get("APP_BROKEN_HEALTH") and path == "/healthz":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such page"]
    if path == "/env":
        shown = {n.decode(): v.hex() for n, v in os.environb.items() if n.startswith((b"T_", b"S_", b"BACKSTAGE_"))}
        body = json.dumps(shown, sort_keys=True).encode()
    else:
        body = b"ok " + os.environ.get("APP_LABEL", "").encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
'''

BROKEN = '''
raise RuntimeError("the app could not start: no such table: club_member")
'''

# One value per class of characters uWSGI's ini parser would expand, strip or cut, and then some.
ENV = {
    "T_PERCENT": "100% %d %(x)s %k %%",
    "T_SHELL": "$(id) `id` $HOME ${X}",
    "T_MAGIC": "@(/etc/passwd) %(_) @(exec://id)",
    "T_QUOTES": "'single' \"double\"",
    "T_BACKSLASH": "a\\b\\n\\",
    "T_SPACES": "  lead and trail  ",
    "T_TAB": "\tx\t",
    "T_CONTROL": "".join(chr(c) for c in range(1, 32) if c not in (10, 13)) + "\x7f",
    "T_C1": "".join(chr(c) for c in range(0x80, 0xA0)),
    "T_UNICODE": "é ü 日本 🎺 \u2028 \u2029 \ufeff",
    "T_EQUALS": "a=b=c",
    "T_SEMICOLON": "a;b # c ; d",
    "T_EMPTY": "",
    "T_DJANGO_KEY": "k%3$(id)'\"@(x)+=!^&*(-_)#" * 3,
    "T_LONG": "x%" * 4000,
}
SECRET_BYTES = b"\xff\xfe raw \x01 bytes %(x) $(id) '\"\n"  # one trailing newline, dropped
SECRET_LINES = b"line one\nline two\n\n"  # only the last newline is dropped
EXPECTED_SECRETS = {"S_BYTES": SECRET_BYTES[:-1], "S_LINES": SECRET_LINES[:-1]}


def toml_string(value: str) -> str:
    """A TOML basic string holding exactly `value` (every control character escaped)."""
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


@dataclass
class Host:
    sandbox: TestSandbox
    tmp: Path
    app: Path
    secrets: Path
    data: Path

    def production(self, label: str, site_env: dict[str, str] | None = None, broken: bool = False,
                   secrets: dict[str, str] | None = None) -> Path:
        """Sesses `site` (the byte test's variables and secrets) and `other`, each at its own Venue."""
        q = json.dumps
        env = {"APP_LABEL": label, **ENV, **(site_env or {})}
        secrets = secrets if secrets is not None else {"S_BYTES": str(self.secrets / "bytes"),
                                                       "S_LINES": str(self.secrets / "lines")}
        app = self.tmp / "broken" if broken else self.app
        text = sandbox_head("env", self.tmp, self.sandbox.host_table()) + f"""
[stages.main]
virtualenv = {q(sys.prefix)}

[acts.site]
wsgi = "envapp"
path = {q(str(app))}
health = "/healthz"
data = {q(str(self.data))}
env = {{ {", ".join(f"{name} = {toml_string(value)}" for name, value in env.items())} }}
secrets = {{ {", ".join(f"{name} = {q(path)}" for name, path in secrets.items())} }}

[acts.other]
wsgi = "envapp"
path = {q(str(self.app))}
env = {{ APP_LABEL = "other" }}

[sesses.site]
act = "site"
stage = "main"

[sesses.other]
act = "other"
stage = "main"

[venues.www]
domain = "www.env.test"
listen = {q(self.sandbox.listen)}

[venues.side]
domain = "side.env.test"
listen = {q(self.sandbox.listen)}

[gigs.site]
venue = "www"
sess = "site"

[gigs.other]
venue = "side"
sess = "other"
"""
        path = self.tmp / f"production-{label}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    def apply(self, production: Path, *extra: str) -> Run:
        run = backstage("apply", *extra, str(production), "-o", str(self.tmp / "build"), "--ready-timeout=20",
                        "--health-timeout=10")
        ours = run.err.split("the app's log (")[0]  # the app's own traceback may be quoted after that
        assert "Traceback" not in ours, run.err
        return run

    def live(self, label: str) -> None:
        if self.sandbox.get("www.env.test", "/").text != f"ok {label}":
            run = self.apply(self.production(label))
            assert run.code == 0, run.err
        assert self.sandbox.get("www.env.test", "/").text == f"ok {label}"

    def environ(self) -> dict[str, bytes]:
        answer = self.sandbox.get("www.env.test", "/env")
        assert answer.status == 200, answer.text
        return {name: bytes.fromhex(value) for name, value in json.loads(answer.text).items()}

    def vassals(self) -> dict[str, int]:
        return self.sandbox.vassal_pids()

    def links(self) -> set[str]:
        """The vassal files linked for the Emperor: what the switch made live."""
        return {p.name for p in Path(str(self.sandbox.host_table()["vassals_dir"])).iterdir()}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    tmp = tmp_path_factory.mktemp("environment")
    app = tmp / "app"
    app.mkdir()
    (app / "envapp.py").write_text(APP)
    (tmp / "broken").mkdir()
    (tmp / "broken" / "envapp.py").write_text(BROKEN)
    secrets = tmp / "secrets"
    secrets.mkdir(mode=0o700)
    for name, content in (("bytes", SECRET_BYTES), ("lines", SECRET_LINES)):
        (secrets / name).write_bytes(content)
        (secrets / name).chmod(0o600)
    with TestSandbox(tmp / "sandbox") as sandbox:
        yield Host(sandbox, tmp, app, secrets, tmp / "data" / "site")


def test_env_values_and_secret_bytes_reach_os_environ_exactly(host: Host) -> None:
    host.live("v1")
    seen = host.environ()
    for name, value in ENV.items():
        assert seen[name] == value.encode(), name
    for name, value in EXPECTED_SECRETS.items():
        assert seen[name] == value, name
    assert seen["BACKSTAGE_DATA_DIR"] == str(host.data).encode()
    # uWSGI never saw them: no `env` option in any vassal file.
    for ini in (host.tmp / "state" / "current" / "uwsgi").glob("*.ini"):
        assert "\nenv =" not in ini.read_text(), ini


def test_secret_values_are_nowhere_but_in_the_vassal(host: Host) -> None:
    host.live("v1")
    needles = [SECRET_BYTES[:-1], b"line two"]
    for root in (host.tmp / "state", host.tmp / "log", host.tmp / "build"):
        for path in root.rglob("*") if root.exists() else ():
            if path.is_file() and not path.is_symlink():
                content = path.read_bytes()
                assert not any(needle in content for needle in needles), path


def test_the_data_directory_is_made_for_the_stage_and_kept(host: Host) -> None:
    host.live("v1")
    info = host.data.stat()
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o750
    assert (info.st_uid, info.st_gid) == (0, 0)  # the Stage has no uid: the vassal runs as root
    (host.data / "kept.txt").write_text("kept")
    host.live("v2")
    host.live("v1")
    assert (host.data / "kept.txt").read_text() == "kept"


@pytest.mark.parametrize("problem", ["missing", "world-readable", "group-readable", "symlink"])
def test_a_bad_secret_file_is_refused_before_anything_changes(host: Host, problem: str) -> None:
    host.live("v1")
    before = host.links()
    bad = host.tmp / f"bad-{problem}"
    if problem != "missing":
        target = host.secrets / "bytes"
        if problem == "symlink":
            bad.symlink_to(target)
        else:
            bad.write_bytes(b"value\n")
            bad.chmod(0o644 if problem == "world-readable" else 0o640)
            if problem == "group-readable":
                os.chown(bad, 0, 65534)  # readable by nogroup, which the Stage does not run as
    run = host.apply(host.production("v2", secrets={"S_BYTES": str(bad)}))
    assert run.code == 1, run.err
    assert str(bad) in run.err and "S_BYTES" in run.err, run.err
    assert "nothing was changed" in run.err, run.err
    assert host.links() == before
    assert host.sandbox.get("www.env.test", "/").text == "ok v1"


def test_a_secret_the_stage_user_cannot_reach_is_refused(host: Host) -> None:
    """The vassal reads its secrets after dropping to the Stage's uid: a file it may read in a directory
    it may not enter is refused before anything changes, naming the directory."""
    host.live("v1")
    before = host.links()
    locked = host.tmp / "locked"
    locked.mkdir(mode=0o700, exist_ok=True)
    secret = locked / "key"
    secret.write_bytes(b"value\n")
    os.chown(secret, 65534, 65534)
    secret.chmod(0o400)
    text = host.production("v2", secrets={"S_BYTES": str(secret)}).read_text()
    production = host.tmp / "production-nobody.toml"
    production.write_text(text.replace('[stages.main]\n', '[stages.main]\nuid = "nobody"\ngid = "nogroup"\n', 1))
    run = host.apply(production)
    assert run.code == 1, run.err
    assert "cannot be reached by nobody" in run.err and str(locked) in run.err, run.err
    assert host.links() == before
    assert host.sandbox.get("www.env.test", "/").text == "ok v1"


def test_a_data_directory_another_user_owns_is_refused(host: Host) -> None:
    host.live("v1")
    os.chown(host.data, 65534, 65534)
    try:
        run = host.apply(host.production("v2"))
    finally:
        os.chown(host.data, 0, 0)
    assert run.code == 1, run.err
    assert str(host.data) in run.err and "owned by" in run.err, run.err
    assert host.sandbox.get("www.env.test", "/").text == "ok v1"


def test_restart_starts_the_sess_afresh_blue_green_and_reads_the_changed_secret(host: Host) -> None:
    host.live("v1")
    production = host.production("v1")
    before = host.vassals()
    (host.secrets / "lines").write_bytes(b"rotated\n")
    try:
        assert host.environ()["S_LINES"] == SECRET_LINES[:-1]  # read when the vassal started, not since
        targets = [Target("www.env.test", "/"), Target("side.env.test", "/")]
        with Load(host.sandbox.http_port, targets, clients=4, duration=4.0) as load:
            run = host.apply(production, "--restart", "site")
        assert run.code == 0, run.err
        assert load.result.failures == [], load.result.summary()
        after = host.vassals()
        assert host.environ()["S_LINES"] == b"rotated"
        site_before = {n for n in before if "--site--" in n}
        site_after = {n for n in host.links() if "--site--" in n}
        assert len(site_before) == len(site_after) == 1 and not site_before & site_after, (before, site_after)
        assert {n: p for n, p in after.items() if "--other--" in n} == {
            n: p for n, p in before.items() if "--other--" in n}
        # The count is carried: a plain apply of the same file starts nothing anew.
        links = host.links()
        again = host.apply(production)
        assert again.code == 0, again.err
        assert host.links() == links
        assert "start 0 vassal(s)" in again.out, again.out
    finally:
        (host.secrets / "lines").write_bytes(SECRET_LINES)


def test_restart_of_an_unknown_sess_or_of_an_artifact_is_a_usage_error(host: Host) -> None:
    run = backstage("apply", "--restart", "nosuch", str(host.production("v1")), "-o", str(host.tmp / "build"))
    assert run.code == 2 and "no sess named nosuch" in run.err, run.err
    run = backstage("apply", "--restart", "site", str(host.tmp / "build"))
    assert run.code == 2 and "needs the production file" in run.err, run.err


def test_health_means_below_400(host: Host) -> None:
    host.live("v1")
    run = host.apply(host.production("v2", site_env={"APP_BROKEN_HEALTH": "1"}))
    assert run.code == 1, run.err
    assert "answered 404 (a health check needs a status below 400)" in run.err, run.err
    assert host.sandbox.get("www.env.test", "/").text == "ok v1"


def test_a_failing_app_is_reported_with_its_own_error_not_access_lines(host: Host) -> None:
    host.live("v1")
    host.sandbox.get("www.env.test", "/")  # an access line in the log, which must not be quoted
    run = host.apply(host.production("v3", broken=True))
    assert run.code == 1, run.err
    assert "RuntimeError: the app could not start: no such table: club_member" in run.err, run.err
    assert "[pid: " not in run.err, run.err
    assert host.sandbox.get("www.env.test", "/").text == "ok v1"
