"""The query micro-batcher: concurrent callers share one model call, each gets its own rows,
errors reach the right callers, and no caller waits past its request's deadline.

No test measures time: a batch's first caller lingers (`wait_s`) until the batch is full, and a
running batch is held by an event the test controls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from ragvisor.core.deadline import request_deadline
from ragvisor.core.protocols import Matrix
from ragvisor.embed.batching import BatchingEmbedder, batched
from ragvisor.errors import BackendTimeout, BackendUnavailable, InputError
from ragvisor.testing import FakeEmbedder

# Long enough that only a full batch (never the timer) closes one in these tests.
NEVER_S = 60.0


def run_in_threads(calls: Sequence[Callable[[], object]]) -> list[object]:
    """Run each call in its own thread; returns each result or the exception it raised."""
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(NEVER_S)
    return results


class GatedEmbedder(FakeEmbedder):
    """A fake model whose calls wait for `gate` (set by the test), failing with `error` if set,
    or with InputError for a text starting with "bad"."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.error: BaseException | None = None

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Waits for the gate, then fails or embeds."""
        self.entered.set()
        self.gate.wait(NEVER_S)
        if self.error is not None:
            raise self.error
        if any(text.startswith("bad") for text in texts):
            raise InputError("cannot tokenize the text")
        return super().embed(texts)


def test_concurrent_callers_share_one_model_call_and_get_their_own_rows():
    """Four threads embedding one query each make one model call; each gets its query's vector."""
    model = FakeEmbedder()
    batcher = BatchingEmbedder(model, wait_s=NEVER_S, max_texts=4)
    queries = [f"query number {i}" for i in range(4)]

    results = run_in_threads([lambda q=q: batcher.embed([q]) for q in queries])

    assert model.calls == [4]
    assert batcher.model_calls == 1
    for query, rows in zip(queries, results, strict=True):
        assert isinstance(rows, np.ndarray)
        np.testing.assert_array_equal(rows, model.embed([query]))


def test_a_caller_with_several_texts_gets_all_its_rows_in_order():
    """A caller's texts come back as its own rows, in its order, beside another caller's."""
    model = FakeEmbedder()
    batcher = BatchingEmbedder(model, wait_s=NEVER_S, max_texts=3)

    first, second = run_in_threads(
        [lambda: batcher.embed(["alpha", "beta"]), lambda: batcher.embed(["gamma"])]
    )

    assert model.calls == [3]
    np.testing.assert_array_equal(first, model.embed(["alpha", "beta"]))
    np.testing.assert_array_equal(second, model.embed(["gamma"]))


def test_a_backend_error_reaches_every_caller_of_the_batch():
    """When the model call fails, every caller of that batch gets the error."""
    model = GatedEmbedder()
    model.error = BackendUnavailable("embedder down")
    batcher = BatchingEmbedder(model, wait_s=NEVER_S, max_texts=3)

    results = run_in_threads([lambda i=i: batcher.embed([f"q{i}"]) for i in range(3)])

    assert all(isinstance(result, BackendUnavailable) for result in results)
    assert batcher.model_calls == 1


def test_an_input_error_reaches_only_the_caller_whose_text_caused_it():
    """A text the tokenizer refuses fails its own caller; the others of the batch get vectors."""
    model = GatedEmbedder()
    batcher = BatchingEmbedder(model, wait_s=NEVER_S, max_texts=3)

    results = run_in_threads(
        [
            lambda: batcher.embed(["good one"]),
            lambda: batcher.embed(["bad text"]),
            lambda: batcher.embed(["good two"]),
        ]
    )

    assert isinstance(results[1], InputError)
    assert isinstance(results[0], np.ndarray)
    assert isinstance(results[2], np.ndarray)
    assert results[0].shape == (1, 32)


def test_the_first_caller_does_not_wait_past_its_request_deadline():
    """A lone caller whose request has no time left runs its batch at once, not after wait_s."""
    model = FakeEmbedder()
    batcher = BatchingEmbedder(model, wait_s=NEVER_S, max_texts=16)

    with request_deadline(time.monotonic() - 1):
        rows = batcher.embed(["late query"])

    assert rows.shape == (1, 32)
    assert model.calls == [1]


def test_a_waiting_caller_gives_up_at_its_deadline_while_the_batch_runs_on():
    """A caller waiting for its turn raises BackendTimeout at its deadline; the running batch's
    caller still gets its vector."""
    model = GatedEmbedder()
    model.gate.clear()  # the first batch, once running, is held until the test opens the gate
    batcher = BatchingEmbedder(model, wait_s=0, max_texts=16)
    leader: list[object] = []
    thread = threading.Thread(target=lambda: leader.append(batcher.embed(["first"])))
    thread.start()
    assert model.entered.wait(NEVER_S)

    with request_deadline(time.monotonic() - 1), pytest.raises(BackendTimeout):
        batcher.embed(["late"])

    model.gate.set()
    thread.join(NEVER_S)
    assert isinstance(leader[0], np.ndarray)
    assert model.calls == [1]


def test_callers_arriving_while_the_model_runs_go_together_into_the_next_call():
    """Without any linger, the queries that queue while a call runs make one next call, led by
    one of them."""
    model = GatedEmbedder()
    model.gate.clear()
    batcher = BatchingEmbedder(model, wait_s=0, max_texts=16)
    first = threading.Thread(target=lambda: batcher.embed(["first"]))
    first.start()
    assert model.entered.wait(NEVER_S)
    results: list[object] = []
    later = [
        threading.Thread(target=lambda i=i: results.append(batcher.embed([f"q{i}"])))
        for i in range(3)
    ]
    for thread in later:
        thread.start()
    with batcher._changed:  # notified at each arrival: no sleeping, no polling
        assert batcher._changed.wait_for(lambda: len(batcher._waiting) == 3, NEVER_S)

    model.gate.set()
    for thread in [first, *later]:
        thread.join(NEVER_S)
    assert model.calls == [1, 3]
    assert len(results) == 3


def test_a_full_batch_closes_and_the_next_caller_starts_another():
    """Callers beyond `max_texts` go into the next batch, never into a call above the bound."""
    model = FakeEmbedder()
    batcher = BatchingEmbedder(model, wait_s=NEVER_S, max_texts=2)

    results = run_in_threads([lambda i=i: batcher.embed([f"q{i}"]) for i in range(4)])

    assert all(isinstance(result, np.ndarray) for result in results)
    assert sorted(model.calls) == [2, 2]


def test_a_batch_bound_of_one_turns_batching_off():
    """`query_batch_max = 1` gives the model itself, unwrapped; any other bound batches."""
    model = FakeEmbedder()

    assert batched(model, wait_ms=0, max_texts=1) is model
    assert isinstance(batched(model, wait_ms=0, max_texts=16), BatchingEmbedder)


def test_bad_bounds_are_refused():
    """A negative wait or a batch bound below one is refused at construction."""
    with pytest.raises(ValueError, match="max_texts"):
        BatchingEmbedder(FakeEmbedder(), wait_s=-1, max_texts=1)
