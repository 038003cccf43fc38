"""Admission lanes: bounded concurrency, a bounded queue, 503 with an honest Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ragvisor.config import LaneSettings
from ragvisor.errors import Overloaded
from ragvisor.metrics import Metrics
from ragvisor.supervise.admission import Lane, Ticket
from ragvisor.testing import FakeClock

WAIT_S = 5.0  # bound on every wait in these tests


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until `condition` holds (bounded)."""
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.001)


def lane(concurrent: int, queue: int, **kw: Any) -> Lane:
    return Lane("ask", LaneSettings(max_concurrent=concurrent, max_queue=queue), **kw)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


def sample(metrics: Metrics, name: str, lane_name: str = "ask") -> float:
    return metrics.registry.get_sample_value(name, {"lane": lane_name}) or 0.0


def test_no_more_than_max_concurrent_run_at_once():
    """Six callers on a lane of two: never more than two inside, all six get through."""

    async def scenario() -> None:
        lane_ = lane(2, 10)
        inside = peak = done = 0
        go = asyncio.Event()

        async def work() -> None:
            nonlocal inside, peak, done
            async with lane_.slot():
                inside += 1
                peak = max(peak, inside)
                await go.wait()
                await asyncio.sleep(0)  # let the others run
                inside -= 1
            done += 1

        tasks = [asyncio.create_task(work()) for _ in range(6)]
        await until(lambda: lane_.active == 2 and lane_.waiting == 4)
        go.set()
        await asyncio.gather(*tasks)
        assert peak == 2
        assert done == 6
        assert (lane_.active, lane_.waiting, lane_.admitted) == (0, 0, 6)

    run(scenario())


def test_a_full_queue_is_refused_at_once_with_retry_after():
    """One running and max_queue waiting: the next caller gets Overloaded, not a place in line."""

    async def scenario() -> None:
        metrics = Metrics()
        lane_ = lane(1, 2, metrics=metrics, initial_service_s=3.0)
        held = await lane_.acquire()
        waiters = [asyncio.create_task(lane_.acquire()) for _ in range(2)]
        await until(lambda: lane_.waiting == 2)
        with pytest.raises(Overloaded, match="ask lane is full") as caught:
            await lane_.acquire()
        # Four turns ahead of a newcomer (1 running + 2 waiting + itself) at 3 s each.
        assert caught.value.retry_after_s == 12
        assert lane_.rejected == 1
        assert sample(metrics, "ragvisor_lane_rejected_total") == 1
        held.release()
        for task in waiters:
            (await task).release()

    run(scenario())


def test_retry_after_grows_with_the_queue():
    """More callers ahead means a longer Retry-After; never less than one second."""

    async def scenario() -> None:
        lane_ = lane(2, 50, initial_service_s=1.0)
        assert lane_.retry_after_s() == 1
        held = [await lane_.acquire() for _ in range(2)]
        waiters = [asyncio.create_task(lane_.acquire()) for _ in range(10)]
        await until(lambda: lane_.waiting == 10)
        assert lane_.retry_after_s() == 7  # (10 + 2 + 1) / 2 turns of 1 s, rounded up
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        for ticket in held:
            ticket.release()

    run(scenario())


def test_retry_after_follows_the_measured_service_time():
    """A lane whose requests turn out slow advertises a longer Retry-After."""

    async def scenario() -> None:
        clock = FakeClock()
        lane_ = lane(1, 20, initial_service_s=0.01, clock=clock)
        async with lane_.slot():
            clock.advance(0.25)
        assert lane_.service_time_s == 0.25
        held = await lane_.acquire()
        waiters = [asyncio.create_task(lane_.acquire()) for _ in range(20)]
        await until(lambda: lane_.waiting == 20)
        with pytest.raises(Overloaded) as caught:
            await lane_.acquire()
        assert caught.value.retry_after_s == 6  # 22 turns of 0.25 s = 5.5 s, rounded up
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        held.release()

    run(scenario())


def test_service_time_is_a_moving_average():
    """The first measurement replaces the initial guess; later ones move the average."""

    async def scenario() -> None:
        clock = FakeClock()
        lane_ = lane(1, 0, initial_service_s=10.0, clock=clock)
        async with lane_.slot():
            clock.advance(0.1)
        assert lane_.service_time_s == pytest.approx(0.1)
        async with lane_.slot():
            clock.advance(0.6)
        assert lane_.service_time_s == pytest.approx(0.1 + 0.2 * (0.6 - 0.1))

    run(scenario())


def test_a_cancelled_waiter_leaves_the_queue_and_leaks_no_slot():
    """A client that goes away while queued frees its place; the lane's capacity is unchanged."""

    async def scenario() -> None:
        metrics, clock = Metrics(), FakeClock()
        lane_ = lane(1, 4, metrics=metrics, clock=clock)
        held = await lane_.acquire()
        waiter = asyncio.create_task(lane_.acquire())
        await until(lambda: lane_.waiting == 1)
        assert sample(metrics, "ragvisor_lane_queue_depth") == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert lane_.waiting == 0
        assert sample(metrics, "ragvisor_lane_queue_depth") == 0
        held.release()
        await assert_capacity(lane_, 1)

    run(scenario())


def test_a_waiter_cancelled_as_its_turn_comes_gives_the_slot_back():
    """Cancelled in the instant the slot was handed to it: the slot goes to the next caller."""

    async def scenario() -> None:
        lane_ = lane(1, 4)
        held = await lane_.acquire()
        first = asyncio.create_task(lane_.acquire())
        second = asyncio.create_task(lane_.acquire())
        await until(lambda: lane_.waiting == 2)
        held.release()  # hands the slot to `first`…
        first.cancel()  # …which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await first
        async with asyncio.timeout(WAIT_S):
            ticket = await second
        assert (lane_.active, lane_.waiting) == (1, 0)
        ticket.release()
        await assert_capacity(lane_, 1)

    run(scenario())


async def assert_capacity(lane_: Lane, capacity: int) -> None:
    """Exactly `capacity` acquires succeed at once and the next one queues."""
    tickets = []
    for _ in range(capacity):
        async with asyncio.timeout(WAIT_S):
            tickets.append(await lane_.acquire())
    extra = asyncio.create_task(lane_.acquire())
    await until(lambda: lane_.waiting == 1)
    assert lane_.active == capacity
    tickets[0].release()
    async with asyncio.timeout(WAIT_S):
        tickets[0] = await extra
    for ticket in tickets:
        ticket.release()
    assert (lane_.active, lane_.waiting) == (0, 0)


def test_releasing_a_ticket_twice_frees_one_slot():
    """Ticket.release is idempotent: a double release cannot raise the lane's capacity."""

    async def scenario() -> None:
        lane_ = lane(1, 4)
        ticket = await lane_.acquire()
        assert isinstance(ticket, Ticket)
        ticket.release()
        ticket.release()
        assert lane_.active == 0
        await assert_capacity(lane_, 1)

    run(scenario())


def test_slot_releases_when_the_body_raises():
    """An exception inside `async with lane.slot()` still frees the slot."""

    async def scenario() -> None:
        lane_ = lane(1, 0)
        with pytest.raises(RuntimeError, match="boom"):
            async with lane_.slot():
                raise RuntimeError("boom")
        assert lane_.active == 0
        async with asyncio.timeout(WAIT_S), lane_.slot() as waited_s:
            assert waited_s >= 0.0

    run(scenario())


def test_a_lane_without_a_queue_refuses_the_second_caller():
    """max_queue = 0 (the sync lane): one runs, anyone else is refused at once."""

    async def scenario() -> None:
        lane_ = lane(1, 0)
        async with lane_.slot():
            with pytest.raises(Overloaded):
                await lane_.acquire()
        async with asyncio.timeout(WAIT_S), lane_.slot():
            pass

    run(scenario())


def test_gauges_and_wait_histogram_follow_the_lane():
    """Queue depth, active count and queue wait are exported per lane."""

    async def scenario() -> None:
        metrics, clock = Metrics(), FakeClock()
        lane_ = lane(1, 4, metrics=metrics, clock=clock)
        held = await lane_.acquire()
        assert sample(metrics, "ragvisor_lane_active") == 1
        waiter = asyncio.create_task(lane_.acquire())
        await until(lambda: lane_.waiting == 1)
        assert sample(metrics, "ragvisor_lane_queue_depth") == 1
        clock.advance(0.05)
        held.release()
        async with asyncio.timeout(WAIT_S):
            ticket = await waiter
        assert ticket.waited_s == pytest.approx(0.05)
        assert sample(metrics, "ragvisor_lane_queue_depth") == 0
        assert sample(metrics, "ragvisor_lane_active") == 1
        assert sample(metrics, "ragvisor_lane_wait_seconds_count") == 2
        assert sample(metrics, "ragvisor_lane_wait_seconds_sum") == pytest.approx(0.05)
        ticket.release()
        assert sample(metrics, "ragvisor_lane_active") == 0

    run(scenario())


def test_snapshot_reports_the_lane():
    """`/status` sees running, waiting, bounds, service time and the admitted/rejected counts."""

    async def scenario() -> None:
        lane_ = lane(1, 1, initial_service_s=2.0)
        held = await lane_.acquire()
        waiter = asyncio.create_task(lane_.acquire())
        await until(lambda: lane_.waiting == 1)
        with pytest.raises(Overloaded):
            await lane_.acquire()
        assert lane_.snapshot() == {
            "active": 1,
            "waiting": 1,
            "max_concurrent": 1,
            "max_queue": 1,
            "service_time_s": 2.0,
            "admitted": 1,
            "rejected": 1,
        }
        held.release()
        (await waiter).release()
        assert lane_.snapshot()["admitted"] == 2

    run(scenario())
