"""Running the ASGI app under uvicorn, with signals handled the daemon's way and connections
that cannot pin it (ragvisor.web.connections).

uvicorn re-raises SIGTERM/SIGINT after its own graceful shutdown, which kills the process
before the daemon's remaining stages (stop the scheduler, cancel a running sync, close the
store) can run. Here the first signal stops the server gracefully and control returns to the
caller; a second signal during those stages falls through to the default action and forces exit.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from ragvisor.metrics import Metrics
from ragvisor.web.connections import ConnectionGuard, ConnectionLimits, guarded_protocol

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DaemonServer(uvicorn.Server):
    """uvicorn's server, minus the re-raise of the captured signal."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Route SIGINT/SIGTERM to uvicorn's graceful exit while serving; restore afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


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
    (ragvisor.web.connections), counted in `metrics`; without (the worker, whose one client is
    the daemon on loopback), uvicorn's defaults apply.
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
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_s),
        **guarded,
    )
    DaemonServer(config).run()
