"""One model's lifecycle: load on demand, serve one request at a time, unload when kept alive
long enough — Ollama's scheduler for a single model with `OLLAMA_NUM_PARALLEL=1`.

States: ``unloaded -> loading -> loaded -> unloading -> unloaded`` (a failed load goes back to
``unloaded``); `_transition` is the only place that changes the state, and it logs. The asyncio
lock is the queue: a request holds it from load to its last token, so requests run one after
another and nothing unloads a model in use. Blocking work (llama.cpp, ONNX) runs on the slot's
own executor; if the awaiting task is cancelled, the blocking call still finishes before the
state is updated, so the state never lies about what is in memory.

After each use the model's expiry is now + keep-alive; a background task unloads it then,
unless another request came first. Keep-alive 0 unloads before the lock is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import math
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from ragvisor.allocator import release_free_memory
from ragvisor.llm.worker.keepalive import expiry
from ragvisor.ollama.names import short_name

R = TypeVar("R")  # the loaded resource
S = TypeVar("S")  # what a load depends on (the context size for llama.cpp)
T = TypeVar("T")


class SlotState(enum.Enum):
    """Where a model is in its lifecycle."""

    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"


_ALLOWED = {
    SlotState.UNLOADED: {SlotState.LOADING},
    SlotState.LOADING: {SlotState.LOADED, SlotState.UNLOADED},
    SlotState.LOADED: {SlotState.UNLOADING},
    SlotState.UNLOADING: {SlotState.UNLOADED},
}


def utc_now() -> datetime:
    """The wall clock, in UTC (expiry times are reported to clients)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Lease(Generic[R]):
    """A loaded model, held for one request; `load_duration_ns` is 0 when it was resident."""

    resource: R
    load_duration_ns: int


@dataclass(frozen=True, slots=True)
class LoadedView(Generic[S]):
    """What `/api/ps` shows about a loaded model."""

    name: str
    spec: S
    expires_at: datetime


def _release_memory() -> None:
    gc.collect()
    release_free_memory()


async def finish_blocking(future: asyncio.Future[T]) -> T:
    """Await `future` to its end even if the caller is cancelled meanwhile, then re-raise that.

    A thread cannot be interrupted; waiting for it keeps our view of the model's memory true.
    """
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done() and future.cancelled():
                raise
            cancelled = True
        except Exception:  # noqa: BLE001 - the future's own exception is raised just below
            break
    result = future.result()
    if cancelled:
        raise asyncio.CancelledError
    return result


class ModelSlot(Generic[R, S]):
    """The lifecycle of one model: see the module docstring."""

    def __init__(
        self,
        label: str,
        *,
        load: Callable[[S], R],
        unload: Callable[[R], None],
        executor: Executor,
        log: Any,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._label = label
        self._load = load
        self._unload = unload
        self._executor = executor
        self._log = log
        self._clock = clock
        self._lock = asyncio.Lock()
        self._state = SlotState.UNLOADED
        self._resource: R | None = None
        self._spec: S | None = None
        self._name = ""
        self._expires_at: datetime | None = None
        self._reaper: asyncio.Task[None] | None = None

    @property
    def state(self) -> SlotState:
        """The current lifecycle state."""
        return self._state

    def loaded(self) -> LoadedView[S] | None:
        """The loaded model's name, load spec and expiry, or None."""
        if self._state is not SlotState.LOADED:
            return None
        expires_at = self._expires_at or expiry(self._clock(), math.inf)
        # LOADED implies the spec was set by the load (None is a valid spec: the embedder's).
        return LoadedView(name=self._name, spec=cast("S", self._spec), expires_at=expires_at)

    def _transition(self, new: SlotState, **context: Any) -> None:
        if new not in _ALLOWED[self._state]:
            raise RuntimeError(f"{self._label}: cannot go from {self._state.value} to {new.value}")
        self._log.debug(
            "worker.model_state", model=self._label, old=self._state.value, new=new.value
        )
        self._state = new
        if new is SlotState.LOADED:
            self._log.info("worker.model_loaded", model=self._label, name=self._name, **context)
        elif new is SlotState.UNLOADED and context.get("unloaded"):
            self._log.info("worker.model_unloaded", model=self._label, name=self._name, **context)

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await finish_blocking(loop.run_in_executor(self._executor, fn, *args))

    @contextlib.asynccontextmanager
    async def use(self, spec: S, *, name: str, keep_alive_s: float) -> AsyncIterator[Lease[R]]:
        """Hold the model, loaded with `spec`, for one request; then apply `keep_alive_s`.

        Waits for earlier requests first. A model loaded with another spec is unloaded and
        loaded again. Raises whatever the load raises (the slot is then unloaded).
        """
        async with self._lock:
            self._stop_reaper()
            load_ns = 0
            if self._state is SlotState.LOADED and self._spec != spec:
                await self._unload_locked(reason="reload")
            if self._state is SlotState.UNLOADED:
                self._name = short_name(name)
                load_ns = await self._load_locked(spec)
            assert self._resource is not None  # LOADED implies a resource
            self._name = short_name(name)
            self._expires_at = expiry(self._clock(), keep_alive_s)  # what /api/ps shows meanwhile
            try:
                yield Lease(self._resource, load_ns)
            finally:
                await self._after_use(keep_alive_s)

    async def unload(self, *, reason: str) -> bool:
        """Unload now (waiting for a running request first); True if a model was loaded."""
        async with self._lock:
            self._stop_reaper()
            if self._state is not SlotState.LOADED:
                return False
            await self._unload_locked(reason=reason)
            return True

    async def close(self) -> None:
        """Stop the expiry timer and unload: the worker is shutting down."""
        self._stop_reaper()
        await self.unload(reason="shutdown")

    async def _load_locked(self, spec: S) -> int:
        self._transition(SlotState.LOADING)
        started = time.perf_counter_ns()
        try:
            resource = await self._blocking(self._load, spec)
        except BaseException:
            self._transition(SlotState.UNLOADED)
            raise
        load_ns = time.perf_counter_ns() - started
        self._resource, self._spec = resource, spec
        self._transition(SlotState.LOADED, spec=spec, duration_ms=round(load_ns / 1e6, 1))
        return load_ns

    async def _unload_locked(self, *, reason: str) -> None:
        resource, self._resource = self._resource, None
        self._transition(SlotState.UNLOADING)
        started = time.perf_counter_ns()
        try:
            if resource is not None:
                await self._blocking(self._unload, resource)
            # Only now is our last reference gone, so the collector can free what the model
            # holds, and the allocator can return it to the OS.
            del resource
            await self._blocking(_release_memory)
        finally:
            self._spec, self._expires_at = None, None
            self._transition(
                SlotState.UNLOADED,
                unloaded=True,
                reason=reason,
                duration_ms=round((time.perf_counter_ns() - started) / 1e6, 1),
            )

    async def _after_use(self, keep_alive_s: float) -> None:
        if self._state is not SlotState.LOADED:
            return
        if keep_alive_s <= 0:
            await self._unload_locked(reason="keep_alive")
            return
        self._expires_at = expiry(self._clock(), keep_alive_s)
        if not math.isinf(keep_alive_s):
            self._reaper = asyncio.create_task(self._expire_at(self._expires_at))

    def _stop_reaper(self) -> None:
        if self._reaper is not None and not self._reaper.done():
            self._reaper.cancel()
        self._reaper = None

    async def _expire_at(self, deadline: datetime) -> None:
        delay_s = (deadline - self._clock()).total_seconds()
        await asyncio.sleep(max(delay_s, 0.0))
        async with self._lock:
            # A request in between moved the deadline (and cancelled us, unless it raced).
            if self._state is SlotState.LOADED and self._expires_at == deadline:
                self._reaper = None
                await self._unload_locked(reason="expired")
