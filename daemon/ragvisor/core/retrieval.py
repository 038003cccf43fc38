"""Search over stored chunks: validate the query, embed it once, rank, and shape the results.

The query is the only text embedded at search time; every chunk vector comes from the store's
in-memory matrix, so the Mongado bug (a code path recomputing stored embeddings) cannot happen.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ragvisor.core.model import ChunkRecord, ScoredChunk
from ragvisor.core.protocols import Embedder, Store
from ragvisor.errors import BackendError, BackendUnavailable, InputError

RRF_K = 60  # reciprocal-rank-fusion constant from Cormack et al.; damps the top ranks' weight


class SearchMode(enum.Enum):
    """How chunks are ranked: by meaning, by words, or both fused."""

    DENSE = "dense"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """Bounds a query must respect; from `[server]` in the configuration."""

    max_query_chars: int = 1000
    max_k: int = 50
    snippet_chars: int = 240


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One result, with `path` relative to its corpus root."""

    path: str
    title: str
    chunk_id: str
    score: float
    snippet: str
    heading: str
    corpus_root: str

    def as_dict(self) -> dict[str, object]:
        """JSON shape of a result."""
        return {
            "path": self.path,
            "title": self.title,
            "chunk_id": self.chunk_id,
            "score": round(self.score, 6),
            "snippet": self.snippet,
            "heading": self.heading,
        }


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Results plus how long each phase took."""

    hits: list[SearchHit]
    timings_ms: dict[str, float]
    mode: SearchMode
    # Why the results are not what `mode` asked for (the embedder failed: keyword results).
    degraded: str | None = None


# What `str.strip()` trims (every character `str.isspace()` accepts), spelled out: the `\s` of
# Python, of JSON Schema's ECMA-262 and of the Rust regex engine a validator may use differ
# (Rust's lacks U+001C-U+001F, ECMA's adds U+FEFF), so `text_pattern` must not say `\s`.
WHITESPACE_CLASS = r"\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def validate_query(query: str | None, k: int, limits: QueryLimits, what: str = "query") -> str:
    """Return the stripped query; raises InputError for empty, oversized or bad-k requests.

    ``what`` names the text in messages ("query" for search, "question" for ask). The same rule,
    written as a regular expression for the OpenAPI document, is `text_pattern`.
    """
    if query is None or not query.strip():
        raise InputError(f"{what} must not be empty")
    query = query.strip()
    if len(query) > limits.max_query_chars:
        raise InputError(
            f"{what} is {len(query)} characters; the limit is {limits.max_query_chars}"
        )
    problem = text_problem(query)
    if problem is not None:
        raise InputError(f"{what} {problem}")
    if not 1 <= k <= limits.max_k:
        raise InputError(f"k must be between 1 and {limits.max_k}, got {k}")
    return query


def text_problem(text: str) -> str | None:
    """Why `text` cannot be searched or embedded, worded to follow its name ("question must
    not contain NUL characters"), or None when it can. The web layer applies the same rule to
    every string of a JSON body."""
    if "\x00" in text:
        return "must not contain NUL characters"
    if not text.isascii() and not _encodable(text):
        # JSON may spell a lone surrogate ("\ud800"); the tokenizer would fail on it (a 500).
        return "is not valid Unicode: it contains a lone surrogate"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_pattern(max_chars: int) -> str:
    """`validate_query`'s rule for the text as a regular expression, for the OpenAPI document:
    some character that is not whitespace, at most `max_chars` once the surrounding whitespace
    is trimmed, and no NUL. (Lone surrogates, also refused, cannot be written in a pattern every
    dialect accepts; a JSON Schema validator refuses them anyway.)
    """
    solid = rf"[^{WHITESPACE_CLASS}\x00]"
    rest = "" if max_chars < 2 else rf"(?:[^\x00]{{0,{max_chars - 2}}}{solid})?"
    return rf"^[{WHITESPACE_CLASS}]*{solid}{rest}[{WHITESPACE_CLASS}]*$"


_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w{3,}")


def make_snippet(text: str, query: str, max_chars: int) -> str:
    """A one-line excerpt of at most `max_chars`, centred on the first query word it contains."""
    flat = _SPACE.sub(" ", text).strip()
    if len(flat) <= max_chars:
        return flat
    lowered = flat.lower()
    positions = [lowered.find(w.lower()) for w in _WORD.findall(query)]
    hit = min((p for p in positions if p >= 0), default=0)
    start = max(0, min(hit - max_chars // 4, len(flat) - max_chars))
    if start > 0:
        space = flat.find(" ", start)
        start = space + 1 if 0 <= space < start + 30 else start
    excerpt = flat[start : start + max_chars].rstrip()
    prefix = "…" if start > 0 else ""
    suffix = "…" if start + max_chars < len(flat) else ""
    return f"{prefix}{excerpt}{suffix}"


def fuse(rankings: list[list[ScoredChunk]], k: int) -> list[ScoredChunk]:
    """Reciprocal rank fusion: robust to the different score scales of cosine and BM25."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, scored in enumerate(ranking):
            scores[scored.chunk_id] = scores.get(scored.chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [ScoredChunk(chunk_id, score) for chunk_id, score in best]


class Retriever:
    """Answers searches from the store; the only embedding it computes is the query's."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        limits: QueryLimits,
        *,
        serving: Callable[[], Embedder] | None = None,
    ) -> None:
        """``serving``, when given, names the embedder of the generation searches use at this
        moment (during a model change, the previous model's); it is asked once per query, so a
        query's vector and the vectors it is compared with always come from the same model."""
        self._store = store
        self._embedder = embedder
        self._serving = serving
        self.limits = limits

    def search(self, query: str, k: int, mode: SearchMode = SearchMode.DENSE) -> SearchResult:
        """Rank chunks for a validated query. Raises InputError for bad input."""
        query = validate_query(query, k, self.limits)
        ranked, timings, degraded = self._rank(query, k, mode)
        started = time.perf_counter()
        records = {r.chunk_id: r for r in self._store.get_chunks([s.chunk_id for s in ranked])}
        hits = [
            _hit(records[s.chunk_id], s.score, query, self.limits.snippet_chars)
            for s in ranked
            if s.chunk_id in records
        ]
        timings["fetch"] = _ms_since(started)
        # A fallback ranked by keywords: say so, the scores are BM25 scores.
        return SearchResult(hits, timings, SearchMode.KEYWORD if degraded else mode, degraded)

    def passages(
        self, query: str, k: int, mode: SearchMode = SearchMode.DENSE
    ) -> tuple[list[tuple[ChunkRecord, float]], dict[str, float], str | None]:
        """The top-k chunks with their full text and score, for answering; query pre-validated.

        The third item says why the ranking fell back to keywords (None when it did not).
        """
        ranked, timings, degraded = self._rank(query, k, mode)
        started = time.perf_counter()
        records = {r.chunk_id: r for r in self._store.get_chunks([s.chunk_id for s in ranked])}
        found = [(records[s.chunk_id], s.score) for s in ranked if s.chunk_id in records]
        timings["fetch"] = _ms_since(started)
        return found, timings, degraded

    def _rank(
        self, query: str, k: int, mode: SearchMode
    ) -> tuple[list[ScoredChunk], dict[str, float], str | None]:
        """Rank by the mode; when the embedder fails, rank by keywords and say why."""
        timings: dict[str, float] = {}
        rankings: list[list[ScoredChunk]] = []
        degraded: str | None = None
        depth = k if mode is not SearchMode.HYBRID else max(k * 4, 20)
        if mode in (SearchMode.DENSE, SearchMode.HYBRID):
            started = time.perf_counter()
            embedder = self._serving() if self._serving is not None else self._embedder
            try:
                vector = embedder.embed([query])[0]
            except (BackendUnavailable, BackendError) as exc:
                degraded = f"embedder unavailable, keyword results: {exc}"
                mode = SearchMode.KEYWORD
            else:
                timings["embed"] = _ms_since(started)
                started = time.perf_counter()
                fingerprint = embedder.fingerprint
                rankings.append(self._store.dense_search(vector, depth, fingerprint))
                timings["retrieve"] = _ms_since(started)
        if mode in (SearchMode.KEYWORD, SearchMode.HYBRID):
            started = time.perf_counter()
            keyword = self._store.keyword_search(query, depth)
            rankings.append(keyword)
            timings["keyword"] = _ms_since(started)
            exact = [scored for scored in keyword if scored.exact_name]
            if mode is SearchMode.HYBRID and exact:
                # Chunks containing a name of the query as written (`sync.lock`) vote a second
                # time, so the best of them (2/61) outranks every chunk that merely shares words
                # with the query (at most 1/61 + 1/62), whatever the dense side thought: for a
                # name, the exact words are what the user means.
                rankings.append(exact)
        ranked = rankings[0][:k] if len(rankings) == 1 else fuse(rankings, k)
        return ranked, timings, degraded


def _hit(record: ChunkRecord, score: float, query: str, snippet_chars: int) -> SearchHit:
    return SearchHit(
        path=record.path,
        title=record.title,
        chunk_id=record.chunk_id,
        score=score,
        snippet=make_snippet(record.text, query, snippet_chars),
        heading=record.heading,
        corpus_root=record.corpus_root,
    )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
