"""The Neo4j store against the real engine, beyond the store contract: what a user types into a
keyword search never reaches Lucene as syntax."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ragvisor.store.keyword_query import lucene_query
from ragvisor.store.neo4j_store import Neo4jStore
from ragvisor.testing import FakeEmbedder
from tests.helpers import commit_paragraphs, make_document
from tests.infra.neo4j_engine import USER, Engine

HOSTILE = [
    '"',
    '"unbalanced',
    "~",
    "swap~2",
    "AND",
    "OR NOT",
    "*",
    "sw*p",
    "(",
    "[swap TO",
    "{",
    "\\",
    "swap\\",
    "title:swap",
    "+swap -file",
    "a && b || c",
    "/regex/",
    "^2",
    "ünïcode ☃ 漢字",
    "",
    "   ",
]


@pytest.fixture
def store(neo4j_engine: Engine) -> Iterator[Neo4jStore]:
    """An emptied database on the run's real Neo4j, with two notes committed."""
    neo4j_engine.wipe()
    s = Neo4jStore(neo4j_engine.uri, user=USER, password=neo4j_engine.password)
    embedder = FakeEmbedder()
    commit_paragraphs(s, make_document("ops/swap.md", "the swap file and title notes"), embedder)
    commit_paragraphs(s, make_document("ops/and.md", "AND or NOT are words too"), embedder)
    yield s
    s.close()


@pytest.mark.parametrize("query", HOSTILE)
def test_lucene_syntax_in_a_query_is_searched_as_words(store: Neo4jStore, query: str):
    """Quotes, fuzzy and wildcard marks, operators, brackets and a lone backslash never fail."""
    hits = store.keyword_search(query, 5)
    assert isinstance(hits, list)


def test_operator_words_are_words(store: Neo4jStore):
    """`swap AND NOT file` still finds the note about the swap file: AND and NOT typed by a
    user are words (English stop words, in fact), never Lucene's operators."""
    hits = store.keyword_search("swap AND NOT file", 5)
    records = store.get_chunks([h.chunk_id for h in hits])
    assert [r.path for r in records] == ["ops/swap.md"]


def test_the_query_built_quotes_every_term_and_keeps_only_letters_and_digits():
    """Each term is a quoted phrase of its letters and digits; nothing of the user's
    punctuation survives as an operator (AND and OR typed by a user are stop words, left out
    when the query has other words); a name's phrase is also a name query."""
    assert lucene_query('swap "file" AND (OR').match == '"swap" OR "file"'
    assert lucene_query("AND OR").match == '"AND" OR "OR"'
    assert lucene_query("!!! \\ ~").match == ""
    named = lucene_query("vm.swappiness")
    assert named.match == '"vm swappiness" OR "vm" OR "swappiness"'
    assert named.names == '"vm swappiness"'
