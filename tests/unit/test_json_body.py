"""JSON bodies: nesting is bounded before parsing, and every string is checked for NUL and lone
surrogates, with messages that name the field."""

from __future__ import annotations

import json

import pytest

from ragvisor.errors import InputError
from ragvisor.web.json_body import check_strings, load_json, nesting_depth


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"1", 0),
        (b"{}", 1),
        (b'{"question": "x", "k": 3}', 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"question": "[[[[{{{{"}', 1),  # brackets inside a string do not count
        (b'{"q": "say \\"[[[\\" and \\\\", "r": [[]]}', 3),  # nor after escaped quotes
        (b"[" * 500 + b"]" * 500, 500),
    ],
)
def test_nesting_depth_counts_brackets_outside_strings(raw, depth):
    """Depth is the deepest run of open arrays and objects; string contents never count."""
    assert nesting_depth(raw) == depth


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"[" * 33],
)
def test_a_body_deeper_than_the_bound_is_an_input_error_not_a_recursion_error(raw):
    """However deep (100,000 levels), the body is refused with the bound named, never parsed."""
    with pytest.raises(InputError, match=r"deeper than 32 levels \(server\.max_json_depth\)"):
        load_json(raw, max_depth=32)


def test_a_body_within_the_bound_parses_even_with_many_brackets_in_strings():
    """Many brackets inside strings take the careful path and still parse."""
    raw = json.dumps({"question": "[" * 1000, "k": [[[1]]]}).encode()
    assert load_json(raw, max_depth=4) == {"question": "[" * 1000, "k": [[[1]]]}


@pytest.mark.parametrize("raw", [b"", b"  \n", b"\t"])
def test_an_empty_body_is_an_empty_object(raw):
    """No body at all reads as `{}` (then "question must not be empty")."""
    assert load_json(raw, max_depth=32) == {}


@pytest.mark.parametrize("raw", [b"{", b"nope", b'{"question": "x"', b"\xff\xfe\xfa"])
def test_text_that_is_not_json_raises_value_error(raw):
    """Malformed JSON or bytes that are no text raise json's own ValueError (the caller's 422)."""
    with pytest.raises(ValueError):
        load_json(raw, max_depth=32)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (rb'{"question": "\ud800 backup"}', "question is not valid Unicode"),
        (rb'{"question": "a\u0000b"}', "question must not contain NUL characters"),
        (rb'{"\udc00x": 1}', "a field name is not valid Unicode"),
        (rb'{"a": {"b\u0000": 1}}', "a field name in a must not contain NUL"),
        (rb'{"a": [1, {"b": ["ok", "\udfff"]}]}', "a[1].b[1] is not valid Unicode"),
        (rb'"\ud83d"', "the body is not valid Unicode"),
    ],
)
def test_a_spoiled_string_anywhere_is_an_input_error_naming_it(raw, message):
    """A NUL or a lone surrogate in any string or field name is refused, the place named."""
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_json(raw, max_depth=32)


def test_surrogate_pairs_and_other_text_pass():
    """A proper surrogate pair (an emoji) and ordinary Unicode are fine."""
    assert load_json(rb'{"question": "\ud83d\ude00 caf\u00e9"}', max_depth=32) == {
        "question": "\U0001f600 café"
    }
    check_strings({"a": ["b", {"c": "d"}], "e": 1.5, "f": None, "g": True})
