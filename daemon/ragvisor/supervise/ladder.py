"""The escalation ladder: what the daemon does, unattended, about a backend that keeps hanging.

Field reports: Ollama calls hung with nothing in the logs until someone restarted it by hand.
Here, ``hang_threshold`` timeouts in a row start the ladder, which climbs only as far as needed:

1. **unload** — ask the backend to drop the model (`keep_alive: 0`); a stuck runner goes with it;
2. **confirm** — `/api/ps` must no longer list the model (an unload reply alone proves little);
3. **restart** — only when 1 or 2 failed: run the configured action (`systemctl restart ollama`,
   or respawn the embedded worker), within a restart budget per hour and a growing backoff;
4. **probe** — wait until the backend answers `/api/version` before traffic resumes.

Once the unload fails or does not take, the backend counts as wedged: its circuit breaker is
held open, so requests are answered degraded at once instead of piling onto it while it
restarts; a passed probe moves the breaker to half-open and the next real call decides. A
backend that unloads on request is only slow or flaky, and traffic goes on meanwhile. Every
step is a structured log event with its duration and a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ragvisor.config import LadderSettings
from ragvisor.errors import BackendTimeout
from ragvisor.metrics import Metrics
from ragvisor.ollama.names import same_model
from ragvisor.supervise.backoff import HOUR_S, RestartHistory, RestartPolicy
from ragvisor.supervise.breaker import CircuitBreaker
from ragvisor.supervise.retry import is_hang

MAX_RESTART_BACKOFF_S = 600.0
# A step's own timeout is the control's to honour; past it by this much, the ladder gives up on
# the step itself, so a control that ignores its timeout cannot hold the breaker open for good.
STEP_GRACE_S = 1.0


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
    """Counts hangs of one backend and climbs the ladder when they repeat."""

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
    ) -> None:
        self.backend = backend
        self._control = control
        self._settings = settings
        self._breaker = breaker
        self._metrics = metrics
        self._log = log
        self._clock = clock
        self._hangs = 0
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
        """A call answered: the backend is not hanging."""
        self._hangs = 0

    def note_failure(self, exc: BaseException) -> None:
        """A call failed; a run of hangs starts the ladder. Safe to call from any thread.

        An attempt cut short by its request's deadline says nothing either way: it neither
        counts as a hang nor breaks a run of them (with the defaults, three first_token_s is more
        than request_s, so a wedged backend's third attempt is always cut like that).
        """
        if isinstance(exc, BackendTimeout) and exc.phase == "request":
            return
        if not is_hang(exc):
            self._hangs = 0
            return
        self._hangs += 1
        if self._hangs >= self._settings.hang_threshold:
            self.trigger(f"{self._hangs} calls in a row timed out")

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
        self._hangs = 0
        self._task = asyncio.get_running_loop().create_task(self.climb(reason))

    async def climb(self, reason: str) -> None:
        """Run the ladder once: unload, confirm, maybe restart, probe."""
        started = time.perf_counter()
        self.runs += 1
        if self._log is not None:
            self._log.warning("ladder.started", backend=self.backend, reason=reason)
        s = self._settings
        healthy = held = False
        try:
            unloaded = await self._step(
                "unload", self._control.unload(s.unload_timeout_s), s.unload_timeout_s
            )
            confirmed = unloaded and await self._step(
                "confirm", self._confirm(s.confirm_timeout_s), s.confirm_timeout_s
            )
            restarted = False
            if not confirmed:
                # The backend does not obey: from here on it is wedged, and callers are
                # answered degraded at once instead of piling onto it while it restarts.
                # (A backend that unloaded on request is merely slow or flaky: traffic goes on.)
                held = True
                self._breaker.force_open(f"ladder: {reason}; the unload did not take")
                restarted = await self._restart()
            healthy = await self._step(
                "probe", self._probe_until_healthy(s.probe_timeout_s), s.probe_timeout_s
            )
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
                healthy=healthy,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )

    async def _confirm(self, timeout_s: float) -> None:
        loaded = await self._control.loaded_models(timeout_s)
        model = self._control.model
        if any(same_model(name, model) for name in loaded):
            raise RuntimeError(f"{model} is still loaded after the unload")

    async def _restart(self) -> bool:
        if self._restarts.over_budget():
            self._skip("budget", restarts_last_hour=self._restarts.last_hour())
            return False
        wait_s = self._restarts.wait_s()
        if wait_s > 0:
            self._skip("backoff", retry_in_s=round(wait_s, 1))
            return False
        self._restarts.note()
        timeout_s = self._settings.restart_timeout_s
        ok = await self._step("restart", self._control.restart(timeout_s), timeout_s)
        if self._metrics is not None:
            self._metrics.backend_restarts_total.labels(self.backend).inc()
        return ok

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
            await asyncio.sleep(0.25)
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
