"""Synchronous, bounded calls to an Ollama server, for callers that live in threads (the
embedder is called from the sync's and the search's worker threads).

Each call has a connect deadline, a deadline for the answer's first byte and one for the whole
call, enforced while the body is read (a trickling answer cannot outlast it); failures become
:mod:`ragvisor.errors` through :mod:`ragvisor.ollama.wire`, like the async client's.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from ragvisor.errors import BackendTimeout
from ragvisor.ollama.wire import (
    Deadlines,
    deadline_missed,
    error_for_status,
    error_text,
    json_object,
    transport_error,
)


class SyncCalls:
    """A thread-safe `httpx.Client` for one server, and the bounded call over it."""

    def __init__(
        self,
        base_url: str,
        deadlines: Deadlines,
        *,
        backend: str,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base_url = base_url
        self._deadlines = deadlines
        self._backend = backend
        self._client = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(
                connect=deadlines.connect_s,
                read=deadlines.first_token_s,
                write=deadlines.connect_s,
                pool=deadlines.connect_s,
            ),
            transport=transport,
        )

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        what: str,
        until: float,
        first_byte_s: float | None = None,
        limit: tuple[str, float] | None = None,
    ) -> dict[str, Any]:
        """One request, bounded by `until` (time.monotonic()); returns the JSON object.

        The wait for the answer's first byte is bounded by `first_byte_s` (default: all the
        time left); the body is read in pieces and the call abandoned once `until` passes.
        `limit` names the deadline `until` stands for ("total" or "request") and its seconds,
        for the timeout's phase and message. Raises what :mod:`ragvisor.ollama.wire` maps
        failures to.
        """
        left = until - time.monotonic()
        limit = limit or ("total", left)
        if left <= 0:
            raise self._deadline_passed(what, limit)
        connect_s = min(self._deadlines.connect_s, left)
        wait_s = min(first_byte_s or left, left)
        timeout = httpx.Timeout(connect=connect_s, read=wait_s, write=connect_s, pool=connect_s)
        request = self._client.build_request(method, path, json=body, timeout=timeout)
        started = False
        try:
            response = self._client.send(request, stream=True)
            try:
                started = True
                raw = self._read_body(response, until, what, limit)
            finally:
                response.close()
        except httpx.ReadTimeout as exc:
            raise self._read_timeout(what, started, wait_s, first_byte_s, limit) from exc
        except httpx.HTTPError as exc:
            raise transport_error(
                exc, backend=self._backend, what=what, url=self._base_url
            ) from exc
        if response.status_code >= 400:
            message = error_text(raw)
            raise error_for_status(response.status_code, message, what, backend=self._backend)
        return json_object(raw, what, self._backend)

    def _read_body(
        self, response: httpx.Response, until: float, what: str, limit: tuple[str, float]
    ) -> bytes:
        """The whole body, read piece by piece: a trickling answer cannot outlast `until`."""
        pieces: list[bytes] = []
        for piece in response.iter_bytes():
            pieces.append(piece)
            if time.monotonic() > until:
                raise self._deadline_passed(what, limit)
        return b"".join(pieces)

    def _deadline_passed(self, what: str, limit: tuple[str, float]) -> BackendTimeout:
        return deadline_missed(f"{self._backend} {what}", *limit)

    def _read_timeout(
        self,
        what: str,
        started: bool,
        wait_s: float,
        first_byte_s: float | None,
        limit: tuple[str, float],
    ) -> BackendTimeout:
        """Name the deadline a read timeout stands for: whichever bounded the wait that ran out."""
        if first_byte_s is None or wait_s < first_byte_s:
            return self._deadline_passed(what, limit)
        if started:  # the answer began, then went silent
            return deadline_missed(f"{self._backend} {what}", "stall", wait_s)
        return deadline_missed(f"{self._backend} {what}", "first_token", first_byte_s)
