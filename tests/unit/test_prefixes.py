"""Task prefixes: chunks are embedded with the document prefix, queries with the query prefix,
both under one fingerprint that a prefix change changes — so a store re-embeds through the
usual gapless model change, and one synced without prefixes keeps every vector."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from ragvisor.application.generations import ModelGenerations
from ragvisor.application.sync_runner import SyncRunner
from ragvisor.config import EmbedderSettings
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.documents import CorpusSpec
from ragvisor.core.model import Fingerprint
from ragvisor.core.protocols import Embedder, Matrix
from ragvisor.core.retrieval import QueryLimits, Retriever
from ragvisor.embed.prefixes import PrefixedEmbedder, TaskPrefixes, for_documents, for_queries
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder

NOMIC = TaskPrefixes(query="search_query: ", document="search_document: ")


class Recording(FakeEmbedder):
    """A fake model that writes down every text it is given, in order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> Matrix:
        self.texts.extend(texts)
        return super().embed(texts)


def test_without_prefixes_the_model_is_used_as_it_is():
    """Empty prefixes (the default) wrap nothing: same object, same fingerprint, same texts."""
    model = Recording()
    prefixes = TaskPrefixes.from_settings(EmbedderSettings())
    assert prefixes.empty
    assert for_documents(model, prefixes) is model
    assert for_queries(model, prefixes) is model
    assert prefixes.fingerprint(model.fingerprint) == model.fingerprint


def test_documents_and_queries_get_their_own_prefix_under_one_fingerprint():
    """The document side sends "search_document: …", the query side "search_query: …"; both
    report one fingerprint, the model's name and size with another digest."""
    model = Recording()
    documents, queries = for_documents(model, NOMIC), for_queries(model, NOMIC)
    documents.embed(["chunk one", "chunk two"])
    queries.embed(["how do I restore"])
    assert model.texts == [
        "search_document: chunk one",
        "search_document: chunk two",
        "search_query: how do I restore",
    ]
    assert documents.fingerprint == queries.fingerprint
    assert documents.fingerprint.key != model.fingerprint.key
    assert documents.fingerprint.name == model.fingerprint.name
    assert documents.fingerprint.dimensions == model.fingerprint.dimensions
    assert documents.batch_size == model.batch_size


def test_each_prefix_is_part_of_the_fingerprint():
    """Changing either prefix, or swapping them, gives another fingerprint; the same prefixes
    always give the same one."""
    model = FakeEmbedder().fingerprint
    keys = {
        TaskPrefixes(query=q, document=d).fingerprint(model).key
        for q, d in [
            ("search_query: ", "search_document: "),
            ("search_query: ", ""),
            ("", "search_document: "),
            ("search_document: ", "search_query: "),
            ("query: ", "passage: "),
        ]
    }
    assert len(keys) == 5
    again = TaskPrefixes(query="search_query: ", document="search_document: ")
    assert again.fingerprint(model) == NOMIC.fingerprint(model)


def test_the_fingerprint_follows_a_model_resolved_again():
    """A remote model re-resolved between syncs (a new pull) changes the prefixed fingerprint
    too: it is derived on every read, never cached."""

    class Resolving(FakeEmbedder):
        current = Fingerprint("nomic-embed-text", "a" * 64, 768)

        @property
        def fingerprint(self) -> Fingerprint:
            return self.current

    model = Resolving()
    documents = PrefixedEmbedder(model, NOMIC.document, NOMIC)
    before = documents.fingerprint.key
    model.current = Fingerprint("nomic-embed-text", "b" * 64, 768)
    assert documents.fingerprint.key != before
    assert documents.fingerprint == NOMIC.fingerprint(model.current)


def test_setting_prefixes_re_embeds_through_the_gapless_model_change(tmp_path: Path):
    """1. A store synced without prefixes; 2. prefixes set: a new generation is built while
    searches keep the old one (queries without a prefix); 3. the sync embeds every chunk with
    the document prefix, switches in one step, and searches embed queries with theirs."""
    root = tmp_path / "notes"
    root.mkdir()
    for i in range(6):
        (root / f"note{i}.md").write_text(f"# Note {i}\n\n" + f"topic{i} " * 30)
    store = SqliteStore(tmp_path / "data")
    model = Recording(name="nomic-embed-text")

    def recorded(prefixes: TaskPrefixes) -> dict[str, Any]:
        return {"query_prefix": prefixes.query, "document_prefix": prefixes.document}

    def load(settings: Mapping[str, Any]) -> Embedder:
        prefixes = TaskPrefixes(settings["query_prefix"], settings["document_prefix"])
        return for_queries(model, prefixes)

    def parts(prefixes: TaskPrefixes) -> tuple[ModelGenerations, SyncRunner, Retriever]:
        documents, queries = for_documents(model, prefixes), for_queries(model, prefixes)
        generations = ModelGenerations(
            store,
            documents,
            recorded(prefixes),
            queries=queries,
            load_embedder=load,
            log=structlog.get_logger(component="store"),
        )
        generations.reconcile()
        runner = SyncRunner(
            corpus=CorpusSpec(roots=(root,)),
            chunking=ChunkingSpec(size_chars=300, overlap_chars=40),
            store=store,
            embedder=documents,
            lock_path=tmp_path / "data" / "sync.lock",
            log=structlog.get_logger(component="sync"),
            generations=generations,
        )
        retriever = Retriever(store, queries, QueryLimits(), serving=lambda: generations.serving)
        return generations, runner, retriever

    # 1. Without prefixes.
    _, runner, _ = parts(TaskPrefixes())
    first = runner.run(trigger="test")
    assert first.fingerprint == model.fingerprint.key
    # 2. With them: building, and searches still embed plain queries against the old vectors.
    generations, runner, retriever = parts(NOMIC)
    assert store.generations().building is not None
    model.texts.clear()
    assert retriever.search("topic3", 1).hits[0].path == "note3.md"
    assert model.texts == ["topic3"]
    # 3. The sync re-embeds every chunk with the document prefix and switches.
    model.texts.clear()
    report = runner.run(trigger="test")
    assert report.changed_because == {"model": 6}
    assert report.embeddings_computed == first.embeddings_computed
    assert len(model.texts) == first.embeddings_computed
    assert all(t.startswith("search_document: ") for t in model.texts)
    assert store.generations().building is None
    assert store.generations().active.fingerprint == NOMIC.fingerprint(model.fingerprint).key
    model.texts.clear()
    assert retriever.search("topic3", 1).hits[0].path == "note3.md"
    assert model.texts == ["search_query: topic3"]
    assert generations.serving.fingerprint.key == report.fingerprint
    store.close()
