"""FastAPI routes: search, ask, health, readiness and the admin sync trigger.

Handlers are thin: they validate HTTP-level details and call the services built by the
composition root (`ragvisor.app`). Blocking work (embedding, SQLite) runs in FastAPI's thread
pool by declaring handlers with plain ``def``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs

import structlog
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragvisor import __version__
from ragvisor.answering import AskTrace
from ragvisor.core.retrieval import SearchMode
from ragvisor.errors import BackendTimeout, InputError, NotReadyError, RagvisorError
from ragvisor.web.errors import error_body, install_error_handlers, status_for
from ragvisor.web.schemas import AskRequest, AskResponse, ErrorResponse, SearchResponse
from ragvisor.web.streaming import ClientGone, NdjsonStream, until_disconnect

if TYPE_CHECKING:
    from ragvisor.app import Services


class RequestLogMiddleware:
    """One `http.request` event per request, with a request id and per-phase durations.

    A plain ASGI middleware (no per-request task like `BaseHTTPMiddleware`) so it adds
    microseconds, not milliseconds, to a search.
    """

    def __init__(self, app: ASGIApp, log: Any) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            phases = scope["state"].get("timings_ms", {})
            extra = scope["state"].get("log_fields", {})
            self.log.info(
                "http.request",
                request_id=request_id,
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                **{f"{name}_ms": value for name, value in phases.items()},
                **{key: value for key, value in extra.items() if value is not None},
            )


def create_app(services: Services) -> FastAPI:
    """Build the web application around already-constructed services."""
    log = structlog.get_logger(component="web")
    settings = services.settings.server

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if services.generator is not None:
            await services.generator.aclose()

    app = FastAPI(
        title="ragvisor",
        version=__version__,
        description="Semantic search and cited answers over your knowledge base, supervised "
        "for small CPU boxes.",
        lifespan=lifespan,
    )
    install_error_handlers(app, log)

    def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        expected = services.admin_token
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
            raise HTTPException(
                status_code=401,
                detail=(
                    "missing or wrong bearer token (server.admin_token, or the generated "
                    "<data_dir>/admin_token file)"
                ),
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get(
        "/search",
        summary="Semantic search over the synced knowledge base",
        response_model=SearchResponse,
        responses={400: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
    )
    def search(
        request: Request,
        q: Annotated[str | None, Query(description="The query text")] = None,
        k: Annotated[int, Query(description="How many results")] = settings.default_k,
        mode: Annotated[SearchMode, Query(description="dense, keyword or hybrid")] = (
            SearchMode.DENSE
        ),
    ) -> JSONResponse:
        if q and "\ufffd" in q:
            _require_utf8_query(request.scope.get("query_string", b""))
        result = services.retriever.search(q or "", k, mode)
        request.state.timings_ms = result.timings_ms
        return JSONResponse(
            {
                "query": (q or "").strip(),
                "mode": result.mode.value,
                "results": [hit.as_dict() for hit in result.hits],
                "timings_ms": result.timings_ms,
            }
        )

    @app.get("/healthz", summary="The process is alive")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", summary="The embedder is loaded, the store is open, the generator answers")
    async def readyz() -> JSONResponse:
        checks = await run_in_threadpool(services.readiness)
        if services.generator is not None:
            checks["generator"] = await _generator_check(services)
        ready = all(check["ok"] for check in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    _add_ask_route(app, services, log)

    @app.post("/admin/sync", summary="Start a sync now", dependencies=[Depends(require_admin)])
    def admin_sync(
        wait: Annotated[bool, Query(description="run now and return the report")] = False,
    ) -> JSONResponse:
        if wait:
            report = services.sync_runner.run(trigger="admin")
            return JSONResponse({"status": "finished", "report": report.as_dict()})
        services.sync_runner.start(trigger="admin")  # BusyError -> 409 before anything starts
        return JSONResponse(
            {"status": "started", "sync": services.sync_runner.state.as_dict()}, status_code=202
        )

    @app.get("/admin/sync", summary="State of the last sync", dependencies=[Depends(require_admin)])
    def admin_sync_state() -> dict[str, Any]:
        return services.sync_runner.state.as_dict()

    return app


def _add_ask_route(app: FastAPI, services: Services, log: Any) -> None:
    """`POST /ask`: retrieve, pack, generate; JSON or an NDJSON stream."""

    @app.post(
        "/ask",
        summary="Answer a question from the knowledge base, citing the passages used",
        response_model=AskResponse,
        responses={
            400: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
            502: {"model": ErrorResponse},
            503: {"model": ErrorResponse},
            504: {"model": ErrorResponse},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": AskRequest.model_json_schema()}},
            }
        },
    )
    async def ask(request: Request) -> Response:
        body = await _ask_body(request)
        answerer = services.answerer
        if answerer is None:
            raise NotReadyError('/ask is off: generator.backend is "none"')
        trace = AskTrace()
        request.state.timings_ms = trace.timings_ms
        request.state.log_fields = trace.fields
        ask_settings = services.settings.ask
        k = body.k if body.k is not None else ask_settings.default_k
        limit_s = services.settings.generator.deadlines.request_s
        deadline = asyncio.get_running_loop().time() + limit_s
        try:
            async with asyncio.timeout_at(deadline):
                prepared = await until_disconnect(
                    request, answerer.prepare(body.question, k, trace)
                )
            if body.stream:
                events = _bounded(answerer.events(prepared, trace), deadline, limit_s)

                def client_gone() -> None:
                    trace.fields["client_gone"] = True
                    log.info("ask.client_gone", request_id=request.state.request_id)

                return NdjsonStream(
                    _with_error_events(events, trace, log), on_client_gone=client_gone
                )
            async with asyncio.timeout_at(deadline):
                result = await until_disconnect(request, answerer.answer(prepared, trace))
        except TimeoutError as exc:
            raise BackendTimeout(
                f"/ask took longer than generator.deadlines.request_s ({limit_s:g} s)"
            ) from exc
        except ClientGone:
            trace.fields["client_gone"] = True
            log.info("ask.client_gone", request_id=request.state.request_id)
            return Response(status_code=499)
        return JSONResponse(result)


async def _ask_body(request: Request) -> AskRequest:
    """The JSON body, whatever Content-Type says: `curl -d '{"question": …}'` sends a form type.

    Raises RequestValidationError (422) for a body that is not JSON or not a valid request.
    """
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
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
    check: dict[str, Any] = {"model": services.generator.model, "url": services.generator.base_url}
    if services.worker is not None:
        check["worker"] = services.worker.describe()
    try:
        check["version"] = await services.generator.version(timeout=2.0)
        check["ok"] = True
    except RagvisorError as exc:
        check.update(ok=False, error=str(exc))
    return check


async def _bounded(
    events: AsyncGenerator[dict[str, Any], None], deadline: float, limit_s: float
) -> AsyncGenerator[dict[str, Any], None]:
    """Pass events through until the request deadline, then raise BackendTimeout."""
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise BackendTimeout(
                    f"/ask took longer than generator.deadlines.request_s ({limit_s:g} s)"
                ) from exc
            yield event
    finally:
        await events.aclose()


async def _with_error_events(
    events: AsyncGenerator[dict[str, Any], None], trace: AskTrace, log: Any
) -> AsyncGenerator[dict[str, Any], None]:
    """After the first line the status is sent: a failure becomes a final `error` event."""
    try:
        async for event in events:
            yield event
    except RagvisorError as exc:
        status, code = status_for(exc)
        trace.fields.update(error=str(exc), error_code=code)
        log.warning("ask.failed_mid_stream", error=str(exc), code=code)
        yield {"type": "error", **error_body(str(exc), code), "status": status}
    finally:
        await events.aclose()


def _require_utf8_query(raw: bytes) -> None:
    """Refuse a query string whose percent-escapes are not UTF-8 (Starlette would replace them
    with U+FFFD and search for garbage). Raises InputError.
    """
    try:
        parse_qs(raw.decode("latin-1"), encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InputError("query string is not valid UTF-8") from exc


def with_request_log(app: FastAPI) -> ASGIApp:
    """Wrap the app in the request-log middleware (outermost, so it times everything)."""
    return RequestLogMiddleware(app, structlog.get_logger(component="web"))
