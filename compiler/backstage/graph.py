"""Phase 4, graph: the production as a networkx graph; references, `needs` order, dependencies."""

from __future__ import annotations

import json

import networkx as nx

from .model import Production

Node = tuple[str, str]
KINDS = ("act", "stage", "sess", "venue", "gig")


def build(production: Production) -> nx.DiGraph:
    """Nodes are (kind, name); an edge u -> v means u depends on v."""
    graph = nx.DiGraph()
    for kind, table in (("act", production.acts), ("stage", production.stages), ("sess", production.sesses),
                        ("venue", production.venues), ("gig", production.gigs)):
        graph.add_nodes_from(((kind, name) for name in table), kind=kind)
    for sess in production.sesses.values():
        graph.add_edge(("sess", sess.name), ("act", sess.act), role="plays")
        graph.add_edge(("sess", sess.name), ("stage", sess.stage), role="on")
        for needed in sess.needs:
            graph.add_edge(("sess", sess.name), ("sess", needed), role="needs")
    for gig in production.gigs.values():
        graph.add_edge(("gig", gig.name), ("sess", gig.sess), role="plays")
        graph.add_edge(("gig", gig.name), ("venue", gig.venue), role="at")
    return graph


def sesses_needed_first(production: Production) -> list[str]:
    """Sess names ordered so that every Sess comes after the Sesses it needs; ties by name."""
    needs = nx.DiGraph()
    needs.add_nodes_from(production.sesses)
    needs.add_edges_from((needed, sess.name) for sess in production.sesses.values() for needed in sess.needs)
    return list(nx.lexicographical_topological_sort(needs, key=str))


def dependencies(graph: nx.DiGraph, gig: str) -> list[Node]:
    """Everything a Gig needs to be live: its Venue, Sess, Act, Stage and all Sesses needed transitively."""
    return sorted(nx.descendants(graph, ("gig", gig)))


def to_dot(production: Production, graph: nx.DiGraph) -> str:
    shapes = {"act": "box", "stage": "cylinder", "sess": "ellipse", "venue": "house", "gig": "note"}
    lines = [f"digraph {_quote(production.name)} {{", "  rankdir=LR;"]
    for kind, name in sorted(graph.nodes):
        lines.append(f"  {_quote(f'{kind}:{name}')} [label={_quote(f'{kind} {name}')}, shape={shapes[kind]}];")
    for (uk, un), (vk, vn), role in sorted(graph.edges(data="role")):
        lines.append(f"  {_quote(f'{uk}:{un}')} -> {_quote(f'{vk}:{vn}')} [label={_quote(role)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    # Names are checked to be [a-z0-9-]; JSON string quoting is also valid DOT quoting for them.
    return json.dumps(text)
