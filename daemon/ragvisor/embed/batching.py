"""Micro-batching of query embeddings: concurrent searches share one model call.

Each search embeds one short query. Run alone, a MiniLM call costs a fixed ≈ 4 ms of per-run
overhead (session set-up, thread hand-off) for almost no arithmetic; several queries in one run
cost little more than one. So the model runs one call at a time, and the queries that arrive
while it runs wait and go together into the next call (at most `max_texts` texts; the rest into
the one after). A query that finds the model idle runs at once — after lingering `wait_s` for
company, when that is set (0 by default: a lone search pays nothing).

The rules, in one place:

- **Bounded wait.** The linger is at most `wait_s`, less when the request has less time left
  (`core.deadline`); a query waiting for its turn gives up when its request's deadline passes
  (`BackendTimeout`), and the others go on without it.
- **Errors reach every caller of the batch** — a backend that is down is down for all of them.
  One exception: an `InputError` (a text the tokenizer refuses) is one caller's fault, so a
  batch of several callers that fails with it is re-run caller by caller, and only the guilty
  one gets the error.
- **The batch runs in the thread of its first caller**, with that caller's context: a
  supervised backend bounds the call by that request's deadline. When it is done, the first
  caller still waiting takes the lead of the next batch, so no caller runs anyone's batch but
  its own.
- `max_texts = 1` turns it off: `batched` returns the model itself, whose calls then run
  side by side as before.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from ragvisor.core.deadline import remaining_s
from ragvisor.core.model import Fingerprint
from ragvisor.core.protocols import Embedder, Matrix
from ragvisor.errors import BackendTimeout, InputError


@dataclass(eq=False, slots=True)
class _Call:
    """One caller's texts, and, once its batch ran, its rows or its error."""

    texts: Sequence[str]
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # set (with `wake`) when this caller is to run the next batch
    done: bool = False
    rows: Matrix | None = None
    error: BaseException | None = None


class BatchingEmbedder:
    """An :class:`Embedder` that runs one call of `inner` at a time, combining the calls that
    wait for it (at most `max_texts` texts per call). Thread-safe; see the module's rules."""

    def __init__(self, inner: Embedder, *, wait_s: float, max_texts: int) -> None:
        """Raises ValueError for a negative `wait_s` or a `max_texts` below 1 (settings are
        validated before; this guards direct use)."""
        if wait_s < 0 or max_texts < 1:
            raise ValueError(f"wait_s must be >= 0 and max_texts >= 1: {wait_s}, {max_texts}")
        self.inner = inner
        self.wait_s = wait_s
        self.max_texts = max_texts
        self._changed = threading.Condition()  # guards everything below; notified on arrivals
        self._waiting: list[_Call] = []
        self._busy = False  # a batch is being formed or run
        self.model_calls = 0  # how many calls reached `inner` (tests and benches count them)

    @property
    def fingerprint(self) -> Fingerprint:
        """The model's."""
        return self.inner.fingerprint

    @property
    def batch_size(self) -> int:
        """The model's."""
        return self.inner.batch_size

    def embed(self, texts: Sequence[str]) -> Matrix:
        """The model's vectors of `texts`, computed together with those of concurrent callers.

        Raises what the model raises (for every caller of the batch; `InputError` only for the
        caller whose text caused it) and `BackendTimeout` when the request's deadline passes
        while the query waits for its turn.
        """
        call = _Call(texts)
        with self._changed:
            self._waiting.append(call)
            call.lead = not self._busy
            self._busy = True
            self._changed.notify_all()
        if not call.lead:
            self._wait_turn(call)
        if not call.done:
            self._lead()
        if call.error is not None:
            raise call.error
        assert call.rows is not None  # done without an error means rows
        return call.rows

    def _wait_turn(self, call: _Call) -> None:
        """Wait until the call's batch ran or it is this call's turn to lead one, no longer
        than the request's deadline."""
        left = remaining_s()
        if call.wake.wait(None if left is None else max(0.0, left)):
            return
        with self._changed:
            if call.wake.is_set():
                return  # woken just now: a result, or the lead (which must be taken)
            if call in self._waiting:
                self._waiting.remove(call)
            # else its batch is running: its rows, when they come, are nobody's
        raise BackendTimeout("the request's deadline passed while its query waited to be embedded")

    def _lead(self) -> None:
        """Linger for company (bounded), take the waiting calls that fit, run them, and hand
        the lead to the first call still waiting."""
        with self._changed:
            if self.wait_s > 0:
                left = remaining_s()
                linger_s = self.wait_s if left is None else max(0.0, min(self.wait_s, left))
                self._changed.wait_for(
                    lambda: sum(len(c.texts) for c in self._waiting) >= self.max_texts, linger_s
                )
            batch: list[_Call] = []
            size = 0
            for waiting in self._waiting:
                if batch and size + len(waiting.texts) > self.max_texts:
                    break
                batch.append(waiting)
                size += len(waiting.texts)
            del self._waiting[: len(batch)]
            self.model_calls += 1
        try:
            self._run(batch)
        finally:
            with self._changed:
                if self._waiting:
                    self._waiting[0].lead = True
                    self._waiting[0].wake.set()
                else:
                    self._busy = False
            for call in batch:
                call.done = True
                call.wake.set()

    def _run(self, batch: list[_Call]) -> None:
        """One model call for the whole batch; on an `InputError` with several callers, one call
        per caller so that only the guilty one fails."""
        texts = [text for call in batch for text in call.texts]
        try:
            vectors = self.inner.embed(texts)
        except InputError as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            for call in batch:
                try:
                    call.rows = self.inner.embed(call.texts)
                except Exception as each:  # noqa: BLE001 - handed to its own caller, re-raised
                    call.error = each
            return
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch re-raises it
            for call in batch:
                call.error = exc
            return
        start = 0
        for call in batch:
            call.rows = vectors[start : start + len(call.texts)]
            start += len(call.texts)


def batched(embedder: Embedder, *, wait_ms: float, max_texts: int) -> Embedder:
    """What searches embed queries with: `embedder` batched, or itself when `max_texts` is 1."""
    if max_texts <= 1:
        return embedder
    return BatchingEmbedder(embedder, wait_s=wait_ms / 1000, max_texts=max_texts)
