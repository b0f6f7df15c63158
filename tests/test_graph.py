"""The production graph: what each Gig depends on, and the order `needs` imposes."""

from __future__ import annotations

import networkx as nx
from backstage.phases import graph, pipeline
from conftest import EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st


def jazzclub() -> graph.Graph:
    return pipeline.check_file(EXAMPLES / "jazzclub" / "production.toml").graph


def test_a_gig_depends_on_its_venue_sess_act_stage_and_needed_sesses() -> None:
    deps = graph.dependencies(jazzclub(), "blog-live")
    assert deps == sorted([("venue", "example"), ("sess", "blog"), ("act", "blog"), ("stage", "main"),
                           ("sess", "api"), ("act", "api"), ("sess", "search"), ("act", "search"),
                           ("stage", "tools")])


def test_needed_sesses_come_first() -> None:
    order = graph.sesses_needed_first(jazzclub())
    assert order.index("api") < order.index("search") < order.index("blog")
    assert sorted(order) == ["api", "blog", "search", "sketch"]


def test_unbooked_things_are_still_nodes() -> None:
    g = jazzclub().as_networkx()
    assert ("venue", "sunday") in g and g.in_degree(("venue", "sunday")) == 0
    assert ("sess", "sketch") in g and g.in_degree(("sess", "sketch")) == 0


def test_a_production_without_needs_orders_sesses_by_name_without_networkx() -> None:
    minimal = pipeline.check_file(EXAMPLES / "minimal" / "production.toml").graph
    assert graph.sesses_needed_first(minimal) == ["site"]
    assert graph.needs_cycles(minimal) == []
    assert minimal._nx is None  # nothing asked for the networkx graph
    assert isinstance(minimal.as_networkx(), nx.DiGraph)
    assert set(minimal.as_networkx().nodes) == set(minimal.nodes)


@settings(max_examples=300)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n))))
def test_the_order_and_the_cycles_are_networkx_s(drawn: tuple[int, list[tuple[int, int]]]) -> None:
    """graphlib (the build's path) orders Sesses and finds cycles exactly as networkx does."""
    count, edges = drawn
    g = graph.Graph(nodes=[("sess", f"s{i}") for i in range(count)],
                    edges=[(("sess", f"s{a}"), ("sess", f"s{b}"), "needs") for a, b in sorted(set(edges))])
    needs = nx.DiGraph()
    needs.add_nodes_from(f"s{i}" for i in range(count))
    needs.add_edges_from((f"s{a}", f"s{b}") for a, b in edges)
    cycles = graph.needs_cycles(g)
    assert bool(cycles) == (not nx.is_directed_acyclic_graph(needs))
    if not cycles:
        assert graph.sesses_needed_first(g) == list(
            nx.lexicographical_topological_sort(needs.reverse(copy=True), key=str))
