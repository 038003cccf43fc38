"""Dependencies point one way: the core imports no framework or backend, no module imports
another that imports it back (no cycle), and each room of the package imports only the rooms
its layer allows (ALLOWED, written once)."""

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
    "ragvisor.application.sync_runner",
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


PACKAGE = CORE.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every module of the package -> the package's modules it imports (type-checking imports
    included: they are dependencies of the design even when not of the running process)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # `from pkg import submodule` names the submodule
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    """No module of ragvisor imports, directly or through others, a module that imports it."""
    graph = import_graph()
    assert len(graph) > 50, "the package was not found"
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    """The finder itself: a -> b -> c -> a is one cycle; d, which only imports a, is in none."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


# What each room of the package may import, written once. A room is a top-level module or
# subpackage; the embedded worker (llm.worker) is a program of its own and a room apart.
# Lower rooms first; nothing may import a room above it. Any room may read the package's
# `__version__` (ragvisor/__init__.py).
FOUNDATION = {"errors", "core", "datadir", "admin_token", "config", "logs", "metrics", "allocator"}
BACKENDS = {"store", "ollama", "embed", "rerank", "llm", "asgi"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "core": {"errors"},
    "allocator": set(),
    "datadir": {"errors"},
    "admin_token": {"errors", "datadir"},
    "config": {"errors", "core", "admin_token"},
    "logs": {"errors"},
    "metrics": {"errors"},
    "testing": FOUNDATION | {"supervise"},
    "store": {"errors", "core", "datadir"},
    "ollama": {"errors", "core"},
    "embed": {"errors", "core", "datadir", "config", "ollama"},
    "rerank": {"errors", "core", "config", "embed"},  # loads its model as the embedder does
    "llm": {"errors", "core", "datadir", "ollama"},
    "asgi": {"errors"},
    "llm.worker": FOUNDATION | {"ollama", "embed", "llm", "asgi"},
    "supervise": FOUNDATION | {"ollama", "llm", "embed"},
    "application": FOUNDATION,
    "runtime": FOUNDATION | BACKENDS | {"supervise", "application"},
    "web": FOUNDATION | {"asgi", "supervise", "application", "runtime"},
    "oncall": FOUNDATION | {"ollama", "llm"},
    "ops": FOUNDATION | {"ollama", "llm", "oncall", "faultproxy"},
    "faultproxy": FOUNDATION,
    "app": FOUNDATION | BACKENDS | {"supervise", "application", "runtime", "web"},
    "cli": set(),  # filled below: the command line may import every room
    "__init__": set(),
    "__main__": {"cli"},
}
ALLOWED["cli"] = set(ALLOWED) - {"cli", "__main__"}
# A program's `python -m` entry (and the fault proxy's former module) runs the one CLI.
ENTRY_POINTS = {"ragvisor.faultproxy.__main__", "ragvisor.ops.faultproxy"}


def room(module: str) -> str:
    parts = module.split(".")
    if parts[1:3] == ["llm", "worker"]:
        return "llm.worker"
    return parts[1] if len(parts) > 1 else "__init__"


def violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Every import from one room into another that ALLOWED does not list."""
    found = set()
    for module, targets in graph.items():
        if module in ENTRY_POINTS:
            continue
        for target in targets:
            here, there = room(module), room(target)
            if here != there and there != "__init__" and there not in ALLOWED[here]:
                found.add((module, target))
    return found


def test_every_room_of_the_package_is_placed_in_the_layers():
    """A new top-level module or subpackage must say what it may import."""
    rooms = {room(module) for module in import_graph()}
    assert rooms <= set(ALLOWED), f"rooms with no place in ALLOWED: {sorted(rooms - set(ALLOWED))}"


def test_no_room_imports_outside_what_its_layer_allows():
    """An import from a room into one its layer may not use fails, naming both modules."""
    new = violations(import_graph())
    assert not new, "imports across the layers: " + ", ".join(f"{a} -> {b}" for a, b in sorted(new))
