"""Keyword queries leave out what carries no topic: stopwords, and phrases in most chunks.

Question-shaped queries ("how do I copy a file?") matched nearly every chunk through their
function words, and phrases found in a large share of chunks cost most of a search's time
while weighing little in BM25 (bench/retrieval_eval.py measured both).
"""

from __future__ import annotations

import sqlite3

import pytest

from ragvisor.store.keyword_query import (
    COMMON_MIN_CHUNKS,
    FtsQuery,
    common_phrases,
    fts_query,
    topic_terms,
)
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder
from tests.helpers import commit_paragraphs, make_document


def test_stopwords_are_left_out_when_other_words_remain() -> None:
    """ "How do I copy a file?" searches for copy and file; a query of stopwords alone stays."""
    assert topic_terms("How do I copy a file?") == ["copy", "file?"]
    assert topic_terms("what is it") == ["what", "is", "it"]
    assert fts_query("how do I copy a file").phrases == ('"copy"', '"file"')


def test_a_name_made_of_stopwords_is_kept() -> None:
    """A joined name (`do-not`, `is_a`) is a name, not two stopwords."""
    assert topic_terms("do-not is_a the") == ["do-not", "is_a"]


def _query(*phrases: str, names: str = "") -> FtsQuery:
    return FtsQuery(" OR ".join(phrases), names, phrases)


def test_common_phrases_are_those_in_more_than_a_tenth_of_the_chunks() -> None:
    """A phrase in over 10 % of the chunks is common; rare ones and names never are."""
    query = _query('"python"', '"copy"', '"os.path"', names='"os.path"')
    counts = {'"python"': 5000, '"copy"': 40, '"os.path"': 9000}
    assert common_phrases(query, counts, 20_000) == {'"python"'}


def test_when_every_phrase_is_common_the_two_rarest_still_lead() -> None:
    """A query must keep something to rank by: its two rarest phrases."""
    query = _query('"a1"', '"b2"', '"c3"')
    counts = {'"a1"': 9000, '"b2"': 5000, '"c3"': 7000}
    assert common_phrases(query, counts, 10_000) == {'"a1"'}


def test_small_indexes_prune_nothing() -> None:
    """Below COMMON_MIN_CHUNKS chunks scoring everything is cheap, so nothing is left out."""
    query = _query('"python"', '"copy"')
    counts = {'"python"': COMMON_MIN_CHUNKS - 1, '"copy"': 1}
    assert common_phrases(query, counts, COMMON_MIN_CHUNKS - 1) == set()


@pytest.mark.parametrize("text", ["python copy file", "how to use os.path with python", "x"])
def test_a_query_led_by_its_rare_phrases_is_valid_fts5_and_matches_only_rare_rows(text) -> None:
    """The rewritten expression parses, and finds only rows holding a rare phrase."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61')")
    rows = ["python python", "copy of a python file", "os path in python", "nothing here"]
    conn.executemany("INSERT INTO t(body) VALUES (?)", [(r,) for r in rows])
    parsed = fts_query(text)
    led = parsed.led_by_rare({'"python"'})
    found = {r for (r,) in conn.execute("SELECT body FROM t WHERE t MATCH ?", (led.match,))}
    rare = set(parsed.phrases) - {'"python"'}
    if rare:
        assert "python python" not in found
    assert found <= {
        r for (r,) in conn.execute("SELECT body FROM t WHERE t MATCH ?", (parsed.match,))
    }


def test_the_store_ranks_by_the_rare_word_when_a_common_one_is_everywhere(tmp_path) -> None:
    """In a store where every chunk says "python", "python shutil" finds the shutil chunk
    first, and a search for "python" alone still answers."""
    store = SqliteStore(tmp_path / "data")
    paragraphs = [f"python note number {i} about topic{i}" for i in range(COMMON_MIN_CHUNKS)]
    paragraphs.append("python shutil copies files and trees")
    commit_paragraphs(store, make_document("notes.md", "\n\n".join(paragraphs)), FakeEmbedder())
    best = store.keyword_search("python shutil", 3)
    assert "shutil" in store.get_chunks([best[0].chunk_id])[0].text
    assert len(store.keyword_search("python", 5)) == 5
    store.close()
