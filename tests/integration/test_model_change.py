"""A model change over real HTTP, on SQLite and on the real Neo4j: while the new generation is
built, every search is answered from the complete old one; then, in one step, from the new."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx

from tests.integration.conftest import run_cli, start_daemon, stop_daemon
from tests.integration.corpus import synthetic_corpus

DOCUMENTS = 40


def another_model(model_dir: Path, where: Path) -> Path:
    """The pinned MiniLM as a new model file: the same weights, one unknown protobuf field
    appended (ONNX Runtime ignores it), so a new digest and fingerprint — a model change whose
    results are checkable against the old ones."""
    shutil.copytree(model_dir, where)
    with (where / "model.onnx").open("ab") as handle:
        handle.write(b"\xc0\x3e\x01")  # field 1000, varint 1
    return where


def generations(url: str) -> dict:
    return httpx.get(f"{url}/status", timeout=10).json()["store"]["generations"]


QUERIES = [f"topic{d} detail{d % 4} item{d * 31 + 3}" for d in range(0, DOCUMENTS, 3)]


def top_ids(url: str) -> dict[str, list[str]]:
    """The top-3 chunk ids of every query."""
    return {
        q: [
            hit["chunk_id"]
            for hit in httpx.get(f"{url}/search", params={"q": q, "k": 3}, timeout=30).json()[
                "results"
            ]
        ]
        for q in QUERIES
    }


def test_searches_use_the_complete_old_generation_until_the_switch(
    tmp_path, model_dir, store_backend
):
    """1. 40 documents synced with the pinned model, and the top-3 of 14 queries recorded;
    2. the daemon restarts with a new model file and re-embeds at start; 3. during the
    migration every query returns exactly the recorded top-3 (the complete old generation,
    where a half-built new one would miss documents), /status shows growing progress and the
    metric counts it; 4. at the end the new generation is active and queries use it, and the old
    vectors are gone."""
    # 1. The old generation, and what it answers.
    corpus = synthetic_corpus(tmp_path / "corpus", documents=DOCUMENTS)
    data = tmp_path / "data"
    sync = run_cli(
        ["sync", "--corpus", str(corpus), "--data-dir", str(data), "--json"],
        model_dir,
        **store_backend,
    )
    assert sync.returncode == 0, sync.stderr
    quiet = {"RAGVISOR_SYNC__INTERVAL_S": "0", "RAGVISOR_SYNC__ON_START": "false"}
    old = start_daemon(corpus, data, model_dir, tmp_path / "old.log", **quiet, **store_backend)
    try:
        baseline = top_ids(old.url)
    finally:
        stop_daemon(old)
    new_model = another_model(model_dir, tmp_path / "new-model")
    # 2. A daemon with the new model; its start-up sync builds the new generation.
    daemon = start_daemon(
        corpus,
        data,
        model_dir,
        tmp_path / "daemon.log",
        RAGVISOR_EMBEDDER__MODEL_DIR=str(new_model),
        RAGVISOR_EMBEDDER__MODEL_NAME="minilm-copy",
        RAGVISOR_SYNC__INTERVAL_S="0",
        **store_backend,
    )
    try:
        first = generations(daemon.url)
        old_key = first["active"]["fingerprint"]
        assert first["building"]["model"] == "minilm-copy"
        new_key = first["building"]["fingerprint"]
        assert first["serving"] == old_key
        # 3. Queries during the migration answer as the old generation did.
        during, progress_seen, metric_seen = 0, [], False
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = generations(daemon.url)
            if state["building"] is None:
                break
            progress_seen.append(state["migration"]["chunks_done"])
            query = QUERIES[during % len(QUERIES)]
            hits = httpx.get(
                f"{daemon.url}/search", params={"q": query, "k": 3}, timeout=30
            ).json()["results"]
            assert [hit["chunk_id"] for hit in hits] == baseline[query], query
            during += 1
            metrics = httpx.get(f"{daemon.url}/metrics", timeout=10).text
            metric_seen |= 'ragvisor_migration_chunks{state="total"} ' in metrics
        assert during >= 3, "the migration ended before the test could search during it"
        assert metric_seen
        assert progress_seen == sorted(progress_seen)
        # 4. Switched in one step: the new generation serves (the same weights: the same
        #    answers), the old vectors are pruned.
        end = generations(daemon.url)
        assert end["active"]["fingerprint"] == new_key
        assert end["serving"] == new_key
        assert end["migration"] is None
        assert top_ids(daemon.url) == baseline
        store = httpx.get(f"{daemon.url}/status", timeout=10).json()["store"]
        assert store["vectors"] == store["chunks"]
        assert "store.generation_activated" in daemon.logs()
        assert old_key != new_key
    finally:
        stop_daemon(daemon)
