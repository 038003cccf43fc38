"""Fakes of the protocols the composition root wires, for unit tests that must run in
microseconds: a clock (:class:`FakeClock`), an embedder (:class:`FakeEmbedder`), a store
(:class:`MemoryStore`), a generator (:class:`FakeGenerator`) and the memory guard's probe
(:class:`ScriptedProbe`).

Integration tests use the real parts (SQLite, the ONNX model, llama.cpp); these fakes exist so
the planner, the retriever, the answer path and the guard can be pinned without loading them.
They are working implementations of the protocols, not mocks — the store keeps the store
contract, the embedder really maps text to a deterministic unit vector.
"""

from ragvisor.testing.clock import FakeClock
from ragvisor.testing.embedder import FakeEmbedder
from ragvisor.testing.generator import FakeGenerator
from ragvisor.testing.memory import ScriptedProbe
from ragvisor.testing.store import MemoryStore

__all__ = ["FakeClock", "FakeEmbedder", "FakeGenerator", "MemoryStore", "ScriptedProbe"]
