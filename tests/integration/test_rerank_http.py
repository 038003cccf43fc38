"""The reranker setting over real HTTP: `[rerank]` on a daemon reorders `/search` results with a
real ONNX cross-encoder (the tiny one of tests/cross_encoder_model.py, whose scores count the
passage's words that the query has), `rerank=false` skips it, and asking for it where none is
configured is a 400."""

from __future__ import annotations

import httpx
import pytest

from tests.cross_encoder_model import write_cross_encoder
from tests.integration.conftest import stop_daemon, synced_daemon

# The tiny model's vocabulary: words of the notes corpus (tests/integration/corpus.py).
WORDS = ("dough", "oven", "flour", "heap", "cache", "swap", "cat", "sun")


@pytest.fixture(scope="module")
def reranking(tmp_path_factory, model_dir):
    """A synced daemon with [rerank] enabled, on the tiny cross-encoder."""
    base = tmp_path_factory.mktemp("rerank")
    encoder = write_cross_encoder(base / "cross-encoder", WORDS)
    d = synced_daemon(
        base,
        model_dir,
        RAGVISOR_RERANK__ENABLED="true",
        RAGVISOR_RERANK__MODEL_DIR=str(encoder),
        RAGVISOR_RERANK__CANDIDATES="10",
    )
    yield d
    stop_daemon(d)


def test_a_configured_reranker_orders_the_results_by_its_scores(reranking):
    """With [rerank] on, results come back reranked, scored and ordered by the cross-encoder:
    the note holding most of the query's words first, whatever the keyword ranking said."""
    body = httpx.get(
        f"{reranking.url}/search",
        params={"q": "dough oven flour cat", "k": 3, "mode": "keyword"},
    ).json()
    assert body["reranked"] is True
    assert "rerank" in body["timings_ms"]
    top = body["results"][0]
    assert top["path"] == "recipes/bread.md"
    assert top["score"] == 3.0  # dough, oven, flour: the passage's words the query has
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_rerank_false_skips_the_configured_reranker(reranking):
    """rerank=false answers from the plain ranking, and says so."""
    body = httpx.get(
        f"{reranking.url}/search", params={"q": "dough oven", "k": 2, "rerank": "false"}
    ).json()
    assert body["reranked"] is False
    assert "rerank" not in body["timings_ms"]


def test_rerank_without_a_configured_reranker_is_a_400(tmp_path_factory, model_dir):
    """Asking a daemon without [rerank] to rerank is a clear 400, not a silent plain ranking."""
    d = synced_daemon(tmp_path_factory.mktemp("norerank"), model_dir)
    try:
        response = httpx.get(f"{d.url}/search", params={"q": "dough", "rerank": "true"})
        assert response.status_code == 400
        assert "no reranker is configured" in response.json()["error"]
        assert httpx.get(f"{d.url}/search", params={"q": "dough"}).json()["reranked"] is False
    finally:
        stop_daemon(d)
