"""Which methods a path answers, said the way RFC 9110 asks: in `Allow`.

`OPTIONS` on a path the daemon serves answers 204 with `Allow`; a 405 lists every method of the
path. Starlette's router stops at the first route whose path matches, so on its own it answered
`DELETE /admin/sync` with `Allow: POST` although `GET /admin/sync` works too; the error handler
(`web/errors.py`) puts this module's answer in the header instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route answers on the scope's path, `OPTIONS` included (this module
    answers it); empty when no route has the path. Sorted, for a stable header."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.methods and route.matches(scope)[0] != Match.NONE:
            methods |= route.methods
    return sorted({*methods, "OPTIONS"}) if methods else []


class OptionsMiddleware:
    """Answer `OPTIONS` on a known path with 204 and `Allow`; everything else passes through
    (an unknown path goes on to the router's 404)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes  # the app's own list: routes added later count too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            methods = allowed_methods(self.routes, scope)
            if methods:
                headers = [(b"allow", ", ".join(methods).encode("latin-1"))]
                await send({"type": "http.response.start", "status": 204, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)
