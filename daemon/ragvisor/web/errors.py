"""The one table from errors to HTTP statuses, and the JSON shape every error takes.

Every error body is ``{"error": "<message>", "code": "<slug>"}``; a request id is attached by
the middleware. Unexpected exceptions become a 500 with a generic message — the traceback goes
to the log, never to the client.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ragvisor.asgi.request_log import note
from ragvisor.errors import (
    BackendError,
    BackendOutOfMemory,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    BodyTimeout,
    BodyTooLarge,
    BusyError,
    ConfigError,
    DocumentNotFound,
    InputError,
    NotReadyError,
    Overloaded,
    PathRefused,
    RagvisorError,
    StoreError,
)
from ragvisor.web.methods import allowed_methods

STATUS_BY_ERROR: tuple[tuple[type[RagvisorError], int, str], ...] = (
    (BodyTooLarge, 413, "body_too_large"),
    (BodyTimeout, 408, "body_timeout"),
    (PathRefused, 403, "path_refused"),
    (DocumentNotFound, 404, "not_found"),
    (InputError, 400, "bad_request"),
    (BusyError, 409, "busy"),
    (NotReadyError, 503, "not_ready"),
    (Overloaded, 503, "overloaded"),
    (BackendUnavailable, 503, "backend_unavailable"),
    (BackendOutOfMemory, 503, "backend_out_of_memory"),
    (BackendTimeout, 504, "backend_timeout"),
    (BackendRejected, 502, "backend_rejected"),
    (BackendError, 502, "backend_error"),
    (StoreError, 503, "store_unavailable"),  # locked past store.busy_timeout_s, disk full, I/O
    (ConfigError, 500, "config"),
    (RagvisorError, 500, "internal"),
)


# Seconds a client should wait after a 503 (a restarting generator is back in about this long).
RETRY_AFTER_S = 5


def retry_after_s(exc: RagvisorError) -> int:
    """Whole seconds for `Retry-After`: the error's own estimate when it has one."""
    estimate: float | None = getattr(exc, "retry_after_s", None)
    if estimate is None:
        return RETRY_AFTER_S
    return max(1, math.ceil(estimate))


def error_body(message: str, code: str, **extra: Any) -> dict[str, Any]:
    """The JSON every error response carries."""
    return {"error": message, "code": code, **extra}


def status_for(exc: RagvisorError) -> tuple[int, str]:
    """HTTP status and code slug for one of our errors."""
    for kind, status, code in STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status, code
    return 500, "internal"  # pragma: no cover - RagvisorError is the last row


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p not in ("query", "body", "path")]
        where = ".".join(loc) or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI, log: Any) -> None:
    """Route every exception through the table above."""

    @app.exception_handler(RagvisorError)
    async def _ours(request: Request, exc: RagvisorError) -> JSONResponse:
        status, code = status_for(exc)
        if status == 503:  # shed or degraded on purpose: worth a warning, not an error page
            log.warning("http.unavailable", path=request.url.path, error=str(exc), code=code)
        elif status >= 500:
            log.error("http.error", path=request.url.path, error=str(exc), code=code)
        headers = {"Retry-After": str(retry_after_s(exc))} if status == 503 else None
        return JSONResponse(error_body(str(exc), code), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(_describe_validation(exc), "invalid_request"), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        message = str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 404 and message == "Not Found":  # the router's own 404
            message = f"no route {request.url.path}"
        elif exc.status_code == 405:  # the router's Allow names only one route's methods
            allowed = ", ".join(allowed_methods(request.app.router.routes, request.scope))
            headers["Allow"] = allowed
            message = f"{request.method} is not allowed on {request.url.path}; it answers {allowed}"
        return JSONResponse(
            error_body(message, code), status_code=exc.status_code, headers=headers or None
        )

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client left while its body was being read. Nobody reads this answer: the status
        # is for the `http.request` line (nginx's 499, "client closed request"), not a 500.
        note(request.scope, client_gone=True)
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("http.unhandled", path=request.url.path)
        return JSONResponse(error_body("internal error; see the daemon log", "internal"), 500)
