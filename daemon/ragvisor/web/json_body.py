"""A JSON request body, parsed with bounded nesting and with every string checked.

`json.loads` recurses once per nesting level: an `/ask` body nested 961 levels deep ran out of
stack (a RecursionError, answered 500). Here the depth is counted first, in one pass over the
bytes that skips strings — and only when the body holds more brackets than `max_depth` at all,
so a question (one `{`) costs two `bytes.count` calls. Every string of the parsed value, names
of fields included, must then pass `text_problem`: JSON can spell a lone surrogate (`"\\ud800"`)
that no UTF-8 encoder and no tokenizer accepts, and a NUL that SQLite's parser stops at.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ragvisor.core.retrieval import text_problem
from ragvisor.errors import InputError

# A JSON string (escapes included) or one bracket; strings are matched whole so that the
# brackets inside them are not counted.
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def load_json(raw: bytes, max_depth: int) -> Any:
    """Parse a JSON body; an empty one is `{}`.

    Raises InputError when arrays and objects nest deeper than `max_depth` or a string holds
    a NUL or a lone surrogate; ValueError (json's own) when the bytes are not JSON.
    """
    if not raw.strip():
        return {}
    if raw.count(b"[") + raw.count(b"{") > max_depth and nesting_depth(raw) > max_depth:
        raise _too_deep(max_depth)
    try:
        value = json.loads(raw)
    except RecursionError as exc:  # only if the count above missed (a UTF-16 body)
        raise _too_deep(max_depth) from exc
    check_strings(value)
    return value


def nesting_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in `raw`; brackets inside strings do not count."""
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(raw):
        token = match[0]
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def check_strings(value: Any, where: str = "") -> None:
    """Raise InputError naming the first string of `value` (a parsed JSON value) that a NUL or
    a lone surrogate spoils: `question must not contain NUL characters`."""
    pending: list[tuple[Any, str]] = [(value, where)]
    while pending:  # a loop, not recursion: the depth is bounded, but so is the stack
        item, at = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                raise InputError(f"{at or 'the body'} {problem}")
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = text_problem(key)
                if problem is not None:
                    raise InputError(f"a field name{f' in {at}' if at else ''} {problem}")
                pending.append((child, f"{at}.{key}" if at else key))
        elif isinstance(item, list):
            pending.extend((child, f"{at}[{index}]") for index, child in enumerate(item))


def _too_deep(max_depth: int) -> InputError:
    return InputError(f"the JSON body nests deeper than {max_depth} levels (server.max_json_depth)")
