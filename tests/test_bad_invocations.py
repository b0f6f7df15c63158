"""Bad invocations: what a user can give the command line that is no production file, no output directory,
no plan or no URL. Each is one line naming what is wrong (with a hint), exit 1 for bad input or 2 for wrong
usage, never a traceback or "internal error" (exit 3), never a hang, and nothing written."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from backstage.agent import cli as agent_cli
from backstage.errors import InputError
from backstage.phases import artifact, pipeline
from conftest import EXAMPLES, Run

MINIMAL = EXAMPLES / "minimal" / "production.toml"
NOBODY = 65534
MEMORY = 1 << 30  # address space each CLI run may use: reading /dev/zero without limit ends, not the machine


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def cli(*args: str, cwd: Path) -> Run:
    """The real `backstage` command in a child process, with a memory limit and a timeout (a FIFO blocked)."""
    try:
        done = subprocess.run([sys.executable, "-m", "backstage.cli", *args], capture_output=True, text=True,
                              cwd=cwd, timeout=60, preexec_fn=_limited)
    except subprocess.TimeoutExpired:
        pytest.fail(f"backstage {' '.join(args)} did not end within 60 s")
    return Run(done.returncode, done.stdout, done.stderr)


def refused(run: Run, code: int, *words: str) -> str:
    """`run` ended with `code` and a plain message holding `words`; its stderr."""
    text = run.out + run.err
    assert run.code == code, text
    assert "Traceback" not in text and "internal error" not in text, text
    for word in words:
        assert word in run.err, run.err
    return run.err


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# ---- the production file is no regular file --------------------------------------------------------------


@pytest.mark.parametrize("verb", [["check"], ["build", "-o", "out"], ["graph"]])
def test_a_fifo_as_the_production_file_is_refused_not_waited_on(tmp_path: Path, verb: list[str]) -> None:
    os.mkfifo(tmp_path / "fifo")
    err = refused(cli(verb[0], "fifo", *verb[1:], cwd=tmp_path), 1, "fifo:1:1: BS001", "named pipe (FIFO)",
                  "hint:")
    assert not (tmp_path / "out").exists(), err


def test_a_device_as_the_production_file_is_refused_not_read_without_end(tmp_path: Path) -> None:
    refused(cli("check", "/dev/zero", cwd=tmp_path), 1, "/dev/zero:1:1: BS001", "character device")


def test_a_directory_as_the_production_file_says_so(tmp_path: Path) -> None:
    refused(cli("check", str(tmp_path), cwd=tmp_path), 1, "BS001", "is a directory")


def test_a_huge_production_file_is_read_no_further_than_the_limit(tmp_path: Path) -> None:
    huge = tmp_path / "huge.toml"
    with huge.open("wb") as sparse:  # 2 GiB of holes: more than the run may hold in memory
        sparse.truncate(2 * MEMORY)
    refused(cli("check", "huge.toml", cwd=tmp_path), 1, "huge.toml:1:1: BS004", "limit")


def test_a_production_file_with_a_byte_order_mark_is_told_so(tmp_path: Path) -> None:
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + MINIMAL.read_bytes())
    refused(cli("check", "bom.toml", cwd=tmp_path), 1, "bom.toml:1:1: BS003",
            "the file starts with a byte order mark (BOM)", "hint: save it as UTF-8 without one")


# ---- an output directory that cannot be used ---------------------------------------------------------------


@pytest.mark.parametrize(("make", "out", "words"), [
    (lambda tmp: (tmp / "file").write_text("x"), "file", ("file: BS005", "not a directory")),
    (lambda tmp: (tmp / "file").write_text("x"), "file/out", ("file/out: BS005", "is not a directory")),
    (lambda tmp: (tmp / "dangling").symlink_to(tmp / "nowhere" / "out"), "dangling",
     ("dangling: BS005", "symbolic link", "does not exist")),
    (lambda tmp: ((tmp / "file").write_text("x"), (tmp / "link").symlink_to("file")), "link",
     ("link: BS005", "not a directory")),
])
def test_an_unusable_output_directory_is_an_input_error(tmp_path: Path, make: object, out: str,
                                                       words: tuple[str, ...]) -> None:
    assert callable(make)
    make(tmp_path)
    before = listing(tmp_path)
    refused(cli("build", str(MINIMAL), "-o", out, cwd=tmp_path), 1, *words, "hint:")
    assert listing(tmp_path) == before


def test_an_unusable_output_directory_is_refused_for_apply_too(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    refused(cli("apply", str(MINIMAL), "-o", "file", "--dry-run", cwd=tmp_path), 1, "file: BS005")


def _as_nobody(build_into: Path) -> str:
    """pipeline.build of the minimal example into `build_into`, run by user nobody in a forked child (its
    modules already imported here: nobody may not read this Python's library); the error it raised."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        status = 0
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                pipeline.build(MINIMAL, build_into)
                message = "built"
            except InputError as exc:
                message = f"InputError: {exc}"
            except BaseException as exc:
                message = f"{type(exc).__name__}: {exc}"
            os.write(write, message.encode())
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, message
    return message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to become user nobody")
def test_an_output_directory_the_user_cannot_write_is_an_input_error(tmp_path: Path) -> None:
    pipeline.build(MINIMAL, tmp_path / "warm")  # imports every phase before the child drops root
    shutil.rmtree(tmp_path / "warm")
    with tempfile.TemporaryDirectory(prefix="backstage-test-") as reachable:  # pytest's tmp is root's own, 0700
        top = Path(reachable)
        top.chmod(0o755)
        locked = top / "locked"
        locked.mkdir(mode=0o755)  # root's: nobody may enter it but not write there
        for out, words in ((locked / "out", "is not writable by this user"),
                           (locked, "the directory is not writable by this user"),
                           (tmp_path / "out", "cannot be looked at: Permission denied")):
            message = _as_nobody(out)
            assert message.startswith("InputError: ") and f"{out}: BS005" in message and words in message, message
        assert listing(locked) == []


def test_a_failed_write_of_the_artifact_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(artifact, "write", full)
    with pytest.raises(InputError) as raised:
        pipeline.build(MINIMAL, tmp_path / "out")
    (diagnostic,) = raised.value.diagnostics
    assert diagnostic.code == "BS005" and "No space left on device" in diagnostic.message, diagnostic


# ---- plans: --save and --plan ------------------------------------------------------------------------------


@pytest.fixture
def built(tmp_path: Path) -> Path:
    run = cli("build", str(MINIMAL), "-o", "out", cwd=tmp_path)
    assert run.code == 0, run.err
    return Path(tmp_path / run.out.strip())


@pytest.mark.parametrize(("save", "words"), [
    (".", "it is a directory"),
    ("/nonexistent/plan.json", "/nonexistent does not exist"),
    ("fifo", "not a regular file"),
])
def test_plan_save_to_an_unusable_path_is_refused_before_the_plan_is_made(tmp_path: Path, built: Path, save: str,
                                                                          words: str) -> None:
    os.mkfifo(tmp_path / "fifo")
    run = cli("plan", str(built), "--save", save, cwd=tmp_path)
    refused(run, 2, f"--save {save}: ", words)
    assert run.out == "" and len(run.err.splitlines()) == 1, run.out + run.err


def test_plan_save_that_fails_to_write_is_one_line(tmp_path: Path, built: Path) -> None:
    run = cli("plan", str(built), "--save", "/dev/full", cwd=tmp_path)
    err = refused(run, 1, "--save /dev/full: cannot write the plan: No space left on device")
    assert err.count("backstage:") == 1, err


@pytest.mark.parametrize(("content", "words"), [
    (b"[1]\n", 'not a backstage plan (a JSON object with "format": 1)'),
    (b'{"format": 1}\n', '"live" and "artifact" must be strings'),
    (b'{"format": 1, "live": 3, "artifact": "x"}\n', '"live" and "artifact" must be strings'),
    (b"\xff\xfe{}", "not UTF-8 text"),
    (b"{\n", "not JSON: Expecting property name enclosed in double quotes (line 2, column 1)"),
    (None, "cannot be read: No such file or directory"),
    ("fifo", "cannot be read: it is a named pipe (FIFO), not a regular file"),
])
def test_a_bad_plan_file_is_named_and_said_what_is_wrong(tmp_path: Path, built: Path, content: bytes | str | None,
                                                         words: str) -> None:
    plan = tmp_path / "plan.json"
    if content == "fifo":
        os.mkfifo(plan)
    elif isinstance(content, bytes):
        plan.write_bytes(content)
    run = cli("apply", str(built), "--plan", "plan.json", "--dry-run", cwd=tmp_path)
    err = refused(run, 2, "--plan plan.json: ", words, "backstage plan --save FILE")
    assert len(err.splitlines()) == 1 and "list indices" not in err and "codec" not in err, err


# ---- route --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "words"), [
    ("http://[::1", "not a URL"),
    ("http://example.org:0/", "the port is not a number from 1 to 65535"),
    ("http://[::1]:00/", "the port is not a number from 1 to 65535"),
])
def test_route_refuses_a_url_it_cannot_take(tmp_path: Path, url: str, words: str) -> None:
    refused(cli("route", url, str(MINIMAL), cwd=tmp_path), 2, repr(url), words)


# ---- timeouts -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "-0.5", "x"])
@pytest.mark.parametrize("verb", [["apply", "--dry-run", "--lock-wait"], ["apply", "--dry-run", "--drain-timeout"],
                                  ["plan", "--ready-timeout"], ["renew", "--drain-timeout"],
                                  ["rollback", "--health-timeout"]])
def test_a_timeout_must_be_a_finite_number_of_seconds(tmp_path: Path, built: Path, verb: list[str],
                                                      value: str) -> None:
    refused(cli(verb[0], str(built), *verb[1:], value, cwd=tmp_path), 2, f"argument {verb[-1]}: {value!r}")


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
@pytest.mark.parametrize("argv", [["apply", "--lock-wait"], ["rollback", "--ready-timeout"],
                                  ["renew", "--drain-timeout"]])
def test_the_agent_refuses_a_timeout_that_is_no_finite_number_of_seconds(
        argv: list[str], value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        agent_cli.parser().parse_args(["artifact", *argv, value])
    assert stopped.value.code == 2
    assert f"argument {argv[-1]}: {value!r}: give a finite number of seconds" in capsys.readouterr().err


def test_the_agent_takes_zero_and_whole_and_fractional_seconds() -> None:
    args = agent_cli.parser().parse_args(["artifact", "apply", "--lock-wait", "0", "--ready-timeout=1.5"])
    assert (args.lock_wait, args.ready) == (0.0, 1.5)
