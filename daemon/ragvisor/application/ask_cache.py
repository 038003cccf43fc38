"""The answer cache as `/ask` uses it: the scope read from the store and the models, lookups
and stores fed to the metrics.

The rules (keys, scope, LRU, the semantic match) are pure and live in
:mod:`ragvisor.core.answer_cache`; this module reads what they need — the store's
`kb_version()` (a blocking call, run in a thread), the serving embedder's fingerprint and the
generator's identity (:func:`ragvisor.core.answer_cache.generator_identity`, built by the
composition root from the settings) — and counts hits, misses, evictions and entries in `/metrics`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ragvisor.core.answer_cache import AnswerCache, CacheCounts, CacheHit, CacheScope
from ragvisor.core.protocols import Embedder, Store, Vector
from ragvisor.errors import RagvisorError
from ragvisor.metrics import Metrics

# The `done` keys that describe the request rather than the answer: a hit gets its own.
PER_REQUEST_KEYS = frozenset({"type", "question", "timings_ms", "cached"})
# Where the stored answer keeps its `citations` event's count of passages left out.
DROPPED_KEY = "dropped"


class AskCache:
    """One :class:`AnswerCache` behind `/ask`, with its scope and metrics; event loop only."""

    def __init__(
        self,
        cache: AnswerCache,
        *,
        store: Store,
        serving_embedder: Callable[[], Embedder],
        generator_id: str,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self._store = store
        self._serving = serving_embedder
        self._generator_id = generator_id
        self._metrics = metrics
        self._clock = clock
        self._counted = CacheCounts()
        if metrics is not None:  # every series shows from the start, at 0
            for kind in ("exact", "semantic"):
                metrics.answer_cache_hits_total.labels(kind)
            for reason in ("lru", "expired", "invalidated"):
                metrics.answer_cache_evictions_total.labels(reason)

    def embedder_key(self) -> str:
        """The serving embedder's fingerprint key (changes when a model change switches)."""
        return self._serving().fingerprint.key

    async def scope(self) -> CacheScope | None:
        """The current scope; None when the store cannot say (then nothing is cached: the
        retrieval that follows reports the store's trouble)."""
        try:
            kb_version = await asyncio.to_thread(self._store.kb_version)
        except RagvisorError:
            return None
        return CacheScope(kb_version, self.embedder_key(), self._generator_id)

    def exact(self, scope: CacheScope, question: str, k: int) -> CacheHit | None:
        """An answer stored for this very question; counted when found."""
        hit = self.cache.exact(scope, question, k, self._clock())
        self._count(hit)
        return hit

    def semantic(
        self, scope: CacheScope, vector: Vector, k: int, passage_ids: Sequence[str]
    ) -> CacheHit | None:
        """An answer to a question that means the same; counted when found."""
        hit = self.cache.semantic(scope, vector, k, passage_ids, self._clock())
        self._count(hit)
        return hit

    def missed(self) -> None:
        """Neither lookup found an answer."""
        if self._metrics is not None:
            self._metrics.answer_cache_misses_total.inc()

    def store(
        self,
        scope: CacheScope,
        question: str,
        k: int,
        done: Mapping[str, Any],
        *,
        dropped: int,
        vector: Vector | None,
        passage_ids: Sequence[str],
    ) -> bool:
        """Keep a complete generated answer (its `done` event); False when the scope moved on
        meanwhile and it was not kept."""
        answer = {key: value for key, value in done.items() if key not in PER_REQUEST_KEYS}
        answer[DROPPED_KEY] = dropped
        stored = self.cache.put(
            scope, question, k, answer, vector=vector, passage_ids=passage_ids, now=self._clock()
        )
        self._count(None)
        return stored

    def _count(self, hit: CacheHit | None) -> None:
        m = self._metrics
        if m is None:
            return
        if hit is not None:
            m.answer_cache_hits_total.labels(hit.kind).inc()
        counts, seen = self.cache.counts, self._counted
        for reason in ("lru", "expired", "invalidated"):
            new = getattr(counts, reason) - getattr(seen, reason)
            if new:
                m.answer_cache_evictions_total.labels(reason).inc(new)
                setattr(seen, reason, getattr(counts, reason))
        m.answer_cache_entries.set(len(self.cache))
