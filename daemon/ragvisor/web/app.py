"""FastAPI routes: search, ask, health, readiness and the admin sync trigger.

Handlers are thin: they validate HTTP-level details and call the services built by the
composition root (`ragvisor.app`). Blocking work (embedding, SQLite) runs in FastAPI's thread
pool by declaring handlers with plain ``def``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Annotated, Any
from urllib.parse import parse_qs

import structlog
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError
from starlette.types import ASGIApp

from ragvisor import __version__
from ragvisor.answering import FALLBACK_RESERVE_S, Answerer, AskTrace
from ragvisor.asgi.request_log import RequestLog, attach, note, request_id
from ragvisor.core.retrieval import SearchMode
from ragvisor.errors import BackendTimeout, InputError, NotReadyError, Overloaded, RagvisorError
from ragvisor.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ragvisor.metrics import Metrics
from ragvisor.runtime import reports
from ragvisor.runtime.services import Services
from ragvisor.supervise.admission import Ticket
from ragvisor.supervise.calls import request_deadline
from ragvisor.web.auth import admin_guard
from ragvisor.web.errors import error_body, install_error_handlers, status_for
from ragvisor.web.json_body import load_json
from ragvisor.web.limits import BodyLimitMiddleware, BodyLimits
from ragvisor.web.methods import OptionsMiddleware
from ragvisor.web.openapi import (
    ADMIN_SECURITY,
    ask_request_body,
    ask_stream_content,
    error_responses,
    install_openapi,
    k_schema,
    text_schema,
)
from ragvisor.web.schemas import (
    AskRequest,
    AskResponse,
    HealthResponse,
    ReadinessResponse,
    SearchResponse,
    SyncFinished,
    SyncStarted,
)
from ragvisor.web.streaming import ClientGone, NdjsonStream, until_disconnect

# Seconds kept for retrieval and packing when a request waits in the ask lane.
LANE_PREPARE_S = 1.0
# The answerer finishes by the deadline itself; the outer bound fires only this much later.
BACKSTOP_GRACE_S = 0.5

# Endpoints with their own latency series; anything else is "other" (bounded cardinality).
METERED_PATHS = frozenset(
    {"/search", "/ask", "/healthz", "/readyz", "/status", "/metrics", "/admin/sync"}
)


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(services: Services, lifespan: Lifespan | None = None) -> FastAPI:
    """Build the web application around already-constructed services.

    `lifespan` is what runs on the event loop from start to stop — the daemon passes
    `runtime.lifecycle.lifespan` (scheduler, systemd session, staged stop); tests may pass none.
    """
    log = structlog.get_logger(component="web")

    app = FastAPI(
        title="ragvisor",
        version=__version__,
        description="Semantic search and cited answers over your knowledge base, supervised "
        "for small CPU boxes.",
        lifespan=lifespan,
    )
    install_error_handlers(app, log)
    install_openapi(app)
    app.add_middleware(OptionsMiddleware, routes=app.router.routes)
    # Outside the routes and the error table's handlers: an oversized body is refused before
    # any handler runs; one cut short mid-way raises inside the handler and meets the table.
    app.add_middleware(
        BodyLimitMiddleware, limits=BodyLimits.from_settings(services.settings.server)
    )

    require_admin = admin_guard(services.admin_token)

    _add_search_route(app, services)

    @app.get("/healthz", summary="The process is alive", response_model=HealthResponse)
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get(
        "/readyz",
        summary="The embedder is loaded, the store is open, the generator answers",
        response_model=ReadinessResponse,
        responses={503: {"model": ReadinessResponse, "description": "A check is not ok"}},
    )
    async def readyz() -> JSONResponse:
        checks = await run_in_threadpool(reports.readiness, services)
        if services.generator is not None:
            checks["generator"] = await _generator_check(services)
        # `required: false` checks (the sync's) inform; they never take a replica out of rotation.
        ready = all(check["ok"] for check in checks.values() if check.get("required", True))
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    _add_ask_route(app, services, log)
    _add_observability_routes(app, services)

    @app.post(
        "/admin/sync",
        summary="Start a sync now",
        dependencies=[Depends(require_admin)],
        response_model=SyncFinished,
        responses={
            200: {"description": "wait=true: the sync ran, here is its report"},
            202: {"model": SyncStarted, "description": "The sync started in the background"},
            **error_responses(401, 409, 422, 502, 503, 504),
        },
        openapi_extra=ADMIN_SECURITY,
    )
    async def admin_sync(
        wait: Annotated[bool, Query(description="run now and return the report")] = False,
    ) -> JSONResponse:
        if wait:
            async with services.lanes["sync"].slot():
                report = await run_in_threadpool(services.sync_runner.run, trigger="admin")
            return JSONResponse({"status": "finished", "report": report.as_dict()})
        services.sync_runner.start(trigger="admin")  # BusyError -> 409 before anything starts
        return JSONResponse(
            {"status": "started", "sync": services.sync_runner.state.as_dict()}, status_code=202
        )

    @app.get(
        "/admin/sync",
        summary="State of the last sync",
        dependencies=[Depends(require_admin)],
        responses=error_responses(401),
        openapi_extra=ADMIN_SECURITY,
    )
    def admin_sync_state() -> dict[str, Any]:
        return services.sync_runner.state.as_dict()

    return app


def _add_search_route(app: FastAPI, services: Services) -> None:
    """`GET /search`: admitted through the search lane, bounded by embedder.deadlines.request_s."""
    server = services.settings.server
    query_schema = text_schema(server.max_query_chars, "server.max_query_chars")
    k_bounds = k_schema(server.max_k, "server.default_k", "server.max_k")

    @app.get(
        "/search",
        summary="Semantic search over the synced knowledge base",
        response_model=SearchResponse,
        responses=error_responses(400, 422, 503),
    )
    async def search(
        request: Request,
        # Bounds from the settings are published here and checked by validate_query (400).
        # Defaults, not Annotated: annotations are strings here, which FastAPI resolves in the
        # module's globals, where this function's locals do not exist.
        q: str = Query(json_schema_extra=query_schema),
        k: int = Query(server.default_k, json_schema_extra=k_bounds),
        mode: Annotated[SearchMode, Query(description="dense, keyword or hybrid")] = (
            SearchMode.DENSE
        ),
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
        try:
            with request_deadline(deadline):  # the thread pool carries it to the embedder
                result = await run_in_threadpool(services.retriever.search, q, k, mode)
        finally:
            ticket.release()
        timings = {**result.timings_ms, "queue": round(waited_s * 1000, 3)}
        note(request.scope, **{f"{phase}_ms": ms for phase, ms in timings.items()})
        body: dict[str, Any] = {
            "query": q.strip(),
            "mode": result.mode.value,
            "results": [hit.as_dict() for hit in result.hits],
            "timings_ms": result.timings_ms,
        }
        if result.degraded is not None:
            body["degraded"] = {"reason": result.degraded}
            note(request.scope, degraded=result.degraded)
            services.metrics.degraded_total.labels("search", "embedder").inc()
        return JSONResponse(body)


def _add_observability_routes(app: FastAPI, services: Services) -> None:
    """`GET /status` (the whole picture, JSON) and `GET /metrics` (Prometheus)."""

    @app.get("/status", summary="Lanes, backends, breakers, memory, sync: the whole picture")
    def status() -> dict[str, Any]:
        return reports.status(services)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(services.metrics.render(), media_type=METRICS_CONTENT_TYPE)


def _add_ask_route(app: FastAPI, services: Services, log: Any) -> None:
    """`POST /ask`: retrieve, pack, generate; JSON or an NDJSON stream."""
    ask_settings = services.settings.ask

    @app.post(
        "/ask",
        summary="Answer a question from the knowledge base, citing the passages used",
        response_model=AskResponse,
        responses={
            200: {
                "description": "The answer as one object, or an NDJSON stream of events",
                "content": ask_stream_content(),
            },
            **error_responses(400, 413, 422, 502, 503, 504),
        },
        openapi_extra=ask_request_body(ask_settings.max_question_chars, ask_settings.max_k),
    )
    async def ask(request: Request) -> Response:
        body = await _ask_body(request, services.settings.server.max_json_depth)
        answerer = services.answerer
        if answerer is None:
            raise NotReadyError('/ask is off: generator.backend is "none"')
        guard = services.memory_guard
        if guard is not None and guard.ask_shed():
            raise Overloaded(
                f"/ask is shed while memory is critical ({guard.memory_short()})",
                retry_after_s=guard.shed_retry_after_s,
            )
        trace = AskTrace()
        attach(request.scope, trace.timings_ms, suffix="_ms")
        attach(request.scope, trace.fields)
        k = body.k if body.k is not None else services.settings.ask.default_k
        limit_s = services.settings.generator.deadlines.request_s
        deadline = time.monotonic() + limit_s
        ticket: Ticket | None = None
        try:
            # Full lane: Overloaded (503) at once. Waiting counts against the request deadline;
            # a wait that eats it all ends in an extractive answer, not a timeout.
            async with asyncio.timeout(max(0.0, limit_s - FALLBACK_RESERVE_S - LANE_PREPARE_S)):
                ticket = await until_disconnect(request, services.lanes["ask"].acquire())
            trace.timings_ms["queue"] = round(ticket.waited_s * 1000, 3)
        except TimeoutError:
            trace.fields["lane_timeout"] = True
        except ClientGone:
            trace.fields["client_gone"] = True
            return Response(status_code=499)
        release = ticket.release if ticket is not None else _nothing
        try:
            embed_limit_s = services.settings.embedder.deadlines.request_s
            ask = _Ask(request, answerer, trace, deadline, limit_s, log, embed_limit_s)
            response = await ask.respond(body.question, k, body.stream, release)
        except BaseException:
            release()
            raise
        return response


def _nothing() -> None:
    """No slot to release."""


@dataclass(slots=True)
class _Ask:
    """One `/ask` request between admission and the last byte of its answer."""

    request: Request
    answerer: Answerer
    trace: AskTrace
    deadline: float  # time.monotonic()
    limit_s: float
    log: Any
    embed_limit_s: float  # embedder.deadlines.request_s

    def _timeout(self) -> BackendTimeout:
        return BackendTimeout(
            f"/ask took longer than generator.deadlines.request_s ({self.limit_s:g} s)",
            phase="request",
        )

    def _gone(self) -> Response:
        self.trace.fields["client_gone"] = True
        self.log.info("ask.client_gone", request_id=request_id(self.request.scope))
        return Response(status_code=499)

    async def respond(
        self, question: str | None, k: int, stream: bool, release: Callable[[], None]
    ) -> Response:
        """Prepare, then answer as JSON or as an NDJSON stream; `release` frees the lane slot
        when the answer is complete (for a stream: after its last line)."""
        # Retrieval embeds the question: bounded like a search, and by this request.
        embed_until = min(self.deadline, time.monotonic() + self.embed_limit_s)
        try:
            async with asyncio.timeout(max(0.0, self.deadline - time.monotonic())):
                with request_deadline(embed_until):  # copied into the task and its thread
                    prepared = await until_disconnect(
                        self.request, self.answerer.prepare(question, k, self.trace)
                    )
        except TimeoutError as exc:
            raise self._timeout() from exc
        except ClientGone:
            release()
            return self._gone()
        if self.trace.fields.get("lane_timeout") and prepared.degraded is None:
            prepared = replace(prepared, degraded="the ask lane stayed busy until the deadline")
        if stream:
            events = _bounded(
                self.answerer.events(prepared, self.trace, until=self.deadline),
                self.deadline,
                self.limit_s,
            )

            def client_gone() -> None:
                self._gone()

            return NdjsonStream(
                _with_error_events(events, self.trace, self.log, on_end=release),
                on_client_gone=client_gone,
            )
        try:
            left = max(0.0, self.deadline - time.monotonic())
            async with asyncio.timeout(left + BACKSTOP_GRACE_S):
                result = await until_disconnect(
                    self.request,
                    self.answerer.answer(prepared, self.trace, until=self.deadline),
                )
        except TimeoutError as exc:
            raise self._timeout() from exc
        except ClientGone:
            return self._gone()
        finally:
            release()
        return JSONResponse(result)


async def _ask_body(request: Request, max_depth: int) -> AskRequest:
    """The JSON body, whatever Content-Type says: `curl -d '{"question": …}'` sends a form type.

    Raises RequestValidationError (422) for a body that is not JSON or not a valid request;
    InputError (400) for one nested deeper than `max_depth` or with a NUL or a lone surrogate in
    a string (ragvisor.web.json_body); BodyTooLarge (413) and BodyTimeout (408) from the body
    limits (ragvisor.web.limits); ClientDisconnect (logged 499) when the client leaves.
    """
    raw = await request.body()
    try:
        data = load_json(raw, max_depth)
    except ValueError as exc:  # UnicodeDecodeError included
        raise RequestValidationError(
            [{"loc": ("body",), "msg": f"body is not valid JSON: {exc}", "type": "json_invalid"}]
        ) from exc
    try:
        return AskRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from exc


async def _generator_check(services: Services) -> dict[str, Any]:
    """Does the generator answer `/api/version`? (Cheap: loads no model.)"""
    assert services.generator is not None
    client = services.generator.client
    check: dict[str, Any] = {"model": client.model, "url": client.base_url}
    if services.worker is not None:
        check["worker"] = services.worker.describe()
    try:
        check["version"] = await client.version(timeout=2.0)
        check["ok"] = True
    except RagvisorError as exc:
        check.update(ok=False, error=str(exc))
    return check


async def _bounded(
    events: AsyncGenerator[dict[str, Any], None], deadline: float, limit_s: float
) -> AsyncGenerator[dict[str, Any], None]:
    """Pass events through until the request deadline (time.monotonic()), then raise
    BackendTimeout. A backstop: the answerer itself finishes, extractively if need be, before
    the deadline."""
    try:
        while True:
            try:
                async with asyncio.timeout(deadline - time.monotonic() + BACKSTOP_GRACE_S):
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise BackendTimeout(
                    f"/ask took longer than generator.deadlines.request_s ({limit_s:g} s)",
                    phase="request",
                ) from exc
            yield event
    finally:
        await events.aclose()


async def _with_error_events(
    events: AsyncGenerator[dict[str, Any], None],
    trace: AskTrace,
    log: Any,
    on_end: Callable[[], None] = lambda: None,
) -> AsyncGenerator[dict[str, Any], None]:
    """After the first line the status is sent: a failure becomes a final `error` event.

    `on_end` runs when the stream ends, however it ends (the ask lane's slot is released).
    """
    try:
        async for event in events:
            yield event
    except RagvisorError as exc:
        status, code = status_for(exc)
        trace.fields.update(error=str(exc), error_code=code)
        log.warning("ask.failed_mid_stream", error=str(exc), code=code)
        yield {"type": "error", **error_body(str(exc), code), "status": status}
    finally:
        on_end()
        await events.aclose()


def _require_utf8_query(raw: bytes) -> None:
    """Refuse a query string whose percent-escapes are not UTF-8 (Starlette would replace them
    with U+FFFD and search for garbage). Raises InputError.
    """
    try:
        parse_qs(raw.decode("latin-1"), encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InputError("query string is not valid UTF-8") from exc


def with_request_log(app: FastAPI, metrics: Metrics | None = None) -> ASGIApp:
    """Wrap the app in the request log (outermost, so it times everything): one `http.request`
    event per request, with its request id, per-phase durations and what the route noted."""

    def observe(path: str, status: int, seconds: float) -> None:
        if metrics is not None:
            endpoint = path if path in METERED_PATHS else "other"
            metrics.request_seconds.labels(endpoint, str(status)).observe(seconds)

    return RequestLog(
        app,
        structlog.get_logger(component="web"),
        event="http.request",
        request_ids=True,
        observe=observe,
    )
