"""`/readyz`'s capabilities: what the daemon serves, read from its checks."""

from __future__ import annotations

from ragvisor.runtime.reports import capabilities

OK = {"ok": True}
DOWN = {"ok": False, "error": "cannot connect"}


def test_search_is_served_while_the_generator_is_not_up():
    """Store and embedder ok, generator down (its worker starting): search yes, ask no."""
    checks = {"embedder": OK, "store": OK, "sync": DOWN, "generator": DOWN}
    assert capabilities(checks) == {"search": True, "ask": False}


def test_ask_needs_search_and_the_generator():
    """Everything ok: both; the store away: neither, whatever the generator says."""
    assert capabilities({"embedder": OK, "store": OK, "generator": OK}) == {
        "search": True,
        "ask": True,
    }
    assert capabilities({"embedder": OK, "store": DOWN, "generator": OK}) == {
        "search": False,
        "ask": False,
    }


def test_without_a_generator_ask_is_not_a_capability():
    """`generator.backend = "none"`: no generator check, so ask is false."""
    assert capabilities({"embedder": OK, "store": OK}) == {"search": True, "ask": False}
