"""What the escalation ladder can do to each kind of backend.

Ollama in production: unload and `/api/ps` over its API, restart with a configured command
(`systemctl restart ollama` by default). The embedded worker: the same API calls, and a respawn
of the child process as the restart. A remote embedder on Ollama: its own unload, the same
restart command.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from ragvisor.errors import BackendError
from ragvisor.llm.ollama_client import OllamaClient
from ragvisor.llm.worker_process import WorkerProcess


async def run_restart_command(command: Sequence[str], timeout_s: float) -> None:
    """Run the operator's restart command (argv, no shell). Raises on failure or timeout."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(timeout_s):
            output, _ = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        tail = output.decode(errors="replace").strip()[-300:]
        raise BackendError(f"{' '.join(command)} exited with {process.returncode}: {tail}")


class OllamaControl:
    """Ollama as the generator: API calls plus a restart command."""

    def __init__(self, client: OllamaClient, restart_command: Sequence[str]) -> None:
        self._client = client
        self._command = tuple(restart_command)

    @property
    def model(self) -> str:
        """The generator's model."""
        return self._client.model

    async def unload(self, timeout_s: float) -> None:
        """`keep_alive: 0` for our model."""
        async with asyncio.timeout(timeout_s):
            await self._client.unload()

    async def loaded_models(self, timeout_s: float) -> list[str]:
        """Names from `/api/ps`."""
        async with asyncio.timeout(timeout_s):
            return [str(m.get("name") or m.get("model")) for m in await self._client.ps()]

    async def restart(self, timeout_s: float) -> None:
        """Run the configured command."""
        await run_restart_command(self._command, timeout_s)

    async def probe(self, timeout_s: float) -> None:
        """`/api/version` answers."""
        await self._client.version(timeout=timeout_s)


class WorkerControl(OllamaControl):
    """The embedded worker: restart means kill the child; its watcher respawns it."""

    def __init__(self, client: OllamaClient, worker: WorkerProcess) -> None:
        super().__init__(client, ())
        self._worker = worker

    async def restart(self, timeout_s: float) -> None:
        """Kill the (possibly frozen) child and wait until the watcher has a new one running."""
        old_pid = self._worker.pid
        await asyncio.to_thread(self._worker.kill, "ladder restart")
        async with asyncio.timeout(timeout_s):
            while not (self._worker.check_alive() and self._worker.pid != old_pid):
                await asyncio.sleep(0.1)


class EmbedderControl:
    """A remote embedder on Ollama (blocking client, run in threads)."""

    def __init__(self, embedder: Any, restart_command: Sequence[str]) -> None:
        self._embedder = embedder
        self._command = tuple(restart_command)

    @property
    def model(self) -> str:
        """The embedding model."""
        name: str = self._embedder.model
        return name

    async def unload(self, timeout_s: float) -> None:
        """`keep_alive: 0` for the embedding model."""
        await asyncio.to_thread(self._embedder.unload, timeout_s)

    async def loaded_models(self, timeout_s: float) -> list[str]:
        """Our model if `/api/ps` lists it (the embedder client answers only for its model)."""
        loaded = await asyncio.to_thread(self._embedder.loaded, timeout_s)
        return [self.model] if loaded else []

    async def restart(self, timeout_s: float) -> None:
        """Run the configured command."""
        await run_restart_command(self._command, timeout_s)

    async def probe(self, timeout_s: float) -> None:
        """`/api/version` answers."""
        await asyncio.to_thread(self._embedder.version, timeout_s)
