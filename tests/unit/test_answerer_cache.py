"""The answer cache inside `/ask` (Answerer + AskCache) on the fakes of ragvisor.testing: what is
served from it, what is stored, what misses, and what `/metrics` counts."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import generate_latest

from ragvisor.application.answerer import Answerer, AskTrace
from ragvisor.application.ask_cache import AskCache
from ragvisor.core.answer_cache import AnswerCache
from ragvisor.core.retrieval import QueryLimits, Retriever
from ragvisor.errors import BackendUnavailable
from ragvisor.metrics import Metrics
from ragvisor.testing import FakeEmbedder, FakeGenerator, MemoryStore
from tests.helpers import commit_paragraphs, make_document

NOTES = {
    "ops/swap.md": "The swap file is two gigabytes on the small box.\n\nSwappiness is ten.",
    "ops/neo4j.md": "Neo4j runs with a heap of five hundred megabytes.",
}


class Rig:
    """A knowledge base, an answerer with a cache, and the generator's request count."""

    def __init__(self, generator: FakeGenerator | None = None, **cache: Any) -> None:
        self.store, self.embedder = MemoryStore(), FakeEmbedder()
        for path, text in NOTES.items():
            commit_paragraphs(self.store, make_document(path, text), self.embedder)
        self.serving = self.embedder
        self.generator = generator or FakeGenerator("The swap file is two gigabytes [1].")
        self.metrics = Metrics()
        settings = {"max_entries": 8, "semantic_threshold": 0.8, **cache}
        self.cache = AskCache(
            AnswerCache(**settings),
            store=self.store,
            serving_embedder=lambda: self.serving,
            generator_id="fake-chat|num_ctx=2048",
            metrics=self.metrics,
        )
        serving = lambda: self.serving  # noqa: E731 - read at each query, as the daemon does
        retriever = Retriever(self.store, self.embedder, QueryLimits(), serving=serving)
        self.answerer = Answerer(
            retriever,
            self.generator,
            limits=QueryLimits(),
            margin_tokens=16,
            metrics=self.metrics,
            cache=self.cache,
        )

    def ask(self, question: str, *, stream: bool = False) -> Any:
        async def run() -> Any:
            trace = AskTrace()
            prepared = await self.answerer.prepare(question, 2, trace)
            if stream:
                return [event async for event in self.answerer.events(prepared, trace)]
            return await self.answerer.answer(prepared, trace)

        return asyncio.run(asyncio.wait_for(run(), timeout=10))

    def metric(self, name: str) -> float:
        for line in generate_latest(self.metrics.registry).decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{name} not exposed")


def test_the_same_question_again_is_an_exact_hit_without_generating():
    """The second asking, differently cased, is served from the cache and says so."""
    rig = Rig()
    first = rig.ask("How big is the swap file?")
    assert first["cached"] is None
    second = rig.ask("how big is the SWAP file")
    assert second["cached"] == "exact"
    assert second["answer"] == first["answer"]
    assert second["citations"] == first["citations"]
    assert second["question"] == "how big is the SWAP file"
    assert len(rig.generator.requests) == 1
    assert rig.metric('ragvisor_answer_cache_hits_total{kind="exact"}') == 1
    assert rig.metric("ragvisor_answer_cache_misses_total") == 1
    assert rig.metric("ragvisor_answer_cache_entries") == 1


def test_a_paraphrase_is_a_semantic_hit():
    """A question that embeds close to a stored one and finds the same passages is a hit."""
    rig = Rig()
    rig.ask("how big is the swap file")
    again = rig.ask("the swap file: how big is it")
    assert again["cached"] == "semantic"
    assert len(rig.generator.requests) == 1
    assert rig.metric('ragvisor_answer_cache_hits_total{kind="semantic"}') == 1


def test_a_cached_answer_streams_like_a_generated_one():
    """Streamed, a hit is citations, one delta with the whole text, then done with `cached`."""
    rig = Rig()
    rig.ask("how big is the swap file")
    events = rig.ask("how big is the swap file", stream=True)
    assert [e["type"] for e in events] == ["citations", "delta", "done"]
    assert events[1]["text"] == events[2]["answer"]
    assert events[2]["cached"] == "exact"
    assert all("cited" not in c for c in events[0]["citations"])


def test_a_reindex_misses():
    """A committed change to the knowledge base (kb_version) makes the same question miss and
    drops the stale answers."""
    rig = Rig()
    rig.ask("how big is the swap file")
    commit_paragraphs(
        rig.store, make_document("ops/swap.md", "The swap file is four gigabytes."), rig.embedder
    )
    again = rig.ask("how big is the swap file")
    assert again["cached"] is None
    assert len(rig.generator.requests) == 2
    assert rig.metric('ragvisor_answer_cache_evictions_total{reason="invalidated"}') == 1


def test_an_embedding_model_change_misses():
    """When searches switch to another embedding model's generation — the knowledge base's
    version unchanged — the same question misses."""
    rig = Rig()
    other = FakeEmbedder(name="other-model")
    for path, text in NOTES.items():  # the new generation, built before anything is asked
        commit_paragraphs(rig.store, make_document(path, text), other)
    version = rig.store.kb_version()
    rig.ask("how big is the swap file")
    rig.serving = other  # the switch: one step, no commit
    assert rig.store.kb_version() == version
    assert rig.ask("how big is the swap file")["cached"] is None
    assert len(rig.generator.requests) == 2


def test_a_generator_change_misses():
    """Another generator identity (model or options) never sees the first one's answers."""
    rig = Rig()
    rig.ask("how big is the swap file")
    rig.cache._generator_id = "llama3|num_ctx=8192"  # what a restart with a new model builds
    assert rig.ask("how big is the swap file")["cached"] is None


def test_a_degraded_answer_is_not_cached():
    """An extractive answer (the generator failed) is not stored: the next asking generates."""
    rig = Rig(FakeGenerator(fail_with=BackendUnavailable("worker is restarting")))
    assert rig.ask("how big is the swap file")["done_reason"] == "degraded"
    rig.generator.fail_with = None
    answer = rig.ask("how big is the swap file")
    assert answer["cached"] is None
    assert answer["done_reason"] != "degraded"
    assert rig.ask("how big is the swap file")["cached"] == "exact"


def test_a_stored_answer_is_served_while_the_generator_restarts():
    """An exact hit needs no generator: it answers even when the generator is down."""
    rig = Rig()
    rig.ask("how big is the swap file")
    rig.generator.fail_with = BackendUnavailable("worker is restarting")
    assert rig.ask("how big is the swap file")["cached"] == "exact"


def test_eviction_is_counted():
    """Past max_entries the oldest answer goes, and /metrics counts it."""
    rig = Rig(max_entries=1, semantic_threshold=1.01)
    rig.ask("how big is the swap file")
    rig.ask("how big is the neo4j heap")
    assert rig.metric('ragvisor_answer_cache_evictions_total{reason="lru"}') == 1
    assert rig.metric("ragvisor_answer_cache_entries") == 1
