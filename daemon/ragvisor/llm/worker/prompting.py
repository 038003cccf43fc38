"""Turning requests into prompt text and fitting prompt tokens into the context. Pure functions.

The pinned Gemma 3 270M is a base model without a chat template, so chat messages are rendered
as a plain transcript that a base model continues naturally::

    <system text>

    User: <first user message>
    Assistant: <assistant reply>
    User: <next user message>
    Assistant:

System messages become paragraphs at their place; any other role is written as its capitalised
name (``Tool: ...``). The transcript ends with ``Assistant:`` (or, when the last message is the
assistant's own, with that message unterminated, so the model continues it as Ollama does).
Generation stops at the next ``\\nUser:`` line: a base model happily writes both sides of a
conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

USER_TURN_STOP = "\nUser:"
DEFAULT_NUM_KEEP = 4  # Ollama's default num_keep: leading tokens kept when a prompt is cut


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """Prompt text plus the stop strings its format needs."""

    text: str
    stop: tuple[str, ...] = ()


def render_chat(messages: Sequence[tuple[str, str]]) -> RenderedPrompt:
    """Render `(role, content)` pairs as the plain transcript described above."""
    parts: list[str] = []
    pending_system: list[str] = []
    last_index = len(messages) - 1
    ends_with_assistant = False
    for index, (role, content) in enumerate(messages):
        if role == "system":
            pending_system.append(content.strip())
            continue
        if pending_system:
            parts.append("\n\n".join(pending_system) + "\n\n")
            pending_system = []
        speaker = "Assistant" if role == "assistant" else role.capitalize() or "User"
        if index == last_index and role == "assistant":
            parts.append(f"{speaker}: {content}")
            ends_with_assistant = True
        else:
            parts.append(f"{speaker}: {content.strip()}\n")
    if pending_system:
        parts.append("\n\n".join(pending_system) + "\n\n")
    if not ends_with_assistant:
        parts.append("Assistant:")
    return RenderedPrompt(text="".join(parts), stop=(USER_TURN_STOP,))


def render_generate(prompt: str, system: str | None, *, raw: bool) -> RenderedPrompt:
    """`/api/generate`'s prompt: as is when `raw`, else the system text as a first paragraph.

    No stop strings: a completion prompt has no turns to end.
    """
    if raw or not system:
        return RenderedPrompt(text=prompt)
    return RenderedPrompt(text=f"{system.strip()}\n\n{prompt}")


def prompt_budget(num_ctx: int, num_predict: int, default_reserve: int = 128) -> int:
    """Tokens the prompt may take so that the answer's `num_predict` tokens still fit.

    At most half the context is reserved for the answer, so a `num_predict` close to or above
    `num_ctx` cannot squeeze the prompt to nothing; an unbounded `num_predict` (negative, "until
    the context is full") reserves `default_reserve` tokens.
    """
    reserve = num_predict if num_predict > 0 else default_reserve
    reserve = max(1, min(reserve, num_ctx // 2))
    return num_ctx - reserve


def truncate_tokens(tokens: Sequence[int], limit: int, keep: int = DEFAULT_NUM_KEEP) -> list[int]:
    """Keep the first `keep` tokens and the tail so that at most `limit` remain.

    This is Ollama's rule for an over-long prompt (`llm/llama_server.go`): the beginning (BOS
    and the start of the instructions) and the end (the question) matter most, the middle goes.
    """
    if len(tokens) <= limit:
        return list(tokens)
    keep = max(0, min(keep, limit - 1))
    tail = limit - keep
    return [*tokens[:keep], *tokens[len(tokens) - tail :]]
