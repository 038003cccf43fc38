"""The current request's deadline, carried with the request wherever its work runs.

A route sets it once (`request_deadline`); everything the request calls — the supervised
backends, the store — reads what is left (`remaining_s`) and bounds its own wait by it. A context
variable, so it travels into the thread pool and into tasks with the request, and never leaks
into another request's work.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

# When the current request must be finished (time.monotonic()); None outside a request.
_REQUEST_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "ragvisor_request_deadline", default=None
)


@contextlib.contextmanager
def request_deadline(deadline: float | None) -> Iterator[None]:
    """Bound every call made inside (threads started with the context included)."""
    token = _REQUEST_DEADLINE.set(deadline)
    try:
        yield
    finally:
        _REQUEST_DEADLINE.reset(token)


def current_deadline() -> float | None:
    """The current request's deadline (time.monotonic()), or None outside one."""
    return _REQUEST_DEADLINE.get()


def remaining_s() -> float | None:
    """Seconds left for the current request, or None outside one."""
    deadline = _REQUEST_DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()
