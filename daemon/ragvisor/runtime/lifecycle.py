"""The daemon's life, in one place: its start order, its one scheduler, its staged stop.

Start (`run`):

1. the store is open and the embedder loaded, the worker spawned (the composition root did that);
2. the dense index is loaded and the embedder warmed up, while the worker loads its model;
3. freed heap goes back to the OS, `app.ready`; the worker is waited for in a thread
   (`worker.start_timeout_s`; `worker.ready` when it answers) — searches do not wait for it;
4. the HTTP server starts; its lifespan (`lifespan`) binds the escalation ladders to the event
   loop, starts the scheduler — the periodic sync and the memory guard, both on the loop — the
   folder watch (`[sync] watch`, a thread of its own: `runtime.corpus_watch`) and
   the systemd session, which sends READY=1 once the port accepts: the unit's job is serving,
   and `/search` is served from then on. Until the worker answers, `/ask` answers with the best
   passages (`degraded`, as while the worker restarts) and `/readyz` says
   `capabilities.ask: false` (its `ready` stays false, as for any generator outage).

Stop, on the first SIGTERM or SIGINT (a second one forces exit): the server stops accepting and
drains requests (`server.shutdown_grace_s`); then the lifespan sends STOPPING=1, stops the
scheduler and the folder watch, cancels a running sync and waits for it (`sync.stop_timeout_s`),
and closes the ladders and the generator's client; last, the worker is stopped and the store
closed. Each stage is logged as `app.stopping` with its `stage`, the end as `app.stopped`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ragvisor.allocator import release_free_memory
from ragvisor.core.protocols import ProcessRunner
from ragvisor.errors import BackendUnavailable, StoreError
from ragvisor.runtime.sdnotify import SystemdNotifier
from ragvisor.runtime.services import Services
from ragvisor.runtime.watchdog import daemon_session
from ragvisor.supervise.memory import schedule_memory_guard

# How often the stop sequence looks whether a cancelled sync has finished.
SYNC_STOP_POLL_S = 0.05
# How long the stop waits for the folder watch's thread once its sync is cancelled: it checks
# for the stop every 0.25 s (runtime.corpus_watch.STOP_CHECK_MS).
WATCH_STOP_S = 2.0
# Seconds after start-up before the token-count job looks for chunks without counts, when no
# sync runs at start: it loads a tokenizer, and the first searches come first.
TOKEN_COUNT_DELAY_S = 10.0


def build_scheduler(services: Services) -> AsyncIOScheduler:
    """The daemon's one scheduler, on the event loop: the sync every `sync.interval_s` (and once
    at start if `sync.on_start`), the memory guard every `memory.interval_s`, and the store
    watch (`watch_store`).

    The sync runs in a thread (it embeds and writes) and one at a time (`max_instances=1`,
    `coalesce=True`); the runner's locks also keep it from overlapping an admin or CLI sync.
    """
    scheduler = AsyncIOScheduler(timezone="UTC")
    sync = services.settings.sync

    async def scheduled_sync() -> None:
        await asyncio.to_thread(services.sync_runner.run_quietly, trigger="schedule")

    now = datetime.now(UTC)
    if sync.interval_s > 0:
        # Only a first run at start is given: APScheduler adds a job whose next_run_time is
        # None as paused, which once kept every periodic sync from running without on_start.
        first = {"next_run_time": now} if sync.on_start else {}
        scheduler.add_job(
            scheduled_sync,
            "interval",
            seconds=sync.interval_s,
            id="sync",
            max_instances=1,
            coalesce=True,
            **first,
        )
    elif sync.on_start:
        scheduler.add_job(scheduled_sync, "date", run_date=now, id="sync")
    history = services.history
    interval_s = services.settings.memory.interval_s
    if services.memory_guard is not None:
        after = history.sample if history is not None else None
        schedule_memory_guard(scheduler, services.memory_guard, interval_s, after=after)
    elif history is not None:  # `memory.enabled = false`: the history keeps the latencies
        scheduler.add_job(
            history.sample, "interval", args=(None,), seconds=interval_s, id="history"
        )
    scheduler.add_job(
        watch_store,
        "interval",
        args=(services,),
        seconds=store_watch_s(sync.lease_s),
        id="store-watch",
        max_instances=1,
        coalesce=True,
    )
    return scheduler


def store_watch_s(lease_s: float) -> float:
    """How often the store watch runs: a third of the lease, at most every 5 s, so an abandoned
    lease is taken over within `sync.lease_s` + 5 s."""
    return min(5.0, lease_s / 3)


async def watch_store(services: Services) -> None:
    """What several daemons on one store need to notice without a restart: a generation another
    daemon activated (queries switch models), and a lease left to expire by a daemon that died
    mid-sync (this one finishes the sync)."""

    def watch() -> None:
        if services.generations is not None:
            try:
                services.generations.refresh()
            except StoreError:
                return  # the store is away: /readyz says so; the next watch tries again
        services.sync_runner.take_over()

    await asyncio.to_thread(watch)


def lifespan(
    services: Services, notifier: SystemdNotifier | None = None
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """The HTTP server's lifespan: what runs on the event loop from start to stop (see above)."""
    log = structlog.get_logger(component="app")

    @asynccontextmanager
    async def running(_app: Any) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        for ladder in services.ladders():
            ladder.bind(loop)
        scheduler = build_scheduler(services)
        scheduler.start()
        watch = services.corpus_watch
        if watch is not None:
            watch.start()  # `[sync] watch`: its own thread (runtime.corpus_watch)
        systemd = daemon_session(notifier, services, scheduler)
        systemd.start()
        counts = services.token_counts
        if counts is not None and not services.settings.sync.on_start:
            # Chunks stored by another process, or under another generator model: counted
            # once the start-up is over (with on_start, the first sync kicks it instead).
            loop.call_later(TOKEN_COUNT_DELAY_S, counts.kick)
        try:
            yield
        finally:
            await systemd.stop()  # STOPPING=1 first, and no watchdog ping after it
            if notifier is not None:
                notifier.status("stopping: scheduler, running sync, store")
            log.info("app.stopping", stage="scheduler")
            scheduler.shutdown(wait=False)
            if watch is not None:
                watch.request_stop()
            await stop_sync(services)
            if counts is not None:
                await asyncio.to_thread(counts.close)
            if watch is not None:
                await asyncio.to_thread(watch.join, WATCH_STOP_S)
            for ladder in services.ladders():
                await ladder.aclose()
            if services.generator is not None:
                await services.generator.aclose()

    return running


async def stop_sync(services: Services) -> None:
    """Cancel a running sync and wait for it to stop, at most `sync.stop_timeout_s`: it stops
    between documents, so what it committed stays and the rest is done by the next sync."""
    runner = services.sync_runner
    runner.cancel()
    deadline = time.monotonic() + services.settings.sync.stop_timeout_s
    while runner.running and time.monotonic() < deadline:
        await asyncio.sleep(SYNC_STOP_POLL_S)


def wait_for_worker(worker: ProcessRunner) -> threading.Thread:
    """Wait for the worker in a thread of its own, so that searches are served meanwhile.

    A worker that does not come up is logged (`worker.start_failed`) and respawned by its own
    watcher with the crash backoff; `/ask` answers with passages until one answers. Once it
    does, the heap freed meanwhile goes back to the OS.
    """
    log = structlog.get_logger(component="app")

    def wait() -> None:
        try:
            worker.wait_ready()
        except BackendUnavailable as exc:
            log.error("worker.start_failed", error=str(exc))  # noqa: TRY400 - an outage
            return
        release_free_memory()

    thread = threading.Thread(target=wait, name="worker-start", daemon=True)
    thread.start()
    return thread


def run(
    services: Services,
    serve_http: Callable[[], None],
    notifier: SystemdNotifier | None = None,
    *,
    started: float | None = None,
) -> None:
    """Start the daemon on built services, serve until a signal, then stop it (see above).

    `serve_http` runs the HTTP server, whose lifespan is `lifespan(services, notifier)`, until
    the first signal. `started` (a `time.perf_counter()` reading) is when the start began, for
    `app.ready`'s `warmup_ms`. The services are closed whatever happens.
    """
    log = structlog.get_logger(component="app")
    started = time.perf_counter() if started is None else started
    try:
        if notifier is not None:
            notifier.status("starting: loading the index, warming up the embedder")
        serving = services.serving_embedder().fingerprint
        try:
            indexed: int | None = services.store.load_index(serving)
        except StoreError as exc:
            # Neo4j away at start: serve anyway — `/readyz` names the store, searches answer 503
            # `store_unavailable` — and use the database as soon as it is back.
            log.error("app.store_unavailable", error=str(exc))  # noqa: TRY400 - an outage, not a bug
            indexed = None
        services.embedder.embed(["warm-up"])  # the first ONNX run allocates; pay it before traffic
        # A model change in progress: queries use the previous model (the configured one's
        # query side, with a task prefix, is the same model and is warm already).
        if serving.key != services.embedder.fingerprint.key:
            services.serving_embedder().embed(["warm-up"])
        release_free_memory()
        if services.worker is not None:
            wait_for_worker(services.worker)
        log.info(
            "app.ready",
            chunks_indexed=indexed,
            warmup_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        serve_http()
    finally:
        log.info("app.stopping", stage="store")
        services.close()
        log.info("app.stopped")
