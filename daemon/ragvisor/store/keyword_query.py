"""The keyword query builder: any text in, FTS5 ``MATCH`` expressions out that cannot fail.

The keyword index tokenizes with ``unicode61`` — runs of letters, digits and private-use
characters are tokens, everything else separates them — and then Porter-stems each token. A
name like ``memory.low_available_mb``, ``sync.lock``, ``kill-9`` or ``roles/swap`` is therefore
stored as the tokens ``memori low avail mb`` (stemmed): gluing its pieces into one word
(``memorylowavailablemb``) finds nothing, and searching each piece alone cannot tell the place
that writes the name from one that happens to use the same words. An FTS5 *phrase* of the
pieces matches exactly where they stand side by side, in order: where the name is written,
with any separators (``kill -9`` in a document matches the query ``kill-9``).

So each whitespace-separated term of the query becomes:

* a phrase: the term itself as an FTS5 string, which FTS5 tokenizes exactly as it tokenized
  the documents (``"memory.low_available_mb"`` is the phrase ``memory low available mb``; a
  plain word is a phrase of one token);
* when it has several parts, each part on its own too, so a name is found by its pieces
  (``memory.low_available_mb`` also finds a ``[memory]`` table that sets
  ``low_available_mb``).

Everything is OR-ed: any word or part may match, ranked by BM25, as before names were handled.
Terms whose parts are joined by ``_ . - /`` are *names*; their phrases also form a second
expression, so the store can rank chunks that contain a name as written before the rest.

Parts are found with Python's idea of letters and digits, which is close to SQLite's but not
equal: SQLite's Unicode tables are older, and it counts code points they do not know (new
scripts, symbols and emoji) as token characters. The phrases do not depend on that guess —
FTS5 cuts them — so a text always finds a document containing it; only the extra parts can
differ, and a part FTS5 would cut differently merely matches nothing.

Safety: every piece is an FTS5 string (double-quoted, an inner ``"`` doubled), so
``AND``/``OR``/``NOT``/``NEAR``, ``*``, ``^``, ``:`` column filters and parentheses are text
that the tokenizer drops, never syntax. NUL (SQLite's parser would stop there, inside the
string) and lone surrogates (not encodable) are blanked first. A string with no token inside is
a phrase that matches nothing, not an error. Only whitespace gives empty expressions, which the
caller must not run (an empty ``MATCH`` is an FTS5 syntax error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

# How the keyword index tokenizes (chunks_fts in the SQLite schema); the builder relies on it.
FTS_TOKENIZER = "porter unicode61"

# A token as unicode61 sees one with its default categories "L* N* Co": letters and digits
# (Python's \w without "_", which is punctuation to unicode61) and private-use characters.
_PART = re.compile(r"(?:[^\W_]|[\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd])+")
_UNSAFE = re.compile(r"[\x00\ud800-\udfff]")
# Characters that join the parts of an identifier, a dotted key, a flag or a path.
NAME_JOINERS = frozenset("_.-/")


@dataclass(frozen=True, slots=True)
class FtsQuery:
    """A keyword query as FTS5 expressions; each is ``""`` when there is nothing to match.

    ``match`` finds the candidates: every term's phrase and every part of a compound term,
    any of which may match. ``names`` holds only the phrases of the names in the query; a
    chunk matching it contains a name exactly as written (its parts adjacent and in order).
    """

    match: str
    names: str


def fts_query(text: str) -> FtsQuery:
    """Build the FTS5 expressions for free text; total: never raises, never invalid FTS5."""
    # Ordered sets keyed case-insensitively, as the index folds case: a word repeated in the
    # query would otherwise count twice in BM25.
    phrases: dict[str, str] = {}
    names: dict[str, str] = {}
    for term in _UNSAFE.sub(" ", text).split():
        phrase = _fts_string(term)
        phrases.setdefault(term.lower(), phrase)
        parts = _PART.findall(term)
        if len(parts) < 2:
            continue
        if _is_name(term):
            names.setdefault(term.lower(), phrase)
        for part in parts:
            phrases.setdefault(part.lower(), _fts_string(part))
    return FtsQuery(match=" OR ".join(phrases.values()), names=" OR ".join(names.values()))


def index_words(text: str) -> str:
    """Text as the tokens unicode61 would cut it, one space apart: what a store whose full-text
    engine tokenizes differently (Neo4j's Lucene keeps ``max_size`` and ``vm.swappiness``
    whole) indexes, so that both stores find a name by its pieces and by its phrase."""
    return " ".join(_PART.findall(_UNSAFE.sub(" ", text)))


def lucene_query(text: str) -> FtsQuery:
    """The same expressions as :func:`fts_query`, for Lucene over :func:`index_words` text.

    Every phrase is its parts (letters and digits only: nothing Lucene reads as syntax) in
    double quotes, any of them matching; ``AND``, ``~``, ``*``, brackets or a lone ``\\`` typed
    by a user are separators or plain words, never operators.
    """
    phrases: dict[str, str] = {}
    names: dict[str, str] = {}
    for term in _UNSAFE.sub(" ", text).split():
        parts = _PART.findall(term)
        if not parts:
            continue
        phrase = '"' + " ".join(parts) + '"'
        phrases.setdefault(phrase.lower(), phrase)
        if len(parts) < 2:
            continue
        if _is_name(term):
            names.setdefault(phrase.lower(), phrase)
        for part in parts:
            phrases.setdefault(f'"{part.lower()}"', f'"{part}"')
    return FtsQuery(match=" OR ".join(phrases.values()), names=" OR ".join(names.values()))


def _is_name(term: str) -> bool:
    """True when two of the term's parts are joined only by name joiners (``low_available``)."""
    return any(
        set(term[before.end() : after.start()]) <= NAME_JOINERS
        for before, after in pairwise(_PART.finditer(term))
    )


def _fts_string(text: str) -> str:
    """``text`` as an FTS5 string literal: in double quotes, each inner quote doubled."""
    return '"' + text.replace('"', '""') + '"'
