"""Answer assembly: packing by token count, prompt order, citations."""

from __future__ import annotations

import pytest

from ragvisor.core.answers import (
    SYSTEM_PROMPT,
    Passage,
    PromptPlan,
    citations,
    cited_numbers,
    counted_costs,
    estimate_tokens,
    extractive_answer,
    fixed_texts,
    pack,
    passage_texts,
    plan_prompt,
    prompt_truncated,
)
from ragvisor.core.hashing import sha256_text
from ragvisor.core.model import ChunkRecord


def record(n: int, text: str) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=f"doc{n}:0:abc",
        doc_id=f"doc{n}",
        path=f"notes/n{n}.md",
        title=f"Note {n}",
        heading="Section",
        text=text,
        corpus_root="/corpus",
        position=0,
        text_sha256=sha256_text(text),
    )


def test_pack_keeps_rank_order_and_fills_gaps_with_shorter_passages():
    """A passage too big for the room left is skipped; a later, shorter one may still fit."""
    assert pack([40, 50, 30, 10], budget=90) == [0, 1]
    assert pack([40, 60, 30, 10], budget=90) == [0, 2, 3]
    assert pack([100], budget=99) == []
    assert pack([], budget=10) == []


def test_plan_puts_numbered_sources_before_the_question():
    """The prompt numbers its sources and puts them before the question."""
    candidates = [(record(1, "Swap is a file."), 0.9), (record(2, "Bread needs flour."), 0.5)]
    plan = plan_prompt(
        "what is swap?",
        candidates,
        counted_costs(50, [10, 10], exact=True),
        num_ctx=2048,
        num_predict=256,
        margin_tokens=48,
    )
    system, user = plan.messages
    assert system.role == "system"
    assert system.content == SYSTEM_PROMPT
    assert user.role == "user"
    assert user.content.index("[1] Note 1 (notes/n1.md > Section)") < user.content.index(
        "[2] Note 2"
    )
    assert user.content.index("Swap is a file.") < user.content.index("Question: what is swap?")
    assert [p.number for p in plan.passages] == [1, 2]
    assert plan.dropped == 0
    assert plan.prompt_tokens == 70
    assert plan.budget_tokens == 2048 - 256 - 48


def test_plan_drops_what_does_not_fit_and_renumbers_without_gaps():
    """Under a small num_ctx only the passages that fit are sent, numbered 1..n."""
    candidates = [(record(i, "x" * 10), 1.0 - i / 10) for i in range(1, 5)]
    plan = plan_prompt(
        "q",
        candidates,
        counted_costs(100, [150, 400, 100, 50], exact=False),
        num_ctx=512,
        num_predict=64,
        margin_tokens=48,
    )
    # budget 400, minus 100 fixed = 300: passages 1 (150), 3 (100) and 4 (50) fit; 2 does not.
    assert [p.record.doc_id for p in plan.passages] == ["doc1", "doc3", "doc4"]
    assert [p.number for p in plan.passages] == [1, 2, 3]
    assert plan.dropped == 1
    assert plan.prompt_tokens == 400
    assert plan.prompt_tokens <= plan.budget_tokens
    assert "[3] Note 4" in plan.messages[1].content


def test_no_passage_fits_still_asks_with_no_sources():
    """When no passage fits the context, the question is still asked, with no sources."""
    plan = plan_prompt(
        "q",
        [(record(1, "long"), 0.9)],
        counted_costs(100, [10_000], exact=True),
        num_ctx=512,
        num_predict=64,
        margin_tokens=0,
    )
    assert plan.passages == ()
    assert "(no sources found)" in plan.messages[1].content


def test_texts_for_counting_match_what_is_sent():
    """The texts counted for the budget are exactly the texts the prompt sends."""
    candidates = [(record(1, "Swap is a file."), 0.9)]
    texts = passage_texts(candidates)
    plan = plan_prompt(
        "q",
        candidates,
        counted_costs(1, [1], exact=True),
        num_ctx=2048,
        num_predict=256,
        margin_tokens=0,
    )
    assert texts[0].strip() in plan.messages[1].content
    assert fixed_texts("q")[0] == plan.messages[0].content


def test_estimate_over_counts_english():
    """~4 bytes per token is typical; the estimate assumes 3, so it errs on the safe side."""
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert estimate_tokens(text) >= len(text) / 4
    assert estimate_tokens("") == 1


def test_citations_mark_what_the_answer_cites():
    """Citations mark the sources the answer cites by number, and only those."""
    candidates = [(record(i, "t"), 0.5) for i in (1, 2, 3)]
    plan = plan_prompt(
        "q",
        candidates,
        counted_costs(1, [1, 1, 1], exact=True),
        num_ctx=2048,
        num_predict=256,
        margin_tokens=0,
    )
    answer = "Use a swap file [1][3]. See also [9]."
    assert cited_numbers(answer) == {1, 3, 9}
    marked = citations(plan.passages, answer)
    assert [(c["n"], c["cited"]) for c in marked] == [(1, True), (2, False), (3, True)]
    assert set(marked[0]) >= {"path", "title", "chunk_id"}
    assert marked[0]["chunk_id"] == "doc1:0:abc"


def _plan(prompt_tokens: int, exact: bool) -> PromptPlan:
    return PromptPlan(
        messages=(),
        passages=(),
        dropped=0,
        prompt_tokens=prompt_tokens,
        budget_tokens=2000,
        counted_with="tokenizer" if exact else "estimate",
        counted_tokens=prompt_tokens if exact else 0,
    )


@pytest.mark.parametrize(
    ("prompt_eval_count", "planned", "exact", "truncated"),
    [
        (None, 500, True, False),  # the backend did not say: unknown, not truncated
        (0, 500, True, False),
        (500, 500, True, False),
        (2048, 500, True, True),  # the whole window used: Ollama cut the prompt to fit
        (2045, 3000, False, True),
        (400, 500, True, True),  # exact counts and clearly fewer tokens read: cut
        (400, 500, False, False),  # an estimate over-counts on purpose: no verdict
        (460, 500, True, False),  # within 10 %: tokenizer differences, not a cut
    ],
)
def test_prompt_truncated(prompt_eval_count, planned, exact, truncated):
    """Truncated: the window is full, or (exact counts) clearly fewer tokens read than planned."""
    assert prompt_truncated(prompt_eval_count, _plan(planned, exact), 2048) is truncated


def test_extractive_answer_quotes_the_passages_and_says_why():
    """An extractive answer quotes the passages, shortened, with their sources and the reason."""
    record = ChunkRecord(
        chunk_id="c1",
        doc_id="d1",
        position=0,
        text="Set vm.swappiness to 10. " * 60,
        text_sha256="h",
        path="ops/swap.md",
        title="Swap",
        heading="Swap",
        corpus_root="/notes",
    )
    text = extractive_answer([Passage(1, record, 0.9)], "the generator is restarting")
    assert text.startswith("No answer could be generated (the generator is restarting).")
    assert "[1] Swap: Set vm.swappiness to 10." in text
    assert len(text) < 800  # long passages are cut at a word
    assert "No answer" in extractive_answer([], "memory short")
