"""`GET /search`: dense, keyword or hybrid top-k, in the search lane."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ragvisor.asgi.request_log import note
from ragvisor.core.deadline import by_deadline, request_deadline
from ragvisor.core.retrieval import Grouping, SearchMode
from ragvisor.errors import InputError, Overloaded, StoreError
from ragvisor.runtime.services import Services
from ragvisor.web.openapi import (
    error_responses,
    k_schema,
    rerank_schema,
    text_schema,
)
from ragvisor.web.schemas import (
    SearchResponse,
)


def add_search_route(app: FastAPI, services: Services) -> None:
    """`GET /search`: admitted through the search lane, bounded by embedder.deadlines.request_s."""
    server = services.settings.server
    query_schema = text_schema(server.max_query_chars, "server.max_query_chars")
    k_bounds = k_schema(server.max_k, "server.default_k", "server.max_k")
    rerank_rule = rerank_schema(services.retriever.reranker is not None)

    @app.get(
        "/search",
        summary="Semantic search over the synced knowledge base",
        response_model=SearchResponse,
        responses=error_responses(400, 422, 503),
    )
    async def search(
        request: Request,
        *,
        # Bounds from the settings are published here and checked by validate_query (400).
        # Defaults, not Annotated: annotations are strings here, which FastAPI resolves in the
        # module's globals, where this function's locals do not exist.
        q: str = Query(json_schema_extra=query_schema),
        k: int = Query(server.default_k, json_schema_extra=k_bounds),
        mode: Annotated[SearchMode, Query(description="dense, keyword or hybrid")] = (
            SearchMode.DENSE
        ),
        group: Annotated[
            Grouping,
            Query(description="page: one result per page, its other chunks as passages; chunk"),
        ] = Grouping.PAGE,
        rerank: bool | None = Query(None, json_schema_extra=rerank_rule),
    ) -> JSONResponse:
        if "\ufffd" in q:
            _require_utf8_query(request.scope.get("query_string", b""))
        limit_s = services.settings.embedder.deadlines.request_s
        deadline = time.monotonic() + limit_s
        lane = services.lanes["search"]
        try:
            async with asyncio.timeout(limit_s):
                ticket = await lane.acquire()
        except TimeoutError as exc:
            raise Overloaded(
                f"/search waited {limit_s:g} s (embedder.deadlines.request_s) for a slot",
                retry_after_s=lane.retry_after_s(),
            ) from exc
        waited_s = ticket.waited_s
        late = False
        try:
            with request_deadline(deadline):  # the thread pool carries it to the embedder
                result = await by_deadline(
                    run_in_threadpool(
                        services.retriever.search, q, k, mode, group=group, rerank=rerank
                    ),
                    when_late_done=ticket.release,  # the slot is busy until the thread ends
                )
        except TimeoutError as exc:
            late = True
            # The embedder's calls are bounded by their own deadlines; what is left is a store
            # that stopped answering (a frozen Neo4j holds a socket open without a word).
            raise StoreError(
                f"the store did not answer within /search's deadline ({limit_s:g} s, "
                "embedder.deadlines.request_s)"
            ) from exc
        finally:
            if not late:
                ticket.release()
        timings = {**result.timings_ms, "queue": round(waited_s * 1000, 3)}
        note(request.scope, **{f"{phase}_ms": ms for phase, ms in timings.items()})
        body: dict[str, Any] = {
            "query": q.strip(),
            "mode": result.mode.value,
            "group": group.value,
            "reranked": result.reranked,
            "results": [hit.as_dict() for hit in result.hits],
            "timings_ms": result.timings_ms,
        }
        if result.degraded is not None:
            body["degraded"] = {"reason": result.degraded}
            note(request.scope, degraded=result.degraded)
            services.metrics.degraded_total.labels("search", "embedder").inc()
        return JSONResponse(body)


def _require_utf8_query(raw: bytes) -> None:
    """Refuse a query string whose percent-escapes are not UTF-8 (Starlette would replace them
    with U+FFFD and search for garbage). Raises InputError.
    """
    try:
        parse_qs(raw.decode("latin-1"), encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InputError("query string is not valid UTF-8") from exc
