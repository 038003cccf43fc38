"""Running an ASGI app under uvicorn with signals handled the way a supervised program needs.

uvicorn re-raises SIGTERM/SIGINT after its own graceful shutdown, which kills the process
before the program's remaining stages (stop the scheduler, cancel a running sync, close the
store, stop the watch on the parent) can run. Here the first signal stops the server
gracefully and control returns to the caller; a second signal during those stages falls
through to the default action and forces exit. The daemon (ragvisor.web.server, which adds
its connection limits) and the embedded worker both serve through :func:`serve`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# The largest request head (request line and headers) h11 buffers while it waits for the rest.
# h11's 16 KiB default made an over-long query string a race: read in one piece, the app
# answered its own 400 ("the limit is 1000"); split by a busy box, h11 gave up mid-head and the
# connection was closed under the client (ECONNRESET). 128 KiB holds any query the app refuses
# in words; larger heads still get h11's 400.
MAX_REQUEST_HEAD_BYTES = 128 * 1024


class GracefulServer(uvicorn.Server):
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


def serve(app: ASGIApp, *, host: str, port: int, graceful_s: float, **options: Any) -> None:
    """Serve until the first SIGTERM/SIGINT, then return after draining requests.

    `options` go to `uvicorn.Config` as they are; uvicorn's own logging stays off (our
    request log is the one access log).
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_s),
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
        **options,
    )
    GracefulServer(config).run()
