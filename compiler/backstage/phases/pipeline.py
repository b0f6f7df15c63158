"""The one pipeline: load -> normalise -> graph -> check -> sources -> model -> render -> artifact.

Every verb, `backstage try`, the tests and the benchmarks call these; none writes the phases out again.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import Diagnostic, InputError
from . import cache, load

if TYPE_CHECKING:
    from . import graph as graph_phase
    from . import model
    from . import render as render_phase
    from .layout import File

# The phases are imported where they are used: a rebuild of unchanged input is answered from the cache,
# and should cost little more than starting Python (no contract, jsonschema, Jinja2 or networkx).

# An overlay rewrites loaded, normalised data in place (as `backstage try` plugs a production into a
# sandbox) and returns the key paths it set; problems there are reported against the overlay's label.
Overlay = Callable[[dict[str, Any]], Iterable[load.KeyPath]]

_Phase = TypeVar("_Phase", bound=Callable[..., Any])


def _gc_paused(phase: _Phase) -> _Phase:
    """Run `phase` with Python's cyclic garbage collector off (and back on afterwards, if it was on).
    A compile makes hundreds of thousands of objects that live until it ends (the loaded data, the
    model, the rendered text), and the collector would walk them all again at every full collection:
    a sixth of a 10,000-Gig build's time, for no memory back (benchmarks/README.md). What a compile
    leaves unreachable is freed by reference counting, or by the next collection after it."""
    @functools.wraps(phase)
    def paused(*args: Any, **kwargs: Any) -> Any:
        if not gc.isenabled():
            return phase(*args, **kwargs)
        gc.disable()
        try:
            return phase(*args, **kwargs)
        finally:
            gc.enable()
    return paused  # type: ignore[return-value]


class UnknownSess(ValueError):
    """A restart count was given for a Sess the production does not have."""


@dataclass(frozen=True, slots=True)
class Checked:
    """A production that passed check: the frozen model and its graph."""

    production: model.Production
    graph: graph_phase.Graph
    input_hash: str
    inputs: tuple[str, ...] = ()  # files and directories read besides the production file
    stamp: str = ""  # their fingerprint before they were read


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled production: the model, its graph and every file of its artifact."""

    production: model.Production
    graph: graph_phase.Graph
    files: dict[str, File]
    name: str  # the artifact's directory name: <production>-<tree hash>
    input_hash: str

    @property
    def summary(self) -> str:
        return summarize(self.production)


@_gc_paused
def check_bytes(raw: bytes, file: str, overlay: Overlay | None = None, overlay_label: str = "", *,
                leave_out: Path | None = None) -> Checked:
    """Load and check; `leave_out`: a build's OUT, which no Act's source copies."""
    from . import check, graph, model, normalise, sources

    loaded = load.load_bytes(raw, file)
    check.refuse_oversized(loaded)  # first: the other phases would spend long on a huge table
    normalised = normalise.normalise(loaded)
    if overlay is not None:
        injected = tuple(overlay(normalised.data))
        loaded.source.inject(injected, overlay_label or "overlay")
    production_graph = graph.build(normalised.data)
    check.check(normalised, production_graph)
    gathered = sources.gather(normalised.data, loaded.source, leave_out)
    return Checked(model.build(normalised.data, gathered), production_graph, loaded.input_hash, gathered.inputs,
                   gathered.stamp)


def check_file(path: str | Path, overlay: Overlay | None = None, overlay_label: str = "") -> Checked:
    return check_bytes(load.read(path), str(path), overlay, overlay_label)


@_gc_paused
def compile_checked(checked: Checked, restarts: Mapping[str, int] | None = None,
                    memo: render_phase.Memo | None = None) -> Compiled:
    """Render and assemble; `memo` holds an earlier build's template output to reuse where the inputs
    are the same."""
    return assemble_checked(checked, render_checked(checked, restarts, memo))


@_gc_paused
def render_checked(checked: Checked, restarts: Mapping[str, int] | None = None,
                   memo: render_phase.Memo | None = None) -> dict[str, File]:
    """Every file of the artifact but the agent and the manifest."""
    from .. import contract
    from . import artifact, render

    production = checked.production
    if production.fleet is None:
        return render.render(production, checked.graph, restarts, memo)
    from . import model  # one artifact of each host's own, and the fleet's plan and DNS

    rendered = render.fleet(production)
    for host in production.fleet.hosts:
        own = artifact.assemble(production.name, render.render(model.on_host(production, host.name),
                                                               checked.graph, restarts, memo), checked.input_hash)
        inner = f"{contract.HOSTS}/{host.name}/{artifact.name(production.name, own)}"
        rendered.update((f"{inner}/{rel}", file) for rel, file in own.items())
    return rendered


@_gc_paused
def assemble_checked(checked: Checked, rendered: dict[str, File]) -> Compiled:
    from . import artifact

    files = artifact.assemble(checked.production.name, rendered, checked.input_hash)
    return Compiled(checked.production, checked.graph, files, artifact.name(checked.production.name, files),
                    checked.input_hash)


def compile(path: str | Path, *, overlay: Overlay | None = None, overlay_label: str = "") -> Compiled:
    """Load, check and render a production file; raise InputError with every problem found."""
    return compile_checked(check_file(path, overlay, overlay_label))


def compile_bytes(raw: bytes, file: str = "production.toml") -> Compiled:
    return compile_checked(check_bytes(raw, file))


@_gc_paused
def build(path: str | Path, outdir: str | Path, restarts: Mapping[str, int] | None = None) -> cache.Built:
    """Compile and write the artifact to outdir/<name>, pointing outdir/result at it; an unchanged
    input (and compiler) is answered from outdir/.cache without compiling.

    `restarts`: Sess -> its restart count (`apply --restart`), part of the input like the file.
    Raises UnknownSess for a name that is no Sess of the production."""
    raw = load.read(path)
    out = Path(outdir)
    usable_out(out)
    counts = {name: count for name, count in sorted((restarts or {}).items()) if count}
    # The same bytes in another directory read other sources and locks (paths are relative to the file).
    origin = b"\0from " + str(Path(path).resolve().parent).encode("utf-8", "surrogateescape")
    key = cache.cache_key(raw + origin + (b"\0restarts " + repr(counts).encode() if counts else b""))
    hit = cache.cached(out, key)
    if hit:
        with _writing(out):
            cache.point_result(out, hit.path.name)
        return hit
    from . import artifact

    checked = check_bytes(raw, str(path), leave_out=out)
    unknown = sorted(set(counts) - set(checked.production.sesses))
    if unknown:
        raise UnknownSess(f"{path}: no sess named {', '.join(unknown)} (known: "
                          f"{', '.join(sorted(checked.production.sesses)) or 'none'})")
    with _writing(out):
        out.mkdir(parents=True, exist_ok=True)
        cache.tag_cache_dir(out)  # before anything else is written there, so that no source copies it
    memo = artifact.earlier_renders(out)
    rendered = render_checked(checked, counts, memo)
    # The rendered files and the memo may be written (by a child) while the manifest is made here.
    with _writing(out), artifact.Writer(out, rendered, memo) as writer:
        compiled = assemble_checked(checked, rendered)
        written = writer.finish(compiled.files, compiled.name)
    built = cache.Built(written, compiled.summary, cached=False, rendered=memo.rendered, reused=memo.reused)
    # Remembered only if what the build read besides the file (taken before reading) is unchanged now:
    # a source edited during the build is then seen by the next one.
    with _writing(out):
        if cache.fingerprint(list(checked.inputs)) == checked.stamp:
            cache.remember(out, key, built, list(checked.inputs), checked.stamp)
        cache.point_result(out, written.name)
    return built


_OUT_HINT = "give -o a directory you can write to, or a path where one can be made"


def _out_error(out: Path, message: str, hint: str = _OUT_HINT) -> InputError:
    return InputError([Diagnostic(str(out), 0, 0, "BS005", "", message, hint)])


def _writable(directory: Path) -> bool:
    effective = os.access in os.supports_effective_ids
    return os.access(directory, os.W_OK | os.X_OK, effective_ids=effective)


def usable_out(out: Path) -> None:
    """Refuse (InputError BS005) an OUT a build could not write into, before any work is done: OUT must
    be a directory this user can write to, or not exist under a directory this user can write to."""
    if _exists(out, out):
        if not out.is_dir():
            raise _out_error(out, "it exists and is not a directory")
        if not _writable(out):
            raise _out_error(out, "the directory is not writable by this user")
        return
    if os.path.islink(out):
        raise _out_error(out, f"it is a symbolic link to {os.readlink(out)}, which does not exist")
    parent = next(p for p in out.absolute().parents if _exists(p, out) or os.path.islink(p))
    if not parent.is_dir():
        raise _out_error(out, f"{parent} is not a directory, so OUT cannot be made in it")
    if not _writable(parent):
        raise _out_error(out, f"{parent} is not writable by this user, so OUT cannot be made in it")


def _exists(path: Path, out: Path) -> bool:
    """Whether `path` exists (a symlink: what it points at); refused if it cannot be looked at."""
    try:
        os.stat(path)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:  # a directory on the way this user cannot enter, a symlink loop
        where = "it" if path == out else str(path)
        raise _out_error(out, f"{where} cannot be looked at: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """An OSError writing the build (a full disk, a permission taken away) is an InputError BS005."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise _out_error(out, f"cannot write the build: {exc.strerror or exc}{where}",
                         "free some space or fix the directory's permissions, then build again") from None


def summarize(production: model.Production) -> str:
    booked = {gig.venue for gig in production.gigs.values()}
    closed = sum(1 for name in production.venues if name not in booked)
    return (f"{len(production.sesses)} vassals, {len(production.venues)} venues ({closed} closed), "
            f"{len(production.gigs)} gigs")
