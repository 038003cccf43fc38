"""The memory guard's hands: what it may unload, and the check before the chat model loads.

Field report: a 4 GB box died when the chat model loaded beside the embedding model. Before an
answer is generated, :class:`GeneratorMemory` asks the backend whether the chat model is
resident; if not, it compares the model's size with free memory and has the guard unload the
embedding model first when both would not fit. If it still does not fit, the answer is
extractive — the daemon never provokes Ollama's "model requires more system memory".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from ragvisor.core.protocols import RemoteEmbedder, ServedGenerator
from ragvisor.errors import RagvisorError
from ragvisor.ollama.client import OllamaClient
from ragvisor.ollama.names import find_model
from ragvisor.supervise.admission import Lane
from ragvisor.supervise.memory.guard import MemoryGuard

MB = 1024 * 1024
# How long a `/api/ps` answer is trusted: one call per second at most, whatever the traffic.
PS_TTL_S = 1.0
# An inventory call that takes longer than this says nothing useful; the answer goes ahead and
# the supervised generation finds out what is wrong.
INVENTORY_TIMEOUT_S = 1.0
# llama.cpp needs more than the file: KV cache, compute buffers. A GGUF's size times this is
# the estimate when the backend has never reported the model's resident size.
FILE_TO_RESIDENT = 1.3


class GeneratorMemory:
    """Decides, before a generation, whether memory allows the chat model to be (re)loaded."""

    def __init__(
        self,
        guard: MemoryGuard,
        client: OllamaClient,
        *,
        gguf_path: Path | None = None,
        remote_embedder: RemoteEmbedder | None = None,
    ) -> None:
        self._guard = guard
        self._client = client
        self._gguf_path = gguf_path
        self._embedder = remote_embedder
        self._resident_bytes: int | None = None  # last size /api/ps reported for our model
        self._ps_at = 0.0
        self._loaded = False
        self._log = structlog.get_logger(component="memory")

    async def check(self) -> str | None:
        """None when generation may go ahead; otherwise why the answer must be extractive."""
        short = self._guard.memory_short()
        if short is not None:
            return short
        if await self._model_resident():
            return None
        need = await self._model_bytes()
        if need is None:
            return None
        unloaders = [self._unload_embedder] if self._embedder is not None else []
        if await self._guard.make_room(need, unloaders=unloaders):
            return None
        return f"memory short: loading {self._client.model} needs about {need / MB:.0f} MB"

    async def _model_resident(self) -> bool:
        now = time.monotonic()
        if now - self._ps_at < PS_TTL_S:
            return self._loaded
        try:
            models = await self._client.ps(timeout=INVENTORY_TIMEOUT_S)
        except RagvisorError:
            return True  # cannot tell: let the supervised call find out
        self._ps_at = now
        entry = find_model(models, self._client.model)
        self._loaded = entry is not None
        size = entry.get("size") if entry is not None else None
        if isinstance(size, int) and size > 0:
            self._resident_bytes = size
        return self._loaded

    async def _model_bytes(self) -> int | None:
        """Resident size seen before, else the file's size (GGUF or `/api/tags`) with overhead."""
        if self._resident_bytes is not None:
            return self._resident_bytes
        file_bytes: int | None = None
        if self._gguf_path is not None:
            try:
                file_bytes = self._gguf_path.stat().st_size
            except OSError:
                file_bytes = None
        if file_bytes is None:
            try:
                tags = await self._client.tags(timeout=INVENTORY_TIMEOUT_S)
                entry = find_model(tags, self._client.model)
                if entry is not None:
                    file_bytes = int(entry.get("size") or 0) or None
            except RagvisorError:
                return None
        return None if file_bytes is None else int(file_bytes * FILE_TO_RESIDENT)

    async def _unload_embedder(self) -> bool:
        return await unload_if_loaded(self._embedder)


class IdleModelUnloader:
    """Unload idle models on the guard's request: the generator first, then the embedder.

    "Idle" means no request of that model's lane is running (nor a sync, for the embedder):
    unloading mid-answer would only make the answer fail and the model load again. The
    generator is asked for when needed: it is attached after the guard is built.
    """

    def __init__(
        self,
        lanes: Mapping[str, Lane],
        *,
        generator: Callable[[], ServedGenerator | None],
        remote_embedder: RemoteEmbedder | None,
        sync_running: Callable[[], bool],
    ) -> None:
        self._lanes = lanes
        self._generator = generator
        self._remote_embedder = remote_embedder
        self._sync_running = sync_running

    async def unload_idle_generator(self) -> bool:
        """Unload the chat model when no answer is being generated and it is resident."""
        generator = self._generator()
        if generator is None or self._lanes["ask"].active > 0:
            return False
        if not await generator.loaded(timeout=5.0):
            return False
        await generator.unload()
        return True

    async def unload_idle_embedder(self) -> bool:
        """Unload a remote embedding model when no search or sync is using it."""
        if self._lanes["search"].active > 0 or self._sync_running():
            return False
        return await unload_if_loaded(self._remote_embedder)


async def unload_if_loaded(embedder: RemoteEmbedder | None) -> bool:
    """Unload a remote embedding model if it is resident; True when something was unloaded."""
    if embedder is None or not await asyncio.to_thread(embedder.loaded, 5.0):
        return False
    await asyncio.to_thread(embedder.unload, 10.0)
    return True
