"""Log lines reach stderr whole: one `write()` per event, so two processes never mix lines."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
import structlog

from ragvisor.logs import configure_logging, get_logger


class RecordingRaw(io.RawIOBase):
    """A raw stream that keeps each `write()` it is given, as the kernel would see them."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return len(data)


@pytest.fixture
def restore_logging():
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers = []


def test_each_event_is_one_write_of_a_whole_json_line(monkeypatch, restore_logging):
    # stderr as Python opens it under PYTHONUNBUFFERED=1 (our systemd unit): write-through.
    # Patched here, not in a fixture: pytest's capture sets sys.stderr again between phases.
    """Each log event, ours or the stdlib's, is one write of one whole JSON line."""
    unbuffered_stderr = RecordingRaw()
    stream = io.TextIOWrapper(unbuffered_stderr, encoding="utf-8", write_through=True)
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging(json=True)
    get_logger("web").info("http.request", path="/search", status=200)
    logging.getLogger("uvicorn.error").warning("shutting down")

    assert len(unbuffered_stderr.writes) == 2
    for write in unbuffered_stderr.writes:
        assert write.endswith(b"\n")
        assert write.count(b"\n") == 1
        json.loads(write)
    assert json.loads(unbuffered_stderr.writes[0])["event"] == "http.request"
