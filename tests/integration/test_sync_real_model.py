"""Sync with the real ONNX model: embeddings counted at the embedder, not read from a report."""

from __future__ import annotations

import structlog

from ragvisor.application.sync_runner import SyncRunner
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.documents import CorpusSpec
from ragvisor.store.sqlite import SqliteStore
from tests.consistency import check_store
from tests.integration.corpus import synthetic_corpus


def test_real_model_resync_embeds_nothing_and_an_edit_embeds_only_its_chunks(tmp_path, embedder):
    """Unchanged re-sync: the model runs zero times; one edited section: only its chunks."""
    # 1. First sync of 12 documents x 4 sections with the real embedder.
    corpus = synthetic_corpus(tmp_path / "corpus", documents=12)
    store = SqliteStore(tmp_path / "data")
    runner = SyncRunner(
        corpus=CorpusSpec(roots=(corpus,)),
        chunking=ChunkingSpec(),
        store=store,
        embedder=embedder,
        lock_path=tmp_path / "data" / "sync.lock",
        log=structlog.get_logger(component="sync"),
    )
    start = embedder.embedded_texts_total
    first = runner.run(trigger="test")
    assert embedder.embedded_texts_total - start == first.embeddings_computed > 0
    # 2. Re-sync with nothing changed (read and hashed in full): the model is not called.
    before = embedder.embedded_texts_total
    again = runner.run(trigger="test", full_check=True)
    assert embedder.embedded_texts_total == before
    assert again.documents.unchanged == 12
    # 3. Edit one sentence of one section of one file: exactly that section's chunks change.
    path = corpus / "doc005.md"
    old_hashes = {d.path: d.chunk_hashes for d in store.stored_documents().values()}["doc005.md"]
    path.write_text(path.read_text().replace("topic5 detail2 sentence number 3", "an edit"))
    before = embedder.embedded_texts_total
    edited = runner.run(trigger="test")
    new_hashes = {d.path: d.chunk_hashes for d in store.stored_documents().values()}["doc005.md"]
    changed = [h for h in new_hashes if h not in set(old_hashes)]
    assert edited.documents.changed == 1
    assert 1 <= len(changed) < len(new_hashes)
    assert embedder.embedded_texts_total - before == len(changed) == edited.embeddings_computed
    check_store(store.path, embedder.fingerprint.key)
    store.close()
