"""HTTP plumbing of the worker: Ollama's error shape, request-log fields, disconnect detection.

Every error is ``{"error": "<message>"}`` with the status from the one table below, as Ollama
answers; an unexpected exception becomes a 500 with a generic message and its traceback goes
to the log only. `worker.request` is logged once per request after its last byte, with the
token counts the handler noted on the way (health probes at debug level: the daemon polls).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragvisor.asgi.request_log import note as note_fields
from ragvisor.errors import InputError, NotReadyError, RagvisorError
from ragvisor.llm.worker.catalog import UnknownModelError

T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)

STATUS_BY_ERROR: tuple[tuple[type[RagvisorError], int], ...] = (
    (UnknownModelError, 404),
    (InputError, 400),
    (NotReadyError, 503),
    (RagvisorError, 500),
)
QUIET_PATHS = frozenset({"/", "/api/version"})  # the daemon polls them: debug level
CLIENT_CLOSED = 499  # nginx's "client closed request"; only ever seen in our log


def status_for(exc: BaseException) -> int:
    """HTTP status for an exception (500 for anything that is not ours)."""
    for kind, status in STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status
    return 500


def error_message(exc: BaseException) -> str:
    """What the client is told: our errors' messages; nothing about anything else."""
    return str(exc) if isinstance(exc, RagvisorError) else "internal error"


def error_response(exc: BaseException) -> JSONResponse:
    """An error in Ollama's shape."""
    return JSONResponse({"error": error_message(exc)}, status_code=status_for(exc))


def note(request: Request, **fields: Any) -> None:
    """Add fields (model, token counts, ...) to this request's `worker.request` event."""
    note_fields(request.scope, **fields)


def _describe(errors: Sequence[Any]) -> str:
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            return f"invalid JSON in request body: {error.get('ctx', {}).get('error', '')}".strip()
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def parse_body(request: Request, schema: type[B]) -> B:
    """The request body as `schema`, whatever the Content-Type says (Ollama ignores it too).

    Raises InputError for an empty body, malformed JSON or a field of the wrong type.
    """
    raw = await request.body()
    if not raw.strip():
        raise InputError("missing request body")
    try:
        return schema.model_validate_json(raw)
    except ValidationError as exc:
        raise InputError(_describe(exc.errors())) from None


def install_error_handlers(app: FastAPI, log: Any) -> None:
    """Route every exception to Ollama's `{"error": ...}` shape."""

    @app.exception_handler(RagvisorError)
    async def _ours(request: Request, exc: RagvisorError) -> JSONResponse:
        if status_for(exc) >= 500:
            log.error("worker.error", path=request.url.path, error=str(exc))
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _describe(exc.errors())}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail).lower()}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("worker.error", path=request.url.path, error=repr(exc))
        return JSONResponse({"error": "internal error"}, status_code=500)


async def _disconnected(request: Request) -> None:
    """Return when the client closes the connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Await `work` unless the client goes away first: (True, result) or (False, None).

    When the client wins, `work` is cancelled; callers cancel what `work` was waiting for.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    client_gone = False
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        client_gone = not task.done()
        if client_gone:
            task.cancel()
        await asyncio.wait({task, watch})  # let both settle; raises nothing
    if client_gone:
        return False, None
    return True, task.result()
