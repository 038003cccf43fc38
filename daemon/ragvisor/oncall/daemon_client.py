"""The one client of the daemon's own HTTP API, for the commands that talk to a running daemon:
`ragvisor search --url`, `ragvisor ask --url`, `ragvisor status` and `ragvisor health`.

Every call is bounded, and what can go wrong is said once, in our error tree, with the daemon's
URL in the message: the daemon cannot be reached (`DaemonUnreachable`), it did not answer in
time (`DaemonTimeout`, also a `BackendTimeout`), something that is not a ragvisor daemon
answered (`RagvisorError`), or the daemon refused the request (`InputError` for a 4xx, whose
message is the daemon's own; `RagvisorError` for a 5xx).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from ragvisor.errors import BackendTimeout, BackendUnavailable, InputError, RagvisorError

# A streamed answer's lines may be far apart (a slow prompt read); only connecting is bounded
# here, the daemon bounds the answer itself (generator.deadlines.request_s).
STREAM_CONNECT_S = 10.0


class DaemonUnreachable(BackendUnavailable):
    """Nothing answered at the daemon's URL (refused, unreachable, reset)."""


class DaemonTimeout(BackendTimeout):
    """The daemon did not answer within the time given."""


def _reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    return str(exc) or type(exc).__name__


class DaemonClient:
    """Calls to one daemon at `url`, each bounded by `timeout_s` (see the module docstring)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _translate(self, exc: httpx.HTTPError) -> RagvisorError:
        if isinstance(exc, httpx.TimeoutException):
            return DaemonTimeout(f"daemon at {self.url} did not answer within {self.timeout_s:g} s")
        return DaemonUnreachable(f"daemon unreachable at {self.url}: {_reason(exc)}")

    def _json(self, path: str, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise RagvisorError(
                f"{path} answered HTTP {response.status_code} with something that is not JSON; "
                "is it a ragvisor daemon?"
            ) from None

    def _refused(self, path: str, response: httpx.Response) -> RagvisorError:
        """The daemon's error answer as our exception (4xx: the caller's mistake)."""
        body = self._json(path, response)
        error = body.get("error", response.text) if isinstance(body, dict) else response.text
        if response.status_code < 500:
            return InputError(str(error))
        return RagvisorError(f"daemon answered {response.status_code}: {error}")

    async def get_json(
        self,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        params: Mapping[str, Any] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> dict[str, Any] | None:
        """GET a JSON object; None for a 404 (an older daemon without the route). A status
        outside `ok` raises as described in the module docstring. Pass `client` to share one
        connection pool between several calls."""
        try:
            if client is None:
                async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s)) as own:
                    response = await own.get(self.url + path, params=params)
            else:
                response = await client.get(self.url + path, params=params)
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
        if response.status_code == 404:
            return None
        if response.status_code not in ok:
            raise self._refused(path, response)
        body = self._json(path, response)
        if not isinstance(body, dict):
            raise RagvisorError(f"{path} answered with JSON that is not an object")
        return body

    def session(self) -> httpx.AsyncClient:
        """A connection pool for several `get_json` calls at once (close it: `async with`)."""
        return httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s))

    async def search(
        self,
        query: str,
        *,
        mode: str | None = None,
        k: int | None = None,
        group: str | None = None,
    ) -> dict[str, Any]:
        """`GET /search`: the results object (mode, k, group: the daemon's defaults when None)."""
        params: dict[str, Any] = {"q": query}
        if mode is not None:
            params["mode"] = mode
        if k is not None:
            params["k"] = k
        if group is not None:
            params["group"] = group
        body = await self.get_json("/search", params=params)
        if body is None:
            raise RagvisorError(f"{self.url} has no /search: is it a ragvisor daemon?")
        return body

    async def ask_stream(self, question: str, *, k: int | None = None) -> AsyncIterator[Any]:
        """`POST /ask` with `stream: true`: the NDJSON events, as they arrive."""
        body: dict[str, Any] = {"question": question, "stream": True}
        if k is not None:
            body["k"] = k
        timeout = httpx.Timeout(STREAM_CONNECT_S, read=None)
        try:
            async with (
                httpx.AsyncClient(timeout=timeout) as client,
                client.stream("POST", self.url + "/ask", json=body) as response,
            ):
                if response.status_code >= 400:
                    await response.aread()
                    raise self._refused("/ask", response)
                async for line in response.aiter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
