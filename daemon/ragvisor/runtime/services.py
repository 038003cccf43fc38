"""`Services`: everything the daemon and the CLI work with, as the composition root built it.

A plain bag of parts, typed on what the readers use, so that the web layer, the systemd
notifier and the memory guard's actions can take it without importing the root that builds it
(`ragvisor.app`). Reports about these parts live in `runtime.reports`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ragvisor.answering import Answerer
from ragvisor.config import Settings
from ragvisor.core.protocols import Embedder, Store
from ragvisor.core.retrieval import Retriever
from ragvisor.embed.ollama import OllamaEmbedder
from ragvisor.metrics import Metrics
from ragvisor.supervise.admission import Lane
from ragvisor.supervise.calls import SupervisedGenerator, Supervisor
from ragvisor.supervise.ladder import EscalationLadder
from ragvisor.supervise.memory import MemoryGuard
from ragvisor.supervise.worker_process import WorkerProcess
from ragvisor.syncing import SyncRunner


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
    generator: SupervisedGenerator | None = None
    worker: WorkerProcess | None = None
    answerer: Answerer | None = None
    supervisors: dict[str, Supervisor] = field(default_factory=dict)
    memory_guard: MemoryGuard | None = None
    remote_embedder: OllamaEmbedder | None = None

    def ladders(self) -> list[EscalationLadder]:
        """The escalation ladders of the supervised backends."""
        return [s.ladder for s in self.supervisors.values() if s.ladder is not None]

    def close(self) -> None:
        """Stop the worker (if we started one) and release the store."""
        if self.worker is not None:
            self.worker.stop()
        if self.remote_embedder is not None:
            self.remote_embedder.close()
        self.store.close()
