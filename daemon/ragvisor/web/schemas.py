"""Response shapes, declared for the OpenAPI document (`/openapi.json`).

Handlers on the hot path return ready-made JSON (`JSONResponse`) rather than letting FastAPI
validate and re-encode each field; these models keep the published schema exact anyway.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class SearchHitModel(BaseModel):
    """One search result."""

    path: str = Field(description="Path of the document, relative to its corpus folder")
    title: str = Field(description="Front-matter title, first heading, or file name")
    chunk_id: str = Field(description="Deterministic id: document, position, text hash")
    score: float = Field(description="Cosine similarity (dense), BM25 (keyword) or RRF (hybrid)")
    snippet: str = Field(description="A one-line excerpt around the first query word found")
    heading: str = Field(description="Heading path of the chunk, e.g. 'Install > Debian'")


class SearchResponse(BaseModel):
    """Answer of `GET /search`."""

    query: str
    mode: str
    results: list[SearchHitModel]
    timings_ms: dict[str, float] = Field(description="Per-phase durations: embed, retrieve, …")


class ErrorResponse(BaseModel):
    """Every error: a message for people and a code for programs."""

    error: str
    code: str
