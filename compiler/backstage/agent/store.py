"""The store: immutable, content-addressed directories under state_dir/store/ that generations refer to.

    act-<act>-<hash>       an Act's code, copied from the generation's acts/<act>/
    entry-<sess>-<hash>    a Sess's WSGI entry point and environment, copied from entries/<sess>/
    stage-<stage>-<hash>   a virtualenv built from the generation's stages/<stage>/requirements.txt
    static-<act>-<hash>    what the Act's collectstatic wrote

The names come from the plan (the compiler computes them); nothing here computes one. Nothing in a
complete store path ever changes. Acts and statics are written under a `.tmp-` name and renamed into
place, so they appear whole or not at all. A Stage cannot move (a virtualenv holds its own path), so it
is built at its final name and completed by STORE_COMPLETE, written last: a Stage without it is
unfinished, is never used, and is removed (with any installer a killed run left working in it) before
it is built again. A kill -9 at any point therefore leaves nothing a later run would take as complete.

`prepare` makes every store path of a plan exist and then runs the plan's release steps; `referenced`
and `collect` are gc. All three expect the production's lock to be held (nothing else writes the
store meanwhile). None of them touches what serves: vassals, links and nginx are the switch's.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..contract import (
    MANIFEST,
    PLAN,
    STORE,
    STORE_COMPLETE,
    ContractError,
    Manifest,
    Plan,
    StagePlan,
    StepPlan,
    read_plan,
)
from ..files import remove_tree, write_all
from . import commands, environment, procfs, trust
from .outcomes import Failed, Refused, crash_point, say

KINDS = ("act", "entry", "stage", "static")
TMP = ".tmp-"  # every temporary entry of the store starts so; collect sweeps them
BUILD_TIMEOUT = 1800.0  # seconds a Stage's installer may take
STEP_TIMEOUT = 3600.0  # seconds a release step may take (a migration can be long; a killed one is worse)
PROBE_TIMEOUT = 60.0  # `python -c ...`, `uwsgi --python-version`
MAX_DEPTH = 64  # directory levels a copied tree may have (os.fwalk recurses, and holds a descriptor per level)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VERSION = "import sys; print('%d.%d.%d' % sys.version_info[:3])"
# The installer's environment is the agent's, without what would point it at another Python's packages.
INSTALLER_DROPS = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONSTARTUP", "VIRTUAL_ENV", "CONDA_PREFIX",
                   "PIP_USER", "PIP_TARGET", "PIP_PREFIX", "UV_SYSTEM_PYTHON", "UV_PYTHON")
SEEDS = ("setuptools", "pip")  # what `python -m venv` puts into every virtualenv (3.11: both; 3.12+: pip)


# ------------------------------------------------------------------------------------------ prepare

def prepare(plan: Plan, generation: Path, log: Callable[[str], None] = say, *, uv: str | None = "",
            step_timeout: float = STEP_TIMEOUT) -> None:
    """Make every store path `plan` refers to exist and be complete, then run its release steps in order.

    `generation` is the verified generation directory the plan belongs to (acts/ and stages/ are read
    from it). `uv`: the uv binary to build Stages with; "" finds one (on PATH, else beside
    sys.executable) and falls back to `python -m venv` + pip; None always uses venv + pip.

    Refused (nothing was changed): a malformed store name or path in the plan, a missing interpreter or
    uWSGI, or a Stage interpreter whose major.minor differs from the Python inside [host].uwsgi.
    Failed: an Act, Stage or step that could not be made or run; whatever was half made is removed,
    store paths completed before stay (they are correct, and a later apply reuses them).
    """
    if not (plan.acts or plan.stages or plan.steps or plan.entries or plan.data):
        return
    _check_plan(plan, generation)
    store = Path(plan.store_dir)
    pythons = _check_interpreters(plan, store)  # before anything is built
    trust.subdirectory(Path(plan.state_dir), STORE, "state_dir/store")
    for act in plan.acts:
        _install_tree(store, f"act {act.name}", act.store, generation / act.files, log)
    for entry in plan.entries:
        _install_tree(store, f"the entry point of sess {entry.sess}", entry.store, generation / entry.files, log)
    builder = (find_uv() if uv == "" else uv) or None
    for stage in plan.stages:
        _build_stage(store, stage, generation / stage.requirements, pythons[stage.name], builder, log)
    for made in environment.make_data(plan):
        log(f"data:  create  {made}")
    for step in plan.steps:
        if step.kind == "collectstatic":
            _collectstatic(store, step, step_timeout, log)
        else:
            _run_step(step, step.env, step_timeout, log)


def find_uv() -> str | None:
    """The host's uv: on PATH, else beside the Python running the agent (a virtualenv's bin/)."""
    found = shutil.which("uv")
    if found:
        return found
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def complete(path: Path) -> bool:
    """Whether the store path `path` may be used: a real directory, and for a Stage, its marker inside."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        return not path.name.startswith("stage-") or stat.S_ISREG(os.lstat(path / STORE_COMPLETE).st_mode)
    except FileNotFoundError:
        return False


def _check_plan(plan: Plan, generation: Path) -> None:
    """Refuse store names that are not one directory of the right kind, and files outside the generation."""
    problems = [f"act {a.name}: {why}" for a in plan.acts for why in (_name_problem(a.store, "act"),
                                                                       _path_problem(a.files)) if why]
    problems += [f"stage {s.name}: {why}" for s in plan.stages for why in (_name_problem(s.store, "stage"),
                                                                          _path_problem(s.requirements)) if why]
    problems += [f"the entry point of sess {e.sess}: {why}" for e in plan.entries
                 for why in (_name_problem(e.store, "entry"), _path_problem(e.files)) if why]
    for step in plan.steps:
        if not step.argv:
            problems.append(f"{step.kind} step of {step.sess}: no command")
        if step.kind == "collectstatic" and (why := _name_problem(step.static, "static")):
            problems.append(f"collectstatic step of {step.sess}: {why}")
    if problems:
        raise Refused(f"{generation / PLAN}: " + "; ".join(problems))


def _name_problem(name: str, kind: str) -> str:
    if not name.startswith(f"{kind}-") or name in (".", "..") or "/" in name or "\0" in name:
        return f"{name!r} is not a store name ({kind}-<name>-<hash>)"
    return ""


def _path_problem(rel: str) -> str:
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts or "\0" in rel:
        return f"{rel!r} is not a path inside the generation"
    return ""


# ------------------------------------------------------------------------------------- interpreters

def _check_interpreters(plan: Plan, store: Path) -> dict[str, str]:
    """Each Stage's interpreter, made absolute, after checking that its Python is uWSGI's (major.minor).

    A complete Stage is checked by its own pyvenv.cfg: it is what the vassals use, and the interpreter
    it was built from is not needed again."""
    if not plan.stages:
        return {}
    uwsgi = _executable(plan.host.uwsgi, "[host].uwsgi (the Emperor's uWSGI)")
    embedded = _version([uwsgi, "--python-version"], f"{uwsgi} --python-version")
    pythons: dict[str, str] = {}
    for stage in plan.stages:
        built = store / stage.store
        if complete(built):
            python, version = f"Stage {stage.name}'s virtualenv {built}", _venv_version(built)
            pythons[stage.name] = str(built / "bin" / "python")
        else:
            path = _executable(stage.python, f"the interpreter of Stage {stage.name}")
            python, version = path if path == stage.python else f"{stage.python} ({path})", _version(
                [path, "-I", "-c", VERSION], f"{path} -c <print its version>")
            pythons[stage.name] = path
        if _major_minor(version) != _major_minor(embedded):
            raise Refused(f"Stage {stage.name}: {python} is Python {version}, but the Emperor's uWSGI ({uwsgi}) "
                          f"runs Python {embedded}; a Stage must be built from the Python uWSGI embeds "
                          f"(same major.minor): set the Stage's `python`, or [host].uwsgi")
    return pythons


def _executable(program: str, what: str) -> str:
    if os.path.isabs(program):
        found = program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    elif "/" in program:
        raise Refused(f"{what} {program!r} is neither a name on PATH nor an absolute path")
    else:
        found = shutil.which(program)
    if not found:
        raise Refused(f"{what} {program!r} was not found" + ("" if os.path.isabs(program) else " on PATH"))
    return found


def _version(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Refused(f"{what}: {exc}") from None
    version = done.stdout.strip()
    if done.returncode != 0 or not re.fullmatch(r"\d+\.\d+(\.\d+)?\S*", version):
        raise Refused(f"{what} did not print a Python version (exit {done.returncode}): "
                      f"{(done.stdout + done.stderr).strip()[-200:]!r}")
    return version


def _venv_version(venv: Path) -> str:
    """The Python version a virtualenv was made with: pyvenv.cfg's `version_info` (uv) or `version` (venv)."""
    try:
        text = (venv / "pyvenv.cfg").read_text(errors="replace")
    except OSError as exc:
        raise Refused(f"{venv}: cannot read pyvenv.cfg: {exc.strerror}") from None
    found = re.search(r"^\s*version(?:_info)?\s*=\s*(\d+\.\d+\S*)\s*$", text, re.MULTILINE)
    if not found:
        raise Refused(f"{venv}/pyvenv.cfg names no Python version")
    return found.group(1)


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


# ------------------------------------------------------------------------------ acts and entry points

def _install_tree(store: Path, what: str, store_name: str, source: Path, log: Callable[[str], None]) -> None:
    """Copy an Act's code or a Sess's entry point from the generation into the store, unless it is there."""
    final = store / store_name
    if _present(final):
        log(f"store: keep    {store_name}")
        return
    tmp = _fresh(store, store_name)
    try:
        _copy_tree(source, tmp, what)
        _publish(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
    log(f"store: install {store_name}")


def _present(path: Path) -> bool:
    """An act or static store path exists (they only appear by rename, so one that exists is whole)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        raise Failed(f"{path} is in the store but is not a directory; remove it")
    return True


def _fresh(store: Path, name: str, suffix: str = "") -> Path:
    """A temporary path of this run in the store; a leftover of the same name (a reused pid) is removed."""
    path = store / f"{TMP}{name}.{os.getpid()}{suffix}"
    if os.path.lexists(path):
        _remove(path)
    return path


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished tree into place, its bytes on disk first (a crash after the rename must not
    leave a name whose files are empty)."""
    os.sync()
    os.rename(tmp, final)
    _fsync_dir(final.parent)


def _copy_tree(source: Path, dest: Path, what: str) -> None:
    """Copy the directory `source` to `dest` (which must not exist): regular files and directories only,
    never following a link, each file 0444 (0555 if any execute bit was set), each directory 0555, owned
    by whoever runs this (root). Walked by descriptor, so a link swapped in meanwhile is never followed."""
    try:
        top = os.lstat(source)
    except OSError as exc:
        raise Failed(f"{what}: cannot read {source}: {exc.strerror}") from None
    if not stat.S_ISDIR(top.st_mode):
        raise Failed(f"{what}: {source} is not a directory")
    os.mkdir(dest, 0o700)
    made = [dest]
    for top_dir, dirnames, filenames, dirfd in os.fwalk(source, follow_symlinks=False):
        rel = os.path.relpath(top_dir, source)
        target = dest if rel == "." else dest / rel
        if rel != "." and len(Path(rel).parts) >= MAX_DEPTH:
            raise Failed(f"{what}: {source / rel} is nested deeper than {MAX_DEPTH} levels")
        for name in dirnames:
            info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                raise Failed(_not_regular(what, source, rel, name, info.st_mode))
            os.mkdir(target / name, 0o700)
            made.append(target / name)
        for name in filenames:
            _copy_file(dirfd, name, target / name, what, source, rel)
    for directory in reversed(made):
        os.chmod(directory, 0o555)


def _copy_file(dirfd: int, name: str, dest: Path, what: str, source: Path, rel: str) -> None:
    info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode):  # refused before it is opened: opening a device can do things
        raise Failed(_not_regular(what, source, rel, name, info.st_mode))
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dirfd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Failed(_not_regular(what, source, rel, name, info.st_mode))
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            while chunk := os.read(fd, 1 << 20):
                write_all(out, chunk)
            os.fchmod(out, 0o555 if info.st_mode & 0o111 else 0o444)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _not_regular(what: str, source: Path, rel: str, name: str, mode: int) -> str:
    kind = "a symlink" if stat.S_ISLNK(mode) else "not a regular file or directory"
    path = source / name if rel == "." else source / rel / name
    return f"{what}: {path} is {kind}; store paths hold regular files and directories only"


# ------------------------------------------------------------------------------------------- stages

def _build_stage(store: Path, stage: StagePlan, requirements: Path, python: str, uv: str | None,
                 log: Callable[[str], None]) -> None:
    path = store / stage.store
    if complete(path):
        log(f"store: keep    {stage.store}")
        return
    if os.path.lexists(path):
        log(f"store: remove  {stage.store} (unfinished: a build was interrupted)")
        _stop_builders(path)
        _remove(path)
    try:
        lock = requirements.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise Failed(f"Stage {stage.name}: cannot read {requirements}: {exc}") from None
    installer = "uv" if uv else "venv + pip"
    log(f"store: build   {stage.store} with {installer} from {python}")
    started = time.monotonic()
    try:
        if uv:
            _install(stage, lock, [uv, "venv", "--no-python-downloads", "--no-project", "--python", python,
                                   str(path)], store)
            verb = ["sync"] if stage.exact else ["install", "-r"]
            _install(stage, lock, [uv, "pip", verb[0], "--python", str(path / "bin/python"), "--link-mode", "copy",
                                   "--compile-bytecode", *verb[1:], str(requirements)], store, running=True)
        else:
            _install(stage, lock, [python, "-m", "venv", str(path)], store)
            pip = [str(path / "bin/python"), "-m", "pip"]
            quiet = ["--disable-pip-version-check", "--no-input"]
            _install(stage, lock, [*pip, "install", *quiet, "--progress-bar", "off", "--no-warn-script-location",
                                   *(["--no-deps"] if stage.exact else []), "-r", str(requirements)], store,
                     running=True)
            if stage.exact:
                # --no-deps installs exactly the lock's lines; `pip check` proves nothing is missing, and the
                # seeds venv added are removed unless the lock names them: nothing more, nothing less.
                _install(stage, lock, [*pip, "check", *quiet], store,
                         failure=f"Stage {stage.name}: the lock is not complete (a dependency it needs is not in it)")
                named = _requirement_names(lock)
                seeds = [seed for seed in SEEDS if seed not in named]
                if seeds:
                    _install(stage, lock, [*pip, "uninstall", *quiet, "--yes", *seeds], store)
        _seal(path)
        crash_point("stage-building")  # every file is there, the marker is not
        os.sync()
        _write_marker(path, {"stage": stage.name, "installer": "uv" if uv else "pip", "python": python,
                             "exact": stage.exact})
    except BaseException:
        _remove(path)  # a failed or interrupted build leaves no half Stage (a kill -9 leaves one without a marker)
        raise
    log(f"store: built   {stage.store} in {time.monotonic() - started:.1f} s")


def _install(stage: StagePlan, lock: str, argv: list[str], cwd: Path, running: bool = False,
             failure: str = "") -> None:
    """Run one installer command for `stage`; on failure raise Failed naming the requirement if it can
    (or saying `failure`)."""
    env = {k: v for k, v in os.environ.items() if k not in INSTALLER_DROPS}
    env.setdefault("PATH", DEFAULT_PATH)
    done = commands.run(argv, cwd=cwd, env=env, timeout=BUILD_TIMEOUT, umask=0o022,
                started=(lambda: crash_point("stage-installing")) if running else None)
    if done.code == 0:
        return
    culprit = "" if failure else failing_requirement(done.output, lock)
    command = shlex.join(_short(argv))
    status = f"did not finish within {BUILD_TIMEOUT:.0f} s" if done.timed_out else f"exited with status {done.code}"
    first = failure or (f"Stage {stage.name}: cannot install {culprit}" if culprit
                        else f"Stage {stage.name}: the environment could not be built")
    raise Failed(f"{first} ({command} {status}); the installer's output ends:\n{commands.tail(done.output)}")


def _short(argv: Sequence[str]) -> list[str]:
    """The command as a reader wants it: the programs' own names, the rest as given."""
    return [os.path.basename(argv[0]), *argv[1:]]


_CULPRITS = (
    re.compile(r"No matching distribution found for (\S+)"),  # pip
    re.compile(r"satisfies the requirement (\S+)"),  # pip
    re.compile(r"you require (\S+?)(?:,|\s|$)"),  # uv's resolver: "... and you require foo==1, we can conclude"
    re.compile(r"Failed to (?:build|download|download and build|fetch|install|prepare)\s+`([^`]+)`"),  # uv
    re.compile(r"[Ff]ailed (?:building wheel for|to build) ([^\s,()`]+)"),  # pip
    re.compile(r"Failed to build installable wheels for some pyproject\.toml based projects \((\S+?)\)"),  # pip
)


def failing_requirement(output: str, requirements: str = "") -> str:
    """The requirement an installer's output says it failed on, or "" when it says none that is known.

    The installers' own phrases are tried first (pip's and uv's, as they read in pip 23-25 and uv 0.4+);
    else the first requirement of the file whose name appears on a line of the output that reports an
    error."""
    for pattern in _CULPRITS:
        found = pattern.search(output)
        if found:
            return found.group(1).rstrip(".;:")
    errors = [line.lower() for line in output.splitlines()
              if re.search(r"error|fail|\u00d7|cannot|could not|because", line, re.IGNORECASE)]
    for line, name in _requirement_lines(requirements):
        if any(re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", e.replace("_", "-")) for e in errors):
            return line
    return ""


def _requirement_lines(text: str) -> list[tuple[str, str]]:
    """(requirement, canonical name) of each requirement line of a requirements file or lock."""
    found = []
    for logical in re.sub(r"\\\n", " ", text).splitlines():
        line = re.sub(r"(^|\s)#.*", "", logical).strip()
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match and not line.startswith("-"):
            found.append((line.split()[0], re.sub(r"[-_.]+", "-", match.group(1)).lower()))
    return found


def _requirement_names(text: str) -> set[str]:
    return {name for _, name in _requirement_lines(text)}


def _seal(path: Path) -> None:
    """No file or directory of a built Stage is writable by group or others (uv leaves a 0666 .lock)."""
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            inner = os.path.join(root, name)
            info = os.lstat(inner)
            if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o022:
                os.chmod(inner, stat.S_IMODE(info.st_mode) & ~0o022)
    info = os.lstat(path)
    os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o022)


def _write_marker(path: Path, what: dict[str, object]) -> None:
    fd = os.open(path / STORE_COMPLETE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
    try:
        write_all(fd, (json.dumps(what, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path)


def _stop_builders(path: Path) -> None:
    """Kill what a killed run left working in the unfinished Stage `path`: every process whose command
    line names it (the installers always do: `uv ... --python PATH/bin/python`, `PATH/bin/python -m pip`),
    with its process group (each installer runs in a session of its own); then wait until they are gone."""
    prefix = str(path)
    mine = os.getpgrp()
    doomed = [pid for pid in procfs.pids() if pid != os.getpid()
              and any(arg == prefix or arg.startswith(prefix + "/") for arg in procfs.cmdline(pid))]
    for pid in doomed:
        found = procfs.stat(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if found and found.pgrp not in (mine, 0, 1):
                os.killpg(found.pgrp, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(procfs.alive(pid) for pid in doomed) and time.monotonic() < deadline:
        time.sleep(0.05)


# -------------------------------------------------------------------------------------------- steps

def _collectstatic(store: Path, step: StepPlan, timeout: float, log: Callable[[str], None]) -> None:
    """collectstatic into a fresh directory (the step's user's while it runs), then a root-owned read-only
    copy of it renamed to store/<static>; skipped when that store path exists."""
    final = store / step.static
    if _present(final):
        log(f"store: keep    {step.static}")
        return
    work = _fresh(store, step.static, ".run")
    out = _fresh(store, step.static)
    try:
        os.mkdir(work, 0o755)
        os.chmod(work, 0o755)  # mkdir's mode lost bits to the umask
        user, group, _ = _identity(step)
        if user is not None or group is not None:
            os.chown(work, -1 if user is None else user, -1 if group is None else group)
        _run_step(step, (*step.env, ("BACKSTAGE_STATIC_ROOT", str(work))), timeout, log,
                  started=lambda: crash_point("collectstatic-running"))
        # The user's processes may outlive the step: lock them out of the top before the copy, and copy
        # by descriptor, so nothing they do meanwhile reaches beyond what they could read anyway.
        os.chown(work, 0, 0)
        os.chmod(work, 0o700)
        _copy_tree(work, out, f"collectstatic of {step.act}")
        _remove(work)
        _publish(out, final)
    except BaseException:
        _remove(work)
        _remove(out)
        raise
    log(f"store: install {step.static}")


def _run_step(step: StepPlan, env: Iterable[tuple[str, str]], timeout: float, log: Callable[[str], None],
              started: Callable[[], None] | None = None) -> None:
    variables = dict(env)
    variables.update(environment.values(step.secrets))
    variables.setdefault("PATH", DEFAULT_PATH)
    # Run as root, Python would write __pycache__/ into the Act's read-only store path (root ignores modes).
    variables.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    user, group, groups = _identity(step)
    command = shlex.join(step.argv)
    log(f"release: {step.kind} ({step.sess}): {command}")
    done = commands.run(list(step.argv), cwd=Path(step.cwd), env=variables, timeout=timeout, user=user, group=group,
                extra_groups=groups, started=started)
    if done.code != 0:
        status = f"did not finish within {timeout:.0f} s" if done.timed_out else f"exited with status {done.code}"
        raise Failed(f"{step.kind} of Sess {step.sess} failed: {command} {status}; its output ends:\n"
                     f"{commands.tail(done.output)}")
    if step.kind == "release" and done.output.strip():  # `check --deploy`'s warnings, say
        log("\n".join(f"    {line.rstrip()}" for line in done.output.splitlines() if line.strip()))


def _identity(step: StepPlan) -> tuple[int | None, int | None, list[int] | None]:
    """(uid, gid, supplementary groups) to run a step as; None for "as the applying user". A user without
    a group runs with the user's primary group and own groups, never root's."""
    try:
        user = environment.user_id(step.uid) if step.uid else None
        group = environment.group_id(step.gid) if step.gid else None
    except KeyError as exc:
        raise Failed(f"{step.kind} of Sess {step.sess}: no such {exc.args[0]}") from None
    if user is None:
        return None, group, None
    entry = _passwd(user)
    if group is None:
        group = entry.pw_gid if entry else user
    if os.geteuid() != 0:
        return user, group, None
    return user, group, os.getgrouplist(entry.pw_name, group) if entry else []


def _passwd(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


# --------------------------------------------------------------------------------------- files

def _remove(path: Path) -> None:
    """Delete a store entry, whatever state it is in. As root, shutil.rmtree alone: it walks by
    descriptor, so even a link that another user's process (a step run as the Stage's uid) swaps in
    meanwhile is never followed, and root needs no write bits. Otherwise files.remove_tree, which first
    makes the read-only directories writable."""
    if not os.path.lexists(path):
        return
    if os.geteuid() == 0 and not os.path.islink(path) and os.path.isdir(path):
        shutil.rmtree(path)
    else:
        remove_tree(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------- gc

def referenced(generations: Iterable[Path]) -> set[str]:
    """The store names the given generation directories' plans refer to.

    A generation of format 1 refers to none (the store came with format 2). Any other plan that cannot
    be read raises Refused: gc cannot know what it refers to, so it must remove nothing."""
    names: set[str] = set()
    for generation in generations:
        try:
            plan = read_plan(generation)
        except ContractError as exc:
            if _format(generation) == 1:
                continue
            raise Refused(f"{exc}; no store path is removed while a kept generation's plan cannot be read") from None
        names |= plan.store_paths()
    return names


def _format(generation: Path) -> int | None:
    try:
        return Manifest.from_json((generation / MANIFEST).read_bytes()).format
    except (OSError, ContractError):
        return None


def collect(store_dir: Path, keep: set[str]) -> list[str]:
    """Remove every store path (complete or unfinished) whose name is not in `keep`, and every stale
    `.tmp-` entry; return the names removed, in order. Entries that are not store names (no kind prefix)
    are left alone. Each store path is renamed to `.tmp-gc-<name>` before it is deleted, so a gc killed
    half-way leaves only a `.tmp-` name, which the next one sweeps, and never a damaged store path."""
    try:
        names = sorted(os.listdir(store_dir))
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        path = store_dir / name
        if name.startswith(TMP):
            _remove(path)
        elif name not in keep and any(name.startswith(f"{kind}-") for kind in KINDS):
            if name.startswith("stage-"):
                _stop_builders(path)
            doomed = store_dir / f"{TMP}gc-{name}"
            _remove(doomed)
            os.rename(path, doomed)
            _remove(doomed)
        else:
            continue
        removed.append(name)
    return removed
