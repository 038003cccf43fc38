"""Fixtures for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import settings

# Property tests (tests/unit/test_properties_*.py). No example database: it would be written
# into the repository as .hypothesis/. No per-example deadline: the CPU is shared, and timing
# is not what they pin. HYPOTHESIS_PROFILE=thorough digs 20 times deeper when hunting a bug.
settings.register_profile("ragvisor", database=None, deadline=None, print_blob=True)
settings.register_profile("thorough", parent=settings.get_profile("ragvisor"), max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ragvisor"))


@pytest.fixture(autouse=True)
def _structlog_config() -> Iterator[None]:
    """Give each test back the logging configuration it started with.

    A test that runs the command line in-process (`ragvisor.cli.main`, the one place logging is
    set up) configures structlog for the command's output, which would otherwise filter out the
    events later tests capture.
    """
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
