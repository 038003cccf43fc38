"""The bearer check in front of `/admin/*`: exactly `Bearer <the token>`, or 401.

It fails closed: no header, another scheme, `Bearer` with nothing or only spaces after it,
and an empty expected token never match. The token is compared as bytes with
`hmac.compare_digest` (constant time), so a header with non-ASCII characters — which Starlette
hands over decoded as Latin-1, and which `compare_digest` refuses as `str` with a TypeError —
is simply a wrong token: 401, never 500.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Header, HTTPException

UNAUTHORIZED_DETAIL = (
    "missing or wrong bearer token (server.admin_token, or the generated "
    "<data_dir>/admin_token file)"
)
# Spaces and tabs HTTP allows around a header value and between scheme and credentials.
_OWS = " \t"


def bearer_matches(authorization: str | None, expected: str) -> bool:
    """Whether an `Authorization` header value carries `expected` as a bearer token.

    The scheme is case-insensitive (RFC 7235); whitespace around the value and the token is
    tolerated.
    """
    if not expected or authorization is None:
        return False
    scheme, _, credentials = authorization.strip(_OWS).partition(" ")
    token = credentials.strip(_OWS)
    if scheme.lower() != "bearer" or not token:
        return False
    # Any non-ASCII character becomes several bytes, which no (ASCII) token equals.
    given = token.encode("utf-8", errors="surrogatepass")
    return hmac.compare_digest(given, expected.encode("utf-8", errors="surrogatepass"))


def admin_guard(expected: str) -> Callable[[str | None], None]:
    """A FastAPI dependency that raises a 401 (with `WWW-Authenticate: Bearer`) unless the
    request carries `expected` as its bearer token."""

    # Not a parameter of the OpenAPI document: the admin routes declare the `bearer` security
    # scheme instead (ragvisor.web.openapi), which is how a client learns to send the header.
    def require_admin(
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> None:
        if not bearer_matches(authorization, expected):
            raise HTTPException(
                status_code=401,
                detail=UNAUTHORIZED_DETAIL,
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_admin
