"""Phase 3, graph: the production's things and their relations, as one graph (networkx for its algorithms).

Nodes are (kind, name); an edge u -> v means u depends on v, with a `role`: a Sess `plays` its Act,
is `on` its Stage and `needs` other Sesses; a Gig `plays` its Sess `at` its Venue. check reads it
for `needs` cycles, render for the order vassals are rendered in, and `backstage graph` draws it.

It is built from normalised data that check has not seen yet, so it only draws what is there:
a reference to nothing, or an entry that is not a table, adds no edge (check reports those).
"""

from __future__ import annotations

import graphlib
import heapq
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx

Node = tuple[str, str]
_TABLES = (("act", "acts"), ("stage", "stages"), ("sess", "sesses"), ("venue", "venues"), ("gig", "gigs"))


@dataclass(slots=True)
class Graph:
    """The graph as its nodes and role-labelled edges. The networkx DiGraph of the same (`as_networkx`) is
    built on first use: a build (graphlib orders it) never pays for importing networkx."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[Node, Node, str]] = field(default_factory=list)
    _nx: Any = field(default=None, repr=False)

    def as_networkx(self) -> nx.DiGraph:
        if self._nx is None:
            import networkx as nx

            graph = nx.DiGraph()
            graph.add_nodes_from((node, {"kind": node[0]}) for node in self.nodes)
            graph.add_edges_from((u, v, {"role": role}) for u, v, role in self.edges)
            self._nx = graph
        return self._nx

    def needs(self) -> list[tuple[str, str]]:
        return [(u[1], v[1]) for u, v, role in self.edges if role == "needs"]


def build(data: dict[str, Any]) -> Graph:
    graph = Graph()
    tables: dict[str, dict[str, Any]] = {}
    for kind, key in _TABLES:
        table = data.get(key)
        tables[kind] = {n: e for n, e in table.items() if isinstance(e, dict)} if isinstance(table, dict) else {}
        graph.nodes.extend((kind, name) for name in tables[kind])
    seen: set[tuple[Node, Node]] = set()

    def edge(kind: str, name: str, other: str, ref: Any, role: str) -> None:
        if isinstance(ref, str) and ref in tables[other] and ((kind, name), (other, ref)) not in seen:
            seen.add(((kind, name), (other, ref)))
            graph.edges.append(((kind, name), (other, ref), role))

    for name, sess in tables["sess"].items():
        edge("sess", name, "act", sess.get("act"), "plays")
        edge("sess", name, "stage", sess.get("stage"), "on")
        needs = sess.get("needs")
        for needed in needs if isinstance(needs, list) else []:
            edge("sess", name, "sess", needed, "needs")
    for name, gig in tables["gig"].items():
        edge("gig", name, "sess", gig.get("sess"), "plays")
        edge("gig", name, "venue", gig.get("venue"), "at")
    return graph


def _needs(graph: Graph) -> nx.DiGraph:
    """Sess names; an edge u -> v means Sess u needs Sess v."""
    import networkx as nx

    needs = nx.DiGraph()
    needs.add_nodes_from(name for kind, name in graph.nodes if kind == "sess")
    needs.add_edges_from(graph.needs())
    return needs


def _sorter(graph: Graph) -> graphlib.TopologicalSorter[str]:
    """The standard library's sorter over Sess names, each before the Sesses that need it."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for kind, name in graph.nodes:
        if kind == "sess":
            sorter.add(name)
    for needing, needed in graph.needs():
        sorter.add(needing, needed)
    return sorter


def needs_cycles(graph: Graph) -> list[list[str]]:
    """Every `needs` cycle, once per strongly connected component, starting at its smallest name."""
    try:
        _sorter(graph).prepare()
        return []  # graphlib found none; networkx names them when there are
    except graphlib.CycleError:
        pass
    import networkx as nx

    needs = _needs(graph)
    cycles = []
    for component in sorted(sorted(c) for c in nx.strongly_connected_components(needs)):
        first = component[0]
        if len(component) == 1 and not needs.has_edge(first, first):
            continue
        cycles.append([u for u, _ in nx.find_cycle(needs.subgraph(component), source=first)])
    return cycles


def sesses_needed_first(graph: Graph) -> list[str]:
    """Sess names ordered so that every Sess comes after the Sesses it needs; ties by name (graphlib's
    ready set taken smallest name first). The graph has no cycle: check refused those."""
    sorter = _sorter(graph)
    sorter.prepare()
    ready = list(sorter.get_ready())
    heapq.heapify(ready)
    order = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        sorter.done(name)
        for now in sorter.get_ready():
            heapq.heappush(ready, now)
    return order


def dependencies(graph: Graph, gig: str) -> list[Node]:
    """Everything a Gig needs to be live: its Venue, Sess, Act, Stage and all Sesses needed transitively."""
    import networkx as nx

    return sorted(nx.descendants(graph.as_networkx(), ("gig", gig)))


def to_dot(production: str, graph: Graph) -> str:
    shapes = {"act": "box", "stage": "cylinder", "sess": "ellipse", "venue": "house", "gig": "note"}
    lines = [f"digraph {_quote(production)} {{", "  rankdir=LR;"]
    for kind, name in sorted(set(graph.nodes)):
        lines.append(f"  {_quote(f'{kind}:{name}')} [label={_quote(f'{kind} {name}')}, shape={shapes[kind]}];")
    for (uk, un), (vk, vn), role in sorted(graph.edges):
        lines.append(f"  {_quote(f'{uk}:{un}')} -> {_quote(f'{vk}:{vn}')} [label={_quote(role)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    # Names are checked to be [a-z0-9-]; JSON string quoting is also valid DOT quoting for them.
    return json.dumps(text)
