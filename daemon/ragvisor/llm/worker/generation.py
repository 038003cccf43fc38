"""Running one generation: queue for the model, load it, fit the prompt, stream the tokens.

A `GenerationJob` is an asyncio task that owns the model slot for the whole generation, while
llama.cpp runs on the llama thread and hands each piece of text back to the event loop. The
HTTP layer only reads the job's events, so a client that goes away cannot leave the model
locked: it sets the job's cancel flag, which llama.cpp checks before every token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from ragvisor.errors import InputError, NotReadyError, RagvisorError
from ragvisor.llm.worker.engine import EngineStats, LlamaEngine
from ragvisor.llm.worker.prompting import (
    DEFAULT_NUM_KEEP,
    RenderedPrompt,
    prompt_budget,
    truncate_tokens,
)
from ragvisor.llm.worker.schemas import Options
from ragvisor.llm.worker.slot import ModelSlot, finish_blocking

GeneratorSlot = ModelSlot[LlamaEngine, int]


@dataclass(frozen=True, slots=True)
class Piece:
    """A piece of generated text."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The generation ended (normally, at a stop, at its cap, or cancelled)."""

    stats: EngineStats
    load_duration_ns: int
    total_duration_ns: int


@dataclass(frozen=True, slots=True)
class Failed:
    """The generation could not run or broke off; `error` is what to tell the client."""

    error: BaseException


Event = Piece | Finished | Failed


@dataclass(frozen=True, slots=True)
class GenerationSpec:
    """Everything one generation needs, already validated."""

    name: str
    prompt: RenderedPrompt
    options: Options
    num_ctx: int
    keep_alive_s: float
    strip_leading_space: bool  # chat: "Assistant:" is followed by a space the client need not see


@dataclass(eq=False)  # identity semantics: jobs live in a set
class GenerationJob:
    """One generation's events and its cancel flag; see the module docstring."""

    spec: GenerationSpec
    cancel: threading.Event = field(default_factory=threading.Event)
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    async def stream(self) -> AsyncIterator[Event]:
        """Events until (and including) `Finished` or `Failed`."""
        while True:
            event = await self.events.get()
            yield event
            if not isinstance(event, Piece):
                return


class Generator:
    """Starts generation jobs against one engine behind one slot (one at a time)."""

    def __init__(
        self,
        engine: LlamaEngine,
        slot: GeneratorSlot,
        executor: Executor,
        *,
        log: Any,
    ) -> None:
        self._engine = engine
        self._slot = slot
        self._executor = executor
        self._log = log
        self._jobs: set[GenerationJob] = set()

    def start(self, spec: GenerationSpec) -> GenerationJob:
        """Queue a generation; its events arrive on the returned job."""
        job = GenerationJob(spec)
        job.task = asyncio.create_task(self._run(job), name=f"generate:{spec.name}")
        self._jobs.add(job)
        job.task.add_done_callback(lambda _task: self._jobs.discard(job))
        return job

    async def preload(self, *, name: str, num_ctx: int, keep_alive_s: float) -> int:
        """Load the model (Ollama's empty request); returns the load time in ns (0 if resident)."""
        async with self._slot.use(num_ctx, name=name, keep_alive_s=keep_alive_s) as lease:
            return lease.load_duration_ns

    async def shutdown(self, timeout_s: float) -> None:
        """Cancel running generations, wait (bounded) for them, and unload the model."""
        jobs = list(self._jobs)
        for job in jobs:
            job.cancel.set()
        tasks = [job.task for job in jobs if job.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        try:
            await asyncio.wait_for(self._slot.close(), timeout_s)
        except TimeoutError:  # a generation ignores its cancel flag: leave it to process exit
            self._log.error("worker.unload_timeout", after_s=timeout_s)

    async def _run(self, job: GenerationJob) -> None:
        spec = job.spec
        started = time.perf_counter_ns()
        try:
            async with self._slot.use(
                spec.num_ctx, name=spec.name, keep_alive_s=spec.keep_alive_s
            ) as lease:
                if job.cancel.is_set():  # the client left while queued or loading
                    self._log.info("worker.cancelled", model=spec.name, eval_count=0)
                    stats = EngineStats("stop", True, 0, 0, 0, 0)
                else:
                    stats = await self._generate(job, lease.resource)
            job.events.put_nowait(
                Finished(
                    stats=stats,
                    load_duration_ns=lease.load_duration_ns,
                    total_duration_ns=time.perf_counter_ns() - started,
                )
            )
        except asyncio.CancelledError:
            job.events.put_nowait(Failed(NotReadyError("the worker is shutting down")))
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
            if not isinstance(exc, InputError):
                self._log.error(
                    "worker.generation_failed",
                    model=spec.name,
                    error=repr(exc),
                    exc_info=not isinstance(exc, RagvisorError),
                )
            job.events.put_nowait(Failed(exc))

    async def _generate(self, job: GenerationJob, engine: LlamaEngine) -> EngineStats:
        spec = job.spec
        loop = asyncio.get_running_loop()
        tokens = await finish_blocking(
            loop.run_in_executor(self._executor, _tokenize, engine, spec.prompt.text)
        )
        num_predict = spec.options.num_predict_or_default()
        limit = prompt_budget(spec.num_ctx, num_predict)
        if len(tokens) > limit:
            keep = spec.options.num_keep if spec.options.num_keep is not None else DEFAULT_NUM_KEEP
            truncated = truncate_tokens(tokens, limit, keep)
            self._log.warning(
                "worker.prompt_truncated",
                model=spec.name,
                limit=limit,
                prompt=len(tokens),
                keep=keep,
                new=len(truncated),
            )
            tokens = truncated
        if num_predict == 0:  # Ollama: nothing to generate
            return EngineStats("length", False, len(tokens), 0, 0, 0)
        sampling = spec.options.sampling(
            max_tokens=num_predict if num_predict > 0 else 0, extra_stop=spec.prompt.stop
        )
        forward = _PieceForwarder(job, loop, strip_leading=spec.strip_leading_space)
        stats = await finish_blocking(
            loop.run_in_executor(
                self._executor,
                lambda: engine.generate(
                    tokens, sampling, cancel=job.cancel, on_piece=forward.from_thread
                ),
            )
        )
        if stats.cancelled:
            self._log.info(
                "worker.cancelled",
                model=spec.name,
                eval_count=stats.eval_count,
                prompt_eval_count=stats.prompt_eval_count,
            )
        return stats


def _tokenize(engine: LlamaEngine, text: str) -> list[int]:
    return engine.tokenize(text, add_bos=True)


class _PieceForwarder:
    """Hands text from the llama thread to the event loop; drops the leading space if asked."""

    def __init__(
        self, job: GenerationJob, loop: asyncio.AbstractEventLoop, *, strip_leading: bool
    ) -> None:
        self._job = job
        self._loop = loop
        self._pending_strip = strip_leading

    def from_thread(self, text: str) -> None:
        if self._pending_strip:
            text = text.lstrip()
            if not text:
                return
            self._pending_strip = False
        try:
            self._loop.call_soon_threadsafe(self._job.events.put_nowait, Piece(text))
        except RuntimeError:  # the loop is closed: the worker is exiting; stop generating
            self._job.cancel.set()
