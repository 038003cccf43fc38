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

Words that carry no topic (``how``, ``do``, ``i``, ``the``: `STOPWORDS`) are left out when the
query has any other word: people type questions ("how do I undo the last commit?"), and those
words match nearly every chunk — they add nothing to BM25 but time (the index walks their long
posting lists: at 18k chunks they made keyword search 3 times slower than dense) and, fused into
hybrid results, noise. A query of nothing but such words keeps them.
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

# English function words and question words: in a natural-language query they match almost
# every chunk. Compared case-insensitively with whole terms (a name like ``do-not`` stays).
_STOPWORD_TEXT = """
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had
has have having he her here hers herself him himself his how i if in into is it its itself just
me more most my myself no nor not now of off on once only or other our ours ourselves out over
own same she should so some such than that the their theirs them themselves then there these
they this those through to too under until up very was we were what when where which while who
whom why will with would you your yours yourself yourselves
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True, slots=True)
class FtsQuery:
    """A keyword query as FTS5 expressions; each is ``""`` when there is nothing to match.

    ``match`` finds the candidates: every term's phrase and every part of a compound term,
    any of which may match. ``names`` holds only the phrases of the names in the query; a
    chunk matching it contains a name exactly as written (its parts adjacent and in order).
    """

    match: str
    names: str
    # The pieces `match` OR-s together, in query order; names are among them.
    phrases: tuple[str, ...] = ()

    def led_by_rare(self, common: set[str]) -> FtsQuery:
        """The query matching only chunks with one of its rare phrases, still scored by all:
        ``rare1 OR rare2 OR (common1 OR common2) AND (rare1 OR rare2)``. The common phrases
        then cost no BM25 scoring of the many chunks only they match, and still add their
        weight where they stand beside a rare one (the rare phrases count twice there)."""
        rare = [p for p in self.phrases if p not in common]
        frequent = " OR ".join(p for p in self.phrases if p in common)
        if not rare or not frequent:
            return self
        either = " OR ".join(rare)
        return FtsQuery(f"{either} OR (({frequent}) AND ({either}))", self.names, self.phrases)


# A phrase found in more than this share of the chunks leads no keyword search
# (`common_phrases`, `FtsQuery.led_by_rare`): its BM25 weight is small, but scoring every chunk it
# matches was most of a keyword search's time. On 32k chunks of Python, Django and git docs and
# 113 FAQ questions: 15.6 -> 8.1 ms median per query (busy box); recall@5 0.363 -> 0.345,
# MRR@5 0.236 -> 0.245 (bench/retrieval_eval.py).
COMMON_SHARE = 0.1
# ... unless the index is this small, where every chunk is cheap to score.
COMMON_MIN_CHUNKS = 2000


def common_phrases(query: FtsQuery, counts: dict[str, int], total: int) -> set[str]:
    """The query's phrases that match too many chunks to be worth scoring: those in more than
    `COMMON_SHARE` of `total` chunks. Names are never common, and the two rarest phrases stay
    when every phrase is common, so a query always keeps something to rank by.
    """
    if total < COMMON_MIN_CHUNKS:
        return set()
    names = set(query.names.split(" OR ")) if query.names else set()
    common = {
        p for p in query.phrases if p not in names and counts.get(p, 0) > COMMON_SHARE * total
    }
    if common and common >= set(query.phrases):
        rarest = sorted(query.phrases, key=lambda p: counts.get(p, 0))[:2]
        common -= set(rarest)
    return common


def fts_query(text: str) -> FtsQuery:
    """Build the FTS5 expressions for free text; total: never raises, never invalid FTS5."""
    # Ordered sets keyed case-insensitively, as the index folds case: a word repeated in the
    # query would otherwise count twice in BM25.
    phrases: dict[str, str] = {}
    names: dict[str, str] = {}
    for term in topic_terms(_UNSAFE.sub(" ", text)):
        phrase = _fts_string(term)
        phrases.setdefault(term.lower(), phrase)
        parts = _PART.findall(term)
        if len(parts) < 2:
            continue
        if _is_name(term):
            names.setdefault(term.lower(), phrase)
        for part in parts:
            phrases.setdefault(part.lower(), _fts_string(part))
    return FtsQuery(
        match=" OR ".join(phrases.values()),
        names=" OR ".join(names.values()),
        phrases=tuple(phrases.values()),
    )


def topic_terms(text: str) -> list[str]:
    """The query's whitespace-separated terms without `STOPWORDS` (trailing punctuation such as
    ``?`` ignored when comparing), or all of them when nothing else is left."""
    terms = text.split()
    kept = [t for t in terms if t.lower().strip(_TRAILING) not in STOPWORDS]
    return kept or terms


_TRAILING = "?!.,;:'\"()[]{}"


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
    for term in topic_terms(_UNSAFE.sub(" ", text)):
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
