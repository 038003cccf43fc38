"""Fill in the prompt token counts of stored chunks, after each sync and once at start-up.

A sync commits documents first — they are searchable at once — and the counting comes after,
in its own thread, so neither the folder watch's freshness nor `PUT /documents` waits for the
tokenizer. Until a chunk has its count, `/ask` counts it the old way (the generator's tokenizer,
or the estimate): a missing count costs time, never correctness.

One job for every trigger: a kick while it runs makes it go round once more, so a burst of
syncs is one pass plus at most one more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ragvisor.core.answers import SYSTEM_PROMPT
from ragvisor.core.protocols import TokenCounter, TokenCountStore
from ragvisor.errors import RagvisorError

# Texts per exchange with the counting process and per store write: ~0.1 s of tokenizing.
BATCH = 1000


class StoredCounts(Protocol):
    """What `/ask` reads (`Answerer`): the stored counts, and the system prompt's."""

    @property
    def system_tokens(self) -> int | None:
        """The system prompt's tokens under the current counter; None until counted."""
        ...

    def lookup(self, hashes: Sequence[str]) -> dict[str, int] | None:
        """Stored counts of these chunk text hashes; None while the counter is not known yet.
        Blocking (a store read). Raises StoreError."""
        ...


class TokenCountJob:
    """Counts every stored chunk text that has no count under the generator's tokenizer; the
    :class:`StoredCounts` `/ask` reads."""

    def __init__(
        self,
        store: TokenCountStore,
        counter: TokenCounter,
        *,
        log: Any,
        batch: int = BATCH,
        memory_short: Callable[[], str | None] | None = None,
    ) -> None:
        self.counter = counter
        # The memory guard's verdict: while memory is short no counting process is started
        # (it holds ~75 MB); the next sync's kick tries again.
        self._memory_short = memory_short
        self._store = store
        self._log = log
        self._batch = batch
        self._lock = threading.Lock()  # one run at a time (kick's thread, a CLI's run)
        self._thread_lock = threading.Lock()  # guards _thread alone: kick never waits on a run
        self._first = True  # the first pass also prunes: the generator model may have changed
        self._system: tuple[str, int] | None = None  # (counter key, the system prompt's tokens)
        self.last: dict[str, Any] = {}  # the last pass, as /status shows it
        self._again = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> int:
        """Count what is missing now, prune the rest; returns how many texts were counted.

        Raises StoreError / BackendError; :meth:`kick` logs them instead.
        """
        with self._lock:
            started = time.perf_counter()
            counted = 0
            short = self._memory_short() if self._memory_short is not None else None
            if short is not None:
                self._log.info("token_counts.postponed", reason=short)
                return 0
            try:
                key = self.counter.key
                while not self._stopping.is_set():
                    texts = self._store.uncounted_texts(key, self._batch)
                    if not texts:
                        break
                    hashes = list(texts)
                    # As the prompt shows a chunk: render_passage strips its text.
                    counts = self.counter.count([texts[h].strip() for h in hashes])
                    self._store.put_token_counts(key, dict(zip(hashes, counts, strict=True)))
                    counted += len(hashes)
                if self._system is None or self._system[0] != key:
                    self._system = (key, self.counter.count([SYSTEM_PROMPT])[0])
                pruned = self._store.prune_token_counts(key) if counted or self._first else 0
            finally:
                self.counter.close()  # the counting process holds ~75 MB; never keep it
            self._first = False
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            self.last = {
                "counter": key,
                "counted": counted,
                "pruned": pruned,
                "finished_at": time.time(),
                "duration_ms": duration_ms,
            }
            if counted or pruned:
                self._log.info(
                    "token_counts.finished",
                    counted=counted,
                    pruned=pruned,
                    counter=key,
                    duration_ms=duration_ms,
                )
            return counted

    @property
    def running(self) -> bool:
        """Whether a pass is under way."""
        return self._lock.locked()

    @property
    def system_tokens(self) -> int | None:
        """The system prompt's count, if counted under the counter's current key."""
        system, key = self._system, self.counter.known_key
        return system[1] if system is not None and system[0] == key else None

    def lookup(self, hashes: Sequence[str]) -> dict[str, int] | None:
        """Stored counts under the counter's key; None before the first pass worked it out."""
        key = self.counter.known_key
        return None if key is None else self._store.token_counts(hashes, key)

    def kick(self) -> None:
        """Run in the background; while a run is under way, make it go round once more."""
        with self._thread_lock:
            self._again.set()
            if self._thread is not None or self._stopping.is_set():
                return
            self._thread = threading.Thread(target=self._loop, name="token-counts", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._thread_lock:  # a kick either sees this thread or starts the next
                if not self._again.is_set() or self._stopping.is_set():
                    self._thread = None
                    return
                self._again.clear()
            started = time.perf_counter()
            try:
                self.run()
            except RagvisorError as exc:
                self._log.warning(
                    "token_counts.failed",
                    error=str(exc),
                    effect="/ask counts these chunks' tokens the old way until the next sync",
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )

    def wait(self, timeout_s: float) -> bool:
        """Wait for the background passes to end (kicks made meanwhile included); returns
        whether they did within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._thread_lock:
                thread = self._thread
            if thread is None:
                return True
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop after the current batch and wait for the thread (daemon shutdown)."""
        self._stopping.set()
        with self._thread_lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        self.counter.close()
