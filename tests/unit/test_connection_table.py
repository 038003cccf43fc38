"""The connection bound's rule: past it, the connection idle the longest makes room; one with a
request in flight never does."""

from __future__ import annotations

from ragvisor.web.connections import ConnectionTable


def table_with(max_connections: int, *names: str) -> ConnectionTable[str]:
    """A table with these connections opened in this order (all idle)."""
    table: ConnectionTable[str] = ConnectionTable(max_connections)
    for name in names:
        table.opened(name)
    return table


def test_within_the_bound_nobody_is_evicted():
    """Up to max_connections open, a newcomer makes no room."""
    table = table_with(3, "a", "b", "c")
    assert table.make_room("c") is None
    assert (table.open_count, table.idle_count, table.active_count) == (3, 3, 0)


def test_past_the_bound_the_longest_idle_connection_is_evicted():
    """The first connection opened and still idle goes, and is forgotten at once."""
    table = table_with(2, "a", "b", "c")
    assert table.make_room("c") == "a"
    assert table.open_count == 2
    assert table.make_room("c") is None


def test_a_connection_with_a_request_in_flight_is_never_evicted():
    """Active connections are skipped; with every other one active, nothing can make room."""
    table = table_with(2, "a", "b", "c")
    table.active("a")
    assert table.make_room("c") == "b"
    table.opened("d")
    table.active("c")
    assert table.make_room("d") is None
    assert table.over_bound()


def test_the_newcomer_never_evicts_itself():
    """Even when it is the only idle connection, the newcomer stays (it may be refused later)."""
    table = table_with(1, "a", "b")
    table.active("a")
    assert table.make_room("b") is None


def test_idle_again_counts_from_now():
    """A connection that finished a request is idle from then on, behind those idle longer."""
    table = table_with(3, "a", "b", "c")
    table.active("a")
    table.idle("a")  # "a" answered a request: now idle the shortest
    table.opened("d")
    assert table.make_room("d") == "b"


def test_closed_connections_are_forgotten():
    """A closed connection neither counts nor can be evicted; marking it idle does not revive it."""
    table = table_with(2, "a", "b", "c")
    table.closed("a")
    table.idle("a")
    assert table.open_count == 2
    assert table.make_room("c") is None
