"""What `/openapi.json` says beyond the routes' signatures, so that it describes the daemon as it
really behaves.

Every status a route answers with and its JSON error shape (`web/errors.py`), the headers that
come with a 401 and a 503, the NDJSON stream of `POST /ask`, the bearer scheme of `/admin/*`,
and the bounds on the input. Bounds come from the settings the app is built with: a daemon with
`server.max_k = 20` publishes `maximum: 20`. The checks themselves live in one place
(`ragvisor.core.retrieval.validate_query`); this module only describes them, and
`tests/integration/test_api_fuzz.py` holds description and daemon together by fuzzing a real one.

A status that is only logged is not described: 499 (the client left, nobody reads the answer).
A 500 is a bug, and the fuzz test fails on one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter

from ragvisor.core.retrieval import text_pattern
from ragvisor.web.schemas import AskEvent, AskRequest, ErrorResponse

NDJSON = "application/x-ndjson"
BEARER_SCHEME = "bearer"
# Operation-level `security` of the admin routes (`openapi_extra`), whatever implements the check.
ADMIN_SECURITY: dict[str, Any] = {"security": [{BEARER_SCHEME: []}]}

_ERROR_DESCRIPTIONS = {
    400: "The request is well-formed but not acceptable: an empty or over-long text, k out of "
    "range, a NUL, a query string that is not UTF-8",
    401: "No bearer token, or the wrong one",
    403: "The document path is one the daemon will not write: the corpus globs leave it out, "
    "a symlink or a file is on the way, it names a folder, or a name is over 255 bytes",
    404: "No document at that path",
    408: "The request body did not arrive within server.body_timeout_s",
    409: "A sync is already running (in this daemon, or another process holds sync.lock)",
    413: "The request body is larger than the daemon accepts",
    422: "A parameter or body field has the wrong type, or the body is not JSON",
    502: "A backend answered with an error, or refused the request",
    503: "Shed on purpose: an admission lane is full, memory is critical, a backend is "
    "unavailable or out of memory, the store cannot be written, the endpoint is off, or every "
    "connection (server.max_connections) has a request in flight",
    504: "A backend call or the request ran past its deadline",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with",
            "required": True,
            "schema": {"type": "string", "enum": ["Bearer"]},
        }
    },
    503: {
        "Retry-After": {
            "description": "Whole seconds to wait before trying again (the daemon's estimate)",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for error statuses: the JSON error shape, a description, and the
    headers that always come with them (`Retry-After` on 503, `WWW-Authenticate` on 401)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "model": ErrorResponse,
            "description": _ERROR_DESCRIPTIONS[status],
        }
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        responses[status] = response
    return responses


def text_schema(max_chars: int, setting: str) -> dict[str, Any]:
    """JSON Schema of a query or question: `validate_query`'s rule with the bound in force."""
    return {
        "type": "string",
        "pattern": text_pattern(max_chars),
        "description": f"Not blank, at most {max_chars} characters ({setting}) once surrounding "
        "whitespace is trimmed, no NUL character",
    }


def k_schema(max_k: int, default_setting: str, max_setting: str) -> dict[str, Any]:
    """JSON Schema of `k`: 1 to the configured maximum."""
    return {
        "type": "integer",
        "minimum": 1,
        "maximum": max_k,
        "description": f"How many; default {default_setting}, at most {max_k} ({max_setting})",
    }


def rerank_schema(configured: bool) -> dict[str, Any]:
    """JSON Schema of `rerank`: a boolean; only `false` when no reranker is configured, as
    `Retriever.search` refuses `true` then (400)."""
    if configured:
        return {"description": "Reorder the candidates with the reranker (default: [rerank])"}
    return {
        "enum": [False, None],
        "description": "Reorder the candidates with the reranker: none is configured "
        "([rerank] enabled = false), so only false",
    }


def ask_request_body(max_question_chars: int, max_k: int) -> dict[str, Any]:
    """`openapi_extra` of `POST /ask`: the body as it is validated (the handler reads it itself,
    whatever the Content-Type says, so FastAPI cannot derive it)."""
    schema = AskRequest.model_json_schema()
    properties = schema["properties"]
    properties["question"] = {
        **text_schema(max_question_chars, "ask.max_question_chars"),
        "title": "Question",
    }
    properties["k"] = {
        "anyOf": [k_schema(max_k, "ask.default_k", "ask.max_k"), {"type": "null"}],
        "default": None,
        "title": "K",
    }
    schema["required"] = ["question"]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def ask_stream_content() -> dict[str, Any]:
    """The `200` content of `POST /ask` with `"stream": true`: NDJSON, one event per line.

    OpenAPI 3.1 has no word for "each line is one of these"; the schema describes the stream
    read as an array of its lines (OpenAPI 3.2 would say `itemSchema`).
    """
    return {
        NDJSON: {
            "schema": {
                "type": "array",
                "description": 'With "stream": true: one JSON event per line — citations, '
                "delta…, retry (discard the deltas so far), then done, or error",
                "items": {"$ref": "#/components/schemas/AskEvent"},
            }
        }
    }


def install_openapi(app: FastAPI) -> None:
    """Complete the document FastAPI builds from the routes with what it cannot derive: the
    bearer security scheme, the stream's event schemas, and our error shape for every 422."""
    build: Callable[[], dict[str, Any]] = app.openapi
    events = TypeAdapter(AskEvent).json_schema(
        mode="serialization", ref_template="#/components/schemas/{model}"
    )
    definitions = {
        **events.pop("$defs"),
        "AskEvent": events,
        "ErrorResponse": ErrorResponse.model_json_schema(mode="serialization"),
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()  # FastAPI caches it in app.openapi_schema: completed in place
        _own_validation_errors(document)
        _edge_responses(document)
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for name, definition in definitions.items():
            schemas.setdefault(name, definition)  # the models the routes share stay FastAPI's
        components["securitySchemes"] = {
            BEARER_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "The token is server.admin_token, or the one the daemon generated "
                "in <data_dir>/admin_token",
            }
        }
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _edge_responses(document: dict[str, Any]) -> None:
    """The statuses the edge answers before any route runs (`web/connections.py`,
    `web/limits.py`): a 503 on every operation when every connection is busy, and a 413 or 408
    on every operation that takes a body. A route's own description of a status stays."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            edge = (503, 413, 408) if "requestBody" in operation else (503,)
            for status, response in error_responses(*edge).items():
                if str(status) not in responses:
                    responses[str(status)] = _described(response)


def _described(response: dict[str, Any]) -> dict[str, Any]:
    """An `error_responses` entry as it reads in the finished document (a `$ref`, not a model)."""
    described = {k: v for k, v in response.items() if k != "model"}
    described["content"] = {
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
    }
    return described


def _own_validation_errors(document: dict[str, Any]) -> None:
    """Every 422 is `{"error", "code"}` (web/errors.py), not FastAPI's `HTTPValidationError`,
    which FastAPI adds to any route with parameters that declares no 422 of its own — even when
    the only parameter is one kept out of the document (the admin check's header), so that
    nothing described can fail validation: then the 422 goes."""
    fastapi_shape = {"$ref": "#/components/schemas/HTTPValidationError"}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            media = responses.get("422", {}).get("content", {}).get("application/json", {})
            if media.get("schema") != fastapi_shape:
                continue
            if not operation.get("parameters") and "requestBody" not in operation:
                del responses["422"]
            else:
                media["schema"] = {"$ref": "#/components/schemas/ErrorResponse"}
                responses["422"]["description"] = _ERROR_DESCRIPTIONS[422]
    if "HTTPValidationError" not in json.dumps(document.get("paths", {})):
        schemas = document.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
