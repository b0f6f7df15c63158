"""Time each phase of one build, in one process: where a build of N generated gigs spends its time.

    python benchmarks/phases.py 10000 /dev/shm/phases     # a full build, then a one-Gig rebuild

It writes the generated production and both builds under the given directory (removed first), runs
each build in a process of its own, and prints one line per phase for each; then what any rebuild into
a new artifact pays, however little changed (start, parse, write every file), and what an incremental
compiler pays only to find the entity that changed. Nothing is asserted.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate
from run import one_gig_moved


def build(raw: bytes, out: Path) -> None:
    import gc

    gc.disable()  # as pipeline.build does
    clock = time.perf_counter
    started = clock()
    from backstage.phases import artifact, check, graph, load, model, normalise, render, sources
    steps = [("imports", clock() - started)]

    def step(name: str, began: float) -> None:
        steps.append((name, clock() - began))

    began = clock()
    loaded = load.load_bytes(raw, "production.toml")
    step("load", began)
    began = clock()
    normalised = normalise.normalise(loaded)
    step("normalise", began)
    began = clock()
    production_graph = graph.build(normalised.data)
    step("graph", began)
    began = clock()
    check.check(normalised, production_graph)
    step("check", began)
    began = clock()
    production = model.build(normalised.data, sources.gather(normalised.data, loaded.source))
    step("model", began)
    began = clock()
    memo = artifact.earlier_renders(out)
    step("memo load", began)
    began = clock()
    files = render.render(production, production_graph, None, memo)
    step(f"render ({memo.rendered} rendered, {memo.reused} reused)", began)
    began = clock()
    with artifact.Writer(out, files, memo) as writer:  # as pipeline.build: a child writes meanwhile
        tree = artifact.assemble(production.name, files, loaded.input_hash)
        name = artifact.name(production.name, tree)
        step("assemble (a child writing meanwhile)", began)
        began = clock()
        writer.finish(tree, name)
    step("memo save, the child waited for, finish", began)
    for label, seconds in steps:
        print(f"  {label:<40} {seconds:7.3f}")
    print(f"  {'total':<40} {sum(s for _, s in steps):7.3f}")


def rebuild_floor(source: Path, out: Path) -> None:
    """What any rebuild into a new artifact pays, however little changed: start Python, parse the whole
    file (rtoml, the fast path), and write every file of the artifact afresh (one process; an artifact
    holds files of one link each, so none can be shared with the artifact before)."""
    from backstage import contract, files
    from backstage.phases import load

    clock = time.perf_counter
    began = clock()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    start = clock() - began
    text = source.read_text("utf-8")
    began = clock()
    load.parse_fast(text)
    parse = clock() - began
    newest = max((p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")),
                 key=lambda p: p.stat().st_mtime_ns)  # the one-Gig rebuild's artifact
    tree = contract.read_tree(newest)
    fresh = out / "floor-tree"
    fresh.mkdir()
    began = clock()
    files.write_tree(fresh, ((rel, mode, content) for rel, (mode, content) in sorted(tree.items())))
    write = clock() - began
    files.remove_tree(fresh)
    for label, seconds in (("start Python", start), ("parse the file (rtoml)", parse),
                           (f"write the {len(tree):,} files afresh", write)):
        print(f"  {label:<40} {seconds:7.3f}")
    print(f"  {'total':<40} {start + parse + write:7.3f}")


FINDER = """
import marshal, sys
import rtoml
data = rtoml.loads(open(sys.argv[1], encoding="utf-8").read())
with open(sys.argv[2], "rb") as kept:
    before = marshal.load(kept)
changed = [(kind, name) for kind, table in data.items() if isinstance(table, dict)
           for name, value in table.items() if before.get(kind, {}).get(name) != repr(value)]
print(len(changed))
"""


def finder_floor(unedited: Path, edited: Path, where: Path) -> None:
    """What an incremental compiler pays before it checks, renders or writes anything: start Python,
    parse the whole file, and compare each entity with what the last build kept of it (its repr, read
    with marshal): a process doing only that, timed from spawn to exit, median of 5."""
    import marshal
    import statistics

    from backstage.phases import load

    data = load.parse_fast(unedited.read_text("utf-8"))
    assert data is not None
    kept = where / "entities.marshal"
    kept.write_bytes(marshal.dumps({kind: {name: repr(value) for name, value in table.items()}
                                    for kind, table in data.items() if isinstance(table, dict)}))
    command = [sys.executable, "-c", FINDER, str(edited), str(kept)]
    subprocess.run(command, check=True, capture_output=True)  # untimed: the page cache is warm for all
    walls = []
    for _ in range(5):
        began = time.perf_counter()
        found = subprocess.run(command, check=True, capture_output=True, text=True)
        walls.append(time.perf_counter() - began)
    assert found.stdout.strip() == "1", found.stdout  # the one Gig moved
    print(f"  {'start, parse, find the 1 changed entity':<40} {statistics.median(walls):7.3f}")


def main() -> int:
    if sys.argv[1] == "--one":  # one build, in a process of its own (imports and templates cold)
        build(Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]))
        return 0
    if sys.argv[1] == "--floor":
        rebuild_floor(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    n, where = int(sys.argv[1]), Path(sys.argv[2])
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    text = generate.to_toml(generate.generate(n))
    full, edited = where / "production.toml", where / "production-gig.toml"
    full.write_text(text, "utf-8")
    edited.write_text(one_gig_moved(text, 0), "utf-8")
    for label, source in ((f"full build, N={n:,}", full), ("one-Gig rebuild, same OUT", edited)):
        print(label, flush=True)
        subprocess.run([sys.executable, __file__, "--one", str(source), str(where / "out")], check=True)
    print("what any rebuild into a new artifact pays", flush=True)
    subprocess.run([sys.executable, __file__, "--floor", str(edited), str(where / "out")], check=True)
    print("what an incremental compiler pays to find what changed, with no artifact to write", flush=True)
    finder_floor(full, edited, where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
