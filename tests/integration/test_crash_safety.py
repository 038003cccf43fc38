"""kill -9 during a real sync, at several points, never loses or duplicates anything."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time

import numpy as np

from ragvisor.core.chunking import ChunkingSpec, chunk_document
from ragvisor.core.documents import CorpusSpec, scan_corpus
from tests.consistency import check_store
from tests.integration.conftest import RAGVISOR, cli_env, run_cli
from tests.integration.corpus import synthetic_corpus


def committed_documents(db) -> int:
    """Documents committed so far, read without disturbing the writer (0 before the schema)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def test_kill_9_at_several_points_then_resync_completes_consistently(tmp_path, model_dir, embedder):
    """Killing `ragvisor sync` at start, early, midway and late leaves a consistent store, and
    the next sync completes it: every chunk of every file once, every vector matching its chunk.
    """
    # 1. A corpus of 40 documents of 4 sections (160 chunks) and an empty data directory.
    corpus = synthetic_corpus(tmp_path / "corpus", documents=40)
    data = tmp_path / "data"
    db = data / "ragvisor.sqlite3"
    fingerprint = embedder.fingerprint.key
    command = [*RAGVISOR, "sync", "--corpus", str(corpus), "--data-dir", str(data), "--json"]
    # 2. Start a sync and kill it when the store holds 0 (during start-up), 1, 15 and 30
    #    committed documents; after each kill the store must satisfy every invariant.
    kills = []
    for target in (0, 1, 15, 30):
        process = subprocess.Popen(
            command, env=cli_env(model_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        if target == 0:
            time.sleep(0.3)
        else:
            while committed_documents(db) < target and time.monotonic() < deadline:
                if process.poll() is not None:
                    break
                time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kills.append(committed_documents(db))
        if db.exists():
            check_store(db, fingerprint)
    assert kills[-1] < 40, f"the sync finished before the last kill: {kills}"
    # 3. A sync after the crashes completes the store and embeds only what was missing.
    result = run_cli(
        ["sync", "--corpus", str(corpus), "--data-dir", str(data), "--json"], model_dir
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["documents"]["new"] == 40 - kills[-1]
    counts = check_store(db, fingerprint)
    # 4. Every file's chunks are stored exactly once, as the chunker makes them ...
    scan = scan_corpus(CorpusSpec(roots=(corpus,)))
    expected = {c.chunk_id: c for d in scan.documents for c in chunk_document(d, ChunkingSpec())}
    conn = sqlite3.connect(db)
    stored = dict(conn.execute("SELECT chunk_id, text FROM chunks").fetchall())
    assert counts["documents"] == 40
    assert stored.keys() == expected.keys()
    # 5. ... and every vector equals what the model computes for the chunk's text.
    rows = conn.execute(
        "SELECT c.text, v.vector FROM chunks c JOIN vectors v ON v.text_sha256 = c.text_sha256 "
        "AND v.fingerprint = ?",
        (fingerprint,),
    ).fetchall()
    conn.close()
    assert len(rows) == len(expected)
    reference = embedder.embed([text for text, _ in rows])
    stored_vectors = np.stack([np.frombuffer(blob, dtype="<f4") for _, blob in rows])
    assert np.allclose(stored_vectors, reference, atol=1e-4)
    # 6. A further sync changes nothing.
    again = json.loads(
        run_cli(
            ["sync", "--corpus", str(corpus), "--data-dir", str(data), "--json"], model_dir
        ).stdout
    )
    assert again["embeddings_computed"] == 0
    assert again["documents"]["unchanged"] == 40
