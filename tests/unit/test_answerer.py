"""The /ask path end to end — retrieve, pack, generate, cite — on the fakes of ragvisor.testing:
the same code the daemon runs, with the store, embedder and generator swapped for fakes."""

from __future__ import annotations

import asyncio
from typing import Any

from ragvisor.application.answerer import Answerer, AskTrace
from ragvisor.core.retrieval import QueryLimits, Retriever
from ragvisor.errors import BackendUnavailable
from ragvisor.testing import FakeEmbedder, FakeGenerator, MemoryStore
from tests.helpers import commit_paragraphs, make_document

NOTES = {
    "ops/swap.md": "The swap file is two gigabytes on the small box.\n\nSwappiness is ten.",
    "ops/neo4j.md": "Neo4j runs with a heap of five hundred megabytes.",
}


def knowledge_base() -> tuple[MemoryStore, FakeEmbedder]:
    store, embedder = MemoryStore(), FakeEmbedder()
    for path, text in NOTES.items():
        commit_paragraphs(store, make_document(path, text), embedder)
    return store, embedder


def ask(generator: FakeGenerator, question: str, **answerer: Any) -> list[dict[str, Any]]:
    store, embedder = knowledge_base()
    retriever = Retriever(store, embedder, QueryLimits())
    answers = Answerer(retriever, generator, limits=QueryLimits(), margin_tokens=16, **answerer)

    async def run() -> list[dict[str, Any]]:
        trace = AskTrace()
        prepared = await answers.prepare(question, 2, trace)
        return [event async for event in answers.events(prepared, trace)]

    return asyncio.run(asyncio.wait_for(run(), timeout=10))


def test_an_answer_streams_after_its_sources_and_cites_them():
    """Citations come first, the deltas spell the answer, and `done` marks what it cites."""
    generator = FakeGenerator("The swap file is two gigabytes [1].")
    events = ask(generator, "how big is the swap file")
    assert events[0]["type"] == "citations"
    assert events[0]["citations"][0]["path"] == "ops/swap.md"
    text = "".join(e["text"] for e in events if e["type"] == "delta")
    done = events[-1]
    assert done["type"] == "done"
    assert done["answer"] == text == "The swap file is two gigabytes [1]."
    assert done["citations"][0]["cited"] is True
    assert done["model"] == "fake-chat"
    assert done["tokens"]["counted_with"] == "tokenizer"
    prompt = generator.requests[0][-1].content
    assert "how big is the swap file" in prompt
    assert "two gigabytes" in prompt


def test_a_backend_that_cannot_count_tokens_gets_an_estimate():
    """Without the worker's token counter (a real Ollama), the prompt is packed by estimate."""
    events = ask(FakeGenerator(counts_tokens=False), "swap file size")
    assert events[-1]["tokens"]["counted_with"] == "estimate"


def test_a_failed_generator_gives_an_extractive_answer_with_the_reason():
    """When generation fails for good, the passages themselves answer, marked degraded."""
    generator = FakeGenerator(fail_with=BackendUnavailable("worker is restarting"))
    done = ask(generator, "how big is the swap file")[-1]
    assert done["done_reason"] == "degraded"
    assert done["degraded"]["answer"] == "extractive"
    assert "worker is restarting" in done["degraded"]["reason"]
    assert "two gigabytes" in done["answer"]


def test_a_blank_generated_answer_is_replaced_by_the_passages():
    """A model that ends at once or with only blank lines answered nothing: the passages do,
    and the answer says why (seen with a 270M model in the fault bench)."""
    done = ask(FakeGenerator("\n \n"), "how big is the swap file")[-1]
    assert done["done_reason"] == "degraded"
    assert done["degraded"] == {
        "reason": "the model returned an empty answer",
        "answer": "extractive",
    }
    assert "two gigabytes" in done["answer"]


def test_an_unavailable_generator_is_not_even_asked():
    """A generator known to be down makes the answer extractive before any call is made."""
    generator = FakeGenerator()
    done = ask(generator, "neo4j heap", is_available=lambda: False)[-1]
    assert done["degraded"]["reason"] == "the generator is restarting"
    assert generator.requests == []
