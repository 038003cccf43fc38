"""The answer cache: complete generated answers of `/ask`, found again by the same question
(exact) or by a question that means the same (semantic), never across a change of what made
them.

Pure logic, no I/O, no clock: the caller passes the time. An answer is stored under a
:class:`CacheScope` — the knowledge base's version (it changes on every committed change: a
re-index), the serving embedder's fingerprint and the generator's identity (model and the
options that shape an answer). The cache holds one scope at a time: the first lookup in a new
scope drops every entry of the old one (counted as ``invalidated``), and an answer finished
under a scope that is no longer current is not stored — a re-index or a model change cannot
return a stale answer, and stale entries do not sit in memory.

Exact hits compare the normalised question (Unicode NFKC, case-folded, whitespace collapsed,
trailing punctuation dropped) and `k`. Semantic hits compare the question's embedding with the
stored ones by dot product (the vectors are L2-normalised: cosine similarity) over one small
matrix, and — the guard against near misses such as "delete a local branch" vs "delete a
remote branch", which embed 0.88 apart with MiniLM — also require the retrieved passages to
agree: the new question's ``same_top_passages`` best passages must be the cached answer's, in
order. Both notes of such a pair are usually among the k retrieved, so comparing the whole set
does not tell them apart; the best passage does (bench/answer_cache_bench.py measures the
rules: with the best passage required, a third to a fifth of the false hits at equal
thresholds).

Entries are bounded by count (least recently used goes first) and by age (``ttl_s``).
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ragvisor.core.protocols import Vector

CacheKind = Literal["exact", "semantic"]

_SPACE = re.compile(r"\s+")
# Trailing punctuation says nothing about what is asked: "how?" and "how" are one question.
_TRAILING = " ?!.。"  # after NFKC: fullwidth question and exclamation marks are ASCII


def normalise_question(question: str) -> str:
    """The question as the exact cache compares it: NFKC, case-folded, one space between
    words, no trailing punctuation."""
    text = unicodedata.normalize("NFKC", question).casefold()
    return _SPACE.sub(" ", text).strip().rstrip(_TRAILING).strip()


def generator_identity(model: str, options: Mapping[str, object]) -> str:
    """What names the answers a generator writes: its model and the options that shape them
    (num_ctx, num_predict, temperature), in a stable order."""
    return model + "|" + ",".join(f"{key}={options[key]}" for key in sorted(options))


@dataclass(frozen=True, slots=True)
class CacheScope:
    """What an answer depends on besides its question: a change of any part misses."""

    kb_version: str  # Store.kb_version(): changes with every committed change
    embedder: str  # the serving embedder's fingerprint key
    generator: str  # model name and the options that shape an answer


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """One stored answer: the `done` payload of a generated answer and what it came from."""

    question: str
    k: int
    answer: Mapping[str, Any]
    passage_ids: tuple[str, ...]
    stored_at: float


@dataclass(frozen=True, slots=True)
class CacheHit:
    """A lookup that found an answer: how, and how similar the questions were (1.0: exact)."""

    kind: CacheKind
    entry: CachedAnswer
    similarity: float = 1.0


@dataclass(slots=True)
class CacheCounts:
    """Evictions since start, by reason (the metrics read them as deltas)."""

    lru: int = 0
    expired: int = 0
    invalidated: int = 0


def same_top_passages(new: Sequence[str], cached: Sequence[str], count: int) -> bool:
    """Whether the first `count` passages of both lists are the same, in the same order (0:
    always; lists shorter than `count` compare whole)."""
    return tuple(new[:count]) == tuple(cached[:count])


@dataclass(slots=True)
class _Entry:
    answer: CachedAnswer
    vector: Vector | None


@dataclass(slots=True)
class AnswerCache:
    """Exact and semantic lookups over at most ``max_entries`` answers of one scope.

    ``semantic_threshold`` is the least cosine similarity of two questions' embeddings for a
    semantic hit (above 1.0: semantic lookups off); ``same_top_passages`` how many of the best
    retrieved passages must be the cached answer's, in order (0: not checked); ``ttl_s`` the
    oldest an entry may be (0: no age limit). Not thread-safe: the daemon calls it from its
    event loop only.
    """

    max_entries: int
    semantic_threshold: float
    same_top_passages: int = 0
    ttl_s: float = 0.0
    scope: CacheScope | None = None
    counts: CacheCounts = field(default_factory=CacheCounts)
    _entries: OrderedDict[tuple[str, int], _Entry] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._entries)

    def _adopt(self, scope: CacheScope) -> None:
        """Make `scope` current; entries of another scope can never be right again."""
        if scope != self.scope:
            self.counts.invalidated += len(self._entries)
            self._entries.clear()
            self.scope = scope

    def _expire(self, now: float) -> None:
        if self.ttl_s <= 0:
            return
        old = [key for key, e in self._entries.items() if now - e.answer.stored_at > self.ttl_s]
        for key in old:
            del self._entries[key]
        self.counts.expired += len(old)

    def exact(self, scope: CacheScope, question: str, k: int, now: float) -> CacheHit | None:
        """The answer stored for this question (normalised) and k in this scope, if any."""
        self._adopt(scope)
        self._expire(now)
        key = (normalise_question(question), k)
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return CacheHit("exact", entry.answer)

    def semantic(
        self, scope: CacheScope, vector: Vector, k: int, passage_ids: Sequence[str], now: float
    ) -> CacheHit | None:
        """The answer whose question embeds closest to `vector`, when within the threshold and
        its passages agree with `passage_ids` (the new question's retrieved chunks)."""
        self._adopt(scope)
        self._expire(now)
        if self.semantic_threshold > 1.0:
            return None
        # A vector of another shape (another model) is never comparable: left out.
        shape = np.shape(vector)
        keys: list[tuple[str, int]] = []
        rows: list[Vector] = []
        for key, e in self._entries.items():
            if e.vector is not None and key[1] == k and e.vector.shape == shape:
                keys.append(key)
                rows.append(e.vector)
        if not keys:
            return None
        matrix = np.stack(rows)
        similarities = matrix @ np.asarray(vector, dtype=np.float32)
        for index in np.argsort(-similarities, kind="stable"):
            similarity = float(similarities[index])
            if similarity < self.semantic_threshold:
                return None
            entry = self._entries[keys[index]]
            if same_top_passages(passage_ids, entry.answer.passage_ids, self.same_top_passages):
                self._entries.move_to_end(keys[index])
                return CacheHit("semantic", entry.answer, similarity)
        return None

    def put(
        self,
        scope: CacheScope,
        question: str,
        k: int,
        answer: Mapping[str, Any],
        *,
        vector: Vector | None,
        passage_ids: Sequence[str],
        now: float,
    ) -> bool:
        """Store a complete generated answer; False when `scope` is no longer current (the
        knowledge base or a model changed while it was written) and nothing was stored."""
        if self.scope is not None and scope != self.scope:
            return False
        self.scope = scope
        key = (normalise_question(question), k)
        stored = CachedAnswer(question, k, dict(answer), tuple(passage_ids), now)
        self._entries[key] = _Entry(stored, vector)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.counts.lru += 1
        return True

    def clear(self) -> int:
        """Drop every entry; returns how many there were."""
        dropped = len(self._entries)
        self.counts.invalidated += dropped
        self._entries.clear()
        return dropped
