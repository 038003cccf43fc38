"""FastAPI routes: search, health, readiness and the admin sync trigger.

Handlers are thin: they validate HTTP-level details and call the services built by the
composition root (`ragvisor.app`). Blocking work (embedding, SQLite) runs in FastAPI's thread
pool by declaring handlers with plain ``def``.
"""

from __future__ import annotations

import hmac
import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs

import structlog
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragvisor import __version__
from ragvisor.core.retrieval import SearchMode
from ragvisor.errors import InputError
from ragvisor.web.errors import install_error_handlers
from ragvisor.web.schemas import ErrorResponse, SearchResponse

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
            self.log.info(
                "http.request",
                request_id=request_id,
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                **{f"{name}_ms": value for name, value in phases.items()},
            )


def create_app(services: Services) -> FastAPI:
    """Build the web application around already-constructed services."""
    log = structlog.get_logger(component="web")
    settings = services.settings.server
    app = FastAPI(
        title="ragvisor",
        version=__version__,
        description="Semantic search over your knowledge base, supervised for small CPU boxes.",
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

    @app.get("/readyz", summary="The model is loaded and the store is open")
    def readyz() -> JSONResponse:
        checks = services.readiness()
        ready = all(check["ok"] for check in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

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
