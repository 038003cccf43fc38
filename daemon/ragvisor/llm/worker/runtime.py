"""The worker's parts, built once from the settings: engine, model slots, threads, services.

`create_worker_app` builds one `Worker` and the routes use nothing else. Closing it stops
running generations and unloads both models.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ragvisor.config import Settings
from ragvisor.embed.onnx import OnnxEmbedder
from ragvisor.errors import ConfigError, InputError
from ragvisor.llm.worker.catalog import Catalog, ModelKind
from ragvisor.llm.worker.embedding import EmbeddingService, load_embedder, unload_embedder
from ragvisor.llm.worker.engine import LlamaEngine
from ragvisor.llm.worker.generation import Generator, GeneratorSlot
from ragvisor.llm.worker.keepalive import parse_keep_alive
from ragvisor.llm.worker.schemas import Options
from ragvisor.llm.worker.slot import ModelSlot

MIN_NUM_CTX = 16


class Worker:
    """Everything the routes use, built once from the settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        model_path: Path,
        build_embedder: Callable[[], OnnxEmbedder],
        log: Any,
    ) -> None:
        w = settings.worker
        self.log = log
        self.model_path = model_path
        self.catalog = Catalog.build(settings.generator.model, settings.embedder.model_name)
        self.default_num_ctx = settings.generator.num_ctx
        try:
            self.default_keep_alive_s = parse_keep_alive(w.keep_alive, 300.0)
        except InputError as exc:
            raise ConfigError(f"worker.keep_alive: {exc}") from None
        self.stop_timeout_s = w.stop_timeout_s
        # One thread per model: llama.cpp is driven from one thread only, and an embedding
        # never waits behind a generation (Ollama runs each model in its own runner).
        self.llama_thread = ThreadPoolExecutor(1, thread_name_prefix="llama")
        self.embed_thread = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self.engine = LlamaEngine(model_path, threads=w.threads, batch_size=w.batch_size, log=log)
        self.slot: GeneratorSlot = ModelSlot(
            "generator",
            load=self._load_generator,
            unload=_unload_generator,
            executor=self.llama_thread,
            log=log,
        )
        self.generator = Generator(self.engine, self.slot, self.llama_thread, log=log)
        self.embeddings = EmbeddingService(
            ModelSlot(
                "embedder",
                load=lambda _spec: load_embedder(build_embedder),
                unload=unload_embedder,
                executor=self.embed_thread,
                log=log,
            ),
            self.embed_thread,
            build=build_embedder,
        )

    def _load_generator(self, n_ctx: int) -> LlamaEngine:
        self.engine.load(n_ctx)
        return self.engine

    def kind(self, model: str) -> ModelKind:
        """Which model a request names. Raises InputError/UnknownModelError."""
        if not model.strip():
            raise InputError("model is required")
        return self.catalog.kind_of(model)

    def keep_alive(self, value: float | str | None) -> float:
        """The request's keep-alive in seconds, or the worker's default."""
        return parse_keep_alive(value, self.default_keep_alive_s)

    async def num_ctx(self, options: Options) -> int:
        """The context to run with: the request's, else the default; within the trained size."""
        wanted = options.num_ctx or self.default_num_ctx
        if wanted > self.default_num_ctx:  # only then is reading the trained size worth it
            facts = await asyncio.to_thread(self.engine.facts)
            trained = facts.metadata.get(f"{facts.architecture}.context_length", "")
            if trained.isdigit() and wanted > int(trained):
                self.log.warning("worker.num_ctx_clamped", requested=wanted, trained=int(trained))
                wanted = int(trained)
        return max(wanted, MIN_NUM_CTX)

    async def close(self) -> None:
        """Stop generations, unload both models and stop the threads."""
        await self.generator.shutdown(self.stop_timeout_s)
        await self.embeddings.slot.close()
        self.llama_thread.shutdown(wait=False, cancel_futures=True)
        self.embed_thread.shutdown(wait=False, cancel_futures=True)


def _unload_generator(engine: LlamaEngine) -> None:
    engine.unload()
