"""`PUT`/`DELETE /documents/{path}` (admin token): write or remove one document of the managed
corpus folder and sync it before answering (`application.document_writer`).

The body of a PUT is the document's text, as is (any `Content-Type`; UTF-8, no NUL), at most
`corpus.max_file_bytes` (`web.limits` refuses more with 413 before it is read). The path rules
are published as a pattern (`core.document_paths.PATH_PATTERN`) and checked by the writer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ragvisor.asgi.request_log import note
from ragvisor.core.document_paths import MAX_PATH_CHARS, PATH_PATTERN
from ragvisor.errors import InputError, NotReadyError
from ragvisor.runtime.services import Services
from ragvisor.web.auth import admin_guard
from ragvisor.web.openapi import ADMIN_SECURITY, error_responses
from ragvisor.web.schemas import DocumentSynced

PATH_SCHEMA: dict[str, Any] = {
    "pattern": PATH_PATTERN,
    "description": "Relative to the managed corpus folder (corpus.managed_path): names "
    f"separated by /, none empty, . or .., no control character, at most {MAX_PATH_CHARS} "
    "characters. The corpus globs must include it (else 403)",
}
# The body as published: text without NUL. Any media type is read the same way.
BODY_SCHEMA: dict[str, Any] = {"type": "string", "pattern": "^[^\\x00]*$"}


def add_document_routes(app: FastAPI, services: Services) -> None:
    """`PUT /documents/{path}` and `DELETE /documents/{path}`."""
    require_admin = admin_guard(services.admin_token)
    max_bytes = services.settings.corpus.max_file_bytes

    def writer() -> Any:
        if services.documents is None:  # pragma: no cover - the composition root always sets it
            raise NotReadyError("the document endpoints are not set up")
        return services.documents

    @app.put(
        "/documents/{path:path}",
        summary="Write a document and sync it; answers once search finds it",
        dependencies=[Depends(require_admin)],
        response_model=DocumentSynced,
        responses={
            200: {"description": "The document was changed (or is unchanged) and synced"},
            201: {"model": DocumentSynced, "description": "A new document, written and synced"},
            **error_responses(400, 401, 403, 404, 422, 503),
        },
        openapi_extra={
            **ADMIN_SECURITY,
            "requestBody": {
                "required": True,
                "description": f"The document's text, UTF-8, at most {max_bytes} bytes "
                "(corpus.max_file_bytes)",
                "content": {"text/plain": {"schema": BODY_SCHEMA}},
            },
        },
    )
    async def put_document(
        request: Request, path: str = PathParam(json_schema_extra=PATH_SCHEMA)
    ) -> JSONResponse:
        _require_utf8_path(request, path)
        body = await request.body()
        result = await run_in_threadpool(writer().put, path, body)
        note(request.scope, document_action=result.action, sync_ms=round(result.sync_ms, 1))
        return JSONResponse(result.as_dict(), status_code=201 if result.action == "new" else 200)

    @app.delete(
        "/documents/{path:path}",
        summary="Remove a document and sync it away; answers once search no longer finds it",
        dependencies=[Depends(require_admin)],
        response_model=DocumentSynced,
        responses=error_responses(400, 401, 403, 404, 422, 503),
        openapi_extra=ADMIN_SECURITY,
    )
    async def delete_document(
        request: Request, path: str = PathParam(json_schema_extra=PATH_SCHEMA)
    ) -> JSONResponse:
        _require_utf8_path(request, path)
        result = await run_in_threadpool(writer().delete, path)
        note(request.scope, document_action=result.action, sync_ms=round(result.sync_ms, 1))
        return JSONResponse(result.as_dict())


def _require_utf8_path(request: Request, path: str) -> None:
    """Refuse a path whose percent-escapes are not UTF-8 (the server decoded them to U+FFFD, and
    a file would be written under a name nobody asked for). Raises InputError."""
    if "\ufffd" not in path:
        return
    raw = request.scope.get("raw_path") or b""
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("the document path is not valid UTF-8") from exc
