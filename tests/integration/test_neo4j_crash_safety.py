"""kill -9 during a real sync on Neo4j, at several points, never loses or duplicates anything:
each document commit is one transaction, and the graph read back with the driver proves it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import neo4j
import numpy as np
import pytest

from ragvisor.cli.exits import EXIT_BUSY
from ragvisor.core.chunking import ChunkingSpec, chunk_document
from ragvisor.core.documents import CorpusSpec, scan_corpus
from tests.consistency import check_neo4j_store
from tests.infra.neo4j_engine import USER, Engine
from tests.integration.conftest import RAGVISOR, cli_env, run_cli
from tests.integration.corpus import synthetic_corpus

# How long the loop waits for a sync to reach the count it is killed at (the whole 40-document
# sync takes ~14 s on a 2-core box).
REACH_TIMEOUT_S = 120.0


@pytest.fixture
def driver(neo4j_engine: Engine) -> Iterator[neo4j.Driver]:
    """A driver on the run's Neo4j, emptied first."""
    neo4j_engine.wipe()
    with neo4j.GraphDatabase.driver(
        neo4j_engine.uri, auth=(USER, neo4j_engine.password)
    ) as connected:
        yield connected


def committed_documents(driver: neo4j.Driver) -> int:
    """Documents committed so far, as any reader of the graph sees them."""
    records = driver.execute_query("MATCH (d:Document) RETURN count(d) AS n").records
    return int(records[0]["n"])


def kill_at(command: list[str], env: dict[str, str], driver: neo4j.Driver, target: int) -> int:
    """Run `ragvisor sync` until the graph holds `target` documents (0: 0.3 s into its
    start-up), kill -9 it, and return the count then. The killed sync's lease is left behind:
    the next sync (of this host) must take it at once, never be refused as busy."""
    deadline = time.monotonic() + REACH_TIMEOUT_S
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if target == 0:
        time.sleep(0.3)
    else:
        while committed_documents(driver) < target and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode != EXIT_BUSY, stderr.decode(errors="replace")
    return committed_documents(driver)


def sync_to_the_end(args: list[str], model_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """`ragvisor sync --json` run to completion; its report."""
    result = run_cli(args, model_dir, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_kill_9_on_neo4j_at_several_points_then_resync_completes_consistently(
    neo4j_engine: Engine, driver: neo4j.Driver, tmp_path, model_dir, embedder
):
    """Killing `ragvisor sync` on Neo4j at start, early, midway and late leaves a consistent
    graph, and the next sync completes it: every chunk of every file once, every vector matching
    its chunk, and a further sync embeds nothing."""
    # 1. A corpus of 40 documents of 4 sections (160 chunks), an empty graph, syncs pointed at it.
    corpus = synthetic_corpus(tmp_path / "corpus", documents=40)
    store_env = neo4j_engine.daemon_env()
    args = ["sync", "--corpus", str(corpus), "--data-dir", str(tmp_path / "data"), "--json"]
    fingerprint = embedder.fingerprint.key
    # 2. Start a sync and kill it when the graph holds 0 (during start-up), 1, 15 and 30
    #    committed documents; after each kill the graph must satisfy every invariant.
    kills = []
    for target in (0, 1, 15, 30):
        kills.append(kill_at([*RAGVISOR, *args], cli_env(model_dir, **store_env), driver, target))
        counts = check_neo4j_store(driver, fingerprint)
        assert counts["documents"] == kills[-1]
    assert kills[1] >= 1, f"the kills came too early: {kills}"
    assert kills[-1] < 40, f"the sync finished before the last kill: {kills}"
    # 3. A sync after the crashes completes the graph and embeds only what was missing.
    report = sync_to_the_end(args, model_dir, store_env)
    assert report["documents"]["new"] == 40 - kills[-1]
    counts = check_neo4j_store(driver, fingerprint)
    # 4. Every file's chunks are stored exactly once, as the chunker makes them ...
    scan = scan_corpus(CorpusSpec(roots=(corpus,)))
    expected = {c.chunk_id: c for d in scan.documents for c in chunk_document(d, ChunkingSpec())}
    stored = {
        r["id"]: r["text"]
        for r in driver.execute_query(
            "MATCH (c:Chunk) RETURN c.chunk_id AS id, c.text AS text"
        ).records
    }
    assert counts["documents"] == 40
    assert counts["chunks"] == len(expected)
    assert stored == {cid: chunk.text for cid, chunk in expected.items()}
    # 5. ... and every vector equals what the model computes for the chunk's text.
    rows = driver.execute_query(
        "MATCH (c:Chunk) MATCH (v:Vector {fingerprint: $fp, text_sha256: c.text_sha256}) "
        "RETURN c.text AS text, v.embedding AS embedding",
        fp=fingerprint,
    ).records
    assert len(rows) == len(expected)
    reference = embedder.embed([r["text"] for r in rows])
    stored_vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
    assert np.allclose(stored_vectors, reference, atol=1e-4)
    # 6. A further sync changes nothing.
    again = sync_to_the_end(args, model_dir, store_env)
    assert again["embeddings_computed"] == 0
    assert again["documents"]["unchanged"] == 40
