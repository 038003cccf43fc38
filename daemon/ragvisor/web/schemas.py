"""Response shapes, declared for the OpenAPI document (`/openapi.json`).

Handlers on the hot path return ready-made JSON (`JSONResponse`) rather than letting FastAPI
validate and re-encode each field; these models keep the published schema exact anyway.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SearchHitModel(BaseModel):
    """One search result."""

    path: str = Field(description="Path of the document, relative to its corpus folder")
    title: str = Field(description="Front-matter title, first heading, or file name")
    chunk_id: str = Field(description="Deterministic id: document, position, text hash")
    score: float = Field(description="Cosine similarity (dense), BM25 (keyword) or RRF (hybrid)")
    snippet: str = Field(description="A one-line excerpt around the first query word found")
    heading: str = Field(description="Heading path of the chunk, e.g. 'Install > Debian'")


class DegradedModel(BaseModel):
    """Why a response was served without a backend, and what was served instead."""

    reason: str
    answer: str | None = Field(
        None, description="/ask: extractive (passages, no generator) or generated"
    )
    search: str | None = Field(None, description="/ask: why retrieval fell back to keywords")


class SearchResponse(BaseModel):
    """Answer of `GET /search`."""

    query: str
    mode: str
    results: list[SearchHitModel]
    timings_ms: dict[str, float] = Field(description="Per-phase durations: embed, retrieve, …")
    degraded: DegradedModel | None = Field(
        None, description="Present when the embedder failed and the results are keyword results"
    )


class ErrorResponse(BaseModel):
    """Every error: a message for people and a code for programs."""

    error: str
    code: str


class AskRequest(BaseModel):
    """Body of `POST /ask`."""

    model_config = ConfigDict(extra="forbid")

    question: str | None = Field(None, description="The question, in plain words")
    k: int | None = Field(None, description="How many passages to retrieve (default ask.default_k)")
    stream: bool = Field(
        False, description="Stream NDJSON events: citations, deltas, then done (or error)"
    )


class CitationModel(BaseModel):
    """A passage the model was given, numbered as in the prompt."""

    n: int = Field(description="The passage's number; the answer cites it as [n]")
    path: str
    title: str
    chunk_id: str
    heading: str
    score: float = Field(description="Retrieval score (cosine similarity)")
    cited: bool | None = Field(description="Whether the answer mentions [n]")


class AskResponse(BaseModel):
    """Answer of `POST /ask` (and the `done` event of a stream, plus `"type": "done"`)."""

    question: str
    answer: str
    citations: list[CitationModel]
    model: str | None = Field(description="The generator's model; null for an extractive answer")
    done_reason: str | None = Field(
        description="stop, length when num_predict cut it, degraded for an extractive answer"
    )
    truncated: bool = Field(
        False, description="The backend's prompt_eval_count shows it cut the prompt"
    )
    degraded: DegradedModel | None = Field(
        None, description="Present when the answer was served without the generator"
    )
    tokens: dict[str, int | float | str | None] = Field(
        description="prompt (as the backend counted it), prompt_planned, prompt_budget, "
        "counted_with, completion, per_second"
    )
    timings_ms: dict[str, float] = Field(
        description="embed, retrieve, fetch, pack, first_token, load, prompt_eval, generation, "
        "generate, total"
    )
