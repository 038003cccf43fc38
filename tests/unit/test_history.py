"""The status page's history: a fixed ring of samples, each closing an interval of latencies."""

from __future__ import annotations

import math
import threading

import pytest

from ragvisor.runtime.history import (
    MAX_DURATIONS_PER_INTERVAL,
    MAX_PROCESSES,
    History,
    capacity_for,
    observe_request,
)
from ragvisor.supervise.memory import MB, MemorySample


def memory(available_mb: float, **rss_mb: float) -> MemorySample:
    return MemorySample(
        taken_at=0.0,
        total_bytes=4096 * MB,
        available_bytes=int(available_mb * MB),
        swap_total_bytes=0,
        swap_used_bytes=0,
        swap_in_bytes_per_s=None,
        swap_out_bytes_per_s=None,
        psi_some_avg10=None,
        psi_full_avg10=None,
        rss_bytes={name: int(mb * MB) for name, mb in rss_mb.items()},
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 5
        return self.now


def test_an_hour_at_five_seconds_is_720_samples():
    """The ring's size is the window over the sampling interval."""
    assert capacity_for(3600, 5) == 720
    assert capacity_for(60, 0.5) == 120


def test_each_sample_closes_its_interval_with_median_max_and_count():
    """A sample records time, memory and RSS, and the median, maximum and count of each series since
    the last sample; an empty interval is null with count 0."""
    history = History(10, 5.0, clock=Clock())
    for seconds in (0.010, 0.030, 0.020):
        history.record("search", seconds)
    history.record("first_token", 0.4)
    history.sample(memory(2000, daemon=200, worker=90))
    history.sample(memory(1900, daemon=210, worker=91))  # nothing recorded in between
    body = history.as_dict()
    assert body["t"] == [1005.0, 1010.0]
    assert body["available_mb"] == [2000.0, 1900.0]
    assert body["rss_mb"] == {"daemon": [200.0, 210.0], "worker": [90.0, 91.0]}
    assert body["search_ms"] == {"p50": [20.0, None], "max": [30.0, None], "count": [3, 0]}
    assert body["first_token_ms"]["p50"] == [400.0, None]
    assert body["ask_ms"]["count"] == [0, 0]
    assert (body["capacity"], body["interval_s"], body["window_s"]) == (10, 5.0, 50.0)


def test_the_ring_keeps_the_newest_samples_oldest_first_and_its_size_is_fixed():
    """Past its capacity the ring drops the oldest samples, answers oldest first, and holds the same
    bytes."""
    history = History(4, 5.0, clock=Clock())
    history.sample(memory(100, daemon=1))
    size = history.nbytes()
    for available in range(101, 110):
        history.sample(memory(available, daemon=1))
    body = history.as_dict()
    assert body["available_mb"] == [106.0, 107.0, 108.0, 109.0]
    assert body["t"] == sorted(body["t"])
    assert history.nbytes() == size


def test_processes_come_and_go_as_nulls_and_their_number_is_bounded():
    """A process that appears later or leaves is null where absent; a sample without a reading is
    null; at most MAX_PROCESSES processes are kept."""
    history = History(5, 5.0, clock=Clock())
    history.sample(memory(100, daemon=10))
    history.sample(memory(100, daemon=10, worker=5))
    history.sample(memory(100, daemon=10))
    history.sample(None)  # the guard had no reading
    body = history.as_dict()
    assert body["rss_mb"]["worker"] == [None, 5.0, None, None]
    assert body["available_mb"][-1] is None
    many = {f"p{i}": 1.0 for i in range(MAX_PROCESSES + 4)}
    history.sample(memory(100, **many))
    assert len(history.as_dict()["rss_mb"]) == MAX_PROCESSES


def test_a_burst_keeps_its_count_and_maximum_but_not_every_duration():
    """Past MAX_DURATIONS_PER_INTERVAL durations only the count and maximum grow: a burst cannot
    grow memory."""
    history = History(3, 5.0, clock=Clock())
    for i in range(MAX_DURATIONS_PER_INTERVAL * 3):
        history.record("ask", 1.0 if i < MAX_DURATIONS_PER_INTERVAL * 2 else 9.0)
    assert len(history._latency["ask"].pending) == MAX_DURATIONS_PER_INTERVAL
    history.sample(None)
    ask = history.as_dict()["ask_ms"]
    assert ask["count"] == [MAX_DURATIONS_PER_INTERVAL * 3]
    assert ask["max"] == [9000.0]
    assert ask["p50"] == [1000.0]


def test_records_from_many_threads_are_all_counted():
    """Request threads record concurrently without losing a count."""
    history = History(3, 5.0, clock=Clock())

    def hammer() -> None:
        for _ in range(2000):
            history.record("search", 0.005)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history.sample(None)
    assert history.as_dict()["search_ms"]["count"] == [8000]


def test_an_unknown_series_is_a_programming_error():
    """Only search, ask and first_token are series."""
    with pytest.raises(KeyError):
        History(3, 5.0).record("upload", 1.0)


@pytest.mark.parametrize(
    ("path", "status", "fields", "expected"),
    [
        ("/search", 200, {}, {"search": 1}),
        ("/ask", 200, {"first_token_ms": 420.0}, {"ask": 1, "first_token": 1}),
        ("/ask", 200, {}, {"ask": 1}),
        ("/ask", 503, {"first_token_ms": 420.0}, {}),  # shed: says nothing about speed
        ("/search", 400, {}, {}),
        ("/status", 200, {}, {}),
    ],
)
def test_answered_search_and_ask_requests_are_observed(path, status, fields, expected):
    """The request log's observer records answered /search and /ask (status < 400) and an answer's
    first token; refusals, sheds and other paths are not recorded."""
    history = History(3, 5.0)
    observe_request(history)(path, status, 0.25, fields)
    history.sample(None)
    body = history.as_dict()
    counts = {
        name: body[f"{name}_ms"]["count"][0]
        for name in ("search", "ask", "first_token")
        if body[f"{name}_ms"]["count"][0]
    }
    assert counts == expected


def test_the_default_buffer_is_small():
    """720 samples, three processes: what docs/web.md quotes (bench/pages_bench.py prints it)."""
    history = History.for_window(3600, 5)
    for _ in range(history.capacity):
        history.sample(memory(1000, daemon=200, worker=90, ollama=300))
    assert history.nbytes() < 100_000
    assert not math.isnan(history.as_dict()["available_mb"][-1])
