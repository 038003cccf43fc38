"""`GET /passages/{chunk_id}`: one stored passage, whole — what a citation or a search result
points at.

Why: `/search` returns a one-line snippet and `/ask` numbered citations by chunk id; a reader
who wants to see what the answer leaned on opens the passage (the search page's citation cards
do). A chunk id names one version of a passage (it holds the text's hash), so an id handed out
before the document changed answers 404 rather than a different text.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ragvisor.errors import PassageNotFound, StoreError
from ragvisor.runtime.services import Services
from ragvisor.web.openapi import error_responses
from ragvisor.web.schemas import PassageText

# document id : position : text hash (core.hashing.chunk_id), hex and digits only.
CHUNK_ID_PATTERN = r"^[0-9a-f]{1,64}:[0-9]{1,9}:[0-9a-f]{1,64}$"


def add_passage_route(app: FastAPI, services: Services) -> None:
    """`GET /passages/{chunk_id}`, bounded by embedder.deadlines.request_s like /search."""

    @app.get(
        "/passages/{chunk_id}",
        summary="One stored passage, whole, by its chunk id",
        response_model=PassageText,
        responses=error_responses(404, 422, 503),
    )
    async def passage(
        chunk_id: str = PathParam(
            pattern=CHUNK_ID_PATTERN, description="As /search and /ask give it"
        ),
    ) -> JSONResponse:
        limit_s = services.settings.embedder.deadlines.request_s
        try:
            async with asyncio.timeout(limit_s):
                records = await run_in_threadpool(services.store.get_chunks, [chunk_id])
        except TimeoutError as exc:
            raise StoreError(
                f"the store did not answer within {limit_s:g} s (embedder.deadlines.request_s)"
            ) from exc
        if not records:
            raise PassageNotFound(f"no stored passage has the id {chunk_id}")
        record = records[0]
        body: dict[str, Any] = {
            "chunk_id": record.chunk_id,
            "path": record.path,
            "title": record.title,
            "heading": record.heading,
            "text": record.text,
        }
        return JSONResponse(body)
