"""The generator model file: materialised once, verified, never half-written."""

from __future__ import annotations

from ragvisor.core.hashing import file_sha256
from ragvisor.llm.gguf import DEFAULT_GGUF_NAME, DEFAULT_GGUF_SHA256, ensure_default_gguf


def test_the_default_model_lands_verified_and_is_not_rewritten(tmp_path):
    """The default GGUF lands checked against its pin, and a second call leaves it untouched."""
    path = ensure_default_gguf(tmp_path / "models")
    assert path.name == DEFAULT_GGUF_NAME
    assert file_sha256(path) == DEFAULT_GGUF_SHA256
    before = path.stat().st_mtime_ns
    assert ensure_default_gguf(tmp_path / "models") == path
    assert path.stat().st_mtime_ns == before
    assert not list((tmp_path / "models").glob("*.partial"))


def test_a_truncated_file_is_replaced(tmp_path):
    """A copy cut short (a full disk, a crash before the rename) is never loaded."""
    target = tmp_path / "models" / DEFAULT_GGUF_NAME
    target.parent.mkdir()
    target.write_bytes(b"GGUF" + b"\0" * 1000)
    path = ensure_default_gguf(tmp_path / "models")
    assert file_sha256(path) == DEFAULT_GGUF_SHA256
