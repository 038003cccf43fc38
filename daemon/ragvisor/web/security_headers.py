"""Security headers on every response: what a browser may run and load from our pages.

Why: the pages (`web.routes.pages`) show user content — documents' titles, paths and text — and
a note can hold `<script>` or `<img onerror=…>`. The pages already render it as text; the
Content-Security-Policy is the second wall: even if some markup slipped into the page, the
browser would run no inline script and fetch nothing from any origin but the daemon's own. The
JSON API gets the same headers, which cost a few bytes and keep the rule simple: one table,
every response (docs/web.md#security-headers).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _policy(style_src: str) -> str:
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            f"style-src {style_src}",
            "img-src 'self' data:",
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        )
    )


# No inline script, no eval, nothing from another origin; images may be data: URIs (Swagger
# UI's icons). No one may frame the pages (clickjacking the "sync now" button), and forms post
# only to the daemon.
CONTENT_SECURITY_POLICY = _policy("'self'")
# `/docs` alone may carry inline styles: Swagger UI writes style attributes into its markup.
# Scripts stay as strict as everywhere else.
DOCS_CONTENT_SECURITY_POLICY = _policy("'self' 'unsafe-inline'")
DOCS_PATH = "/docs"

_COMMON: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),  # a .txt served as text is never run as script
    (b"referrer-policy", b"no-referrer"),  # queries in URLs do not leak to other sites
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate CSP 2
    (b"cross-origin-opener-policy", b"same-origin"),
)
SECURITY_HEADERS = ((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()), *_COMMON)
DOCS_SECURITY_HEADERS = (
    (b"content-security-policy", DOCS_CONTENT_SECURITY_POLICY.encode()),
    *_COMMON,
)


class SecurityHeadersMiddleware:
    """Add the security headers to the start of every HTTP response (a pure ASGI wrapper: it
    touches one message per response and never buffers a body, so streams stay streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        extra = DOCS_SECURITY_HEADERS if scope["path"] == DOCS_PATH else SECURITY_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
