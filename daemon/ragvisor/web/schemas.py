"""Response shapes, declared for the OpenAPI document (`/openapi.json`).

Handlers on the hot path return ready-made JSON (`JSONResponse`) rather than letting FastAPI
validate and re-encode each field; these models keep the published schema exact anyway.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class PagePassageModel(BaseModel):
    """Another chunk of a page result."""

    chunk_id: str
    heading: str = Field(description="Heading path of the chunk")
    score: float = Field(description="Its score, on the same scale as the result's")
    snippet: str = Field(description="A one-line excerpt around the first query word found")


class SearchHitModel(BaseModel):
    """One search result."""

    path: str = Field(description="Path of the document, relative to its corpus folder")
    title: str = Field(description="Front-matter title, first heading, or file name")
    chunk_id: str = Field(description="Deterministic id: document, position, text hash")
    score: float = Field(
        description="Cosine similarity (dense), BM25 (keyword), RRF (hybrid); reranked: its score"
    )
    snippet: str = Field(description="A one-line excerpt around the first query word found")
    heading: str = Field(description="Heading path of the chunk, e.g. 'Install > Debian'")
    passages: list[PagePassageModel] | None = Field(
        None,
        description="group=page: the page's other matching chunks, best first (absent if none)",
    )


class PassageText(BaseModel):
    """Answer of `GET /passages/{chunk_id}`: one stored passage, whole."""

    chunk_id: str
    path: str = Field(description="Path of the document, relative to its corpus folder")
    title: str
    heading: str = Field(description="Heading path of the chunk")
    text: str = Field(description="The passage's text as it was embedded")


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
    group: str = Field(description="page: one result per page (default); chunk: per chunk")
    reranked: bool = Field(description="Whether the cross-encoder reordered the candidates")
    results: list[SearchHitModel]
    timings_ms: dict[str, float] = Field(description="Per-phase durations: embed, retrieve, …")
    degraded: DegradedModel | None = Field(
        None, description="Present when the embedder failed and the results are keyword results"
    )


class ErrorResponse(BaseModel):
    """Every error: a message for people and a code for programs."""

    error: str = Field(description="What went wrong, for a person")
    code: str = Field(description="A stable slug for a program: bad_request, overloaded, …")


def _integral(value: object) -> object:
    """JSON Schema counts 15.0 as an integer, so the daemon does too (strict mode would not)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class AskRequest(BaseModel):
    """Body of `POST /ask`."""

    # Strict: `"k": "3"` or `"stream": "yes"` is a 422, as the published schema says, rather
    # than being coerced. The text rules and k's range are checked by `validate_query` (400);
    # `ragvisor.web.openapi` publishes them with the bounds in force.
    model_config = ConfigDict(extra="forbid", strict=True)

    question: str | None = Field(None, description="The question, in plain words")
    k: Annotated[int | None, BeforeValidator(_integral)] = Field(
        None, description="How many passages to retrieve (default ask.default_k)"
    )
    stream: bool = Field(
        False, description="Stream NDJSON events: citations, deltas, then done (or error)"
    )


class PassageModel(BaseModel):
    """A passage the model was given, numbered as in the prompt."""

    n: int = Field(description="The passage's number; the answer cites it as [n]")
    path: str
    title: str
    chunk_id: str
    heading: str
    score: float = Field(description="Retrieval score (cosine similarity)")


class CitationModel(PassageModel):
    """A passage of the answer, and whether the answer cites it."""

    cited: bool | None = Field(description="Whether the answer mentions [n]")


class AnswerModel(BaseModel):
    """What `POST /ask` answers, in both forms (the JSON object, the stream's `done` event)."""

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
    cached: Literal["exact", "semantic"] | None = Field(
        None,
        description="exact or semantic when the answer came from the answer cache ([ask.cache]); "
        "null when it was written for this request",
    )


class AskResponse(AnswerModel):
    """Answer of `POST /ask` as one JSON object."""

    question: str = Field(description="The question as answered (spaces trimmed)")


class CitationsEvent(BaseModel):
    """First line of a stream: the passages, before the answer that may cite them."""

    type: Literal["citations"]
    citations: list[PassageModel]
    dropped: int = Field(description="Passages retrieved but left out: they did not fit")


class DeltaEvent(BaseModel):
    """A piece of the answer's text, as it is generated."""

    type: Literal["delta"]
    text: str


class RetryEvent(BaseModel):
    """The backend failed mid-answer: discard the text so far, the answer starts again."""

    type: Literal["retry"]
    attempt: int
    reason: str


class DoneEvent(AnswerModel):
    """Last line of a complete stream: the whole answer, as the JSON form has it."""

    type: Literal["done"]


class ErrorEvent(ErrorResponse):
    """Last line of a stream that failed after it began (its HTTP status was already sent)."""

    type: Literal["error"]
    status: int = Field(description="The HTTP status this error has as a response")


AskEvent = Annotated[
    CitationsEvent | DeltaEvent | RetryEvent | DoneEvent | ErrorEvent, Field(discriminator="type")
]


class HealthResponse(BaseModel):
    """Answer of `GET /healthz`."""

    status: Literal["ok"]
    version: str


class ReadinessResponse(BaseModel):
    """Answer of `GET /readyz`, ready (200) or not (503)."""

    ready: bool = Field(description="Every check without required: false has ok: true")
    capabilities: dict[str, bool] = Field(
        description="What is served now: search (store and embedder ok; served while the "
        "generator worker still starts) and ask (search and the generator ok)"
    )
    checks: dict[str, dict[str, Any]] = Field(
        description="embedder, store, sync and (unless generator.backend is none) generator; "
        "each with ok and what it found. sync has required: false: a failing sync is reported "
        "(error, consecutive_failures) but search still answers, so the daemon stays ready"
    )


class LatencyHistory(BaseModel):
    """One latency series of `/status/history`: per sample, over the requests answered since
    the sample before."""

    p50: list[float | None] = Field(description="Median in ms; null when there were none")
    max: list[float | None] = Field(description="Slowest in ms; null when there were none")
    count: list[int] = Field(description="How many")


class HistoryResponse(BaseModel):
    """Answer of `GET /status/history`: the ring buffer behind `/ui/status`'s plots, oldest
    sample first; each list has one entry per sample."""

    interval_s: float = Field(description="Seconds between samples (memory.interval_s)")
    window_s: float = Field(description="The span the buffer holds when full (ui.history_s)")
    capacity: int = Field(description="Samples the buffer holds when full")
    t: list[float] = Field(description="Unix time of each sample")
    available_mb: list[float | None] = Field(description="MemAvailable; null without a reading")
    rss_mb: dict[str, list[float | None]] = Field(
        description="RSS per watched process (daemon, worker, ollama, neo4j); null while absent"
    )
    search_ms: LatencyHistory = Field(description="/search requests answered (status < 400)")
    ask_ms: LatencyHistory = Field(description="/ask requests answered (status < 400)")
    first_token_ms: LatencyHistory = Field(description="Time to the first token of answers")


class SyncStarted(BaseModel):
    """Answer of `POST /admin/sync` (202): the sync runs in the background."""

    status: Literal["started"]
    sync: dict[str, Any] = Field(description="The state, as GET /admin/sync answers it")


class SyncFinished(BaseModel):
    """Answer of `POST /admin/sync?wait=true` (200): the sync ran within the request."""

    status: Literal["finished"]
    report: dict[str, Any] = Field(description="The report, as `ragvisor sync --json` prints it")


class DocumentSynced(BaseModel):
    """Answer of `PUT`/`DELETE /documents/{path}`: the document was written (or removed) and
    synced; search finds it (or no longer does) from `searchable_at` (or `removed_at`)."""

    path: str = Field(description="The path, relative to the managed corpus folder")
    action: Literal["new", "changed", "unchanged", "deleted"]
    searchable: bool = Field(
        description="Whether /search finds the document now: false after a DELETE, and after "
        "a PUT whose text the embedding model refused (see skipped)"
    )
    searchable_at: float | None = Field(
        None, description="PUT: unix time the document was committed; searchable from then"
    )
    removed_at: float | None = Field(
        None, description="DELETE: unix time the document left the store and search"
    )
    sync_ms: float = Field(description="The write and the sync of this document, in ms")
    skipped: str | None = Field(None, description="Why a written document is not searchable")
