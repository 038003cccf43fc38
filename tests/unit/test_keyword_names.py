"""Keyword and hybrid search find names — dotted keys, snake_case, flags, paths — in a real store.

The corpus is prose that mentions names the way ragvisor's own docs do; the store is a real
SqliteStore on disk (FTS5 with its real tokenizer), the retriever the real one, and the
embedder the deterministic fake (dense ranking only matters for hybrid fusion here).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from ragvisor.core.protocols import Matrix
from ragvisor.core.retrieval import QueryLimits, Retriever, SearchMode
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder
from tests.helpers import commit_paragraphs, make_document

GUARD = (
    "The memory guard samples available memory every second and sheds load once "
    "memory.low_available_mb is crossed three times in a row."
)
LOCK = (
    "A sync holds sync.lock in the data directory; after a kill -9 the lock file stays "
    "behind and the next sync takes it over."
)
ROLE = "The swap file is created by the role in roles/swap_file/tasks/main.yml with fallocate."
# Decoys: the names' words, more often and in shorter text, but never the names as written
# (the memory decoy's BM25 for `memory.low_available_mb` is higher than the guard's).
DECOY_MEMORY = "Available: low. Memory: MB. Low memory, MB available."
DECOY_LOCK = "Kill the sync if it hangs; the lock is released and nine times of ten all is well."
FILLER = (
    "Backups run nightly with pg_dump and keep fourteen days of dumps.",
    "The chat model answers questions from the passages that search returns.",
    "Journal files are vacuumed with journalctl when the disk fills up.",
    "Neo4j keeps its page cache apart from the heap.",
)
DOCUMENTS = {
    "ops/memory.md": (GUARD, DECOY_MEMORY),
    "ops/sync.md": (LOCK, DECOY_LOCK),
    "ops/swap.md": (ROLE,),
    "notes.txt": FILLER,
}

NAMES = [
    ("low_available_mb", GUARD),
    ("memory.low_available_mb", GUARD),
    ("sync.lock", LOCK),
    ("kill-9", LOCK),
    ("roles/swap_file/tasks/main.yml", ROLE),
]
MODES = [SearchMode.KEYWORD, SearchMode.HYBRID]


class SteeredEmbedder(FakeEmbedder):
    """The fake embedder, except that some queries are embedded as another text would be.

    It lets a test make the dense side prefer a chosen chunk, the worst case for fusion.
    """

    def __init__(self, embed_as: dict[str, str]) -> None:
        super().__init__()
        self._embed_as = embed_as

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed each text, or the text it is steered to."""
        return super().embed([self._embed_as.get(text, text) for text in texts])


def _retriever(store: SqliteStore, embedder: FakeEmbedder) -> Retriever:
    for path, paragraphs in DOCUMENTS.items():
        commit_paragraphs(
            store, make_document(path, "\n\n".join(paragraphs), title="Notes"), embedder
        )
    return Retriever(store, embedder, QueryLimits())


@pytest.fixture
def store(tmp_path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture
def retriever(store) -> Retriever:
    return _retriever(store, FakeEmbedder())


def _texts(store: SqliteStore, ids: list[str]) -> list[str]:
    """The chunks' texts, in the order of the ids."""
    by_id = {r.chunk_id: r.text for r in store.get_chunks(ids)}
    return [by_id[i] for i in ids]


def _found(
    store: SqliteStore, retriever: Retriever, query: str, mode: SearchMode, k: int = 5
) -> list[str]:
    """Texts of the chunks a search returns, best first."""
    return _texts(
        store, [hit.chunk_id for hit in retriever.search(query, k, mode, group="chunk").hits]
    )


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize(("name", "expected"), NAMES, ids=[n for n, _ in NAMES])
def test_a_name_finds_the_chunk_that_writes_it_first(store, retriever, name, expected, mode):
    """A query that is a name ranks the chunk containing that name as written first."""
    assert _found(store, retriever, name, mode)[0] == expected


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize(
    ("part", "expected"),
    [("available", GUARD), ("low", GUARD), ("lock", LOCK), ("swap_file", ROLE), ("9", LOCK)],
)
def test_a_part_of_a_name_finds_the_name(store, retriever, part, expected, mode):
    """A piece of a name (`available` of `memory.low_available_mb`) finds the chunk with it."""
    assert expected in _found(store, retriever, part, mode, k=10)


def test_exact_name_outranks_a_chunk_with_a_better_bm25(store):
    """Where the name is written beats where its words are merely denser; marked exact_name."""
    _retriever(store, FakeEmbedder())
    hits = store.keyword_search("memory.low_available_mb", 5)
    assert _texts(store, [h.chunk_id for h in hits]) == [GUARD, DECOY_MEMORY]
    assert [h.exact_name for h in hits] == [True, False]
    assert hits[1].score > hits[0].score  # the decoy's BM25 alone would have put it first


def test_hybrid_keeps_an_exact_name_first_when_dense_prefers_another_chunk(store):
    """Even when the query's vector is closest to a decoy, hybrid ranks the name's chunk first."""
    embedder = SteeredEmbedder({"sync.lock": DECOY_LOCK})
    retriever = _retriever(store, embedder)
    assert _found(store, retriever, "sync.lock", SearchMode.DENSE)[0] == DECOY_LOCK
    assert _found(store, retriever, "sync.lock", SearchMode.HYBRID)[:2] == [LOCK, DECOY_LOCK]


def test_an_ordinary_query_matches_any_word_ranked_by_bm25(store):
    """Plain words still OR together: each chunk with any of them comes back, best BM25 first."""
    _retriever(store, FakeEmbedder())
    hits = store.keyword_search("journalctl heap backups", 10)
    assert sorted(_texts(store, [h.chunk_id for h in hits])) == sorted(FILLER[i] for i in (0, 2, 3))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert not any(h.exact_name for h in hits)


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '"unbalanced',
        "NEAR(swap file, 2)",
        "text: swap",
        "title:Notes",
        "swap*",
        "^swap",
        "AND",
        "OR NOT",
        "(((",
        "-",
        "a\x00b",
        "\ud800swap",
        "\ue000",
        "",
    ],
)
def test_fts5_syntax_in_a_query_is_plain_text(store, query):
    """Quotes, operators, column filters, prefixes, NUL and lone surrogates never break FTS5."""
    _retriever(store, FakeEmbedder())
    store.keyword_search(query, 5)  # raises sqlite3.OperationalError (a 500) if not


def test_column_filter_syntax_searches_for_the_words(store):
    """`text:swap` is the words `text` and `swap`, not a filter on the text column."""
    _retriever(store, FakeEmbedder())
    hits = store.keyword_search("text:swap", 5)
    assert ROLE in _texts(store, [h.chunk_id for h in hits])
