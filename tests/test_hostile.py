"""The hostile corpus: inputs that try to inject into nginx or uWSGI, escape a directory, or break the compiler.

Every case runs the real CLI (`python -m backstage.cli build FILE -o OUT`) once, in a child process, and must:
exit 1; print `FILE:LINE:COL: CODE key.path: message` for the offending key, followed by a `hint:` line; print
no traceback and no raw control character; and leave OUT missing or empty.

Committed cases live in tests/hostile/<class>-<what>.toml. Each begins with

    # expect: BSxxx key.path      (the code, and the key path exactly as the CLI prints it)
    # stderr: some text           (optional: text that must also appear on stderr, e.g. "did you mean")

and marks the line of the offending key with a trailing `# <-` comment; that line number is the LINE the
diagnostic must carry. Cases that need raw bytes or are large (non-UTF-8, invalid TOML, an empty file, 10 MB,
100,000 gigs, deep nesting) are generated into a temporary directory at test time; see GENERATED below.

The CLI runs are started together, on a pool as wide as the machine, the first time a case asks for its result;
each test then checks only its own run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

HOSTILE = Path(__file__).resolve().parent / "hostile"
REPO = HOSTILE.parent.parent
EXPECT = re.compile(r"^# expect: (BS\d{3})(?: (.+))?$")
STDERR = re.compile(r"^# stderr: (.+)$")
MARK = "# <-"
# Diagnostics are one line each (plus a hint line) and never replay the input's control characters to a terminal.
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
# A hostile file must be refused quickly; the big generated ones get this much wall time each.
BIG_BUDGET_SECONDS = 10.0
SMALL_BUDGET_SECONDS = 5.0


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    path: str  # the key path as the CLI prints it; "" when the diagnostic carries none
    line: int
    stderr: str = ""  # more text that must appear on stderr
    budget: float = SMALL_BUDGET_SECONDS


# ---- committed cases -----------------------------------------------------------------------------

def parse_case(file: Path) -> Case:
    lines = file.read_text("utf-8").splitlines()
    head = EXPECT.match(lines[0]) if lines else None
    if not head:
        raise ValueError(f"{file.name}: the first line must be `# expect: BSxxx key.path`")
    extra = STDERR.match(lines[1]) if len(lines) > 1 else None
    marked = [n for n, text in enumerate(lines, 1) if text.rstrip().endswith(MARK)]
    if len(marked) != 1:
        raise ValueError(f"{file.name}: mark exactly one line with a trailing `{MARK}` (found {len(marked)})")
    return Case(file.stem, head[1], head[2] or "", marked[0], extra[1] if extra else "")


def committed_cases() -> list[Case]:
    return [parse_case(file) for file in sorted(HOSTILE.glob("*.toml"))]


# ---- generated cases (raw bytes, or too big to commit) ------------------------------------------

BASE = """[production]
name = "hostile"

[stages.main]
virtualenv = "/srv/venvs/main"

[acts.site]
wsgi = "site.wsgi:application"
path = "/srv/apps/site"

[sesses.site]
act = "site"
stage = "main"

[venues.www]
domain = "example.org"
"""
BASE_LINES = BASE.count("\n")
GIG = '\n[gigs.site]\nvenue = "www"\nsess = "site"\n'


def _base_with(old: str, new: bytes) -> bytes:
    raw = (BASE + GIG).encode()
    assert old.encode() in raw
    return raw.replace(old.encode(), new, 1)


def _line_of(raw: bytes, needle: bytes) -> int:
    return raw[: raw.index(needle)].count(b"\n") + 1


def _many_gigs(count: int) -> bytes:
    body = "".join(f'[gigs.g{i}]\nvenue = "www"\nsess = "site"\npath = "/g{i}/"\n' for i in range(count))
    return (BASE + "\n" + body).encode()


def _ten_megabytes() -> bytes:
    raw = (BASE + GIG).encode()
    filler = b"# " + b"x" * 1022 + b"\n"
    return raw + filler * (10 * 1024 * 1024 // len(filler) + 1)


def _deep(depth: int) -> bytes:
    return (BASE + GIG + "\n[host]\nnginx = " + "[" * depth + "]" * depth + "\n").encode()


def _dup_key() -> bytes:
    return (BASE + 'domain = "example.net"\n' + GIG).encode()


def _dup_table() -> bytes:
    return (BASE + GIG + '\n[acts.site]\nwsgi = "x"\n').encode()


# name -> (the bytes, code, key path, the line of the offending input, extra stderr text, time budget)
Generated = tuple[Callable[[], bytes], str, str, Callable[[bytes], int], str, float]
GENERATED: dict[str, Generated] = {
    "bytes-non-utf8-value": (
        lambda: _base_with('"/srv/venvs/main"', b'"/srv/venvs/m\xffain"'), "BS002", "",
        lambda raw: _line_of(raw, b"\xff"), "0xff", SMALL_BUDGET_SECONDS),
    "bytes-latin1-comment": (
        lambda: _base_with("[venues.www]", b"# caf\xe9\n[venues.www]"), "BS002", "",
        lambda raw: _line_of(raw, b"\xe9"), "0xe9", SMALL_BUDGET_SECONDS),
    "bytes-overlong-slash": (
        lambda: _base_with('"/srv/apps/site"', b'"/srv/apps/\xc0\xafsite"'), "BS002", "",
        lambda raw: _line_of(raw, b"\xc0"), "", SMALL_BUDGET_SECONDS),
    "bytes-utf8-surrogate": (
        lambda: _base_with('"example.org"', b'"ex\xed\xa0\x80ample.org"'), "BS002", "",
        lambda raw: _line_of(raw, b"\xed"), "", SMALL_BUDGET_SECONDS),
    "bytes-utf16": (
        lambda: (BASE + GIG).encode("utf-16"), "BS002", "", lambda raw: 1, "", SMALL_BUDGET_SECONDS),
    "bytes-raw-nul-in-string": (
        lambda: _base_with('"example.org"', b'"example.org\x00"'), "BS003", "",
        lambda raw: _line_of(raw, b"\x00"), "", SMALL_BUDGET_SECONDS),
    "bytes-raw-cr-in-string": (
        lambda: _base_with('"example.org"', b'"example.org\rlisten 81"'), "BS003", "",
        lambda raw: _line_of(raw, b"\r"), "", SMALL_BUDGET_SECONDS),
    "bytes-bom": (
        lambda: b"\xef\xbb\xbf" + (BASE + GIG).encode(), "BS003", "", lambda raw: 1, "", SMALL_BUDGET_SECONDS),
    "toml-unterminated-string": (
        lambda: _base_with('"example.org"', b'"example.org'), "BS003", "",
        lambda raw: _line_of(raw, b'"example.org'), "", SMALL_BUDGET_SECONDS),
    "toml-duplicate-key": (
        _dup_key, "BS003", "", lambda raw: _line_of(raw, b"example.net"), "", SMALL_BUDGET_SECONDS),
    "toml-duplicate-table": (
        _dup_table, "BS003", "", lambda raw: _line_of(raw, b'wsgi = "x"') - 1, "", SMALL_BUDGET_SECONDS),
    "toml-missing-value": (
        lambda: _base_with('domain = "example.org"', b"domain ="), "BS003", "",
        lambda raw: _line_of(raw, b"domain ="), "", SMALL_BUDGET_SECONDS),
    "toml-deep-nesting": (
        lambda: _deep(2000), "BS003", "", lambda raw: _line_of(raw, b"nginx = ["), "", SMALL_BUDGET_SECONDS),
    "empty-file": (lambda: b"", "BS102", "", lambda raw: 1, "`production`", SMALL_BUDGET_SECONDS),
    "empty-comments-only": (
        lambda: b"# nothing here\n\n   \n# at all\n", "BS102", "", lambda raw: 1, "`production`",
        SMALL_BUDGET_SECONDS),
    "bytes-10mb": (_ten_megabytes, "BS004", "", lambda raw: 1, "limit", BIG_BUDGET_SECONDS),
    "bytes-100k-gigs": (
        lambda: _many_gigs(100_000), "BS106", "gigs", lambda raw: BASE_LINES + 2, "", BIG_BUDGET_SECONDS),
}


# ---- running the CLI, all cases at once ----------------------------------------------------------

@dataclass(frozen=True)
class Run:
    file: Path
    out: Path
    code: int
    stdout: str
    stderr: str
    seconds: float


_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def run_cli(file: Path, out: Path, *extra: str, timeout: float = 120.0) -> Run:
    env = {**os.environ, "PYTHONPATH": str(REPO / "compiler")}
    env.pop("BACKSTAGE_DEBUG", None)
    command = [sys.executable, "-m", "backstage.cli", "build", str(file), "-o", str(out), *extra]
    start = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as child:
        with _LIVE_LOCK:
            _LIVE.add(child)
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            stdout, stderr = child.communicate()
            stderr = f"(killed after {timeout:.0f} s)\n".encode() + stderr
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(child)
    seconds = time.monotonic() - start
    return Run(file, out, child.returncode, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"),
               seconds)


def prepare(name: str, root: Path) -> tuple[Path, Case]:
    """The file to compile for a case, and what it must produce."""
    if name in GENERATED:
        make, code, path, line, stderr, budget = GENERATED[name]
        raw = make()
        file = root / name / "production.toml"
        file.parent.mkdir(parents=True)
        file.write_bytes(raw)
        return file, Case(name, code, path, line(raw), stderr, budget)
    file = HOSTILE / f"{name}.toml"
    return file, parse_case(file)


ALL_NAMES = [case.name for case in committed_cases()] + sorted(GENERATED)
assert len(ALL_NAMES) == len(set(ALL_NAMES)), "a generated case shadows a committed one"


@pytest.fixture(scope="session")
def hostile_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Start the CLI for every selected case on a pool; map case name -> (case, future run)."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_hostile_case" and hasattr(item, "callspec")]
    # The slow ones first, so they overlap with the rest.
    selected.sort(key=lambda name: GENERATED[name][5] < BIG_BUDGET_SECONDS if name in GENERATED else True)
    root = tmp_path_factory.mktemp("hostile")
    pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
    runs: dict[str, tuple[Case, Future[Run]]] = {}
    for name in selected:
        file, case = prepare(name, root)
        # A run that takes 6 times its budget is stopped, so one slow case cannot stall the suite.
        runs[name] = (case, pool.submit(run_cli, file, root / name / "out", timeout=6 * case.budget))
    yield runs
    pool.shutdown(wait=False, cancel_futures=True)
    with _LIVE_LOCK:  # a session stopped early (-x) does not wait for the slow runs it no longer needs
        for child in _LIVE:
            child.kill()
    pool.shutdown(wait=True)


def diagnostic_line(case: Case, file: Path) -> re.Pattern[str]:
    where = f"{re.escape(str(file))}:{case.line}:\\d+: {case.code}"
    return re.compile(f"^{where} {re.escape(case.path)}: " if case.path else f"^{where} ", re.M)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_hostile_case(name: str, hostile_runs: dict[str, tuple[Case, Future[Run]]]) -> None:
    case, future = hostile_runs[name]
    run = future.result()
    both = run.stdout + run.stderr
    assert "Traceback" not in both, f"traceback:\n{both[-3000:]}"
    assert run.code == 1, f"exit {run.code}, expected 1 (input error); stderr:\n{run.stderr[-3000:]}"
    assert not run.out.exists() or not any(run.out.iterdir()), f"{run.out} was written"
    assert f" {case.code} " in run.stderr, f"{case.code} not reported; stderr:\n{run.stderr[-3000:]}"
    found = diagnostic_line(case, run.file).search(run.stderr)
    assert found, (f"expected `{run.file}:{case.line}:COL: {case.code} {case.path}: ...`; "
                   f"stderr:\n{run.stderr[-3000:]}")
    if case.stderr:
        assert case.stderr in run.stderr, f"{case.stderr!r} not on stderr:\n{run.stderr[-3000:]}"
    assert run.seconds < case.budget, f"took {run.seconds:.1f} s; the budget is {case.budget:.0f} s"
    raw = RAW_CONTROL.search(run.stderr)
    assert not raw, f"stderr echoes the raw control character U+{ord(raw[0]):04X} of the input:\n{run.stderr!r}"
    shape = re.compile(rf"^(?:{re.escape(str(run.file))}:\d+:\d+: BS\d{{3}} .*|    hint: .*"
                       r"|backstage: \d+ error\(s\); nothing was written)$")
    stray = [line for line in run.stderr.splitlines() if not shape.match(line)]
    assert not stray, f"stderr lines that are no diagnostic, hint or summary (a value broke the line?): {stray}"


def test_every_diagnostic_has_a_hint(hostile_runs: dict[str, tuple[Case, Future[Run]]]) -> None:
    """Each `FILE:LINE:COL: CODE ...` line is followed by a `hint:` line, in every case of the corpus."""
    missing = []
    for name, (_, future) in sorted(hostile_runs.items()):
        lines = future.result().stderr.splitlines()
        for index, line in enumerate(lines):
            if re.match(r"^.+:\d+:\d+: BS\d{3} ", line) and not (
                    index + 1 < len(lines) and lines[index + 1].lstrip().startswith("hint: ")):
                missing.append(f"{name}: {line[:160]}")
    assert not missing, "diagnostics without a hint:\n" + "\n".join(missing)


def test_corpus_is_well_formed() -> None:
    cases = committed_cases()
    assert len(cases) + len(GENERATED) >= 60
    classes = {case.name.split("-", 1)[0] for case in cases}
    assert {"nginx", "ini", "traversal", "names", "rules"} <= classes
    for case in cases:
        assert case.path, f"{case.name}: a committed case names the offending key"


# ---- several errors, and --json -----------------------------------------------------------------

SEVERAL = """[production]
name = "Bad_Name"

[stages.main]
virtualenv = "relative/venv"

[acts.site]
wsgi = "site.wsgi:application"
path = "/srv/apps/site"
env = { THEME = "a\\u0000b" }

[sesses.site]
act = "ghost"
stage = "main"
[sesses.site.uwsgi]
exec-as-root = "id"

[venues.www]
domain = "example.org;"

[gigs.site]
venue = "www"
sess = "site"
path = "/api"
"""
SEVERAL_EXPECTED = [
    (2, "BS122", "production.name"),
    (5, "BS110", "stages.main.virtualenv"),
    (10, "BS114", "acts.site.env.THEME"),
    (13, "BS201", "sesses.site.act"),
    (16, "BS116", "sesses.site.uwsgi.exec-as-root"),
    (19, "BS111", "venues.www.domain"),
    (24, "BS112", "gigs.site.path"),
]


def test_several_errors_all_reported_sorted_by_line(tmp_path: Path) -> None:
    file = tmp_path / "production.toml"
    file.write_text(SEVERAL, "utf-8")
    run = run_cli(file, tmp_path / "out")
    assert "Traceback" not in run.stdout + run.stderr
    assert run.code == 1
    assert not (tmp_path / "out").exists()
    head = re.compile(rf"^{re.escape(str(file))}:(\d+):(\d+): (BS\d{{3}}) (\S+): ", re.M)
    reported = [(int(m[1]), m[3], m[4]) for m in head.finditer(run.stderr)]
    for expected in SEVERAL_EXPECTED:
        assert expected in reported, f"{expected} missing from {reported}"
    lines = [line for line, _, _ in reported]
    assert lines == sorted(lines), f"not sorted by line: {lines}"
    assert f"{len(reported)} error(s)" in run.stderr


def test_json_diagnostics(tmp_path: Path) -> None:
    file = tmp_path / "production.toml"
    file.write_text(SEVERAL, "utf-8")
    run = run_cli(file, tmp_path / "out", "--json")
    assert "Traceback" not in run.stdout + run.stderr
    assert run.code == 1
    assert not (tmp_path / "out").exists()
    document = json.loads(run.stdout)
    assert document["format"] == 1
    data = document["errors"]
    assert isinstance(data, list) and data
    fields = {"file": str, "line": int, "col": int, "code": str, "path": str, "message": str, "hint": str}
    for item in data:
        assert isinstance(item, dict)
        assert set(item) == set(fields), f"fields {sorted(item)}"
        for key, kind in fields.items():
            assert isinstance(item[key], kind), f"{key} is {type(item[key]).__name__}"
        assert item["file"] == str(file)
        assert re.fullmatch(r"BS\d{3}", item["code"])
    reported = [(item["line"], item["code"], item["path"]) for item in data]
    for expected in SEVERAL_EXPECTED:
        assert expected in reported, f"{expected} missing from {reported}"
    assert [item["line"] for item in data] == sorted(item["line"] for item in data)


# ---- inputs that look hostile but are accepted on purpose, because they are proven safe -----------

ACCEPTED = r"""[production]
name = "hostile"

[stages.main]
virtualenv = "/srv/venvs/main#1"
[stages.main.uwsgi]
procname = "my;proc #x \"q\" 'q' a=b"

[acts.site]
wsgi = "site.wsgi:application"
path = "/srv/apps/site"
static = { "/st=a:t@i!c*+,~/" = "/srv/apps/site/static/" }
[acts.site.env]
SEMI = "x;y #z"
LEAD_SEMI = ";start"
LEAD_HASH = "#start"
EQ = "b=c"
AT_FILE = "@/etc/passwd"
EXEC = "exec://id"
CALL = "call://os.system"
BACKSLASH = "a\\nb \\\\ trail\\"
DOLLAR = "$HOME ${HOME} $ $$"
QUOTES = "\"dq\" 'sq'"
EMPTY = ""
UTF8 = "héllo ✓"

[sesses.site]
act = "site"
stage = "main"

[venues.www]
domain = "example.org"
aliases = ["xn--bcher-kva.example"]

[gigs.site]
venue = "www"
sess = "site"
path = "/a=b:c@d!e*f+g,h~/"
"""
# uWSGI keeps these verbatim: no comment stripping, no unquoting, no escapes (see
# /tmp/uwsgi-facts/FINDINGS.md, tables 1-5, 9). Env values never reach the vassal file: they are in the
# entry point's environment.json, exactly.
ACCEPTED_VASSAL_LINES = [
    "virtualenv = /srv/venvs/main#1",
    "procname = my;proc #x \"q\" 'q' a=b",
]
ACCEPTED_ENV = {"SEMI": "x;y #z", "LEAD_SEMI": ";start", "LEAD_HASH": "#start", "EQ": "b=c",
                "AT_FILE": "@/etc/passwd", "EXEC": "exec://id", "CALL": "call://os.system",
                "BACKSLASH": "a\\nb \\\\ trail\\", "DOLLAR": "$HOME ${HOME} $ $$", "QUOTES": "\"dq\" 'sq'",
                "EMPTY": "", "UTF8": "héllo ✓"}


def _vassal(out: Path, sess: str) -> str:
    found = sorted((out / "result" / "uwsgi").glob(f"hostile--{sess}--*.ini"))
    assert len(found) == 1, f"vassal of {sess}: {found}"
    return found[0].read_text("utf-8")


def test_accepted_inputs_build_verbatim(tmp_path: Path) -> None:
    file = tmp_path / "production.toml"
    file.write_text(ACCEPTED, "utf-8")
    run = run_cli(file, tmp_path / "out")
    assert "Traceback" not in run.stdout + run.stderr
    assert run.code == 0, run.stderr
    lines = _vassal(tmp_path / "out", "site").splitlines()
    for expected in ACCEPTED_VASSAL_LINES:
        assert expected in lines, f"{expected!r} not in the vassal"
    assert not [line for line in lines if line.startswith("env")]
    environment = json.loads((tmp_path / "out" / "result" / "entries" / "site" / "environment.json").read_text())
    assert environment["env"] == ACCEPTED_ENV | {"BACKSTAGE_HOSTS": "example.org xn--bcher-kva.example"}


def test_env_value_with_surrounding_space_and_expansion_syntax_is_kept(tmp_path: Path) -> None:
    """Version 1 refused these (uWSGI would strip or expand them); version 2 delivers them exactly."""
    file = tmp_path / "production.toml"
    file.write_text(ACCEPTED.replace('EMPTY = ""', 'EMPTY = ""\nLEAD = "  lead %d $(id) @(x) "'), "utf-8")
    run = run_cli(file, tmp_path / "out")
    assert run.code == 0, run.stderr
    environment = json.loads((tmp_path / "out" / "result" / "entries" / "site" / "environment.json").read_text())
    assert environment["env"]["LEAD"] == "  lead %d $(id) @(x) "
