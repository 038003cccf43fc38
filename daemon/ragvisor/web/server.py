"""Running the ASGI app under uvicorn, with signals handled the daemon's way.

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

import uvicorn
from starlette.types import ASGIApp

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


def run_server(app: ASGIApp, *, host: str, port: int, graceful_s: float = 10.0) -> None:
    """Serve until the first SIGTERM/SIGINT, then return after draining requests."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_s),
    )
    DaemonServer(config).run()
