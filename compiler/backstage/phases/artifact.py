"""Phase 8, artifact: rendered files + the host agent + the manifest -> an immutable directory named by
the hash of its content (contract.artifact_name); and the render memo a rebuild reuses (the cache that
answers an unchanged rebuild is phases.cache)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__, contract, files
from . import agentzip, cache
from .layout import READ_ONLY, File

if TYPE_CHECKING:
    from .render import Memo


def assemble(production: str, rendered: dict[str, File], input_hash: str) -> dict[str, File]:
    """The artifact's files: what render made, the agent, and the manifest listing them all."""
    tree = dict(rendered)
    tree[contract.AGENT] = File(agentzip.payload(), READ_ONLY)
    tree[contract.MANIFEST] = File(contract.manifest_json(__version__, production, input_hash,
                                                          ((path, f.mode, f.content) for path, f in tree.items())))
    return dict(sorted(tree.items()))


def name(production: str, tree: dict[str, File]) -> str:
    return contract.artifact_name(production, contract.tree_hash((p, f.mode, f.content) for p, f in tree.items()))


def write(tree: dict[str, File], outdir: Path, dirname: str) -> Path:
    """Write the tree to outdir/dirname, read-only, through a temporary directory renamed into place.
    An error or Ctrl-C on the way removes the temporary directory."""
    from .render import interrupts_held

    final = outdir / dirname
    if final.is_dir():
        return final
    outdir.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        with interrupts_held():  # made and noted before a Ctrl-C can come
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=outdir))
        files.write_tree(tmp, ((rel, f.mode, f.content) for rel, f in tree.items()))
        return _rename(tmp, final)
    except BaseException:
        if tmp is not None:
            _remove(tmp)
        raise


class Writer:
    """Writes a build into outdir: the rendered files and the render memo, then (`finish`) the agent and
    the manifest, renamed into place as outdir/<name> like `write`.

    With OVERLAP_FROM rendered files or more (and a second CPU, and no other thread), a forked child
    writes the rendered files into a temporary directory while this process makes the manifest (which
    needs none of them written) and keeps the memo. If the child fails in any way, `finish` writes
    everything here instead; the bytes written are the same either way. An error or Ctrl-C here kills
    the child if it still runs, reaps it and removes the temporary directory (Ctrl-C held off until
    that is done)."""

    def __init__(self, outdir: Path, rendered: dict[str, File], memo: Memo) -> None:
        self.outdir, self.rendered, self.memo = outdir, rendered, memo
        self.child = 0
        self.tmp: Path | None = None

    def __enter__(self) -> Writer:
        from .render import fork_child, interrupts_held, may_fork

        if len(self.rendered) < OVERLAP_FROM or not may_fork():
            return self
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
            with interrupts_held():  # the directory and the child noted before a Ctrl-C can come
                tmp = self.tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.outdir))
                self.child = fork_child(lambda: files.write_tree(
                    tmp, ((rel, f.mode, f.content) for rel, f in self.rendered.items()), seal_base=False)) or 0
            if not self.child:  # no process to spare: `finish` writes everything here
                self._discard()
        except BaseException:  # Ctrl-C as the child was made: `with` will not call __exit__
            self.__exit__()
            raise
        return self

    def _wait(self) -> bool:
        """Whether the child (if any) wrote everything it was given. It is forgotten only once reaped: a
        Ctrl-C during the wait leaves it to __exit__."""
        if not self.child:
            return False
        try:
            _, status = os.waitpid(self.child, 0)
        except ChildProcessError:  # cannot be, unless something else reaped it: it failed, to us
            status = 1
        self.child = 0
        return status == 0

    def finish(self, tree: dict[str, File], dirname: str) -> Path:
        """The artifact outdir/`dirname`, holding `tree`: the rendered files and the agent and manifest."""
        if self.tmp is None:
            final = write(tree, self.outdir, dirname)
            keep_renders(self.outdir, self.memo)
            return final
        keep_renders(self.outdir, self.memo)  # while the child is still writing
        if not self._wait():
            self._discard()
            return write(tree, self.outdir, dirname)
        rest = {rel: f for rel, f in tree.items() if rel not in self.rendered}
        assert all("/" not in rel for rel in rest), sorted(rest)  # the agent and the manifest
        files.write_tree(self.tmp, ((rel, f.mode, f.content) for rel, f in sorted(rest.items())))
        final = _rename(self.tmp, self.outdir / dirname)
        self.tmp = None  # (a Ctrl-C just before: __exit__ finds nothing left to remove)
        return final

    def _discard(self) -> None:
        if self.tmp is not None:
            _remove(self.tmp)
            self.tmp = None

    def __exit__(self, *exc: object) -> None:
        from .render import interrupts_held, reap

        with interrupts_held():
            try:
                if self.child:  # the block ended before `finish` waited for it: the child goes
                    reap(self.child)
                    self.child = 0
            finally:
                self._discard()


OVERLAP_FROM = 1000  # rendered files from which a child writes them while the manifest is made


def _rename(tmp: Path, final: Path) -> Path:
    """Move a finished temporary tree to its name; if another build of the same content is there first
    (or was there before), keep that one."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        _remove(tmp)  # another build of the same content won the race
    return final


def _remove(tmp: Path) -> None:
    """Remove a temporary tree if it is there (it is not once renamed into place), Ctrl-C held off
    meanwhile so that it is never left half removed."""
    from .render import interrupts_held

    with interrupts_held():
        if os.path.lexists(tmp):
            files.remove_tree(tmp)


# ------------------------------------------------------------------------- the render memo, kept in OUT/.cache

RENDERS = "renders.json"  # in outdir/.cache: the last build's template output, for the next (render.Memo)


def earlier_renders(outdir: Path) -> Memo:
    """The template output the last build in `outdir` kept, if the same compiler made it; else none."""
    from .render import Memo

    if not cache.trusted(outdir):
        return Memo()
    try:
        kept = json.loads(cache.cache_file(outdir, RENDERS).read_bytes())
        if kept["compiler"] == cache.compiler_digest() and isinstance(kept["chunks"], dict):
            return Memo({str(key): [str(c) for c in chunks] for key, chunks in kept["chunks"].items()})
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return Memo()


def keep_renders(outdir: Path, memo: Memo) -> None:
    """Keep this build's template output (only what it used: the file does not grow) for the next one."""
    kept = {"compiler": cache.compiler_digest(), "chunks": memo.now}
    cache.keep(outdir, RENDERS, json.dumps(kept, separators=(",", ":")))
