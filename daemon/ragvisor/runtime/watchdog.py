"""The watchdog and the daemon's session under systemd: READY=1 once the port accepts, then
a ping from the event loop only after a self-check passes, and STOPPING=1 at the end.

The daemon sends `READY=1` once its port accepts connections (the index and the embedder were
warmed before the server started, so searches are served from then on; the generator worker may
still be loading its model — `/readyz`'s `capabilities.ask` says when it is up), then pings
every half of `$WATCHDOG_USEC` — from a task on the event loop, after checking that the store
answers (in a thread, with a timeout) and that the loop's scheduler runs. A wedged loop sends
nothing, and neither does a loop whose store hangs: systemd restarts both. A free-running thread
would keep pinging through either. The protocol itself is `runtime.sdnotify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog

from ragvisor.errors import RagvisorError
from ragvisor.runtime.sdnotify import SystemdNotifier

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

    from ragvisor.runtime.services import Services

T = TypeVar("T")
# A rehearsal and testing aid, not a setting: while the named file exists the watchdog's store
# probe hangs the way a store on a stuck disk does (see docs/systemd.md).
TEST_WATCHDOG_FILE_ENV = "RAGVISOR_TEST_WATCHDOG_FILE"
# How long to wait for the port to accept before giving up on READY=1 (systemd's own
# TimeoutStartSec= then fails the start).
LISTEN_TIMEOUT_S = 60.0
LISTEN_POLL_S = 0.02
# The checks' time limit is half the ping interval; without a watchdog, half of this.
UNWATCHED_CHECK_INTERVAL_S = 10.0


class SelfCheckFailed(RagvisorError):
    """A watchdog self-check found something wrong; the message says what."""


class ThreadProbe(Generic[T]):
    """Runs one blocking call at a time on a daemon thread of its own.

    The same thread every time, so the store reuses one connection; a daemon thread, so a call
    that never returns (a hung disk) does not block the process's exit. While a call is still
    running the next one fails at once instead of piling up threads.
    """

    def __init__(self, name: str, func: Callable[[], T]) -> None:
        self.name = name
        self._func = func
        self._queue: queue.SimpleQueue[Future[T] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending: Future[T] | None = None
        self._since = 0.0

    async def __call__(self) -> T:
        """The call's result. Raises SelfCheckFailed while the previous call still runs, or
        whatever the call raised."""
        pending = self._pending
        if pending is not None and not pending.done():
            age_s = time.monotonic() - self._since
            raise SelfCheckFailed(f"{self.name} has not answered for {age_s:.1f} s")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name=f"watchdog-{self.name}", daemon=True
            )
            self._thread.start()
        future: Future[T] = Future()
        self._pending, self._since = future, time.monotonic()
        self._queue.put(future)
        return await asyncio.wrap_future(future)

    def _serve(self) -> None:
        while (future := self._queue.get()) is not None:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._func())
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting check
                future.set_exception(exc)

    def close(self) -> None:
        """Let the thread end after its current call."""
        self._queue.put(None)


Check = Callable[[], Awaitable[object]]


class Watchdog:
    """Pings systemd every `interval_s` from the event loop, but only after every check passed.

    Each check gets half an interval; the checks run together. A failed self-check withholds
    the ping, logs `watchdog.self_check_failed` and puts the reason in the STATUS line, so that
    `systemctl status` says why systemd is about to restart the daemon.
    """

    def __init__(
        self,
        notifier: SystemdNotifier,
        interval_s: float,
        checks: Mapping[str, Check],
        *,
        status: Callable[[], str],
        log: Any,
    ) -> None:
        self.notifier = notifier
        self.interval_s = interval_s
        self.checks = dict(checks)
        self.status = status
        self.log = log
        self.withheld = 0  # pings withheld since the last passing self-check
        self._last_status = ""

    async def self_check(self) -> dict[str, str]:
        """What is wrong, by check name (empty: all passed)."""
        names = list(self.checks)
        results = await asyncio.gather(
            *(self._bounded(self.checks[name]) for name in names), return_exceptions=True
        )
        failures: dict[str, str] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, TimeoutError):
                failures[name] = f"no answer within {self.interval_s / 2:g} s"
            elif isinstance(result, BaseException):
                failures[name] = str(result) or type(result).__name__
        return failures

    async def _bounded(self, check: Check) -> object:
        async with asyncio.timeout(self.interval_s / 2):
            return await check()

    async def tick(self) -> bool:
        """One self-check and, if it passed, one ping. True when pinged."""
        started = time.perf_counter()
        failures = await self.self_check()
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        if failures:
            self.withheld += 1
            self.log.warning(
                "watchdog.self_check_failed",
                failures=failures,
                pings_withheld=self.withheld,
                duration_ms=duration_ms,
            )
            reasons = "; ".join(f"{name}: {why}" for name, why in failures.items())
            self._set_status(f"self-check failing ({reasons}); watchdog pings withheld")
            return False
        self.notifier.watchdog()
        if self.withheld:
            self.log.info("watchdog.recovered", pings_withheld=self.withheld)
            self.withheld = 0
        self._set_status(self.status())
        return True

    def announce_ready(self) -> str:
        """Send READY=1 with the current status line, and return that line."""
        text = self.status()
        self.notifier.ready(text)
        self._last_status = text
        return text

    def _set_status(self, text: str) -> None:
        if text != self._last_status:
            self.notifier.status(text)
            self._last_status = text

    async def run(self) -> None:
        """Tick every `interval_s` on a fixed cadence until cancelled."""
        loop = asyncio.get_running_loop()
        self.log.info("watchdog.started", interval_s=self.interval_s)
        next_at = loop.time()
        while True:
            await self.tick()
            next_at += self.interval_s
            late_s = loop.time() - next_at
            if late_s > 0:  # the loop was blocked, or the checks took all the time
                self.log.warning("watchdog.late", late_ms=round(late_s * 1000, 1))
                next_at = loop.time()
            await asyncio.sleep(next_at - loop.time())


def _connect_host(host: str) -> str:
    """Where to reach a listener bound to `host`: a wildcard is reached on loopback."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - a listen address being translated, not bound
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


async def wait_until_listening(host: str, port: int, timeout_s: float = LISTEN_TIMEOUT_S) -> bool:
    """True once a TCP connection to the server's port succeeds, False after `timeout_s`.

    uvicorn runs the app's startup before it binds the port, so the lifespan cannot know on its
    own when the server accepts; connecting is the one sure test of what READY=1 promises.
    """
    target = _connect_host(host)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            async with asyncio.timeout(1.0):
                _, writer = await asyncio.open_connection(target, port)
        except (OSError, TimeoutError):
            await asyncio.sleep(LISTEN_POLL_S)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


class SystemdSession:
    """One run of the web app under systemd: READY=1 once the port accepts, then the
    watchdog (when `WatchdogSec=` is set), and STOPPING=1 when `stop` is called."""

    def __init__(
        self,
        notifier: SystemdNotifier,
        *,
        listen: tuple[str, int],
        checks: Mapping[str, Check],
        status: Callable[[], str],
        probes: tuple[ThreadProbe[Any], ...] = (),
        log: Any = None,
    ) -> None:
        self.notifier = notifier
        self.listen = listen
        self.log = log if log is not None else structlog.get_logger(component="systemd")
        # Without WatchdogSec= the checks still run once, to fill the first status line.
        interval_s = notifier.watchdog_s or UNWATCHED_CHECK_INTERVAL_S
        self.watchdog = Watchdog(notifier, interval_s, checks, status=status, log=self.log)
        self._probes = probes
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin (on the running loop); nothing at all when notifications are off."""
        if self.notifier.enabled:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="systemd")

    async def _run(self) -> None:
        started = time.perf_counter()
        host, port = self.listen
        if port and not await wait_until_listening(host, port):
            self.log.error("systemd.not_listening", host=host, port=port)
            return  # no READY=1: systemd fails the start after TimeoutStartSec=
        await self.watchdog.self_check()  # fills the status line; failures are the pings' job
        status = self.watchdog.announce_ready()
        self.log.info(
            "systemd.ready",
            status=status,
            watchdog_interval_s=self.notifier.watchdog_s,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        if self.notifier.watchdog_s is not None:
            await self.watchdog.run()

    async def stop(self, status: str = "stopping") -> None:
        """STOPPING=1, then end the watchdog (no ping after this)."""
        if not self.notifier.enabled:
            return
        self.notifier.stopping(status)
        self.log.info("systemd.stopping", status=status)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for probe in self._probes:
            probe.close()


def daemon_session(
    notifier: SystemdNotifier | None,
    services: Services,
    scheduler: BaseScheduler,
    environ: Mapping[str, str] | None = None,
) -> SystemdSession:
    """The daemon's session: checks that the store answers a read and that the event loop's
    scheduler (the memory guard's) runs; the status line counts chunks and names the generator.
    """
    notifier = notifier if notifier is not None else SystemdNotifier(None)
    log = structlog.get_logger(component="systemd")
    rehearsal = (os.environ if environ is None else environ).get(TEST_WATCHDOG_FILE_ENV, "")
    if rehearsal and notifier.enabled:
        log.warning(
            "watchdog.test_hook", file=rehearsal, note="the store probe hangs while it exists"
        )
    counts: dict[str, int] = {}

    def read_store() -> dict[str, int]:
        while rehearsal and Path(rehearsal).exists():
            time.sleep(0.05)  # a store on a stuck disk: the probe does not come back
        return services.store.stats()

    store_probe = ThreadProbe("store", read_store)

    async def store_answers() -> None:
        counts.update(await store_probe())

    async def scheduler_runs() -> None:
        if not scheduler.running:
            raise SelfCheckFailed("the event loop's scheduler is not running")

    def status() -> str:
        g = services.settings.generator
        generator = "off" if g.backend == "none" else f"{g.model} ({g.backend})"
        chunks = counts.get("chunks")
        return f"ready: {'?' if chunks is None else chunks} chunks, generator {generator}"

    return SystemdSession(
        notifier,
        listen=(services.settings.server.host, services.settings.server.port),
        checks={"store": store_answers, "scheduler": scheduler_runs},
        status=status,
        probes=(store_probe,),
        log=log,
    )
