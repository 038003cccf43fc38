"""The daemon's HTTP server: uvicorn through ragvisor.asgi.serve, with connections that cannot
pin it (ragvisor.web.connections)."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp

from ragvisor.asgi.serve import serve
from ragvisor.metrics import Metrics
from ragvisor.web.connections import ConnectionGuard, ConnectionLimits, guarded_protocol


def run_server(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    graceful_s: float = 10.0,
    connections: ConnectionLimits | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Serve until the first SIGTERM/SIGINT, then return after draining requests.

    With `connections`, request heads have a deadline and open connections a bound
    (ragvisor.web.connections), counted in `metrics`; without, uvicorn's defaults apply.
    """
    guarded: dict[str, Any] = {}
    if connections is not None:
        guard = ConnectionGuard(connections, metrics)
        guarded = {
            "http": guarded_protocol(guard),
            "timeout_keep_alive": connections.keep_alive_s,
            # No WebSocket routes: an upgrade would hand the socket to a protocol outside the
            # connection table, where no bound or deadline applies.
            "ws": "none",
        }
    serve(app, host=host, port=port, graceful_s=graceful_s, **guarded)
