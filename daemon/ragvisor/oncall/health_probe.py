"""What `ragvisor health` observes: the daemon's answers, the generator backend's, and with
`--deep` a real search and a one-token generation — every step bounded by what is left of
`--timeout`, none of them loading a model except the deep generation (which unloads it again
when it was not loaded before).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragvisor.core.model import ChatMessage
from ragvisor.errors import RagvisorError
from ragvisor.ollama.client import OllamaClient
from ragvisor.ollama.names import find_model
from ragvisor.ollama.wire import Deadlines
from ragvisor.oncall.daemon_client import DaemonClient
from ragvisor.oncall.nagios import State
from ragvisor.oncall.status import (
    DaemonReply,
    dig,
    fetch_daemon,
    number,
)

if TYPE_CHECKING:
    from ragvisor.config import Settings

MEMORY_STATES = {"critical": State.CRITICAL, "pressure": State.WARNING}
DEEP_QUERY = "ragvisor health check"
# A step that would get less time than this is not started: running out of --timeout is the
# plugin's failure (UNKNOWN), not proof that a component is down.
MIN_STEP_S = 0.2


@dataclass(frozen=True, slots=True)
class Target:
    """Where the generator backend is and what the daemon asks of it."""

    url: str
    model: str
    num_ctx: int


@dataclass(frozen=True, slots=True)
class BackendProbe:
    """What the generator backend said: `/api/version` (up?) and `/api/ps` (model loaded?)."""

    url: str
    model: str
    num_ctx: int = 2048
    version: str | None = None
    error: str | None = None
    loaded: bool | None = None  # None: /api/ps was not answered
    ps_error: str | None = None


@dataclass(frozen=True, slots=True)
class DeepProbe:
    """Results of `--deep`: a real search and a one-token generation (None = not tried)."""

    search_s: float | None = None
    search_hits: int | None = None
    search_error: str | None = None
    generate_s: float | None = None
    generate_error: str | None = None
    generate_skipped: str | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything one run of the plugin measured; `assess` turns it into a verdict."""

    daemon: DaemonReply
    backend: BackendProbe | None = None  # None: no generator configured, or not reached
    deep: DeepProbe | None = None
    elapsed_s: float = 0.0
    out_of_time: tuple[str, ...] = ()  # steps skipped because --timeout was spent
    has_generator: bool = True  # False: the daemon runs without one (generator.backend "none")


class _Budget:
    """The time left of `--timeout`, shared by the steps of one run."""

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s

    def left(self) -> float:
        return self.deadline - time.monotonic()


def generator_target(reply: DaemonReply, settings: Settings) -> Target | None:
    """The generator backend the daemon uses, or None when it has none.

    The embedded worker's port is chosen at start, so the daemon's `/status` (or `/readyz`) is
    asked first; `generator.url` from the configuration is the fallback for older daemons.
    The daemon's own model and num_ctx win over the configuration's: a one-token check with
    another num_ctx would make Ollama reload the model to resize its context.
    """
    g = settings.generator
    found = dig(reply.status, "backends", "generator")
    if found is None and dig(reply.status, "backends") is None:
        found = dig(reply.readyz, "checks", "generator")
        if found is None and reply.readyz is None and g.backend != "none":
            found = {"url": g.url}  # nothing from the daemon: trust the configuration
    if not isinstance(found, Mapping) or not found.get("url"):
        return None
    num_ctx = number(found.get("num_ctx"))
    return Target(
        str(found["url"]),
        str(found.get("model") or g.model),
        int(num_ctx) if num_ctx else g.num_ctx,
    )


def _client(target: Target | BackendProbe, timeout_s: float, keep_alive: str) -> OllamaClient:
    return OllamaClient(
        target.url,
        model=target.model,
        num_ctx=target.num_ctx,
        num_predict=1,
        temperature=0.0,
        keep_alive=keep_alive,
        deadlines=Deadlines(
            connect_s=timeout_s, first_token_s=timeout_s, stall_s=timeout_s, total_s=timeout_s
        ),
    )


def _step_s(budget: _Budget) -> float:
    """Seconds for the next call: what is left, to a tenth (it appears in messages)."""
    return round(max(budget.left(), MIN_STEP_S), 1)


async def probe_backend(target: Target, budget: _Budget) -> BackendProbe:
    """`/api/version` then `/api/ps` on the generator backend: neither loads a model."""
    client = _client(target, _step_s(budget), "0")
    url, model, num_ctx = target.url, target.model, target.num_ctx
    try:
        try:
            version = await client.version(timeout=_step_s(budget))
        except RagvisorError as exc:
            return BackendProbe(url, model, num_ctx, error=str(exc))
        try:
            async with asyncio.timeout(_step_s(budget)):
                models = await client.ps()
        except (RagvisorError, TimeoutError) as exc:
            return BackendProbe(url, model, num_ctx, version, ps_error=str(exc) or "timed out")
        loaded = find_model(models, model) is not None
        return BackendProbe(url, model, num_ctx, version, loaded=loaded)
    finally:
        await client.aclose()


async def _deep_search(
    daemon_url: str, budget: _Budget
) -> tuple[float | None, int | None, str | None]:
    started = time.perf_counter()
    daemon = DaemonClient(daemon_url, _step_s(budget))
    try:
        body = await daemon.search(DEEP_QUERY, k=1)
    except RagvisorError as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    hits = dig(body, "results")
    return time.perf_counter() - started, len(hits) if isinstance(hits, list) else 0, None


async def _deep_generate(
    backend: BackendProbe, settings: Settings, budget: _Budget
) -> tuple[float | None, str | None]:
    """One token from the configured model. A model that was not loaded is asked with
    `keep_alive: 0`, so the check does not leave hundreds of MB behind it."""
    keep_alive = settings.generator.keep_alive if backend.loaded else "0"
    client = _client(backend, _step_s(budget), keep_alive)
    started = time.perf_counter()
    try:
        # The stream ends by itself after its stats line, the one-token answer's last event.
        chat = client.chat([ChatMessage("user", "Reply with OK.")])
        async with asyncio.timeout(_step_s(budget)), contextlib.aclosing(chat) as events:
            async for _ in events:
                pass
    except TimeoutError:
        return None, f"no answer within {time.perf_counter() - started:.1f} s (--timeout)"
    except RagvisorError as exc:
        return None, str(exc)
    finally:
        await client.aclose()
    return time.perf_counter() - started, None


async def deep_checks(
    daemon_url: str, backend: BackendProbe | None, reply: DaemonReply, settings: Settings,
    budget: _Budget,
) -> DeepProbe:  # fmt: skip
    """`--deep`: a real search through the daemon, then one generated token."""
    search_s, hits, search_error = await _deep_search(daemon_url, budget)
    level = dig(reply.status, "memory", "level")
    skipped = None
    if backend is None:
        skipped = "no generator"
    elif backend.error is not None:
        skipped = "generator backend down"
    elif level in MEMORY_STATES:
        skipped = f"memory {level}: a model load would make it worse"
    elif budget.left() < MIN_STEP_S:
        skipped = "--timeout spent"
    if skipped is not None or backend is None:
        return DeepProbe(search_s, hits, search_error, generate_skipped=skipped)
    generate_s, generate_error = await _deep_generate(backend, settings, budget)
    return DeepProbe(search_s, hits, search_error, generate_s, generate_error)


async def observe(url: str, settings: Settings, timeout_s: float, *, deep: bool) -> Observation:
    """Ask the daemon, then the generator backend (and with `deep`, search and generate)."""
    started = time.perf_counter()
    budget = _Budget(timeout_s)
    reply = await fetch_daemon(url, timeout_s)
    backend: BackendProbe | None = None
    skipped: list[str] = []
    deep_probe: DeepProbe | None = None
    target = None
    if reply.error is None:
        target = generator_target(reply, settings)
        if target is not None and budget.left() < MIN_STEP_S:
            skipped.append("generator backend")
        elif target is not None:
            backend = await probe_backend(target, budget)
        if deep and budget.left() < MIN_STEP_S:
            skipped.append("deep search and generation")
        elif deep:
            deep_probe = await deep_checks(url, backend, reply, settings, budget)
    elapsed_s = time.perf_counter() - started
    return Observation(
        reply, backend, deep_probe, elapsed_s, tuple(skipped), has_generator=target is not None
    )
