"""Model changes without a gap: searches use the complete old generation until the new one is
complete, then switch in one step; a restart mid-way resumes. Real SQLite, fake models."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from ragvisor.application.generations import ModelGenerations
from ragvisor.application.sync_runner import SyncRunner
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.documents import CorpusSpec
from ragvisor.core.model import Generations
from ragvisor.core.retrieval import QueryLimits, Retriever
from ragvisor.errors import BackendUnavailable, ConfigError
from ragvisor.metrics import Metrics
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder

OLD = FakeEmbedder(name="old-model", dimensions=32)
# Enough notes for several embedding windows (32 texts each at batch size 1).
NOTES = 40


class FailingAfter(FakeEmbedder):
    """A new model (other dimensions) whose backend dies past `texts` embeddings."""

    def __init__(self, texts: int) -> None:
        super().__init__(name="new-model", dimensions=24, batch_size=1)  # 32 texts per window
        self.limit = texts

    def embed(self, texts):  # type: ignore[override]
        if self.embedded_texts_total + len(texts) > self.limit:
            raise BackendUnavailable("the new model's backend went away")
        return super().embed(texts)


def loader(*models: FakeEmbedder):
    """The composition root's loader, over fake models named in the recorded settings."""
    by_name = {m.fingerprint.name: m for m in models}

    def load(recorded: Mapping[str, Any]) -> FakeEmbedder:
        try:
            return by_name[str(recorded["name"])]
        except KeyError:
            raise ConfigError(f"no model {recorded.get('name')!r} here") from None

    return load


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    root.mkdir()
    for i in range(NOTES):
        (root / f"note{i:02}.md").write_text(f"# Note {i}\n\n" + f"topic{i} " * 40)
    return root


def daemon_parts(tmp_path: Path, corpus: Path, configured: FakeEmbedder, *models: FakeEmbedder):
    """What the composition root wires: store, generations, sync runner and retriever."""
    store = SqliteStore(tmp_path / "data")
    metrics = Metrics()
    generations = ModelGenerations(
        store,
        configured,
        {"name": configured.fingerprint.name},
        load_embedder=loader(*models),
        log=structlog.get_logger(component="store"),
        metrics=metrics,
    )
    generations.reconcile()
    runner = SyncRunner(
        corpus=CorpusSpec(roots=(corpus,)),
        chunking=ChunkingSpec(size_chars=300, overlap_chars=40),
        store=store,
        embedder=configured,
        lock_path=tmp_path / "data" / "sync.lock",
        log=structlog.get_logger(component="sync"),
        generations=generations,
    )
    retriever = Retriever(store, configured, QueryLimits(), serving=lambda: generations.serving)
    return store, generations, runner, retriever, metrics


def found_notes(retriever: Retriever) -> set[str]:
    """Which notes a dense search for each note's topic ranks first."""
    return {
        retriever.search(f"topic{i}", 1).hits[0].path
        for i in range(NOTES)
        if retriever.search(f"topic{i}", 1).hits
    }


ALL_NOTES = {f"note{i:02}.md" for i in range(NOTES)}


def test_a_fresh_store_activates_the_configured_model_at_once(tmp_path, corpus):
    """1. A new store records the configured model as the active generation, nothing building;
    2. searches use it; 3. /status shows no migration."""
    store, generations, runner, retriever, _ = daemon_parts(tmp_path, corpus, OLD)
    runner.run(trigger="test")
    records = store.generations()
    assert records.active is not None
    assert records.active.fingerprint == OLD.fingerprint.key
    assert records.building is None
    assert generations.serving is OLD
    assert found_notes(retriever) == ALL_NOTES
    assert generations.snapshot()["migration"] is None


def test_a_model_change_serves_the_old_generation_until_the_new_one_is_complete(tmp_path, corpus):
    """1. A store synced with the old model; 2. the daemon restarts with a new model (other
    dimensions) whose backend dies part-way through the re-embedding: every search still
    finds every note, from the old generation; progress is partial in /status and the metric;
    3. a restart resumes (embeds only what is missing), completes, switches in one step to the
    new model, and prunes the old vectors."""
    # 1. The old model's generation, complete.
    store, _, runner, _, _ = daemon_parts(tmp_path, corpus, OLD)
    runner.run(trigger="test")
    store.close()
    # 2. A new model, failing past 40 texts: a migration cut short.
    new = FailingAfter(texts=40)
    store, generations, runner, retriever, metrics = daemon_parts(tmp_path, corpus, new, OLD, new)
    assert store.generations().building is not None
    assert generations.serving is OLD
    with pytest.raises(BackendUnavailable):
        runner.run(trigger="test")
    assert found_notes(retriever) == ALL_NOTES
    progress = generations.snapshot()["migration"]
    assert 0 < progress["chunks_done"] < progress["chunks_total"]
    assert metrics.migration_chunks.labels("done")._value.get() == progress["chunks_done"]
    assert store.hashes_with_vectors(OLD.fingerprint)  # the old generation is untouched
    store.close()
    # 3. After a restart the backend is back: the migration resumes and completes.
    new.limit = 10_000
    done_before = progress["chunks_done"]
    store, generations, runner, retriever, metrics = daemon_parts(tmp_path, corpus, new, OLD, new)
    embedded_before = new.embedded_texts_total
    with capture_logs() as logs:
        report = runner.run(trigger="test")
    assert report.embeddings_computed == progress["chunks_total"] - done_before
    assert new.embedded_texts_total - embedded_before == report.embeddings_computed
    assert store.generations() == Generations(active=store.generations().active)
    assert store.generations().active.fingerprint == new.fingerprint.key
    assert generations.serving is new
    assert found_notes(retriever) == ALL_NOTES
    assert store.hashes_with_vectors(OLD.fingerprint) == set()
    assert generations.snapshot()["migration"] is None
    assert metrics.migration_chunks.labels("total")._value.get() == 0
    events = [e["event"] for e in logs]
    assert "store.generation_activated" in events
    assert events.index("store.generation_activated") < events.index("store.generation_pruned")


def test_without_the_old_model_searches_use_the_new_one_and_say_so(tmp_path, corpus):
    """When the active generation's model cannot be loaded again, queries use the configured
    model (over what is re-embedded so far) and a warning says why."""
    store, _, runner, _, _ = daemon_parts(tmp_path, corpus, OLD)
    runner.run(trigger="test")
    store.close()
    new = FakeEmbedder(name="new-model", dimensions=24)
    with capture_logs() as logs:
        _, generations, _, _, _ = daemon_parts(tmp_path, corpus, new)  # no loader for OLD
    assert generations.serving is new
    warning = next(e for e in logs if e["event"] == "store.generation_query_model_unavailable")
    assert "old-model" in warning["why"]
    assert warning["log_level"] == "warning"


def test_configuring_the_active_model_again_abandons_the_building_generation(tmp_path, corpus):
    """A building generation whose model is no longer configured is dropped, and its vectors go
    at the next sync's prune."""
    store, _, runner, _, _ = daemon_parts(tmp_path, corpus, OLD)
    runner.run(trigger="test")
    store.close()
    new = FailingAfter(texts=40)
    store, _, runner, _, _ = daemon_parts(tmp_path, corpus, new, OLD, new)
    with pytest.raises(BackendUnavailable):
        runner.run(trigger="test")
    store.close()
    store, generations, runner, _, _ = daemon_parts(tmp_path, corpus, OLD)
    assert store.generations().building is None
    runner.run(trigger="test")
    assert store.hashes_with_vectors(new.fingerprint) == set()
    assert generations.serving is OLD


def test_a_daemon_that_does_not_sync_switches_when_another_activates(tmp_path, corpus):
    """Two daemons on one store: the one that syncs activates the new generation; the other's
    `refresh` (the store watch) switches its queries to the new model without a restart."""
    store, _, runner, _, _ = daemon_parts(tmp_path, corpus, OLD)
    runner.run(trigger="test")
    new = FakeEmbedder(name="new-model", dimensions=24)
    _, serving_only, _, retriever, _ = daemon_parts(tmp_path, corpus, new, OLD, new)
    assert serving_only.serving is OLD
    _, _, syncing, _, _ = daemon_parts(tmp_path, corpus, new, OLD, new)
    syncing.run(trigger="test")
    serving_only.refresh()
    assert serving_only.serving is new
    assert found_notes(retriever) == ALL_NOTES
    active = store.generations().active
    assert active is not None
    assert (active.fingerprint, active.model, active.dimensions, active.embedder) == (
        new.fingerprint.key,
        "new-model",
        24,
        {"name": "new-model"},
    )
