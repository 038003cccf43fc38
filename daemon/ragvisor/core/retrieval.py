"""Search over stored chunks: validate the query, embed it once, rank, and shape the results.

The query is the only text embedded at search time; every chunk vector comes from the store's
in-memory matrix, so the Mongado bug (a code path recomputing stored embeddings) cannot happen.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragvisor.core.chunking import HEADING_PATH_SEPARATOR, breadcrumb
from ragvisor.core.model import ChunkRecord, ScoredChunk
from ragvisor.core.protocols import Embedder, Reranker, Store, Vector
from ragvisor.errors import BackendError, BackendUnavailable, InputError

RRF_K = 60  # reciprocal-rank-fusion constant from Cormack et al.; damps the top ranks' weight


class SearchMode(enum.Enum):
    """How chunks are ranked: by meaning, by words, or both fused."""

    DENSE = "dense"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


class Grouping(enum.Enum):
    """What one result is: a page (its best chunk, the page's other good chunks as extra
    passages) or a chunk (the first release's shape, several results may share a page)."""

    PAGE = "page"
    CHUNK = "chunk"


# How many chunks are ranked per page asked for when results are pages: enough that the k best
# pages are among them even when the best pages each hold several of the best chunks.
PAGE_DEPTH = 8
# Extra passages shown with a page result, at most.
MAX_PASSAGES = 3


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
    # With page results: the page's other chunks among the candidates, best first.
    passages: tuple[Passage, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """JSON shape of a result."""
        shape: dict[str, object] = {
            "path": self.path,
            "title": self.title,
            "chunk_id": self.chunk_id,
            "score": round(self.score, 6),
            "snippet": self.snippet,
            "heading": self.heading,
        }
        if self.passages:
            shape["passages"] = [p.as_dict() for p in self.passages]
        return shape


@dataclass(frozen=True, slots=True)
class Passage:
    """Another chunk of a page result: where it stands, its score and an excerpt."""

    chunk_id: str
    heading: str
    score: float
    snippet: str

    def as_dict(self) -> dict[str, object]:
        """JSON shape of a passage."""
        return {
            "chunk_id": self.chunk_id,
            "heading": self.heading,
            "score": round(self.score, 6),
            "snippet": self.snippet,
        }


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Results plus how long each phase took."""

    hits: list[SearchHit]
    timings_ms: dict[str, float]
    mode: SearchMode
    # Why the results are not what `mode` asked for (the embedder failed: keyword results).
    degraded: str | None = None
    # Whether the cross-encoder reordered the candidates (then scores are its scores).
    reranked: bool = False


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
        reranker: Reranker | None = None,
        rerank_candidates: int = 20,
    ) -> None:
        """``serving``, when given, names the embedder of the generation searches use at this
        moment (during a model change, the previous model's); it is asked once per query, so a
        query's vector and the vectors it is compared with always come from the same model.

        ``reranker``, when given, rescores the best ``rerank_candidates`` chunks of a search
        that asks for it (`search(..., rerank=True)`; None follows whether one is configured).
        """
        self._store = store
        self._embedder = embedder
        self._serving = serving
        self._reranker = reranker
        self._rerank_candidates = rerank_candidates
        self.limits = limits

    @property
    def reranker(self) -> Reranker | None:
        """The configured reranker, if any."""
        return self._reranker

    def search(
        self,
        query: str,
        k: int,
        mode: SearchMode = SearchMode.DENSE,
        *,
        group: Grouping | str = Grouping.PAGE,
        rerank: bool | None = None,
    ) -> SearchResult:
        """Rank chunks for a validated query and shape them as pages or chunks.

        Raises InputError for bad input (and for ``rerank=True`` with no reranker configured).
        """
        query = validate_query(query, k, self.limits)
        group = Grouping(group)
        if rerank and self._reranker is None:
            raise InputError("rerank was asked for, but no reranker is configured ([rerank])")
        rerank = self._reranker is not None if rerank is None else rerank
        depth = k * PAGE_DEPTH if group is Grouping.PAGE else k
        if rerank:
            depth = max(depth, self._rerank_candidates)
        ranked, timings, degraded = self._rank(query, depth, mode)
        started = time.perf_counter()
        records = {r.chunk_id: r for r in self._store.get_chunks([s.chunk_id for s in ranked])}
        found = [(records[s.chunk_id], s.score) for s in ranked if s.chunk_id in records]
        timings["fetch"] = _ms_since(started)
        reranked = bool(rerank and found)
        if reranked:
            started = time.perf_counter()
            found = self._rerank(query, found)
            timings["rerank"] = _ms_since(started)
        snippet_chars = self.limits.snippet_chars
        if group is Grouping.PAGE:
            hits = [
                _hit(best, score, query, snippet_chars, others)
                for best, score, others in group_by_page(found)[:k]
            ]
        else:
            hits = [_hit(record, score, query, snippet_chars) for record, score in found[:k]]
        # A fallback ranked by keywords: say so, the scores are BM25 scores.
        mode = SearchMode.KEYWORD if degraded else mode
        return SearchResult(hits, timings, mode, degraded, reranked=reranked)

    def _rerank(
        self, query: str, found: list[tuple[ChunkRecord, float]]
    ) -> list[tuple[ChunkRecord, float]]:
        """The best candidates reordered by the cross-encoder's scores (which replace theirs);
        the rest keep their order below them."""
        assert self._reranker is not None
        head = found[: self._rerank_candidates]
        scores = self._reranker.score(query, [record.text for record, _ in head])
        order = sorted(range(len(head)), key=lambda i: -scores[i])
        return [(head[i][0], float(scores[i])) for i in order] + found[len(head) :]

    def passages(
        self,
        query: str,
        k: int,
        mode: SearchMode = SearchMode.DENSE,
        *,
        vectors: list[Vector] | None = None,
    ) -> tuple[list[tuple[ChunkRecord, float]], dict[str, float], str | None]:
        """The top-k chunks with their full text and score, for answering; query pre-validated.

        The third item says why the ranking fell back to keywords (None when it did not).
        ``vectors``, when given, receives the query's vector (the answer cache compares
        questions by it; embedding the question twice would cost a second model call).
        """
        ranked, timings, degraded = self._rank(query, k, mode, vectors=vectors)
        started = time.perf_counter()
        records = {r.chunk_id: r for r in self._store.get_chunks([s.chunk_id for s in ranked])}
        found = [(records[s.chunk_id], s.score) for s in ranked if s.chunk_id in records]
        timings["fetch"] = _ms_since(started)
        return found, timings, degraded

    def _rank(
        self, query: str, k: int, mode: SearchMode, *, vectors: list[Vector] | None = None
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
                if vectors is not None:
                    vectors.append(vector)
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


def group_by_page(
    found: list[tuple[ChunkRecord, float]],
) -> list[tuple[ChunkRecord, float, list[tuple[ChunkRecord, float]]]]:
    """Pages in the order of their best chunk: (best chunk, its score, the page's other chunks
    among the candidates, best first, at most MAX_PASSAGES)."""
    pages: dict[str, tuple[ChunkRecord, float, list[tuple[ChunkRecord, float]]]] = {}
    for record, score in found:
        page = pages.get(record.doc_id)
        if page is None:
            pages[record.doc_id] = (record, score, [])
        elif len(page[2]) < MAX_PASSAGES:
            page[2].append((record, score))
    return list(pages.values())


def _hit(
    record: ChunkRecord,
    score: float,
    query: str,
    snippet_chars: int,
    others: Sequence[tuple[ChunkRecord, float]] = (),
) -> SearchHit:
    return SearchHit(
        path=record.path,
        title=record.title,
        chunk_id=record.chunk_id,
        score=score,
        snippet=make_snippet(shown_text(record), query, snippet_chars),
        heading=record.heading,
        corpus_root=record.corpus_root,
        passages=tuple(
            Passage(r.chunk_id, r.heading, s, make_snippet(shown_text(r), query, snippet_chars))
            for r, s in others
        ),
    )


def shown_text(record: ChunkRecord) -> str:
    """The chunk's text without its context line ("Title > Section"), which a result already
    shows as `title` and `heading`: the snippet has room for the words that matched."""
    path = tuple(record.heading.split(HEADING_PATH_SEPARATOR)) if record.heading else ()
    context = breadcrumb(record.title, path) + "\n"
    return record.text.removeprefix(context) if len(context) > 1 else record.text


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
