"""The current request's deadline, carried with the request wherever its work runs.

A route sets it once (`request_deadline`); everything the request calls — the supervised
backends, the store — reads what is left (`remaining_s`) and bounds its own wait by it. A context
variable, so it travels into the thread pool and into tasks with the request, and never leaks
into another request's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

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


# How long past the request's deadline `by_deadline` still waits: the calls inside are bounded
# by the same deadline and answer a moment after it (a timed-out embedder's keyword fallback);
# a store that says nothing at all is given up on here.
GRACE_S = 0.5


async def by_deadline(work: Awaitable[T], *, when_late_done: Callable[[], None]) -> T:
    """Await ``work`` (typically a call running in a worker thread) no longer than the current
    request's deadline (and `GRACE_S`). A thread cannot be stopped: when time runs out,
    ``TimeoutError`` is raised at once and ``when_late_done`` runs when the work does finish (to
    free the admission slot it still occupies), its result or error discarded. Outside a
    request, waits as long as the work takes."""
    task = asyncio.ensure_future(work)
    left = remaining_s()
    if left is None:
        return await task
    try:
        return await asyncio.wait_for(asyncio.shield(task), max(0.0, left) + GRACE_S)
    except TimeoutError:

        def finished(done: asyncio.Future[T]) -> None:
            if not done.cancelled():
                done.exception()  # retrieved: an error after the answer is nobody's to report
            when_late_done()

        task.add_done_callback(finished)
        raise
