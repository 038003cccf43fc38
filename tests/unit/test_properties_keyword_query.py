"""Properties of the keyword query builder, checked against a real in-memory FTS5 table.

The table is made with the keyword index's own tokenizer, so "accepted by FTS5" and "finds the
document" mean what they mean in the store.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager

from hypothesis import example, given
from hypothesis import strategies as st

from ragvisor.store.keyword_query import FTS_TOKENIZER, fts_query, index_words, lucene_query

# Everything FTS5's query language gives meaning to, and what SQLite or Python choke on.
SYNTAX = st.sampled_from(
    [
        *('"', "'", "*", "^", ":", "(", ")", "+", "-", "AND", "OR", "NOT", "NEAR", "NEAR("),
        *("text:", "title:", "{text title}:", "\x00", "\ud800", "\udfff", "\ue000", "_", "."),
        *("/", " ", "\n"),
    ]
)
ANY_TEXT = st.lists(st.one_of(st.text(), SYNTAX), max_size=12).map("".join)
# Text as documents hold it: anything but lone surrogates and NUL (files are strict UTF-8, and
# NUL marks binary), including symbols and code points newer than SQLite's Unicode tables.
DOCUMENT_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
NAME = st.from_regex(r"[a-z]{1,6}([_./-][a-z0-9]{1,6}){1,3}", fullmatch=True)
WORDS_AND_NAMES = st.lists(st.one_of(DOCUMENT_TEXT, NAME), min_size=1, max_size=6).map(" ".join)


@contextmanager
def fts_table(*documents: str) -> Iterator[sqlite3.Connection]:
    """An in-memory FTS5 table like chunks_fts holding the documents (rowids from 1)."""
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.execute(f"CREATE VIRTUAL TABLE t USING fts5(text, tokenize = '{FTS_TOKENIZER}')")
        conn.executemany("INSERT INTO t(text) VALUES (?)", [(d,) for d in documents])
        yield conn


def matching(conn: sqlite3.Connection, expression: str) -> set[int]:
    """Rowids the expression matches; raises sqlite3.OperationalError on a syntax error."""
    return {row[0] for row in conn.execute("SELECT rowid FROM t WHERE t MATCH ?", (expression,))}


def has_tokens(conn: sqlite3.Connection, rowid: int) -> bool:
    """Whether FTS5 found any token in the document (``!!!`` has none: nothing can match it)."""
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS v USING fts5vocab(t, 'instance')")
    return conn.execute("SELECT 1 FROM v WHERE doc = ?", (rowid,)).fetchone() is not None


@given(ANY_TEXT)
@example('swap "file" AND (OR')
@example("NEAR(a b, 2) text:x ^y z* -w")
@example("\x00")
@example('"\ud800"')
def test_any_text_gives_expressions_fts5_accepts(text: str) -> None:
    """For any string at all, both expressions run in a real FTS5 MATCH, or are empty because
    the string is blank (NUL and lone surrogates count as blanks)."""
    query = fts_query(text)
    with fts_table("a swap file, sync.lock and kill -9") as conn:
        for expression in (query.match, query.names):
            if expression:
                matching(conn, expression)
    assert bool(query.match) == bool(re.sub(r"[\x00\ud800-\udfff]", " ", text).split())
    assert bool(query.match) or not query.names


@given(ANY_TEXT, st.data())
def test_a_query_led_by_its_rare_phrases_is_fts5_for_any_common_subset(text, data) -> None:
    """Whichever of its phrases are deemed common, the rewritten query runs in FTS5."""
    query = fts_query(text)
    common = set(data.draw(st.lists(st.sampled_from(query.phrases))) if query.phrases else [])
    led = query.led_by_rare(common)
    with fts_table("a swap file, sync.lock and kill -9") as conn:
        if led.match:
            matching(conn, led.match)


@given(WORDS_AND_NAMES)
@example("memory.low_available_mb sync.lock kill-9 roles/swap/main.yml")
@example("0\U0001d800")  # a symbol SQLite's older tables count as a letter: one token to FTS5
@example("a\u0378b")  # unassigned in SQLite's tables: a token character too
def test_a_document_containing_the_query_is_found(text: str) -> None:
    """The text itself, as a document, is found by both expressions whenever it has a token."""
    query = fts_query(text)
    with fts_table(text, "unrelated") as conn:
        assert bool(query.match) == bool(text.split())
        if has_tokens(conn, 1):
            assert 1 in matching(conn, query.match)
        if query.names:
            assert 1 in matching(conn, query.names)


@given(WORDS_AND_NAMES, st.data())
def test_any_single_word_of_the_query_finds_its_document(text: str, data: st.DataObject) -> None:
    """Any word may match: a document holding just one of the query's words is found."""
    query = fts_query(text)
    if not text.split():
        return
    word = data.draw(st.sampled_from(text.split()))
    with fts_table("unrelated", word) as conn:
        if has_tokens(conn, 2):
            assert 2 in matching(conn, query.match)


@given(
    st.from_regex(r"[a-z]{2,8}([_./-][a-z0-9]{1,6}){1,3}", fullmatch=True),
    st.sampled_from([" ", "-", "_", ".", "/", ", "]),
)
def test_names_match_where_their_parts_stand_together(name: str, separator: str) -> None:
    """A name matches its parts adjacent with any separators, not the same parts shuffled;
    any one part alone finds it among the candidates."""
    query = fts_query(name)
    parts = re.split(r"[_./-]", name)
    written = separator.join(parts)
    shuffled = " x ".join(reversed(parts))
    with fts_table(written, shuffled) as conn:
        assert matching(conn, query.names) == {1}
        assert matching(conn, query.match) == {1, 2}
    with fts_table("unrelated", parts[-1]) as conn:
        assert matching(conn, query.match) == {2}


@given(ANY_TEXT)
def test_the_builder_is_deterministic_and_case_insensitive(text: str) -> None:
    """The same text gives the same query, and no phrase appears twice in any letter case."""
    query = fts_query(text)
    assert fts_query(text) == query
    phrases = query.match.split(" OR ") if query.match else []
    assert len({p.lower() for p in phrases}) == len(phrases)


# A Lucene query as lucene_query builds it: quoted phrases, OR-ed, whose words hold none of the
# characters Lucene's query parser gives meaning to.
_WORD = r'[^\s"+\-!(){}\[\]^~*?:\\/&|]+'
_PHRASE = rf'"{_WORD}( {_WORD})*"'
LUCENE_SAFE = re.compile(rf"({_PHRASE}( OR {_PHRASE})*)?")


@given(ANY_TEXT)
@example('swap "file" AND (OR')
@example("\\")
def test_the_lucene_query_holds_nothing_but_quoted_words(text):
    """Whatever is typed, both Lucene expressions are quoted phrases joined by OR (or empty):
    no operator, bracket, wildcard, escape or field survives."""
    query = lucene_query(text)
    assert LUCENE_SAFE.fullmatch(query.match), query
    assert LUCENE_SAFE.fullmatch(query.names), query


@given(WORDS_AND_NAMES)
def test_indexed_words_contain_every_phrase_the_query_builds_from_the_same_text(text):
    """A chunk's indexed words hold each phrase of a query for its own text: a name written in
    a chunk is found by its phrase in Neo4j as it is in SQLite."""
    words = f" {index_words(text).lower()} "
    for phrase in re.findall(r'"([^"]+)"', lucene_query(text).names):
        assert f" {phrase.lower()} " in words
