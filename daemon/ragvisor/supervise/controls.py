"""What the escalation ladder can do to each kind of backend.

Ollama in production: unload and `/api/ps` over its API, restart with a configured command
(`systemctl restart ollama` by default). The embedded worker: the same API calls, and a respawn
of the child process as the restart. A remote embedder on Ollama: its own unload, the same
restart command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import Sequence
from typing import IO, Any

from ragvisor.errors import BackendError
from ragvisor.ollama.client import OllamaClient
from ragvisor.supervise.worker_process import WorkerProcess


async def run_restart_command(command: Sequence[str], timeout_s: float) -> None:
    """Run the operator's restart command (argv, no shell). Raises on failure or timeout.

    Its output goes to a temporary file, not a pipe: a command that leaves a server running in
    the background (`ollama serve &`) would otherwise hold the pipe open and look hung. It runs
    in its own session, so a timeout kills the whole process group, children included.

    Raises BackendError (no command, or a non-zero exit: the message ends with the output's
    tail) or TimeoutError (killed after `timeout_s`).
    """
    if not command:
        raise BackendError("no restart command is configured (ladder.restart_command)")
    shown = " ".join(command)
    with tempfile.TemporaryFile() as output:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(timeout_s):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise TimeoutError(f"{shown} did not finish within {timeout_s:g} s; killed") from None
        if process.returncode != 0:
            raise BackendError(f"{shown} exited with {process.returncode}: {_tail(output)}")


def _tail(output: IO[bytes], chars: int = 300) -> str:
    """The last `chars` characters of a command's output, for the error message."""
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - 4 * chars))
    return output.read().decode(errors="replace").strip()[-chars:]


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
