"""A rebuild after a small change renders only what the change reaches, and gives the very artifact a
clean build of the same input gives, byte for byte. So does a big build's work done in two processes
(render's parts of the files and the plan, artifact.Writer's files), when its child works, when it
fails, and when the build is interrupted."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
from backstage import contract, files
from backstage.phases import artifact, pipeline, render
from conftest import REPO, run_cli

sys.path.insert(0, str(REPO / "benchmarks"))
import generate

N = 300


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _edit(text: str, table: str, key: str, old: str, new: str) -> str:
    head = text.index(f"[{table}]\n")
    at = text.index(f"{key} = {old}", head)
    assert at < text.find("\n[", head + 1), f"{table} has no {key} = {old}"
    return text[:at] + f"{key} = {new}" + text[at + len(f"{key} = {old}"):]


@pytest.fixture(scope="module")
def production() -> str:
    return generate.to_toml(generate.generate(N))


def _first(text: str, prefix: str, key: str) -> tuple[str, str]:
    """The first table named [prefix...] that sets `key`, and its value as written."""
    for block in text.split("\n["):
        header, _, body = block.partition("]\n")
        if header.startswith(prefix):
            for line in body.splitlines():
                if line.startswith(f"{key} = "):
                    return header, line.removeprefix(f"{key} = ")
    raise AssertionError(f"no [{prefix}...] with {key}")


@pytest.mark.parametrize("change", ["gig path", "sess processes", "venue aliases"])
def test_a_rebuild_renders_only_what_changed_and_equals_a_clean_build(
        production: str, change: str, tmp_path: Path) -> None:
    source = tmp_path / "production.toml"
    source.write_text(production)
    out = tmp_path / "out"
    first = pipeline.build(source, out)
    assert first.reused == 0 and first.rendered > N // 2
    if change == "gig path":
        table, old = _first(production, "gigs.", "path")
        edited = _edit(production, table, "path", old, '"/moved-here/"')
        expected = 1  # its Venue's server file
    elif change == "sess processes":
        # A Sess nobody needs: its own vassal changes, and the server files that route to it (their
        # upstream is the vassal's socket, whose name holds the vassal's hash).
        table, old = _first(production, "sesses.", "processes")
        edited = _edit(production, table, "processes", old, "7")
        expected = None
    else:
        table, old = _first(production, "venues.", "aliases")
        edited = _edit(production, table, "aliases", old, '["alias.changed.test"]')
        expected = None
    source.write_text(edited)
    again = pipeline.build(source, out)
    clean = pipeline.build(source, tmp_path / "clean")
    assert again.path.name == clean.path.name
    assert tree(again.path) == tree(clean.path)
    assert again.path.name != first.path.name
    assert again.rendered + again.reused == first.rendered
    if expected is not None:
        assert again.rendered == expected, (again.rendered, again.reused)
    assert 1 <= again.rendered <= first.rendered // 10, (again.rendered, again.reused)


def test_a_memo_from_another_compiler_is_not_used(production: str, tmp_path: Path) -> None:
    source = tmp_path / "production.toml"
    source.write_text(production)
    out = tmp_path / "out"
    pipeline.build(source, out)
    memo = out / ".cache" / "renders.json"
    kept = json.loads(memo.read_text())
    kept["compiler"] = "0" + kept["compiler"][1:]
    memo.write_text(json.dumps(kept))
    source.write_text(_commented(production))
    again = pipeline.build(source, out)
    assert again.reused == 0


def _poisoned(out: Path) -> None:
    """Every text the memo holds replaced, and the no-op cache's answers pointed at another artifact:
    what another user who can write OUT/.cache could do."""
    memo = out / ".cache" / "renders.json"
    kept = json.loads(memo.read_text())
    kept["chunks"] = {key: ["POISON\n"] for key in kept["chunks"]}
    memo.write_text(json.dumps(kept))


@pytest.mark.parametrize("loose", ["writable by others", "owned by another user", "a symlink"])
def test_a_cache_another_user_could_write_is_not_used(production: str, loose: str, tmp_path: Path) -> None:
    source = tmp_path / "production.toml"
    source.write_text(production)
    out = tmp_path / "out"
    first = pipeline.build(source, out)
    cache_dir = out / ".cache"
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    _poisoned(out)
    if loose == "writable by others":
        cache_dir.chmod(0o777)
    elif loose == "owned by another user":
        assert os.geteuid() == 0, "this test runs as root, as the suite does"
        os.chown(cache_dir, 65534, 65534)
    else:
        elsewhere = tmp_path / "elsewhere"
        cache_dir.rename(elsewhere)
        cache_dir.symlink_to(elsewhere)
    kept = {p.name: p.read_bytes() for p in cache_dir.iterdir()}
    again = pipeline.build(source, out)  # the same input: the no-op cache would answer it
    assert not again.cached and again.reused == 0 and again.path == first.path
    source.write_text(_commented(production))
    edited = pipeline.build(source, out)
    assert edited.reused == 0
    assert all(b"POISON" not in content for content in tree(edited.path).values())
    assert {p.name: p.read_bytes() for p in cache_dir.iterdir()} == kept  # nothing kept there either
    run = run_cli("build", str(source), "-o", str(out))
    assert run.code == 0 and "note: the build cache was not used" in run.err, run.err
    assert str(cache_dir) in run.err


# ------------------------------------------------------------------ files rendered by a second process

FORKS = 3  # children per build: for the vassals that need no other Sess, for the plan, for the servers


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """render.PARALLEL_FROM lowered so that the 300-Gig production forks; the children's pids."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("these tests need two CPUs: with one, render never forks")
    # Other tests leave idle server threads in this process, which would rightly stop a fork; these
    # builds' children touch no lock those threads use. test_no_fork_beside_another_thread checks the rule.
    monkeypatch.setattr(render, "may_fork", lambda: True)
    monkeypatch.setattr(render, "PARALLEL_FROM", 2)
    return _record_forks(monkeypatch)


def _record_forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """os.fork, recording each child's pid (in the parent) in the list returned."""
    children: list[int] = []
    fork = os.fork

    def recorded() -> int:
        pid = fork()
        if pid:
            children.append(pid)
        return pid
    monkeypatch.setattr(os, "fork", recorded)
    return children


def _serial(production: str, monkeypatch: pytest.MonkeyPatch) -> pipeline.Compiled:
    with monkeypatch.context() as serial:
        serial.setattr(render, "PARALLEL_FROM", 10**9)
        return pipeline.compile_bytes(production.encode())


def _contents(compiled: pipeline.Compiled) -> dict[str, bytes]:
    return {rel: f.content for rel, f in compiled.files.items()}


def _source(production: str, tmp_path: Path) -> Path:
    source = tmp_path / "production.toml"
    source.write_text(production)
    return source


def _commented(production: str) -> str:
    """New input bytes (a comment) for the same model: a rebuild that can reuse every render."""
    return production.replace("\n[gigs.", "\n# a comment\n[gigs.", 1)


def _reaped(pids: list[int]) -> bool:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        return False
    return True


def test_files_rendered_in_two_processes_are_the_serial_ones(
        production: str, tmp_path: Path, forks: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same artifact, and a memo that a rebuild reuses whole: the child's renders came back."""
    source, out = _source(production, tmp_path), tmp_path / "out"
    built = pipeline.build(source, out)
    assert len(forks) == FORKS and _reaped(forks)
    serial = _serial(production, monkeypatch)
    assert built.path.name == serial.name
    assert tree(built.path) == _contents(serial)
    source.write_text(_commented(production))
    again = pipeline.build(source, out)
    assert len(forks) == 2 * FORKS and _reaped(forks)
    assert (again.rendered, again.reused) == (0, built.rendered), (again.rendered, again.reused)


def _slow_parent(monkeypatch: pytest.MonkeyPatch, record: Path) -> None:
    """Each server rendered by this process takes 20 ms longer, so the child takes most of the parts; each
    process notes its pid in `record` for every server it renders."""
    venue_of, parent = render._render_venue, os.getpid()

    def noted(production: object, name: str, *args: object) -> bytes:
        with record.open("a") as out:
            out.write(f"{os.getpid()}\n")
        if os.getpid() == parent:
            time.sleep(0.02)
        return venue_of(production, name, *args)  # type: ignore[arg-type]
    monkeypatch.setattr(render, "_render_venue", noted)


def test_the_faster_process_renders_more_parts(
        production: str, tmp_path: Path, forks: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The servers are cut into parts, each taken once by whichever process is free: with this process
    slowed down, the child renders most of them, and the artifact is the serial one."""
    record = tmp_path / "renderers"
    _slow_parent(monkeypatch, record)
    compiled = pipeline.compile_bytes(production.encode())
    assert len(forks) == FORKS and _reaped(forks)
    renderers = record.read_text().split()
    venues = len(compiled.production.venues)
    assert len(renderers) == venues  # each server rendered once, by one process or the other
    assert renderers.count(str(os.getpid())) < venues / 4 < renderers.count(str(forks[-1]))
    assert compiled.files == _serial(production, monkeypatch).files


@pytest.mark.parametrize("slow_parent", [False, True], ids=["as it runs", "with parts taken"])
def test_a_child_that_fails_is_replaced_by_rendering_here(
        production: str, tmp_path: Path, forks: list[int], monkeypatch: pytest.MonkeyPatch, slow_parent: bool) -> None:
    """A child that cannot send its parts back (here: pickling fails in it) leaves them to this process,
    and the files are as they would be; with this process slowed down, the child surely took some."""
    if slow_parent:
        _slow_parent(monkeypatch, tmp_path / "renderers")

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("the memory file is full")
    monkeypatch.setattr(render.pickle, "dump", broken)
    compiled = pipeline.compile_bytes(production.encode())
    assert len(forks) == FORKS and _reaped(forks)
    assert compiled.files == _serial(production, monkeypatch).files


def test_a_failure_while_the_child_runs_kills_and_reaps_it(
        production: str, tmp_path: Path, forks: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """An error (or Ctrl-C) in this process's half propagates as it would without a child, and leaves
    no child behind, even one blocked on a full pipe."""
    venue_of = render._render_venue
    parent = os.getpid()

    def interrupted(production: object, name: str, *args: object) -> bytes:
        if os.getpid() == parent:
            raise KeyboardInterrupt
        return venue_of(production, name, *args)  # type: ignore[arg-type]
    monkeypatch.setattr(render, "_render_venue", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.compile_bytes(production.encode())
    assert len(forks) == FORKS and _reaped(forks)  # the vassals' child had finished; the servers' was killed


# --------------------------------------------- the rendered files written by a child while the manifest is made

@pytest.fixture
def overlapped(monkeypatch: pytest.MonkeyPatch, forks: list[int]) -> list[int]:
    """artifact.OVERLAP_FROM lowered so that the 300-Gig production's files are written by a child."""
    monkeypatch.setattr(artifact, "OVERLAP_FROM", 2)
    return forks


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".tmp-"))


def test_files_written_by_a_child_are_the_artifact_a_serial_build_writes(
        production: str, tmp_path: Path, overlapped: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    source, out = _source(production, tmp_path), tmp_path / "out"
    built = pipeline.build(source, out)
    assert len(overlapped) == FORKS + 1 and _reaped(overlapped)
    serial = _serial(production, monkeypatch)
    assert built.path.name == serial.name and tree(built.path) == _contents(serial)
    contract.verify(built.path)  # modes too: every file's is the manifest's
    assert all(oct(d.stat().st_mode & 0o777) == "0o555" for d in [built.path, *built.path.rglob("*")] if d.is_dir())
    assert _leftovers(out) == []
    source.write_text(_commented(production))
    commented = pipeline.build(source, out)
    assert commented.rendered == 0  # the memo was kept
    for record in (out / ".cache").iterdir():  # forget the no-op answer: the same input builds again...
        if record.name != artifact.RENDERS:
            record.unlink()
    again = pipeline.build(source, out)  # ...into the artifact already there, which is kept
    assert again.path == commented.path and not again.cached and _leftovers(out) == []


def test_a_writer_child_that_fails_is_replaced_by_writing_here(
        production: str, tmp_path: Path, overlapped: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    parent, write_tree = os.getpid(), files.write_tree

    def full_disk(*args: object, **kwargs: object) -> None:
        if os.getpid() != parent:
            raise OSError(28, "No space left on device")
        write_tree(*args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(files, "write_tree", full_disk)
    built = pipeline.build(_source(production, tmp_path), tmp_path / "out")
    assert _reaped(overlapped) and _leftovers(tmp_path / "out") == []
    assert tree(built.path) == _contents(_serial(production, monkeypatch))
    assert (tmp_path / "out" / ".cache" / artifact.RENDERS).is_file()  # kept here instead


def test_an_interrupted_build_leaves_no_temporary_tree_and_no_child(
        production: str, tmp_path: Path, overlapped: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> object:
        raise KeyboardInterrupt
    monkeypatch.setattr(artifact, "assemble", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build(_source(production, tmp_path), tmp_path / "out")
    assert len(overlapped) == FORKS + 1 and _reaped(overlapped)
    assert _leftovers(tmp_path / "out") == [] and not (tmp_path / "out" / "result").exists()


def test_a_build_that_cannot_fork_does_it_all_itself(
        production: str, tmp_path: Path, overlapped: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "fork", no_fork)
    built = pipeline.build(_source(production, tmp_path), tmp_path / "out")
    assert tree(built.path) == _contents(_serial(production, monkeypatch))
    assert _leftovers(tmp_path / "out") == []


def test_a_build_without_descriptors_to_spare_does_it_all_itself(
        production: str, tmp_path: Path, forks: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """No pipe for the parts, no memory file for a child's results (EMFILE): the same artifact, made here."""
    def no_descriptor(*args: object) -> int:
        raise OSError(24, "Too many open files")
    monkeypatch.setattr(os, "pipe", no_descriptor)
    monkeypatch.setattr(os, "memfd_create", no_descriptor)
    compiled = pipeline.compile_bytes(production.encode())
    assert forks == []
    assert compiled.files == _serial(production, monkeypatch).files


def test_a_system_without_linux_calls_builds_in_one_process(
        production: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where os has no sched_getaffinity or memfd_create (not Linux), the build forks nothing, and works."""
    monkeypatch.setattr(render, "PARALLEL_FROM", 2)
    monkeypatch.setattr(artifact, "OVERLAP_FROM", 2)
    forked = _record_forks(monkeypatch)
    for call in ("sched_getaffinity", "memfd_create"):
        with monkeypatch.context() as elsewhere:
            elsewhere.delattr(os, call)
            assert not render.may_fork()
            compiled = pipeline.compile_bytes(production.encode())
        assert forked == [] and compiled.files == _serial(production, monkeypatch).files


def test_no_fork_beside_another_thread(production: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library caller with threads gets the serial build: a fork would copy only the calling thread."""
    monkeypatch.setattr(render, "PARALLEL_FROM", 2)
    monkeypatch.setattr(artifact, "OVERLAP_FROM", 2)
    forked = _record_forks(monkeypatch)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not render.may_fork()
        pipeline.compile_bytes(production.encode())
    finally:
        stop.set()
        other.join()
    assert forked == []
