"""Results grouped by page, `group=chunk`, and the reranker setting, on a real SQLite store.

The embedder is the deterministic fake and the reranker a scripted one: what is pinned here is
what the retriever does with their scores, not the models' quality (bench/retrieval_eval.py
measures that).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from ragvisor.core.chunking import ChunkingSpec, chunk_document
from ragvisor.core.retrieval import Grouping, QueryLimits, Retriever, SearchMode, group_by_page
from ragvisor.errors import InputError
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder
from tests.helpers import commit_paragraphs, make_document

SWAP = (
    "Swap on a small box: the swap file holds pages the kernel moved out of memory.",
    "The swap file is sized at half of memory, at most four gigabytes of swap.",
    "Swappiness decides how eagerly memory pages go to the swap file.",
)
NEO4J = (
    "Neo4j keeps its page cache apart from the heap; both are sized by the role.",
    "The heap of Neo4j is capped so that the page cache and the swap file fit.",
)
OLLAMA = ("Ollama keeps a model loaded for keep_alive after the last request.",)


class ScriptedReranker:
    """Scores a passage by how often a chosen word occurs in it: a cross-encoder stand-in
    whose order is known in advance."""

    name = "scripted"

    def __init__(self, word: str) -> None:
        self.word = word
        self.calls: list[int] = []

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        self.calls.append(len(passages))
        return [float(p.lower().count(self.word)) for p in passages]


@pytest.fixture
def store(tmp_path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "data")
    embedder = FakeEmbedder()
    for path, paragraphs in {"swap.md": SWAP, "neo4j.md": NEO4J, "ollama.md": OLLAMA}.items():
        commit_paragraphs(s, make_document(path, "\n\n".join(paragraphs)), embedder)
    yield s
    s.close()


def _retriever(store: SqliteStore, reranker: ScriptedReranker | None = None) -> Retriever:
    return Retriever(store, FakeEmbedder(), QueryLimits(), reranker=reranker, rerank_candidates=4)


@pytest.mark.parametrize("mode", list(SearchMode), ids=lambda m: m.value)
def test_page_results_name_each_page_once(store, mode) -> None:
    """By default a result is a page: no path twice, its other chunks as extra passages."""
    result = _retriever(store).search("swap file memory", 5, mode)
    paths = [hit.path for hit in result.hits]
    assert len(paths) == len(set(paths))
    swap = next(hit for hit in result.hits if hit.path == "swap.md")
    assert len(swap.passages) >= 1
    assert swap.chunk_id not in {p.chunk_id for p in swap.passages}
    assert [p.score for p in swap.passages] == sorted(
        (p.score for p in swap.passages), reverse=True
    )
    assert all(p.score <= swap.score for p in swap.passages)
    assert "passages" in swap.as_dict()


def test_chunk_results_keep_the_first_release_shape(store) -> None:
    """group=chunk returns chunks (a page may come back several times) without passages."""
    result = _retriever(store).search("swap file memory", 5, SearchMode.KEYWORD, group="chunk")
    paths = [hit.path for hit in result.hits]
    assert paths.count("swap.md") == 3
    assert all(hit.passages == () for hit in result.hits)
    assert set(result.hits[0].as_dict()) == {
        "path",
        "title",
        "chunk_id",
        "score",
        "snippet",
        "heading",
    }


def test_k_counts_pages_not_chunks(store) -> None:
    """k=2 pages gives two different pages even when one page holds the three best chunks."""
    result = _retriever(store).search("swap file memory", 2, SearchMode.KEYWORD)
    assert [hit.path for hit in result.hits] == ["swap.md", "neo4j.md"]


def test_the_reranker_reorders_the_candidates_and_its_scores_are_shown(store) -> None:
    """With a reranker, the candidates come back in its order, with its scores."""
    reranker = ScriptedReranker("heap")
    result = _retriever(store, reranker).search(
        "swap file memory", 3, SearchMode.KEYWORD, group=Grouping.CHUNK
    )
    assert reranker.calls == [4]  # rerank_candidates
    assert result.hits[0].path == "neo4j.md"
    assert result.hits[0].score == 1.0
    assert "rerank" in result.timings_ms


def test_rerank_can_be_turned_off_per_search_and_is_refused_without_a_reranker(store) -> None:
    """rerank=False skips a configured reranker; rerank=True without one is a 400."""
    reranker = ScriptedReranker("heap")
    plain = _retriever(store, reranker).search(
        "swap file memory", 3, SearchMode.KEYWORD, rerank=False
    )
    assert reranker.calls == []
    assert "rerank" not in plain.timings_ms
    with pytest.raises(InputError, match="no reranker is configured"):
        _retriever(store).search("swap", 3, rerank=True)


def test_grouping_keeps_the_order_of_each_pages_best_chunk(store) -> None:
    """Pages rank by their best chunk; a page's later chunks never move it up."""
    records = store.get_chunks([s.chunk_id for s in store.keyword_search("swap heap", 10)])
    found = [(r, float(10 - i)) for i, r in enumerate(records)]
    pages = group_by_page(found)
    assert [best.doc_id for best, _, _ in pages] == list(dict.fromkeys(r.doc_id for r in records))


def test_snippets_leave_out_the_context_line_the_result_already_shows(tmp_path) -> None:
    """A chunk's "Title > Section" line is shown as title and heading, not in the snippet."""
    store = SqliteStore(tmp_path / "data")
    doc = make_document(
        "guide.md", "# Guide\n\n## Restoring\n\nRestore with pg_restore.", title="Guide"
    )
    commit_paragraphs(store, doc, FakeEmbedder(), chunk_document(doc, ChunkingSpec()))
    hit = _retriever(store).search("pg_restore", 1, SearchMode.KEYWORD).hits[0]
    assert store.get_chunks([hit.chunk_id])[0].text.startswith("Guide > Restoring\n")
    assert hit.snippet == "Restore with pg_restore."
    assert hit.heading == "Guide > Restoring"
    store.close()
