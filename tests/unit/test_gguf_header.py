"""Reading a GGUF header without loading the model: the architecture and its trained context,
skipping everything else, and ModelFileError for a file that is not a readable GGUF."""

from __future__ import annotations

import io
import struct

import pytest

from ragvisor.errors import ModelFileError
from ragvisor.llm.gguf_header import gguf_context_length


def _text(value: str) -> bytes:
    data = value.encode()
    return struct.pack("<Q", len(data)) + data


def gguf(*pairs: bytes, version: int = 3) -> io.BytesIO:
    return io.BytesIO(b"GGUF" + struct.pack("<IQQ", version, 0, len(pairs)) + b"".join(pairs))


def kv_string(key: str, value: str) -> bytes:
    return _text(key) + struct.pack("<I", 8) + _text(value)


def kv_u32(key: str, value: int) -> bytes:
    return _text(key) + struct.pack("<II", 4, value)


def kv_strings(key: str, values: list[str]) -> bytes:
    return _text(key) + struct.pack("<IIQ", 9, 8, len(values)) + b"".join(map(_text, values))


def kv_floats(key: str, values: list[float]) -> bytes:
    return (
        _text(key)
        + struct.pack("<IIQ", 9, 6, len(values))
        + struct.pack(f"<{len(values)}f", *values)
    )


def test_gguf_context_length_skips_arrays_and_stops_when_found():
    """Vocabulary arrays are skipped; keys after the answer are never read (here: garbage)."""
    stream = gguf(
        kv_string("general.architecture", "gemma3"),
        kv_strings("tokenizer.ggml.tokens", ["<pad>", "hello", "wörld"]),
        kv_floats("tokenizer.ggml.scores", [0.0, -1.5, -2.0]),
        kv_u32("gemma3.context_length", 32768),
        b"\xff" * 16,  # never reached
    )
    assert gguf_context_length(stream) == ("gemma3", 32768)


def test_gguf_context_length_found_before_the_architecture():
    """The order of keys does not matter."""
    stream = gguf(kv_u32("llama.context_length", 4096), kv_string("general.architecture", "llama"))
    assert gguf_context_length(stream) == ("llama", 4096)


def test_gguf_without_context_length_gives_none():
    """A header without `<arch>.context_length` names the architecture only."""
    assert gguf_context_length(gguf(kv_string("general.architecture", "bert"))) == ("bert", None)


@pytest.mark.parametrize(
    "stream",
    [
        io.BytesIO(b"PK\x03\x04 not a model"),
        gguf(kv_string("general.architecture", "llama"), version=1),
        io.BytesIO(gguf(kv_string("general.architecture", "gemma3")).getvalue()[:30]),
        gguf(kv_u32("gemma3.context_length", 1)),
    ],
    ids=["not-gguf", "version-1", "cut-short", "no-architecture"],
)
def test_gguf_that_cannot_be_read_is_a_model_file_error(stream):
    """Not GGUF, GGUF v1, a truncated header or no architecture: ModelFileError."""
    with pytest.raises(ModelFileError):
        gguf_context_length(stream)
