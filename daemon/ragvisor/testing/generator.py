"""A fake of the `Generator` protocol: answers a test writes, streamed piece by piece."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from ragvisor.core.model import ChatMessage, GenerationStats, Retrying, TextDelta


class FakeGenerator:
    """Streams `answer` word by word, then stats as Ollama reports them.

    `fail_with` is raised instead of answering (as a supervised generator raises once its
    retries are spent). Prompts are counted at four characters a token unless `count_tokens`
    should say "cannot tell" (`counts_tokens=False`, like a real Ollama). Every request's
    messages are kept in `requests`.
    """

    def __init__(
        self,
        answer: str = "It is in the notes [1].",
        *,
        model: str = "fake-chat",
        num_ctx: int = 2048,
        num_predict: int = 256,
        fail_with: BaseException | None = None,
        counts_tokens: bool = True,
    ) -> None:
        self.answer = answer
        self._model = model
        self._num_ctx = num_ctx
        self._num_predict = num_predict
        self.fail_with = fail_with
        self.counts_tokens = counts_tokens
        self.requests: list[list[ChatMessage]] = []
        self.count_calls = 0  # round trips to the "tokenizer"

    @property
    def model(self) -> str:
        """The model name sent with every request."""
        return self._model

    @property
    def num_ctx(self) -> int:
        """Context window, in tokens."""
        return self._num_ctx

    @property
    def num_predict(self) -> int:
        """Most tokens an answer may have."""
        return self._num_predict

    async def chat(
        self, messages: Sequence[ChatMessage], *, until: float | None = None
    ) -> AsyncGenerator[TextDelta | GenerationStats | Retrying, None]:
        """The scripted answer, one word at a time, then the final stats."""
        self.requests.append(list(messages))
        if self.fail_with is not None:
            raise self.fail_with
        words = self.answer.split(" ")
        for index, word in enumerate(words):
            yield TextDelta(word if index == 0 else " " + word)
        prompt = sum(len(m.content) for m in messages) // 4
        yield GenerationStats(
            done_reason="stop", prompt_eval_count=prompt, eval_count=len(words), total_ns=1
        )

    async def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Four characters a token, or None when this fake plays a backend that cannot count."""
        self.count_calls += 1
        if not self.counts_tokens:
            return None
        return [max(1, len(text) // 4) for text in texts]
