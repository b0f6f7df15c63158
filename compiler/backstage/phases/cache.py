"""The build cache in OUT/.cache: which artifact an unchanged input built, answered without compiling.

Not a phase: the pipeline asks it first, so it needs only the standard library and files (a rebuild of
unchanged input should cost little more than starting Python: no contract, Jinja2 or the phases).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .. import __version__, files

MANIFEST = "manifest.json"  # contract.MANIFEST, which a build is not done without (a test holds them equal)


@dataclass(frozen=True, slots=True)
class Built:
    path: Path
    summary: str
    cached: bool
    rendered: int = 0  # templates rendered by this build
    reused: int = 0  # template output reused from the build before (render.Memo)


@cache
def compiler_digest() -> str:
    """Identifies the compiler's behaviour: its version and every source, template and schema byte."""
    digest = hashlib.sha256(__version__.encode())
    package = Path(__file__).resolve().parent.parent
    sources = [*package.rglob("*.py"), *package.rglob("*.j2"), package / "schema" / "production.schema.json"]
    for path in sorted(sources):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cache_key(raw: bytes) -> str:
    return hashlib.sha256(compiler_digest().encode() + b"\0" + raw).hexdigest()


def point_result(outdir: Path, dirname: str) -> None:
    files.link(Path(dirname), outdir / "result")


def cache_file(outdir: Path, key: str) -> Path:
    return outdir / ".cache" / key


def trusted(outdir: Path) -> bool:
    return not distrusted(outdir)


def distrusted(outdir: Path) -> str:
    """Why outdir/.cache may not be read or written, or "" if it may: it must be a directory, not a
    symlink, owned by whoever builds and writable by nobody else (a build makes it 0700). What a cache
    holds goes into artifacts unchecked, so one another user could have written is left alone: the
    build is then a full one, and keeps nothing there."""
    where = outdir / ".cache"
    try:
        info = os.lstat(where)
    except FileNotFoundError:
        return ""  # `keep` makes it, 0700
    except OSError as exc:
        return f"{where}: {exc.strerror or exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{where} is not a directory"
    if info.st_uid != os.geteuid():
        return f"{where} is owned by uid {info.st_uid}, not by the user building (uid {os.geteuid()})"
    if info.st_mode & 0o022:
        return f"{where} is writable by others (mode {stat.S_IMODE(info.st_mode):04o})"
    return ""


def cached(outdir: Path, key: str) -> Built | None:
    """The build recorded for this key, if its artifact is still there and nothing it read changed."""
    if not trusted(outdir):
        return None
    try:
        entry = json.loads(cache_file(outdir, key).read_text("utf-8"))
        dirname, summary, inputs, seen = entry["artifact"], entry["summary"], entry["inputs"], entry["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = outdir / str(dirname)
    if "/" in str(dirname) or not (path / MANIFEST).is_file() or fingerprint(list(inputs)) != seen:
        return None
    return Built(path, str(summary).strip(), cached=True)


def remember(outdir: Path, key: str, built: Built, inputs: list[str], stamp: str) -> None:
    """Record a build; `stamp` is the fingerprint of `inputs` taken before they were read."""
    record = {"artifact": built.path.name, "summary": built.summary, "inputs": sorted(inputs),
              "fingerprint": stamp}
    keep(outdir, key, json.dumps(record, sort_keys=True) + "\n")


def keep(outdir: Path, name: str, text: str) -> None:
    """Replace outdir/.cache/`name` with `text`, through a temporary renamed over it (nothing is kept in a
    cache directory this build does not trust)."""
    entry = cache_file(outdir, name)
    with contextlib.suppress(FileExistsError):
        entry.parent.mkdir(mode=0o700)
    if not trusted(outdir):
        return
    tmp = entry.with_name(f".{name}.{os.getpid()}")
    try:
        tmp.write_text(text, "utf-8")
        os.replace(tmp, entry)
    except BaseException:  # a full disk, or Ctrl-C: no half-written file left behind
        tmp.unlink(missing_ok=True)
        raise


def fingerprint(paths: list[str]) -> str:
    """What the files a build read besides the production file look like now: where each given path
    leads (links followed, as they are read), every entry's path, size, mtime, ctime, inode and mode
    (links below not followed), and for a directory in a git work tree, git's listing of it (which its
    ignore files, index and settings decide). Any change, even a touch, means a rebuild. Directories
    tagged as caches (CACHEDIR.TAG: a build's OUT) are left out, as a source's files leave them out."""
    digest = hashlib.sha256()
    for top in sorted(paths):
        digest.update(f"{top}\0{os.path.realpath(top)}\0".encode())
        if os.path.isdir(top):
            try:
                listing = git_listing(Path(top)) or b"no work tree"
            except GitFailed as exc:
                listing = str(exc).encode()
            digest.update(hashlib.sha256(listing).digest())
            walk = os.walk(top)
        else:
            walk = iter([(top, [], [""])])
        for current, dirs, names in walk:
            dirs[:] = sorted(d for d in dirs if not is_tagged_cache(os.path.join(current, d)))
            for name in sorted(names + dirs):
                path = os.path.join(current, name) if name else current
                try:
                    info = os.lstat(path) if name else os.stat(path)
                except OSError:
                    digest.update(f"{path}\0gone\0".encode())
                    continue
                digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_ctime_ns}\0{info.st_ino}\0"
                              f"{info.st_mode}\0".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------ what a source directory holds

CACHEDIR_TAG = "CACHEDIR.TAG"  # https://bford.info/cachedir/: tar --exclude-caches, borg and restic skip these too
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def tag_cache_dir(outdir: Path) -> None:
    """Mark a build's OUT as a cache directory, so that no source (and no backup) ever copies it."""
    try:
        fd = os.open(outdir / CACHEDIR_TAG, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        return
    try:
        files.write_all(fd, CACHEDIR_SIGNATURE + b"\n# This directory holds backstage's build output "
                                                 b"(artifacts and their cache): it is made again by a build.\n")
    finally:
        os.close(fd)


def is_tagged_cache(directory: str | Path) -> bool:
    try:
        fd = os.open(os.path.join(directory, CACHEDIR_TAG), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.read(fd, len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False
    finally:
        os.close(fd)


class GitFailed(Exception):
    """A directory is in a git work tree, but git could not list it."""


def git_listing(root: Path) -> bytes | None:
    """git's list of root's files that it does not ignore (tracked and untracked, NUL-separated), or
    None when root is in no git work tree (no .git in it or above it). Raises GitFailed when it is in
    one and git cannot list it (not installed, "dubious ownership", a broken repository): leaving out
    what git ignores must not depend on whether git runs."""
    real = Path(os.path.realpath(root))
    if not any(os.path.lexists(directory / ".git") for directory in (real, *real.parents)):
        return None
    import subprocess  # only an Act with `source` in a work tree needs it

    command = ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."]
    try:
        done = subprocess.run(command, capture_output=True, check=False, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise GitFailed(f"git cannot list it: {exc}") from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitFailed(f"git cannot list it: {said[0] if said else f'exit {done.returncode}'}")
    return done.stdout
