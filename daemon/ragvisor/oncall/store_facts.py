"""What `ragvisor doctor` reads from a Neo4j store: whether the daemon's credentials reach the
database, the generations recorded there, and each one's vector index as Neo4j reports it.

The on-call room may not import the stores (tests/unit/test_layering.py), so the store comes in
through a small seam: `read_store` takes a function that opens one from the settings (the
command line passes `ragvisor.app.build_store`), asks it two read-only questions
(`Neo4jStore.recorded_generations`, `Neo4jStore.vector_index_info`) and closes it. Every failure
becomes a fact — the reason, never the password — for `ragvisor.oncall.store_checks` to judge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from ragvisor.core.model import Fingerprint, Generation, Generations
from ragvisor.errors import RagvisorError

if TYPE_CHECKING:
    from ragvisor.config import Settings


class VectorIndexState(Protocol):
    """A vector index as the store reports it (`ragvisor.store.neo4j_store.VectorIndexInfo`)."""

    @property
    def name(self) -> str: ...
    @property
    def exists(self) -> bool: ...
    @property
    def state(self) -> str | None: ...
    @property
    def dimensions(self) -> int | None: ...
    @property
    def vectors(self) -> int: ...


class StoreProbe(Protocol):
    """The read-only questions the doctor asks a store (`Neo4jStore` answers them)."""

    def recorded_generations(self) -> Generations: ...
    def vector_index_info(self, fingerprint: Fingerprint) -> VectorIndexState: ...
    def close(self) -> None: ...


# Opens the configured store; raises RagvisorError (ConfigError: no password; StoreError).
StoreOpener = Callable[["Settings"], StoreProbe]


@dataclass(frozen=True, slots=True)
class GenerationIndex:
    """One recorded generation (`active` serves searches, `building` is being embedded) and
    its vector index."""

    role: str
    generation: Generation
    index: VectorIndexState


@dataclass(frozen=True, slots=True)
class StoreFacts:
    """What `read_store` found. `error` set: the database was not read (the other fields are
    empty); `checked` False: no store was opened (the caller passed no opener)."""

    uri: str
    database: str
    user: str
    checked: bool = True
    error: str | None = None
    generations: Generations | None = None
    indexes: tuple[GenerationIndex, ...] = ()


def read_store(settings: Settings, open_store: StoreOpener | None) -> StoreFacts | None:
    """The Neo4j store's facts; None for the SQLite store (its file is the data directory's,
    which `check_data_dir` looks at). Never raises for the store's sake: an unreachable
    database, refused credentials or an unreadable password file become `error`."""
    s = settings.store
    if s.backend != "neo4j":
        return None
    found = StoreFacts(uri=s.uri, database=s.database, user=s.user)
    if open_store is None:
        return replace(found, checked=False)
    try:
        store = open_store(settings)
    except RagvisorError as exc:
        return replace(found, error=str(exc))
    try:
        generations = store.recorded_generations()
        recorded = (("active", generations.active), ("building", generations.building))
        indexes = tuple(
            GenerationIndex(role, generation, store.vector_index_info(generation.identity()))
            for role, generation in recorded
            if generation is not None
        )
    except RagvisorError as exc:
        return replace(found, error=str(exc))
    finally:
        store.close()
    return replace(found, generations=generations, indexes=indexes)
