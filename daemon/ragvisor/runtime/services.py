"""`Services`: everything the daemon and the CLI work with, as the composition root built it.

A plain bag of parts, typed on protocols — what the readers use, not what the root chose — so
that the web layer, the systemd notifier and the memory guard's actions can take it without
importing the root that builds it (`ragvisor.app`), and a test can fill it with fakes. Reports
about these parts live in `runtime.reports`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ragvisor.application.answerer import Answerer
from ragvisor.application.document_writer import DocumentWriter
from ragvisor.application.generations import ModelGenerations
from ragvisor.application.sync_runner import SyncRunner
from ragvisor.application.token_counts import TokenCountJob
from ragvisor.config import Settings
from ragvisor.core.protocols import Embedder, ProcessRunner, RemoteEmbedder, ServedGenerator, Store
from ragvisor.core.retrieval import Retriever
from ragvisor.metrics import Metrics
from ragvisor.runtime.corpus_watch import CorpusWatch
from ragvisor.runtime.history import History
from ragvisor.supervise.admission import Lane
from ragvisor.supervise.calls import Supervisor
from ragvisor.supervise.ladder import EscalationLadder
from ragvisor.supervise.memory import MemoryGuard


@dataclass
class Services:
    """Everything the daemon and the CLI work with, built from one Settings value."""

    settings: Settings
    store: Store
    embedder: Embedder
    retriever: Retriever
    sync_runner: SyncRunner
    admin_token: str
    metrics: Metrics
    lanes: dict[str, Lane]
    started_at: float = field(default_factory=time.time)
    generator: ServedGenerator | None = None
    worker: ProcessRunner | None = None
    answerer: Answerer | None = None
    supervisors: dict[str, Supervisor] = field(default_factory=dict)
    memory_guard: MemoryGuard | None = None
    remote_embedder: RemoteEmbedder | None = None
    generations: ModelGenerations | None = None
    corpus_watch: CorpusWatch | None = None  # `[sync] watch`: started by the daemon's lifespan
    documents: DocumentWriter | None = None  # `PUT`/`DELETE /documents/{path}`
    # `ask.stored_token_counts`: counts chunks' prompt tokens after each sync (and at start).
    token_counts: TokenCountJob | None = None
    # `[ui] enabled`: the last hour behind the status page's plots (`GET /status/history`).
    history: History | None = None

    def ladders(self) -> list[EscalationLadder]:
        """The escalation ladders of the supervised backends."""
        return [s.ladder for s in self.supervisors.values() if s.ladder is not None]

    def serving_embedder(self) -> Embedder:
        """The embedder whose vectors searches use now (the previous model's during a model
        change, see `application.generations`)."""
        return self.generations.serving if self.generations is not None else self.embedder

    def close(self) -> None:
        """Stop the worker (if we started one) and release the store."""
        if self.token_counts is not None:
            self.token_counts.close()
        if self.worker is not None:
            self.worker.stop()
        if self.remote_embedder is not None:
            self.remote_embedder.close()
        self.store.close()
