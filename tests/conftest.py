"""Fixtures for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

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


@pytest.fixture(scope="session")
def neo4j_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real Neo4j for the whole run (tests/infra/neo4j_engine.py), started on first use,
    heap and page cache as inventory/prod gives them. Skips, saying why, only on a machine that
    cannot build the engine."""
    from tests.infra import neo4j_engine as engines  # noqa: PLC0415 - only when a test asks
    from tests.infra.engine_steps import free_port  # noqa: PLC0415

    try:
        engines.build()
    except engines.EngineError as exc:
        pytest.skip(f"no Neo4j engine on this machine: {exc}")
    engine = engines.Engine.in_folder(tmp_path_factory.mktemp("neo4j"), free_port())
    yield engine.start()
    engine.stop()


@pytest.fixture(scope="session")
def ollama_build() -> Any:
    """The run's Ollama, built from the Go module proxy once per machine (tests/infra/
    ollama_engine.py); each test module starts the servers it needs from it, and stops them, so
    none outlives its module. Skips, saying why, only on a machine without Go or a C compiler;
    a failed build fails the tests that need it."""
    from tests.infra import ollama_engine as engines  # noqa: PLC0415 - only when a test asks

    missing = engines.missing_tools()
    if missing:
        pytest.skip(f"no Ollama on this machine: {', '.join(missing)} not found on PATH")
    try:
        return engines.build()
    except engines.EngineError as exc:
        pytest.fail(f"building Ollama failed: {exc}")


@pytest.fixture(scope="module")
def ollama_server(ollama_build: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real `ollama serve` for a module, with inventory/prod's `ollama_env`."""
    from tests.infra.engine_steps import free_port  # noqa: PLC0415 - only when a test asks
    from tests.infra.ollama_engine import Server  # noqa: PLC0415

    server = Server(tmp_path_factory.mktemp("ollama"), free_port())
    yield server.start()
    server.stop()
