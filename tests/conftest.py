"""Fixtures for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _structlog_config() -> Iterator[None]:
    """Give each test back the logging configuration it started with.

    Commands run in-process (`health.main`, …) configure structlog for their own output, which
    would otherwise filter out the events later tests capture.
    """
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
