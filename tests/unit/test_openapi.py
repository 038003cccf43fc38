"""The published input rules say exactly what `validate_query` does, and the request models are
as strict as the document claims."""

from __future__ import annotations

import re
import sys

import pytest
from fastapi import Depends, FastAPI, Header
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ragvisor.core.retrieval import WHITESPACE_CLASS, QueryLimits, text_pattern, validate_query
from ragvisor.errors import InputError
from ragvisor.web.openapi import ADMIN_SECURITY, ask_request_body, error_responses, install_openapi
from ragvisor.web.schemas import AskRequest

# Texts made mostly of what the rule is about: whitespace of every kind, NUL, a few letters.
EDGY = st.text(
    st.sampled_from([" ", "\t", "\n", "\x0b", "\x1c", "\x1f", "\x85", "\xa0", "\u2003", "\u3000",
                     "\ufeff", "\x00", "a", "é", "\u2603", "0"])
    | st.characters(exclude_categories=("Cs",)),  # lone surrogates: their own test below
    max_size=12,
)  # fmt: skip


def accepted(text: str, max_chars: int) -> bool:
    """Whether validate_query takes `text` under a `max_chars` limit."""
    try:
        validate_query(text, 1, QueryLimits(max_query_chars=max_chars, max_k=1))
    except InputError:
        return False
    return True


def test_whitespace_class_is_what_strip_trims():
    """The spelled-out class is exactly the set of characters `str.isspace()` accepts."""
    spelled = re.compile(f"[{WHITESPACE_CLASS}]")
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        assert bool(spelled.fullmatch(char)) == char.isspace(), hex(code)


@settings(database=None, max_examples=400, deadline=None)
@given(text=EDGY, max_chars=st.integers(1, 6))
def test_pattern_matches_exactly_the_texts_validate_query_takes(text, max_chars):
    """For any text (lone surrogates aside), the pattern matches iff validate_query accepts."""
    assert (re.search(text_pattern(max_chars), text) is not None) == accepted(text, max_chars)


@pytest.mark.parametrize(
    ("text", "ok"),
    [("a", True), (" a\n", True), ("a" * 5, True), (" " + "a" * 5 + "\u3000", True),
     ("a" * 6, False), ("", False), ("\x1c\u2003", False), ("a\x00", False)],
)  # fmt: skip
def test_pattern_bounds_the_trimmed_length(text, ok):
    """Surrounding whitespace does not count towards the limit; the text between does."""
    assert (re.search(text_pattern(5), text) is not None) is ok
    assert accepted(text, 5) is ok


def test_a_lone_surrogate_is_refused_as_input():
    """JSON can spell "\\ud800"; it is a 400, not a tokenizer crash."""
    with pytest.raises(InputError, match="lone surrogate"):
        validate_query("swap \ud800", 1, QueryLimits())


@pytest.mark.parametrize(
    "body",
    [{"question": "x", "k": "3"}, {"question": "x", "k": True}, {"question": "x", "k": 1.5},
     {"question": "x", "stream": "true"}, {"question": "x", "stream": 1}, {"question": 5},
     {"question": "x", "colour": "red"}],
)  # fmt: skip
def test_ask_request_refuses_what_the_schema_refuses(body):
    """No coercion: a string for k, a number for stream, an unknown field are all invalid."""
    with pytest.raises(ValidationError):
        AskRequest.model_validate(body)


def test_ask_request_takes_an_integral_float_for_k():
    """JSON Schema counts 15.0 as an integer, so the model does too."""
    assert AskRequest.model_validate({"question": "x", "k": 15.0}).k == 15


def test_ask_request_body_carries_the_settings_bounds():
    """The published body has the question rule and k's maximum of the settings given."""
    body = ask_request_body(300, 3)["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["question"]
    assert body["properties"]["question"]["pattern"] == text_pattern(300)
    assert body["properties"]["k"]["anyOf"][0] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 3,
        "description": "How many; default ask.default_k, at most 3 (ask.max_k)",
    }


def test_503_and_401_come_with_their_headers():
    """A 503 documents Retry-After and a 401 WWW-Authenticate, both required."""
    responses = error_responses(401, 409, 503)
    assert responses[503]["headers"]["Retry-After"]["required"] is True
    assert responses[401]["headers"]["WWW-Authenticate"]["required"] is True
    assert "headers" not in responses[409]


def test_install_openapi_completes_fastapis_document():
    """The bearer scheme and the stream's events join the components, and FastAPI's own 422
    shape is replaced by ours, or dropped where nothing described can fail validation."""
    app = FastAPI()
    install_openapi(app)

    def hidden(authorization: str | None = Header(None, include_in_schema=False)) -> None:
        """A dependency whose only parameter is kept out of the document."""

    @app.get("/guarded", dependencies=[Depends(hidden)], openapi_extra=ADMIN_SECURITY)
    def guarded() -> dict[str, str]:
        return {}

    @app.get("/param")
    def param(n: int = 1) -> dict[str, int]:
        return {"n": n}

    document = app.openapi()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/guarded"]["get"]["security"] == [{"bearer": []}]
    assert "422" not in document["paths"]["/guarded"]["get"]["responses"]
    invalid = document["paths"]["/param"]["get"]["responses"]["422"]["content"]
    assert invalid["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    schemas = document["components"]["schemas"]
    assert {"AskEvent", "CitationsEvent", "DoneEvent", "ErrorEvent", "ErrorResponse"} <= set(
        schemas
    )
    assert "HTTPValidationError" not in schemas


def test_edge_statuses_are_on_every_operation():
    """A 503 (every connection busy) on every operation; 413 and 408 where a body is taken;
    a route's own description of a status is kept."""
    app = FastAPI()
    install_openapi(app)

    @app.get("/plain")
    def plain() -> dict[str, str]:
        return {}

    @app.post("/body", responses=error_responses(400))
    def body(request: AskRequest) -> dict[str, str]:
        return {}

    @app.get("/ready", responses={503: {"description": "Not ready: the route's own report"}})
    def ready() -> dict[str, str]:
        return {}

    paths = app.openapi()["paths"]
    assert {"503"} <= set(paths["/plain"]["get"]["responses"])
    assert not {"408", "413"} & set(paths["/plain"]["get"]["responses"])
    assert {"400", "408", "413", "503"} <= set(paths["/body"]["post"]["responses"])
    too_large = paths["/body"]["post"]["responses"]["413"]
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    assert too_large["content"]["application/json"]["schema"] == error
    assert paths["/plain"]["get"]["responses"]["503"]["headers"]["Retry-After"]["required"]
    assert paths["/ready"]["get"]["responses"]["503"]["description"].startswith("Not ready")
