"""The production graph: what each Gig depends on, and the order `needs` imposes."""

from __future__ import annotations

from backstage import graph, load, model
from conftest import EXAMPLES


def jazzclub() -> model.Production:
    return model.build(load.load_file(EXAMPLES / "jazzclub" / "production.toml").data)


def test_a_gig_depends_on_its_venue_sess_act_stage_and_needed_sesses() -> None:
    production = jazzclub()
    deps = graph.dependencies(graph.build(production), "blog-live")
    assert deps == sorted([("venue", "example"), ("sess", "blog"), ("act", "blog"), ("stage", "main"),
                           ("sess", "api"), ("act", "api"), ("sess", "search"), ("act", "search")])


def test_needed_sesses_come_first() -> None:
    order = graph.sesses_needed_first(jazzclub())
    assert order.index("api") < order.index("search") < order.index("blog")
    assert sorted(order) == ["api", "blog", "search", "sketch"]


def test_unbooked_things_are_still_nodes() -> None:
    g = graph.build(jazzclub())
    assert ("venue", "sunday") in g and g.in_degree(("venue", "sunday")) == 0
    assert ("sess", "sketch") in g and g.in_degree(("sess", "sketch")) == 0
