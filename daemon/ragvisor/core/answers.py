"""Answer assembly: which passages go into the prompt, how the prompt reads, what gets cited.

Pure functions, no I/O. The passages come from the store (never re-embedded); they are packed
into the generator's context by token count, leaving room for the answer, so the backend never
has to cut the prompt silently. Every passage in the prompt is numbered; the model is asked to
cite those numbers, and the response lists exactly the passages the model saw.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ragvisor.core.model import ChatMessage, ChunkRecord

SYSTEM_PROMPT = (
    "You answer questions about a knowledge base. Use only the numbered sources you are given. "
    "Cite the sources you use with their numbers in square brackets, like [1] or [2][3]. "
    "If the sources do not contain the answer, say that you do not know."
)

# Conservative token estimate when the backend has no tokenizer to ask: one token per three
# UTF-8 bytes over-counts English for every common tokenizer (~4 bytes per token), so packing
# by the estimate leaves the prompt short of the context rather than over it.
ESTIMATE_BYTES_PER_TOKEN = 3

_CITATION = re.compile(r"\[(\d{1,3})\]")


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved chunk offered to the generator, numbered as the prompt shows it."""

    number: int
    record: ChunkRecord
    score: float

    def citation(self, cited: bool) -> dict[str, object]:
        """The JSON shape of a citation."""
        return {
            "n": self.number,
            "path": self.record.path,
            "title": self.record.title,
            "chunk_id": self.record.chunk_id,
            "heading": self.record.heading,
            "score": round(self.score, 6),
            "cited": cited,
        }


@dataclass(frozen=True, slots=True)
class PromptPlan:
    """What will be sent: the messages, the passages inside them, and the token arithmetic."""

    messages: tuple[ChatMessage, ...]
    passages: tuple[Passage, ...]
    dropped: int  # retrieved passages left out because they did not fit
    prompt_tokens: int  # our count (or estimate) of the prompt, template margin excluded
    budget_tokens: int  # what the prompt may use: num_ctx - num_predict - margin
    # How the token counts were had: "tokenizer" (the generator's, for this prompt), "stored"
    # (each chunk's count from the sync, framing estimated) or "estimate".
    counted_with: str
    # Of prompt_tokens, how many were counted with the model's tokenizer: a floor the backend's
    # prompt_eval_count must reach unless it cut the prompt (0: nothing to compare with).
    counted_tokens: int

    @property
    def exact_counts(self) -> bool:
        """Whether the whole prompt was counted with the generator's tokenizer."""
        return self.counted_with == "tokenizer"


def estimate_tokens(text: str) -> int:
    """An upper-bound-ish token count for text when no tokenizer is available."""
    return math.ceil(len(text.encode("utf-8")) / ESTIMATE_BYTES_PER_TOKEN) + 1


def render_passage(number: int, record: ChunkRecord) -> str:
    """One source as the prompt shows it: number, title, path, heading, then the text."""
    return passage_frame(number, record) + record.text.strip()


def passage_frame(number: int, record: ChunkRecord) -> str:
    """A source's first line (number, title, path, heading): what a chunk's stored token count
    (of its text alone) leaves out."""
    where = f"{record.path} > {record.heading}" if record.heading else record.path
    return f"[{number}] {record.title} ({where})\n"


def render_question(question: str) -> str:
    """The part of the user message after the sources."""
    return f"Question: {question}\nAnswer, citing the sources you use by their numbers:"


def user_message(rendered_passages: Sequence[str], question: str) -> str:
    """Sources first, question last: the model reads the evidence before the task."""
    sources = "\n\n".join(rendered_passages) if rendered_passages else "(no sources found)"
    return f"Sources:\n\n{sources}\n\n{render_question(question)}"


def pack(costs: Sequence[int], budget: int) -> list[int]:
    """Indexes of the items to keep, in rank order, whose costs fit into the budget together.

    Greedy by rank: an item that does not fit is skipped and lower-ranked, shorter ones may
    still take the room left — relevance order is kept, space is not wasted.
    """
    kept: list[int] = []
    used = 0
    for index, cost in enumerate(costs):
        if used + cost <= budget:
            kept.append(index)
            used += cost
    return kept


def plan_prompt(
    question: str,
    candidates: Sequence[tuple[ChunkRecord, float]],
    costs: PromptCosts,
    *,
    num_ctx: int,
    num_predict: int,
    margin_tokens: int,
) -> PromptPlan:
    """Choose the passages that fit and build the chat messages.

    ``costs.passage_tokens[i]`` is the cost of ``render_passage(i + 1, candidates[i][0])`` plus
    its separator; ``costs.fixed_tokens`` is the cost of the system prompt and the question
    framing (:func:`counted_costs`, :func:`stored_costs`). Passages are renumbered 1..n after
    packing so the model sees a gap-free list.
    """
    budget = max(0, num_ctx - num_predict - margin_tokens)
    kept = pack(costs.passage_tokens, budget - costs.fixed_tokens)
    passages = tuple(
        Passage(number, candidates[index][0], candidates[index][1])
        for number, index in enumerate(kept, start=1)
    )
    rendered = [render_passage(p.number, p.record) for p in passages]
    messages = (
        ChatMessage("system", SYSTEM_PROMPT),
        ChatMessage("user", user_message(rendered, question)),
    )
    return PromptPlan(
        messages=messages,
        passages=passages,
        dropped=len(candidates) - len(passages),
        prompt_tokens=costs.fixed_tokens + sum(costs.passage_tokens[i] for i in kept),
        budget_tokens=budget,
        counted_with=costs.counted_with,
        counted_tokens=costs.fixed_counted + sum(costs.passage_counted[i] for i in kept),
    )


@dataclass(frozen=True, slots=True)
class PromptCosts:
    """Token costs of a prompt's parts, for :func:`plan_prompt`, and how they were had."""

    counted_with: str  # "tokenizer", "stored" or "estimate" (PromptPlan.counted_with)
    fixed_tokens: int
    passage_tokens: list[int]
    fixed_counted: int  # of fixed_tokens, counted with the model's tokenizer
    passage_counted: list[int]  # likewise per passage


def counted_costs(fixed: int, passages: Sequence[int], *, exact: bool) -> PromptCosts:
    """Costs of the fixed texts and each passage (``fixed_texts``, ``passage_texts``), counted
    with the generator's tokenizer (``exact``) or by :func:`estimate_tokens`."""
    passages = list(passages)
    if not exact:
        return PromptCosts("estimate", fixed, passages, 0, [0] * len(passages))
    return PromptCosts("tokenizer", fixed, passages, fixed, passages)


def stored_costs(
    question: str,
    candidates: Sequence[tuple[ChunkRecord, float]],
    stored: Mapping[str, int],
    system_tokens: int | None,
) -> PromptCosts | None:
    """Costs from each chunk text's count stored at sync (``stored``: text hash to tokens) and
    the system prompt's (None: not counted yet); None unless every candidate has its count.

    What the stored counts leave out — each passage's first line and separator, the question's
    framing — is estimated, which over-counts a little: the plan stays within the window.
    """
    if any(record.text_sha256 not in stored for record, _ in candidates):
        return None
    texts = [stored[record.text_sha256] for record, _ in candidates]
    frames = [
        estimate_tokens(passage_frame(rank, record) + "\n\n")
        for rank, (record, _) in enumerate(candidates, 1)
    ]
    system = system_tokens if system_tokens is not None else estimate_tokens(SYSTEM_PROMPT)
    return PromptCosts(
        "stored",
        fixed_tokens=system + estimate_tokens(user_message([], question)),
        passage_tokens=[text + frame for text, frame in zip(texts, frames, strict=True)],
        fixed_counted=system_tokens or 0,
        passage_counted=texts,
    )


def fixed_texts(question: str) -> list[str]:
    """The texts whose token cost does not depend on the passages (for counting)."""
    return [SYSTEM_PROMPT, user_message([], question)]


def passage_texts(candidates: Sequence[tuple[ChunkRecord, float]]) -> list[str]:
    """Each candidate rendered as the prompt would show it (numbered by rank; for counting).

    The number's width barely changes the count, so counting before renumbering is safe; the
    two separator newlines are included in each passage's text.
    """
    return [render_passage(rank, record) + "\n\n" for rank, (record, _) in enumerate(candidates, 1)]


def cited_numbers(answer: str) -> set[int]:
    """The source numbers an answer mentions as [n]."""
    return {int(match) for match in _CITATION.findall(answer)}


def citations(passages: Sequence[Passage], answer: str) -> list[dict[str, object]]:
    """Every passage the model saw, each marked with whether the answer cites it."""
    used = cited_numbers(answer)
    return [p.citation(p.number in used) for p in passages]


# A prompt_eval_count this close to num_ctx means the backend filled the whole window: Ollama
# cuts an over-long prompt to fit and says so only in its own log (ollama #3427).
TRUNCATION_MARGIN_TOKENS = 4
# With exact counts, a backend that read clearly fewer tokens than we sent dropped some.
TRUNCATION_SHORTFALL = 0.9
EXTRACT_CHARS = 600


def prompt_truncated(prompt_eval_count: int | None, plan: PromptPlan, num_ctx: int) -> bool:
    """Whether the backend's prompt_eval_count shows it cut the prompt.

    A missing count means "unknown" (False). The shortfall rule compares with the part of the
    prompt counted with the model's own tokenizer (all of it, or the stored counts of the
    passages): an estimate over-counts on purpose, so it is never compared with.
    """
    if prompt_eval_count is None or prompt_eval_count <= 0:
        return False
    if prompt_eval_count >= num_ctx - TRUNCATION_MARGIN_TOKENS:
        return True
    return prompt_eval_count < TRUNCATION_SHORTFALL * plan.counted_tokens


def extractive_answer(passages: Sequence[Passage], reason: str) -> str:
    """The answer without a generator: the best passages themselves, numbered like citations.

    Served when the generator is down, its circuit is open or memory is short — the reader gets
    the evidence a generated answer would have been built from, and the reason.
    """
    if not passages:
        return f"No answer could be generated ({reason}) and no stored passage matches."
    parts = [f"No answer could be generated ({reason}). The most relevant passages:"]
    for passage in passages:
        text = " ".join(passage.record.text.split())
        if len(text) > EXTRACT_CHARS:
            text = text[:EXTRACT_CHARS].rsplit(" ", 1)[0] + " …"
        parts.append(f"[{passage.number}] {passage.record.title}: {text}")
    return "\n\n".join(parts)
