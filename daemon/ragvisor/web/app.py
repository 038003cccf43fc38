"""The daemon's web application: its middleware, error table and OpenAPI around the routes
(`web.routes`: search, ask, ops), and the request log outside it all.

Handlers are thin: they validate HTTP-level details and call the services built by the
composition root (`ragvisor.app`). Blocking work (embedding, SQLite) runs in FastAPI's thread
pool, by plain ``def`` handlers or `run_in_threadpool`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp

from ragvisor import __version__
from ragvisor.asgi.request_log import RequestLog
from ragvisor.metrics import Metrics
from ragvisor.runtime.history import History, observe_request
from ragvisor.runtime.services import Services
from ragvisor.web.errors import install_error_handlers
from ragvisor.web.limits import BodyLimitMiddleware, BodyLimits
from ragvisor.web.methods import OptionsMiddleware
from ragvisor.web.openapi import (
    install_openapi,
)
from ragvisor.web.routes.ask import add_ask_route
from ragvisor.web.routes.documents import add_document_routes
from ragvisor.web.routes.ops import add_ops_routes
from ragvisor.web.routes.pages import add_page_routes
from ragvisor.web.routes.passages import add_passage_route
from ragvisor.web.routes.search import add_search_route
from ragvisor.web.security_headers import SecurityHeadersMiddleware

# Endpoints with their own latency series; anything else is "other" (bounded cardinality).
METERED_PATHS = frozenset(
    {
        "/search",
        "/ask",
        "/healthz",
        "/readyz",
        "/status",
        "/status/history",
        "/metrics",
        "/admin/sync",
    }
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
        # `/docs` is our own page (web.routes.pages): FastAPI's loads Swagger UI from a CDN,
        # which a host with no internet cannot reach. ReDoc's would too.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app, log)
    install_openapi(app)
    app.add_middleware(OptionsMiddleware, routes=app.router.routes)
    # Outside the routes and the error table's handlers: an oversized body is refused before
    # any handler runs; one cut short mid-way raises inside the handler and meets the table.
    app.add_middleware(
        BodyLimitMiddleware,
        limits=BodyLimits.from_settings(
            services.settings.server,
            max_document_bytes=services.settings.corpus.max_file_bytes,
        ),
    )

    # Outermost of the app's own middleware: every answer carries them, errors included.
    app.add_middleware(SecurityHeadersMiddleware)

    add_search_route(app, services)
    add_passage_route(app, services)
    add_ops_routes(app, services)
    add_ask_route(app, services, log)
    add_document_routes(app, services)
    add_page_routes(app, services)
    return app


def with_request_log(
    app: FastAPI, metrics: Metrics | None = None, history: History | None = None
) -> ASGIApp:
    """Wrap the app in the request log (outermost, so it times everything): one `http.request`
    event per request, with its request id, per-phase durations and what the route noted; each
    request is observed by the metrics and, with `[ui] enabled`, the status page's history."""
    into_history = observe_request(history) if history is not None else None

    def observe(path: str, status: int, seconds: float, fields: Mapping[str, Any]) -> None:
        if metrics is not None:
            endpoint = path if path in METERED_PATHS else "other"
            metrics.request_seconds.labels(endpoint, str(status)).observe(seconds)
        if into_history is not None:
            into_history(path, status, seconds, fields)

    return RequestLog(
        app,
        structlog.get_logger(component="web"),
        event="http.request",
        request_ids=True,
        observe=observe,
    )
