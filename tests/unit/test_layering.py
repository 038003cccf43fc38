"""Dependencies point one way: the core imports no web framework, CLI, backend or logger."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "daemon" / "ragvisor" / "core"
FORBIDDEN = (
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "argparse",
    "tqdm",
    "structlog",
    "apscheduler",
    "onnxruntime",
    "tokenizers",
    "sqlite3",
    "neo4j",
    "ragvisor.web",
    "ragvisor.cli",
    "ragvisor.app",
    "ragvisor.store",
    "ragvisor.embed",
    "ragvisor.syncing",
    "ragvisor.logs",
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_nothing_from_the_outer_layers(module):
    """A core module importing a backend, the web layer or the CLI fails this test."""
    bad = {
        name
        for name in imported_modules(module)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not bad, f"{module.name} imports {sorted(bad)}"
