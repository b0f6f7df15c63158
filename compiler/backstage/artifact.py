"""Phase 6, artifact: rendered files -> an immutable directory named by the hash of its content."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .host import install as host

if TYPE_CHECKING:
    from . import model, render

# check, load, model and render are imported where they are used: a rebuild of unchanged input is
# answered from the cache, and should cost little more than starting Python.

MANIFEST = host.MANIFEST
FORMAT = host.FORMAT


@dataclass(frozen=True, slots=True)
class Built:
    path: Path
    summary: str
    cached: bool


@cache
def compiler_digest() -> str:
    """Identifies the compiler's behaviour: its version and every source, template and schema byte."""
    digest = hashlib.sha256(__version__.encode())
    package = Path(__file__).parent
    for path in sorted([*package.glob("*.py"), *package.glob("host/*.py"), *package.glob("templates/*.j2")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update((package / "schema" / "production.schema.json").read_bytes())
    return digest.hexdigest()


def build(production_file: str | Path, outdir: str | Path) -> Built:
    raw = _read(production_file)
    out = Path(outdir)
    key = hashlib.sha256(compiler_digest().encode() + b"\0" + raw).hexdigest()
    cached = _cached(out, key)
    if cached:
        _point_result(out, cached.path.name)
        return cached
    from . import check, load, model

    loaded = load.load_bytes(raw, str(production_file))
    check.check(loaded)
    production = model.build(loaded.data)
    files = assemble(production, loaded.input_hash)
    path = write(files, out, f"{production.name}-{tree_hash(files)[:32]}")
    built = Built(path, summarize(production), cached=False)
    _remember(out, key, built)
    _point_result(out, path.name)
    return built


def _read(production_file: str | Path) -> bytes:
    # Reading goes through load so a missing or unreadable file gets its coded error there.
    try:
        return Path(production_file).read_bytes()
    except OSError:
        from . import load

        load.load_file(production_file)
        raise


def assemble(production: model.Production, input_hash: str) -> dict[str, render.File]:
    from . import render

    files = render.render(production)
    files["install.py"] = render.File(Path(host.__file__).read_bytes())
    manifest = {
        "backstage": __version__,
        "format": FORMAT,
        "production": production.name,
        "input_sha256": input_hash,
        "files": [
            {"path": path, "sha256": hashlib.sha256(f.content).hexdigest(), "mode": f"{f.mode:04o}"}
            for path, f in sorted(files.items())
        ],
    }
    files[MANIFEST] = render.File((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return dict(sorted(files.items()))


def tree_hash(files: dict[str, render.File]) -> str:
    return host.tree_hash((path, f.mode, f.content) for path, f in files.items())


def write(files: dict[str, render.File], outdir: Path, name: str) -> Path:
    final = outdir / name
    if final.is_dir():
        return final
    outdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=outdir))
    try:
        dirs: set[str] = set()
        base = str(tmp)
        umask = os.umask(0)
        os.umask(umask)
        for rel, f in files.items():
            parent = os.path.dirname(rel)
            while parent and parent not in dirs:
                os.makedirs(os.path.join(base, parent), exist_ok=True)
                dirs.add(parent)
                parent = os.path.dirname(parent)
            path = os.path.join(base, rel)
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, f.mode)
            try:
                view = memoryview(f.content)
                while view:
                    view = view[os.write(handle, view):]
            finally:
                os.close(handle)
            if f.mode & umask:  # the mode given at creation lost bits to the umask: the manifest has them
                os.chmod(path, f.mode)
        for directory in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
            os.chmod(os.path.join(base, directory), 0o555)
        os.chmod(tmp, 0o555)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            remove_tree(tmp)  # another build of the same content won the race
    except BaseException:
        remove_tree(tmp)
        raise
    return final


remove_tree = host.remove_tree


def _point_result(outdir: Path, name: str) -> None:
    host.link(Path(name), outdir / "result")


def _cache_file(outdir: Path, key: str) -> Path:
    return outdir / ".cache" / key


def _cached(outdir: Path, key: str) -> Built | None:
    try:
        name, summary = _cache_file(outdir, key).read_text("utf-8").split("\n", 1)
    except (OSError, ValueError):
        return None
    path = outdir / name
    if "/" in name or not (path / MANIFEST).is_file():
        return None
    return Built(path, summary.strip(), cached=True)


def _remember(outdir: Path, key: str, built: Built) -> None:
    entry = _cache_file(outdir, key)
    entry.parent.mkdir(exist_ok=True)
    tmp = entry.with_name(f".{key}.{os.getpid()}")
    tmp.write_text(f"{built.path.name}\n{built.summary}\n", "utf-8")
    os.replace(tmp, entry)


def summarize(production: model.Production) -> str:
    booked = {gig.venue for gig in production.gigs.values()}
    closed = sum(1 for name in production.venues if name not in booked)
    return (f"{len(production.sesses)} vassals, {len(production.venues)} venues ({closed} closed), "
            f"{len(production.gigs)} gigs")
