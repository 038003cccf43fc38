"""The answer cache over real HTTP: the daemon, the embedded llama.cpp worker, the real MiniLM,
on SQLite and on the real Neo4j — repeats and paraphrases are served from the cache, and a
re-index or a model change makes the same question miss."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.integration.conftest import run_cli, start_daemon, stop_daemon, synced_daemon
from tests.integration.corpus import synthetic_corpus, write_corpus
from tests.integration.test_model_change import another_model, generations

QUESTION = "what should vm.swappiness be on a small droplet?"
# MiniLM puts this at 0.98 of QUESTION, with the same best passage: a semantic hit.
PARAPHRASE = "what should vm.swappiness be set to on a small droplet"
# 0.73 of QUESTION: it asks something else and must not be answered from the cache.
NEAR_MISS = "how big should the swap file be on a small droplet?"
CACHE_ON = {
    "RAGVISOR_ASK__CACHE__ENABLED": "true",
    "RAGVISOR_GENERATOR__NUM_PREDICT": "24",
    "RAGVISOR_ASK__DEFAULT_K": "2",
}


def ask(url: str, question: str) -> dict:
    response = httpx.post(f"{url}/ask", json={"question": question}, timeout=180)
    assert response.status_code == 200, response.text
    return response.json()


def generated(url: str, question: str) -> dict:
    """A generated (not extractive) answer: Gemma 270M now and then answers with blank lines,
    which the daemon replaces with the passages and does not cache; asking again is fair."""
    for _ in range(4):
        answer = ask(url, question)
        if answer["done_reason"] != "degraded":
            return answer
    pytest.fail(f"no generated answer in 4 tries: {answer}")


def metric(url: str, series: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} is not in /metrics")


def test_repeats_and_paraphrases_are_cached_and_a_reindex_misses(
    tmp_path, model_dir, store_backend
):
    """1. A question is generated and cached; 2. asked again (other case and spacing) it is an
    exact hit, as JSON and streamed; 3. a paraphrase is a semantic hit, a near miss is not;
    4. /metrics counts them; 5. after the note changes and a sync commits it, the same question
    misses and the old answers are counted as invalidated."""
    daemon = synced_daemon(tmp_path, model_dir, store_env=store_backend, **CACHE_ON)
    try:
        url = daemon.url
        # 1. Generated, not from the cache.
        first = generated(url, QUESTION)
        assert first["cached"] is None
        # 2. The same question: exact, the same answer and citations, as JSON and streamed.
        again = ask(url, "  What should VM.SWAPPINESS be on a small droplet  ")
        assert again["cached"] == "exact"
        assert again["answer"] == first["answer"]
        assert again["citations"] == first["citations"]
        with httpx.stream(
            "POST", f"{url}/ask", json={"question": QUESTION, "stream": True}, timeout=60
        ) as response:
            events = [json.loads(line) for line in response.iter_lines() if line.strip()]
        assert [e["type"] for e in events] == ["citations", "delta", "done"]
        assert events[-1]["cached"] == "exact"
        assert events[1]["text"] == first["answer"]
        # 3. A paraphrase is answered from the cache; a question about something else is not.
        assert ask(url, PARAPHRASE)["cached"] == "semantic"
        assert ask(url, NEAR_MISS)["cached"] is None
        # 4. What /metrics says.
        assert metric(url, 'ragvisor_answer_cache_hits_total{kind="exact"}') == 2
        assert metric(url, 'ragvisor_answer_cache_hits_total{kind="semantic"}') == 1
        assert metric(url, "ragvisor_answer_cache_misses_total") >= 2
        # 5. A re-index: the note changes and a sync commits it.
        swap = daemon.data_dir.parent / "notes" / "ops" / "swap.md"
        swap.write_text(swap.read_text().replace("to 10", "to 5"))
        sync = httpx.post(
            f"{url}/admin/sync?wait=true",
            headers={"Authorization": f"Bearer {daemon.token}"},
            timeout=120,
        )
        assert sync.status_code == 200, sync.text
        assert ask(url, QUESTION)["cached"] is None
        assert metric(url, 'ragvisor_answer_cache_evictions_total{reason="invalidated"}') >= 1
    finally:
        stop_daemon(daemon)


def test_an_embedding_model_change_misses(tmp_path, model_dir):
    """1. A corpus synced with the pinned model; 2. a daemon with a new model file re-embeds it
    while searches use the old model, and a question is answered meanwhile; 3. once searches
    switch to the new model the same question misses — 4. and is cached again in the new
    scope."""
    # 1. The old generation.
    corpus = synthetic_corpus(write_corpus(tmp_path / "corpus"), documents=60)
    data = tmp_path / "data"
    sync = run_cli(["sync", "--corpus", str(corpus), "--data-dir", str(data)], model_dir)
    assert sync.returncode == 0, sync.stderr
    # 2. A new model: the start-up sync builds its generation while the old one serves.
    new_model = another_model(model_dir, tmp_path / "new-model")
    daemon = start_daemon(
        corpus,
        data,
        model_dir,
        tmp_path / "daemon.log",
        RAGVISOR_EMBEDDER__MODEL_DIR=str(new_model),
        RAGVISOR_EMBEDDER__MODEL_NAME="minilm-copy",
        RAGVISOR_SYNC__INTERVAL_S="0",
        **CACHE_ON,
    )
    try:
        url = daemon.url
        old = generations(url)["serving"]
        assert generations(url)["building"] is not None
        assert generated(url, QUESTION)["cached"] is None
        # 3. The switch: the new model serves; the answer of the old scope is not served.
        deadline = time.monotonic() + 300
        while generations(url)["building"] is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert generations(url)["serving"] != old
        assert generated(url, QUESTION)["cached"] is None
        # 4. The cache works in the new scope.
        assert ask(url, QUESTION)["cached"] == "exact"
    finally:
        stop_daemon(daemon)
