"""Request bodies of the Ollama API subset the worker serves, validated with pydantic.

Unknown fields are ignored, as Ollama's Go decoder ignores them: the official clients send
fields we do not use (`suffix`, `template`, `tools`, `images`, `think`, ...). Options we do not
implement are ignored the same way.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from ragvisor.llm.worker.engine import Sampling

DEFAULT_NUM_PREDICT = 128

# Strict: Ollama refuses `true` as a keep-alive; lax pydantic would read it as 1 second.
KeepAliveValue = StrictInt | StrictFloat | StrictStr | None


def _stop_list(value: Any) -> Any:
    """Ollama accepts `stop` as one string or a list of strings."""
    return [value] if isinstance(value, str) else value


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Options(_Body):
    """The `options` object: the runtime parameters we honour."""

    num_ctx: int | None = Field(None, ge=1)
    num_predict: int | None = None
    num_keep: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0)
    top_k: int | None = None
    top_p: float | None = Field(None, ge=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    stop: Annotated[list[str] | None, BeforeValidator(_stop_list)] = None
    repeat_penalty: float | None = Field(None, ge=0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def num_predict_or_default(self) -> int:
        """`num_predict`, or 128 when the request names none (a hard cap on output tokens)."""
        return DEFAULT_NUM_PREDICT if self.num_predict is None else self.num_predict

    def sampling(self, *, max_tokens: int, extra_stop: tuple[str, ...] = ()) -> Sampling:
        """These options as llama.cpp sampling settings; unset ones take Ollama's defaults."""
        base = Sampling()
        seed = self.seed if self.seed is not None and self.seed >= 0 else None
        return Sampling(
            max_tokens=max_tokens,
            temperature=base.temperature if self.temperature is None else self.temperature,
            top_k=base.top_k if self.top_k is None else self.top_k,
            top_p=base.top_p if self.top_p is None else self.top_p,
            min_p=base.min_p if self.min_p is None else self.min_p,
            repeat_penalty=base.repeat_penalty
            if self.repeat_penalty is None
            else self.repeat_penalty,
            presence_penalty=base.presence_penalty
            if self.presence_penalty is None
            else self.presence_penalty,
            frequency_penalty=base.frequency_penalty
            if self.frequency_penalty is None
            else self.frequency_penalty,
            seed=seed,
            stop=(*extra_stop, *(self.stop or ())),
        )


class ChatMessage(_Body):
    """One message of `/api/chat` (images and tool calls are accepted and ignored).

    A message without a role is accepted, as Ollama accepts it; it is written as the user's.
    """

    role: str = ""
    content: str = ""


class _ModelRequest(_Body):
    model: str = ""
    keep_alive: KeepAliveValue = None
    options: Options = Options()


class ChatRequest(_ModelRequest):
    """`POST /api/chat`: an empty `messages` list loads (or, with keep_alive 0, unloads)."""

    messages: list[ChatMessage] | None = None
    stream: bool = True


class GenerateRequest(_ModelRequest):
    """`POST /api/generate`: no prompt loads (or, with keep_alive 0, unloads)."""

    prompt: str | None = None
    system: str | None = None
    raw: bool = False
    stream: bool = True


class EmbedRequest(_ModelRequest):
    """`POST /api/embed`."""

    input: str | list[str] = ""
    truncate: bool = True
    dimensions: int | None = Field(None, ge=1)


class ShowRequest(_Body):
    """`POST /api/show`; old clients send `name` instead of `model`."""

    model: str = ""
    name: str = ""


class TokenCountRequest(_Body):
    """`POST /api/ragvisor/token_count` (our extension)."""

    model: str = ""
    texts: list[str]
