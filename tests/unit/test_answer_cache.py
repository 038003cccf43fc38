"""The answer cache's rules (ragvisor.core.answer_cache): keys, scope, the semantic match and
its passage guard, LRU and age bounds — pure, with the time passed in."""

from __future__ import annotations

import numpy as np

from ragvisor.core.answer_cache import (
    AnswerCache,
    CacheScope,
    generator_identity,
    normalise_question,
    same_top_passages,
)

SCOPE = CacheScope("7", "minilm:abc:384", "gemma|num_ctx=2048")
ANSWER = {"answer": "Use git branch -d [1].", "citations": []}


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def cache(**settings: float) -> AnswerCache:
    options = {"max_entries": 4, "semantic_threshold": 0.9, **settings}
    return AnswerCache(**options)  # type: ignore[arg-type]


def put(c: AnswerCache, question: str, vector: np.ndarray | None = None, **kw: object) -> bool:
    passages = kw.pop("passage_ids", ("a", "b"))
    now = kw.pop("now", 0.0)
    scope = kw.pop("scope", SCOPE)
    return c.put(
        scope,  # type: ignore[arg-type]
        question,
        4,
        ANSWER,
        vector=vector,
        passage_ids=passages,  # type: ignore[arg-type]
        now=now,  # type: ignore[arg-type]
    )


def test_normalising_ignores_case_spacing_and_trailing_punctuation():
    """Questions that differ only in case, spacing, width or the final mark are one question."""
    assert normalise_question("  How do I  DELETE a branch?? ") == "how do i delete a branch"
    fullwidth = "\uff48\uff4f\uff57 \uff44\uff4f \uff29\u3000delete a branch\uff1f"
    assert normalise_question(fullwidth) == "how do i delete a branch"
    assert normalise_question("what is 3.5") == "what is 3.5"


def test_an_exact_hit_needs_the_same_question_and_k():
    """The normalised question and k find the answer; another k does not."""
    c = cache()
    put(c, "How do I delete a branch?")
    hit = c.exact(SCOPE, "how do i delete a branch", 4, now=1.0)
    assert hit is not None
    assert hit.kind == "exact"
    assert hit.entry.answer == ANSWER
    assert c.exact(SCOPE, "how do i delete a branch", 5, now=1.0) is None


def test_a_new_scope_misses_and_drops_the_old_entries():
    """A re-index (kb_version) or a model change (either fingerprint) misses, and the stale
    entries are dropped and counted as invalidated."""
    for changed in (
        CacheScope("8", SCOPE.embedder, SCOPE.generator),
        CacheScope(SCOPE.kb_version, "nomic:def:768", SCOPE.generator),
        CacheScope(SCOPE.kb_version, SCOPE.embedder, "llama3|num_ctx=2048"),
    ):
        c = cache()
        put(c, "how do I delete a branch", unit(1, 0))
        assert c.exact(changed, "how do I delete a branch", 4, now=1.0) is None
        assert c.semantic(changed, unit(1, 0), 4, ("a", "b"), now=1.0) is None
        assert len(c) == 0
        assert c.counts.invalidated == 1


def test_an_answer_finished_under_an_old_scope_is_not_stored():
    """An answer written while the knowledge base changed is dropped, not cached."""
    c = cache()
    c.exact(CacheScope("8", SCOPE.embedder, SCOPE.generator), "anything", 4, now=0.0)
    assert put(c, "how do I delete a branch") is False
    assert len(c) == 0


def test_a_semantic_hit_needs_the_threshold_and_the_same_best_passage():
    """Close enough and with the same best passage: a hit; close but best answered by another
    passage (a near miss: "local" vs "remote" branch) or too far: none."""
    c = cache(same_top_passages=1)
    put(c, "how do I delete a local branch", unit(1, 0.1), passage_ids=("local", "remote"))
    hit = c.semantic(SCOPE, unit(1, 0.2), 4, ("local", "other"), now=1.0)
    assert hit is not None
    assert hit.kind == "semantic"
    assert hit.similarity > 0.99
    assert c.semantic(SCOPE, unit(1, 0.2), 4, ("remote", "local"), now=1.0) is None
    assert c.semantic(SCOPE, unit(0.3, 1), 4, ("local", "remote"), now=1.0) is None


def test_the_passage_guard_tries_the_next_closest_answer():
    """When the closest answer's passages disagree, a farther one above the threshold whose
    passages agree is the hit."""
    c = cache(same_top_passages=1, semantic_threshold=0.8)
    put(c, "closest", unit(1, 0), passage_ids=("x",))
    put(c, "farther", unit(1, 0.4), passage_ids=("a", "b"))
    hit = c.semantic(SCOPE, unit(1, 0.05), 4, ("a", "c"), now=1.0)
    assert hit is not None
    assert hit.entry.question == "farther"


def test_a_threshold_above_one_turns_semantic_lookups_off():
    """semantic_threshold > 1 never matches, even an identical vector."""
    c = cache(semantic_threshold=1.01)
    put(c, "q", unit(1, 0))
    assert c.semantic(SCOPE, unit(1, 0), 4, ("a", "b"), now=0.0) is None


def test_the_least_recently_used_answer_is_evicted_first():
    """Past max_entries the answer used longest ago goes; a hit counts as a use."""
    c = cache(max_entries=2)
    put(c, "one")
    put(c, "two")
    assert c.exact(SCOPE, "one", 4, now=0.0) is not None
    put(c, "three")
    assert c.exact(SCOPE, "two", 4, now=0.0) is None
    assert c.exact(SCOPE, "one", 4, now=0.0) is not None
    assert len(c) == 2
    assert c.counts.lru == 1


def test_answers_older_than_ttl_expire():
    """An answer older than ttl_s is not served and is counted as expired."""
    c = cache(ttl_s=60.0)
    put(c, "one", now=0.0)
    assert c.exact(SCOPE, "one", 4, now=59.0) is not None
    assert c.exact(SCOPE, "one", 4, now=61.0) is None
    assert c.counts.expired == 1


def test_the_passage_guard_compares_the_best_passages_in_order():
    """The first n passages must match in order; 0 checks nothing; short lists compare whole."""
    assert same_top_passages(["a", "b", "c"], ["a", "x"], 1)
    assert not same_top_passages(["a", "b"], ["b", "a"], 1)
    assert not same_top_passages(["a", "b"], ["a", "x"], 2)
    assert same_top_passages(["a"], ["b"], 0)
    assert same_top_passages([], [], 1)


def test_the_generator_identity_names_model_and_options():
    """Any option that shapes an answer changes the identity; their order does not."""
    one = generator_identity("gemma", {"num_ctx": 2048, "temperature": 0.2})
    assert one == generator_identity("gemma", {"temperature": 0.2, "num_ctx": 2048})
    assert one != generator_identity("gemma", {"num_ctx": 2048, "temperature": 0.7})
    assert one != generator_identity("llama3", {"num_ctx": 2048, "temperature": 0.2})
