"""Phase 3, graph: the production's things and their relations, built once as a networkx graph.

Nodes are (kind, name); an edge u -> v means u depends on v, with a `role`: a Sess `plays` its Act,
is `on` its Stage and `needs` other Sesses; a Gig `plays` its Sess `at` its Venue. check reads it
for `needs` cycles, render for the order vassals are rendered in, and `backstage graph` draws it.

It is built from normalised data that check has not seen yet, so it only draws what is there:
a reference to nothing, or an entry that is not a table, adds no edge (check reports those).
"""

from __future__ import annotations

import json
from typing import Any

import networkx as nx

Node = tuple[str, str]
_TABLES = (("act", "acts"), ("stage", "stages"), ("sess", "sesses"), ("venue", "venues"), ("gig", "gigs"))


def build(data: dict[str, Any]) -> nx.DiGraph:
    graph = nx.DiGraph()
    tables: dict[str, dict[str, Any]] = {}
    for kind, key in _TABLES:
        table = data.get(key)
        tables[kind] = {n: e for n, e in table.items() if isinstance(e, dict)} if isinstance(table, dict) else {}
        graph.add_nodes_from(((kind, name) for name in tables[kind]), kind=kind)

    def edge(kind: str, name: str, other: str, ref: Any, role: str) -> None:
        if isinstance(ref, str) and ref in tables[other]:
            graph.add_edge((kind, name), (other, ref), role=role)

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


def _needs(graph: nx.DiGraph) -> nx.DiGraph:
    """Sess names; an edge u -> v means Sess u needs Sess v."""
    needs = nx.DiGraph()
    needs.add_nodes_from(name for kind, name in graph.nodes if kind == "sess")
    needs.add_edges_from((u[1], v[1]) for u, v, role in graph.edges(data="role") if role == "needs")
    return needs


def needs_cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Every `needs` cycle, once per strongly connected component, starting at its smallest name."""
    needs = _needs(graph)
    cycles = []
    for component in sorted(sorted(c) for c in nx.strongly_connected_components(needs)):
        first = component[0]
        if len(component) == 1 and not needs.has_edge(first, first):
            continue
        cycles.append([u for u, _ in nx.find_cycle(needs.subgraph(component), source=first)])
    return cycles


def sesses_needed_first(graph: nx.DiGraph) -> list[str]:
    """Sess names ordered so that every Sess comes after the Sesses it needs; ties by name."""
    return list(nx.lexicographical_topological_sort(_needs(graph).reverse(copy=False), key=str))


def dependencies(graph: nx.DiGraph, gig: str) -> list[Node]:
    """Everything a Gig needs to be live: its Venue, Sess, Act, Stage and all Sesses needed transitively."""
    return sorted(nx.descendants(graph, ("gig", gig)))


def to_dot(production: str, graph: nx.DiGraph) -> str:
    shapes = {"act": "box", "stage": "cylinder", "sess": "ellipse", "venue": "house", "gig": "note"}
    lines = [f"digraph {_quote(production)} {{", "  rankdir=LR;"]
    for kind, name in sorted(graph.nodes):
        lines.append(f"  {_quote(f'{kind}:{name}')} [label={_quote(f'{kind} {name}')}, shape={shapes[kind]}];")
    for (uk, un), (vk, vn), role in sorted(graph.edges(data="role")):
        lines.append(f"  {_quote(f'{uk}:{un}')} -> {_quote(f'{vk}:{vn}')} [label={_quote(role)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    # Names are checked to be [a-z0-9-]; JSON string quoting is also valid DOT quoting for them.
    return json.dumps(text)
