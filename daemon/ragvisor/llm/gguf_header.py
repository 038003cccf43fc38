"""Reading a GGUF file's header without loading the model: the architecture and its trained
context length, for `ragvisor doctor` (and anyone who needs a model's facts cheaply).

GGUF v2+ metadata is a list of typed key/value pairs before the tensors; this walks it, skipping
values it does not need (arrays included) and stopping at the key it wants, so a 262k-token
vocabulary is never read. Raises ModelFileError for a file that is not GGUF or is cut short.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

from ragvisor.errors import ModelFileError

_GGUF_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d",
}  # fmt: skip
_GGUF_INTEGERS = frozenset({0, 1, 2, 3, 4, 5, 10, 11})
_GGUF_STRING, _GGUF_ARRAY = 8, 9
MAX_GGUF_STRING = 1 << 24


def _read(stream: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise ModelFileError("the GGUF header ends early")
    return struct.unpack(fmt, data)[0]


def _read_text(stream: BinaryIO) -> str:
    length = _read(stream, "<Q")
    if length > MAX_GGUF_STRING:
        raise ModelFileError("the GGUF header has an implausible string length")
    return bytes(stream.read(length)).decode("utf-8", errors="replace")


def _skip(stream: BinaryIO, kind: int) -> None:
    if kind in _GGUF_SCALARS:
        stream.seek(struct.calcsize(_GGUF_SCALARS[kind]), 1)
    elif kind == _GGUF_STRING:
        stream.seek(_read(stream, "<Q"), 1)
    elif kind == _GGUF_ARRAY:
        item, count = _read(stream, "<I"), _read(stream, "<Q")
        if item in _GGUF_SCALARS:
            stream.seek(count * struct.calcsize(_GGUF_SCALARS[item]), 1)
        else:
            for _ in range(count):
                _skip(stream, item)
    else:
        raise ModelFileError(f"the GGUF header has an unknown value type {kind}")


def gguf_context_length(stream: BinaryIO) -> tuple[str, int | None]:
    """The architecture and its `<arch>.context_length` from a GGUF file's metadata.

    Reads key by key and stops as soon as both are known, skipping (seeking over) everything
    else: the `gguf` package parses the whole header first, including a 262k-token vocabulary
    (32 s and 700 MB for the pinned Gemma file on our test box). Raises ModelFileError for a
    file that is not GGUF v2+ or whose header is cut short.
    """
    if stream.read(4) != b"GGUF":
        raise ModelFileError("not a GGUF file")
    if _read(stream, "<I") < 2:
        raise ModelFileError("GGUF version 1 is not supported")
    _read(stream, "<Q")  # tensor count
    arch: str | None = None
    lengths: dict[str, int] = {}
    for _ in range(_read(stream, "<Q")):
        key, kind = _read_text(stream), _read(stream, "<I")
        if key == "general.architecture" and kind == _GGUF_STRING:
            arch = _read_text(stream)
        elif key.endswith(".context_length") and kind in _GGUF_INTEGERS:
            lengths[key] = int(_read(stream, _GGUF_SCALARS[kind]))
        else:
            _skip(stream, kind)
        if arch is not None and f"{arch}.context_length" in lengths:
            break
    if arch is None:
        raise ModelFileError("the GGUF metadata names no general.architecture")
    return arch, lengths.get(f"{arch}.context_length")
