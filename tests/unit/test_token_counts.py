"""Token counts stored at sync (`ask.stored_token_counts`): the job that fills them in, and
`/ask` packing by them without asking the generator's tokenizer.

The counter here is a fake (words a token); tests/integration/test_token_counts.py runs the
real one — the GGUF's vocabulary in its own process — against the worker's tokenizer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from ragvisor.application.answerer import Answerer, AskTrace
from ragvisor.application.token_counts import TokenCountJob
from ragvisor.core.answers import SYSTEM_PROMPT, plan_prompt, prompt_truncated, stored_costs
from ragvisor.core.model import ChunkRecord
from ragvisor.core.retrieval import QueryLimits, Retriever
from ragvisor.errors import BackendError
from ragvisor.testing import FakeEmbedder, FakeGenerator, MemoryStore
from tests.helpers import commit_paragraphs, make_document

NOTES = {
    "ops/swap.md": "The swap file is two gigabytes on the small box.\n\nSwappiness is ten.",
    "ops/neo4j.md": "Neo4j runs with a heap of five hundred megabytes.",
}


class WordCounter:
    """A TokenCounter that counts words, records what it was asked, and can be made to fail
    or to wait."""

    def __init__(self, key: str = "words-v1") -> None:
        self._key = key
        self.known: str | None = None
        self.asked: list[list[str]] = []
        self.closed = 0
        self.fail: Exception | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()  # set once count() was called

    @property
    def key(self) -> str:
        self.known = self._key
        return self._key

    @property
    def known_key(self) -> str | None:
        return self.known

    def count(self, texts: Sequence[str]) -> list[int]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.asked.append(list(texts))
        return [len(text.split()) for text in texts]

    def close(self) -> None:
        self.closed += 1


def knowledge_base() -> tuple[MemoryStore, FakeEmbedder]:
    store, embedder = MemoryStore(), FakeEmbedder()
    for path, text in NOTES.items():
        commit_paragraphs(store, make_document(path, text), embedder)
    return store, embedder


def all_hashes(store: MemoryStore) -> list[str]:
    return [h for doc in store.stored_documents().values() for h in doc.chunk_hashes]


def test_a_pass_counts_every_uncounted_text_once_then_nothing():
    """Texts are counted as the prompt shows them (stripped), the system prompt too; the
    counting process is closed after every pass; a second pass has nothing to count."""
    store, _ = knowledge_base()
    counter = WordCounter()
    job = TokenCountJob(store, counter, log=structlog.get_logger(), batch=2)
    assert job.lookup(all_hashes(store)) is None  # the key is not known before a pass
    assert job.run() == 3
    counts = job.lookup(all_hashes(store))
    assert counts is not None
    assert sorted(counts.values()) == [3, 9, 10]
    assert job.system_tokens == len(SYSTEM_PROMPT.split())
    assert counter.closed == 1
    asked = sum(len(batch) for batch in counter.asked)
    assert job.run() == 0
    assert sum(len(batch) for batch in counter.asked) == asked  # nothing asked again
    assert job.last["counted"] == 0
    assert job.last["counter"] == "words-v1"


def test_a_new_tokenizer_counts_again_and_prunes_the_old_counts():
    """Another model file is another counter: everything is counted anew and the old counts go."""
    store, _ = knowledge_base()
    TokenCountJob(store, WordCounter("model-a"), log=structlog.get_logger()).run()
    job = TokenCountJob(store, WordCounter("model-b"), log=structlog.get_logger())
    with capture_logs() as logs:
        assert job.run() == 3
    finished = [e for e in logs if e["event"] == "token_counts.finished"]
    assert finished[0]["pruned"] == 3
    assert finished[0]["counter"] == "model-b"
    assert "duration_ms" in finished[0]
    assert store.token_counts(all_hashes(store), "model-a") == {}


def test_kicks_during_a_pass_make_one_more_pass_not_one_each():
    """Five kicks while a pass waits on the tokenizer: that pass, then one more."""
    store, _ = knowledge_base()
    counter = WordCounter()
    counter.gate = threading.Event()
    job = TokenCountJob(store, counter, log=structlog.get_logger())
    job.kick()
    assert counter.entered.wait(10)  # the first pass is under way, held by the tokenizer
    for _ in range(5):
        job.kick()
    with capture_logs() as logs:
        counter.gate.set()
        assert job.wait(10)
    # The first pass asks twice (texts, system prompt); the second finds nothing to count.
    assert len(counter.asked) == 2
    assert [e["counted"] for e in logs if e["event"] == "token_counts.finished"] == [3]
    assert job.last["counted"] == 0  # the one more pass ran, and found nothing


def test_no_counting_process_starts_while_memory_is_short():
    """The memory guard says short: the pass is postponed (logged), the tokenizer untouched."""
    store, _ = knowledge_base()
    counter = WordCounter()
    job = TokenCountJob(
        store, counter, log=structlog.get_logger(), memory_short=lambda: "memory pressure: low"
    )
    with capture_logs() as logs:
        assert job.run() == 0
    assert counter.asked == []
    assert [e["reason"] for e in logs if e["event"] == "token_counts.postponed"] == [
        "memory pressure: low"
    ]


def test_a_failing_tokenizer_is_logged_and_ask_keeps_counting_the_old_way():
    """The job logs `token_counts.failed` with the effect; nothing is stored."""
    store, _ = knowledge_base()
    counter = WordCounter()
    counter.fail = BackendError("the token counter exited: no such file")
    job = TokenCountJob(store, counter, log=structlog.get_logger())
    with capture_logs() as logs:
        job.kick()
        assert job.wait(10)
    failed = [e for e in logs if e["event"] == "token_counts.failed"]
    assert failed
    assert "no such file" in failed[0]["error"]
    assert "old way" in failed[0]["effect"]
    assert store.token_counts(all_hashes(store), "words-v1") == {}
    assert counter.closed >= 1


def ask(store, embedder, generator, **answerer: Any) -> dict[str, Any]:
    retriever = Retriever(store, embedder, QueryLimits())
    answers = Answerer(retriever, generator, limits=QueryLimits(), margin_tokens=16, **answerer)

    async def run() -> dict[str, Any]:
        trace = AskTrace()
        prepared = await answers.prepare("how big is the swap file", 3, trace)
        events = [event async for event in answers.events(prepared, trace)]
        return {"done": events[-1], "trace": trace}

    return asyncio.run(asyncio.wait_for(run(), timeout=10))


def test_ask_packs_by_stored_counts_without_asking_the_tokenizer():
    """Every candidate counted at sync: `/ask` looks the counts up; the generator's tokenizer
    is not asked, and the answer says `counted_with: stored`."""
    store, embedder = knowledge_base()
    job = TokenCountJob(store, WordCounter(), log=structlog.get_logger())
    job.run()
    generator = FakeGenerator("Two gigabytes [1].")
    result = ask(store, embedder, generator, stored_counts=job)
    assert generator.count_calls == 0
    assert result["done"]["tokens"]["counted_with"] == "stored"
    assert result["trace"].fields["token_counts"] == "stored"
    assert result["done"]["tokens"]["prompt_planned"] > 0


def test_a_chunk_without_its_count_falls_back_to_the_tokenizer():
    """A document committed after the last pass: one round trip counts the whole prompt."""
    store, embedder = knowledge_base()
    job = TokenCountJob(store, WordCounter(), log=structlog.get_logger())
    job.run()
    commit_paragraphs(
        store, make_document("ops/swapfile.md", "The swap file lives at /swapfile."), embedder
    )
    generator = FakeGenerator("Two gigabytes [1].")
    result = ask(store, embedder, generator, stored_counts=job)
    assert generator.count_calls == 1
    assert result["done"]["tokens"]["counted_with"] == "tokenizer"


def _record(text: str, sha: str) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=f"d:{sha}", doc_id="d", corpus_root="/c", path="ops/a.md", title="A",
        heading="Swap", position=0, text=text, text_sha256=sha,
    )  # fmt: skip


def test_stored_costs_add_an_estimate_for_what_the_counts_leave_out():
    """A passage costs its stored count plus its first line's estimate; only the stored part
    (and the system prompt once counted) is the floor the truncation check compares with."""
    candidates = [(_record("alpha " * 50, "a"), 0.9), (_record("beta " * 20, "b"), 0.8)]
    costs = stored_costs("how big?", candidates, {"a": 50, "b": 20}, system_tokens=40)
    assert costs is not None
    assert costs.counted_with == "stored"
    assert costs.passage_counted == [50, 20]
    assert all(
        total > counted for total, counted in zip(costs.passage_tokens, [50, 20], strict=True)
    )
    assert costs.fixed_counted == 40
    assert costs.fixed_tokens > 40
    assert stored_costs("how big?", candidates, {"a": 50}, system_tokens=40) is None


@pytest.mark.parametrize(("evaluated", "truncated"), [(100, False), (90, False), (89, True)])
def test_truncation_is_judged_against_the_counted_floor(evaluated, truncated):
    """With stored counts, a backend that read clearly fewer tokens than the counted floor
    (system prompt and passage texts) cut the prompt."""
    candidates = [(_record("alpha " * 50, "a"), 0.9)]
    costs = stored_costs("q", candidates, {"a": 60}, system_tokens=40)
    assert costs is not None
    plan = plan_prompt("q", candidates, costs, num_ctx=2048, num_predict=256, margin_tokens=16)
    assert plan.counted_tokens == 100
    assert plan.prompt_tokens > 100
    assert prompt_truncated(evaluated, plan, 2048) is truncated
