"""Schemathesis hooks for `test_api_fuzz.py`, loaded by `st run` through SCHEMATHESIS_HOOKS.

Schemathesis cannot read `application/x-ndjson` on its own and would skip the body of every
streamed `/ask` answer. Read as the list of its lines, the stream is checked against the schema
the document gives it (`ragvisor.web.openapi.ask_stream_content`).
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.deserializer("application/x-ndjson")
def ndjson_lines(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    """One JSON value per non-empty line; a line that is not JSON fails the response."""
    text = response.content.decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
