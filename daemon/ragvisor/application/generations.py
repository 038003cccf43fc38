"""Model changes without a gap: which generation of vectors serves searches, which is being
built, and the one step that switches them.

A *generation* is every chunk embedded by one model (one fingerprint). The store records the
active one — searches use it — and, while the configured embedder differs from it, the one
being built. Sync embeds into the building generation; searches keep embedding queries with the
active generation's model (loaded again from the `[embedder]` settings the store recorded for
it) and so keep finding every document. When a sync leaves the building generation complete —
every stored chunk has a vector of it — it becomes active in one store write, queries switch to
the configured model, and the old vectors are pruned. A restart mid-way finds the records in the
store and resumes: what was embedded is kept (vectors are keyed by text hash and fingerprint).

Every daemon on one store reads the records (`refresh`), so a daemon that does not sync switches
when another one activates the new generation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragvisor.core.model import Fingerprint, Generation, Generations
from ragvisor.core.protocols import Embedder, Store
from ragvisor.errors import RagvisorError, StoreError
from ragvisor.metrics import Metrics

# Builds the query embedder of recorded `[embedder]` settings (the composition root's factory).
EmbedderLoader = Callable[[Mapping[str, Any]], Embedder]


def generation_of(embedder: Embedder, settings: Mapping[str, Any], now: float) -> Generation:
    """The generation an embedder makes, with the settings that load it again."""
    f = embedder.fingerprint
    return Generation(f.key, f.name, f.dimensions, dict(settings), now)


@dataclass(slots=True)
class MigrationProgress:
    """How far the building generation is: chunks (distinct texts) with a vector of it."""

    done: int = 0
    total: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON shape, with the ratio."""
        ratio = 1.0 if self.total == 0 else round(self.done / self.total, 4)
        return {"chunks_done": self.done, "chunks_total": self.total, "ratio": ratio}


class ModelGenerations:
    """The daemon's view of the store's generations, and the query embedder that goes with it.

    `serving` is the embedder for queries (the active generation's model), `configured` the one
    the sync embeds with. `queries` is the configured model as queries are embedded with it,
    when that differs (a task prefix, `ragvisor.embed.prefixes`); both have one fingerprint.
    Thread-safe: searches read `serving` while a sync switches it.
    """

    def __init__(
        self,
        store: Store,
        configured: Embedder,
        configured_settings: Mapping[str, Any],
        *,
        queries: Embedder | None = None,
        load_embedder: EmbedderLoader | None,
        log: Any,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.configured = configured
        self._queries = queries if queries is not None else configured
        self._settings = dict(configured_settings)
        self._load = load_embedder
        self._log = log
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._records = Generations()
        self._serving: Embedder = self._queries
        self._old: Embedder | None = None
        self.progress = MigrationProgress()
        self._base_done: int | None = None  # chunks done when the running sync began

    # -- what searches and the sync use ------------------------------------------------------

    @property
    def serving(self) -> Embedder:
        """The embedder whose vectors searches use now."""
        return self._serving

    @property
    def migrating(self) -> bool:
        """Whether a building generation exists that the configured model is filling."""
        return self._records.building is not None

    def keep_while_building(self) -> Sequence[Fingerprint]:
        """Fingerprints a prune must keep besides the configured one: the active generation's,
        until the building one replaces it."""
        active = self._records.active
        if active is None or active.fingerprint == self.configured.fingerprint.key:
            return ()
        return (active.identity(),)

    # -- reading and writing the records -----------------------------------------------------

    def reconcile(self) -> None:
        """Make the records agree with the configured model (at start and before every sync):
        a fresh store activates it at once; a different active model starts (or resumes)
        building a new generation; the active model configured again abandons a building one.
        Raises StoreError when the store cannot be read or written."""
        with self._lock:
            records = self._store.generations()
            mine = generation_of(self.configured, self._settings, self._clock())
            active, building = records.active, records.building
            if active is None:  # a new store, or one written before generations existed
                self._log.info(
                    "store.generation_adopted", fingerprint=mine.fingerprint, model=mine.model
                )
                updated = Generations(active=mine, building=None)
            elif active.fingerprint == mine.fingerprint:
                updated = Generations(active=active, building=None)
                if building is not None:
                    self._log.info(
                        "store.generation_abandoned",
                        fingerprint=building.fingerprint,
                        model=building.model,
                        why="the active model is configured again",
                    )
            elif building is not None and building.fingerprint == mine.fingerprint:
                updated = records
            else:
                updated = Generations(active=active, building=mine)
                self._log.info(
                    "store.generation_started",
                    active=active.fingerprint,
                    active_model=active.model,
                    building=mine.fingerprint,
                    building_model=mine.model,
                )
            if updated != records:
                self._store.set_generations(updated)
            self._apply(updated)

    def refresh(self) -> None:
        """Re-read the records (another daemon may have switched them); never writes.
        Raises StoreError when the store cannot be read."""
        with self._lock:
            records = self._store.generations()
            if records != self._records:
                self._apply(records)

    def finish_if_complete(self) -> bool:
        """After a sync: if the building generation now covers every stored chunk, make it
        active (one write) and prune the old vectors. Returns whether it switched."""
        with self._lock:
            building = self._records.building
            if building is None or building.fingerprint != self.configured.fingerprint.key:
                return False
            self._count_progress()
            if self.progress.done < self.progress.total:
                self._log.info("store.generation_incomplete", **self.progress.as_dict())
                return False
            old = self._records.active
            switched = Generations(active=building, building=None)
            self._store.set_generations(switched)
            self._apply(switched)
            self._log.info(
                "store.generation_activated",
                fingerprint=building.fingerprint,
                model=building.model,
                replaced=old.fingerprint if old else None,
                chunks=self.progress.total,
                duration_s=round(self._clock() - building.started_at, 1),
            )
        pruned = self._store.prune_vectors(self.configured.fingerprint)
        self._log.info("store.generation_pruned", vectors=pruned)
        return True

    def note_progress(self, embedded: int, to_embed: int) -> None:
        """A sync's progress while building: `embedded` of its `to_embed` texts are done."""
        if not self.migrating:
            return
        if self._base_done is None or embedded == 0:
            self._count_progress()
            self._base_done = self.progress.done - embedded
        else:
            self.progress.done = min(self.progress.total, self._base_done + embedded)
        self._export()

    # -- reports -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """`/status`'s `store.generations`: active, building and progress (no settings)."""
        records = self._records

        def short(g: Generation | None) -> dict[str, Any] | None:
            if g is None:
                return None
            return {"fingerprint": g.fingerprint, "model": g.model, "started_at": g.started_at}

        return {
            "active": short(records.active),
            "building": short(records.building),
            "serving": self._serving.fingerprint.key,
            "migration": self.progress.as_dict() if records.building is not None else None,
        }

    # -- inside the lock ---------------------------------------------------------------------

    def _apply(self, records: Generations) -> None:
        """Point `serving` at the active generation's model (loading it if it is not the
        configured one), and remember the records."""
        self._records = records
        active = records.active
        if active is None or active.fingerprint == self.configured.fingerprint.key:
            self._serving, self._old = self._queries, None
        elif self._old is not None and self._old.fingerprint.key == active.fingerprint:
            self._serving = self._old
        else:
            self._old = self._load_old(active)
            self._serving = self._old or self._queries
        if records.building is not None:
            self._count_progress()
        else:
            self.progress = MigrationProgress()
        self._export()

    def _load_old(self, active: Generation) -> Embedder | None:
        """The active generation's model, for queries; None (queries then use the configured
        model, over the part of the new generation built so far) when it cannot be loaded."""
        why = "no recorded settings"
        if self._load is not None and active.embedder:
            try:
                old = self._load(active.embedder)
            except (RagvisorError, OSError) as exc:
                why = str(exc)
            else:
                if old.fingerprint.key == active.fingerprint:
                    self._log.info(
                        "store.generation_query_model_loaded",
                        fingerprint=active.fingerprint,
                        model=active.model,
                    )
                    return old
                why = f"the recorded settings now load {old.fingerprint.key}"
        self._log.warning(
            "store.generation_query_model_unavailable",
            fingerprint=active.fingerprint,
            model=active.model,
            why=why,
            effect="searches use the new model over the documents re-embedded so far",
        )
        return None

    def _count_progress(self) -> None:
        building = self._records.building
        if building is None:
            return
        try:
            wanted = {h for d in self._store.stored_documents().values() for h in d.chunk_hashes}
            have = self._store.hashes_with_vectors(building.identity())
        except StoreError:
            return
        self.progress = MigrationProgress(done=len(wanted & have), total=len(wanted))

    def _export(self) -> None:
        if self._metrics is None:
            return
        p = self.progress if self._records.building is not None else MigrationProgress()
        self._metrics.migration_chunks.labels("done").set(p.done)
        self._metrics.migration_chunks.labels("total").set(p.total)
