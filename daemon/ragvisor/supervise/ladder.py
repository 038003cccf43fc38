"""The escalation ladder: what the daemon does, unattended, about a backend that keeps hanging.

Field reports: Ollama calls hung with nothing in the logs until someone restarted it by hand.
Here, a hang rate over the recent calls (:mod:`ragvisor.supervise.hangs`: at least
``hang_threshold`` hangs, and at least ``hang_rate`` of the last ``hang_window`` calls) starts
the ladder, which climbs only as far as needed:

1. **unload** — ask the backend to drop the model (`keep_alive: 0`); a stuck runner goes with it;
2. **confirm** — `/api/ps` must no longer list the model (an unload reply alone proves little);
3. **restart** — only when 1 or 2 failed: run the configured action (`systemctl restart ollama`,
   or respawn the embedded worker), within a restart budget per hour and a growing backoff;
4. **probe** — wait until the backend answers `/api/version` before traffic resumes.

Once the unload fails or does not take, the backend counts as wedged: its circuit breaker is
held open, so requests are answered degraded at once instead of piling onto it while it
restarts; a passed probe moves the breaker to half-open and the next real call decides. A
wedged backend still dead after its restart is restarted again once the backoff allows, until
it answers or the hour's budget is spent: with the breaker held open no call reaches it, so no
new hang would ever start the ladder again. A backend that unloads on request is only slow or
flaky, and traffic goes on meanwhile. Every step is a structured log event with its duration and
a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, Protocol

from ragvisor.config import LadderSettings
from ragvisor.errors import BackendTimeout
from ragvisor.metrics import Metrics
from ragvisor.ollama.names import same_model
from ragvisor.supervise.backoff import HOUR_S, RestartHistory, RestartPolicy
from ragvisor.supervise.breaker import CircuitBreaker
from ragvisor.supervise.hangs import HangRule, HangWindow
from ragvisor.supervise.retry import is_hang

MAX_RESTART_BACKOFF_S = 600.0
# A step's own timeout is the control's to honour; past it by this much, the ladder gives up on
# the step itself, so a control that ignores its timeout cannot hold the breaker open for good.
STEP_GRACE_S = 1.0
# How often the confirm step looks at /api/ps again while the model is still listed.
CONFIRM_POLL_S = 0.25
# Between two probes of a backend that does not answer yet: quick enough to resume traffic within
# a second of its return, slow enough to cost nothing.
PROBE_INTERVAL_S = 0.25

# What became of one restart the ladder wanted.
RestartOutcome = Literal["ok", "failed", "skipped_budget", "skipped_backoff"]


class BackendControl(Protocol):
    """What the ladder can do to one backend (implementations: `ragvisor.supervise.controls`)."""

    @property
    def model(self) -> str:
        """The model this daemon uses on that backend."""
        ...

    async def unload(self, timeout_s: float) -> None:
        """Ask the backend to unload the model now. Raises on failure or timeout."""
        ...

    async def loaded_models(self, timeout_s: float) -> list[str]:
        """Names of the models resident now (`/api/ps`). Raises on failure or timeout."""
        ...

    async def restart(self, timeout_s: float) -> None:
        """Restart the backend (command or respawn). Raises on failure."""
        ...

    async def probe(self, timeout_s: float) -> None:
        """Raise unless the backend answers a cheap request (`/api/version`)."""
        ...


class EscalationLadder:
    """Watches the hang rate of one backend and climbs the ladder when it says "wedged".

    `clock` and `sleep` are injected so tests drive time instead of waiting for it.
    """

    def __init__(
        self,
        backend: str,
        control: BackendControl,
        settings: LadderSettings,
        breaker: CircuitBreaker,
        *,
        metrics: Metrics | None = None,
        log: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.backend = backend
        self._control = control
        self._settings = settings
        self._breaker = breaker
        self._metrics = metrics
        self._log = log
        self._clock = clock
        self._sleep = sleep
        # Outcomes arrive from the event loop and from the embedder's worker threads.
        self._hangs = HangWindow(HangRule.from_settings(settings))
        self._hangs_lock = threading.Lock()
        self._restarts = RestartHistory(
            RestartPolicy(
                base_s=settings.restart_backoff_s,
                max_s=MAX_RESTART_BACKOFF_S,
                quiet_s=HOUR_S,  # a quiet hour: the next restart waits only the base backoff
                budget_per_hour=settings.restart_budget_per_hour,
            ),
            clock,
        )
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_step: dict[str, Any] | None = None
        self.runs = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the ladder runs on (the web server's); set at start-up."""
        self._loop = loop

    @property
    def running(self) -> bool:
        """Whether a climb is in progress."""
        return self._task is not None and not self._task.done()

    def restarts_last_hour(self) -> int:
        """Restarts within the last hour (what the budget counts)."""
        return self._restarts.last_hour()

    def note_success(self) -> None:
        """A call answered: one more call in the window that did not hang."""
        with self._hangs_lock:
            self._hangs.note(hung=False)

    def note_failure(self, exc: BaseException) -> None:
        """A call failed; a hang rate that says "wedged" starts the ladder. Safe to call from
        any thread.

        Any failure other than a hang (an error answer, a refused connection) is a call the
        backend did not hang on. An attempt cut short by its request's deadline says nothing
        either way and is left out (with the defaults, three first_token_s is more than
        request_s, so a wedged backend's third attempt is always cut like that).
        """
        if isinstance(exc, BackendTimeout) and exc.phase == "request":
            return
        with self._hangs_lock:
            start = self._hangs.note(hung=is_hang(exc))
            reason = self._hangs.describe()
        if start:
            self.trigger(reason)

    def trigger(self, reason: str) -> None:
        """Start a climb unless one is running (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            if self._log is not None:
                self._log.warning("ladder.not_started", backend=self.backend, reason=reason)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._start(reason)
        else:
            loop.call_soon_threadsafe(self._start, reason)

    def _start(self, reason: str) -> None:
        if self.running:
            return
        with self._hangs_lock:
            self._hangs.after_climb()
        self._task = asyncio.get_running_loop().create_task(self.climb(reason))

    async def climb(self, reason: str) -> None:
        """Run the ladder once: unload, confirm, and only if those fail restart (again, while
        the probe fails and the budget allows); probe."""
        started = time.perf_counter()
        self.runs += 1
        if self._log is not None:
            self._log.warning("ladder.started", backend=self.backend, reason=reason)
        s = self._settings
        unloaded = confirmed = healthy = held = restarted = False
        restarts = 0
        try:
            unloaded = await self._step(
                "unload", self._control.unload(s.unload_timeout_s), s.unload_timeout_s
            )
            confirmed = unloaded and await self._step(
                "confirm", self._confirm(s.confirm_timeout_s), s.confirm_timeout_s
            )
            if confirmed:
                healthy = await self._probe_step(s.probe_timeout_s)
            else:
                # The backend does not obey: from here on it is wedged, and callers are
                # answered degraded at once instead of piling onto it while it restarts.
                # (A backend that unloaded on request is merely slow or flaky: traffic goes on.)
                held = True
                self._breaker.force_open(f"ladder: {reason}; the unload did not take")
                restarts, restarted, healthy = await self._restart_until_healthy()
        finally:
            # Traffic resumes through a trial call once the probe passed; otherwise the
            # breaker's usual pause runs from now (also when the climb is cancelled).
            if held and healthy:
                self._breaker.half_open_now()
            elif held:
                self._breaker.release_hold()
        if self._log is not None:
            self._log.warning(
                "ladder.finished",
                backend=self.backend,
                unloaded=unloaded,
                confirmed=confirmed,
                restarted=restarted,
                restarts=restarts,
                healthy=healthy,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )

    async def _restart_until_healthy(self) -> tuple[int, bool, bool]:
        """Restart the wedged backend and probe it; while the probe fails, restart it again as
        soon as the backoff allows, until it answers or the hour's budget is spent.

        One restart used to be all a climb tried: a backend still dead after it stayed dead,
        since the breaker held open lets no call reach it, so no new hang is ever counted to
        start another climb. While waiting out the backoff the backend is probed, and one that
        comes back by itself is not restarted. Returns (restarts run, whether one succeeded,
        whether the backend answers).
        """
        s = self._settings
        restarts, restarted = 0, False
        waited = False
        while True:
            outcome = await self._restart(backoff_waited=waited)
            if outcome in ("ok", "failed"):
                restarts += 1
                restarted = restarted or outcome == "ok"
            if await self._probe_step(s.probe_timeout_s):
                return restarts, restarted, True
            if outcome == "skipped_budget":
                return restarts, restarted, False  # ladder.restart_skipped said why
            if self._restarts.over_budget():
                self._skip("budget", restarts_last_hour=self._restarts.last_hour())
                return restarts, restarted, False
            wait_s = self._restarts.wait_s()
            if self._log is not None:
                self._log.warning(
                    "ladder.restart_scheduled",
                    backend=self.backend,
                    why=(
                        "the backend does not answer after its restart"
                        if outcome in ("ok", "failed")
                        else "the backend does not answer; the restart waits for its backoff"
                    ),
                    retry_in_s=round(wait_s, 1),
                    restarts=restarts,
                    restarts_last_hour=self._restarts.last_hour(),
                    budget_per_hour=s.restart_budget_per_hour,
                )
            if wait_s > 0 and await self._answers_within(wait_s):
                if self._log is not None:
                    self._log.warning(
                        "ladder.recovered",
                        backend=self.backend,
                        how="it answered while the ladder waited to restart it",
                        waited_s=round(wait_s, 1),
                    )
                return restarts, restarted, True
            waited = True

    async def _confirm(self, timeout_s: float) -> None:
        """`/api/ps` must stop listing the model within `timeout_s`.

        Ollama unloads in the background: right after it answers the unload, `/api/ps` still
        lists the model (its `expires_at` now) for up to a second (measured on Ollama 0.17.4),
        so a single look would call an obedient backend wedged and restart it for nothing.
        Looks again every CONFIRM_POLL_S until the time is up.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        model = self._control.model
        while True:
            loaded = await self._control.loaded_models(max(0.1, deadline - loop.time()))
            if not any(same_model(name, model) for name in loaded):
                return
            if loop.time() + CONFIRM_POLL_S > deadline:
                raise RuntimeError(f"{model} is still loaded {timeout_s:g} s after the unload")
            await asyncio.sleep(CONFIRM_POLL_S)

    async def _restart(self, *, backoff_waited: bool = False) -> RestartOutcome:
        """Restart within the budget and the backoff (`backoff_waited`: the caller has just
        waited out the backoff the history asked for, to the clock's last digit or not)."""
        if self._restarts.over_budget():
            self._skip("budget", restarts_last_hour=self._restarts.last_hour())
            return "skipped_budget"
        wait_s = self._restarts.wait_s()
        if wait_s > 0 and not backoff_waited:
            self._skip("backoff", retry_in_s=round(wait_s, 1))
            return "skipped_backoff"
        self._restarts.note()
        timeout_s = self._settings.restart_timeout_s
        ok = await self._step("restart", self._control.restart(timeout_s), timeout_s)
        if self._metrics is not None:
            self._metrics.backend_restarts_total.labels(self.backend).inc()
        return "ok" if ok else "failed"

    async def _probe_step(self, timeout_s: float) -> bool:
        """The probe as a logged and counted step: does the backend answer within `timeout_s`?"""
        return await self._step("probe", self._probe_until_healthy(timeout_s), timeout_s)

    async def _answers_within(self, timeout_s: float) -> bool:
        """Whether the backend answers a probe within `timeout_s`, unlogged (the wait before a
        restart: only an answer is news)."""
        try:
            async with asyncio.timeout(timeout_s + STEP_GRACE_S):
                await self._probe_until_healthy(timeout_s)
        except TimeoutError:
            return False
        return True

    async def _probe_until_healthy(self, timeout_s: float) -> None:
        deadline = self._clock() + timeout_s
        last: BaseException | None = None
        while self._clock() < deadline:
            try:
                await self._control.probe(min(2.0, max(0.1, deadline - self._clock())))
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last = exc
            else:
                return
            await self._sleep(min(PROBE_INTERVAL_S, max(0.0, deadline - self._clock())))
        raise TimeoutError(f"not healthy within {timeout_s:g} s: {last}")

    async def _step(self, step: str, action: Coroutine[Any, Any, None], timeout_s: float) -> bool:
        """Run one step, log and count it; a failure is an outcome, not an exception."""
        started = time.perf_counter()
        error: str | None = None
        try:
            async with asyncio.timeout(timeout_s + STEP_GRACE_S):
                await action
        except TimeoutError as exc:
            error = f"TimeoutError: {str(exc) or f'no result within {timeout_s:g} s'}"
        except Exception as exc:  # noqa: BLE001 - a failed step is the ladder's information
            error = f"{type(exc).__name__}: {exc}"
        duration = time.perf_counter() - started
        outcome = "ok" if error is None else "failed"
        self.last_step = {"step": step, "outcome": outcome, "at": time.time(), "error": error}
        if self._metrics is not None:
            self._metrics.ladder_steps_total.labels(self.backend, step, outcome).inc()
            self._metrics.ladder_step_seconds.labels(self.backend, step).observe(duration)
        if self._log is not None:
            log = self._log.warning if error else self._log.info
            log(
                f"ladder.{step}",
                backend=self.backend,
                outcome=outcome,
                error=error,
                duration_ms=round(duration * 1000, 1),
            )
        return error is None

    def _skip(self, why: str, **fields: Any) -> None:
        self.last_step = {"step": "restart", "outcome": f"skipped_{why}", "at": time.time()}
        if self._metrics is not None:
            self._metrics.ladder_steps_total.labels(self.backend, "restart", f"skipped_{why}").inc()
        if self._log is not None:
            self._log.error(
                "ladder.restart_skipped",
                backend=self.backend,
                reason=why,
                budget_per_hour=self._settings.restart_budget_per_hour,
                **fields,
            )

    async def aclose(self) -> None:
        """Cancel a climb in progress (shutdown)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def snapshot(self) -> dict[str, Any]:
        """State for `/status`."""
        return {
            "running": self.running,
            "runs": self.runs,
            "last_step": self.last_step,
            "restarts_last_hour": self.restarts_last_hour(),
            "restart_budget_per_hour": self._settings.restart_budget_per_hour,
        }
