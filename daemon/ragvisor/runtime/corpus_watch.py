"""`[sync] watch`: the corpus folders watched with inotify (watchfiles), the changed paths synced.

watchfiles (a Rust notify watcher; no polling) groups events itself: it hands over a batch once
no event came for `sync.watch_debounce_s`, or `sync.watch_max_wait_s` after the first, so a
`git pull` of 500 files is one batch and one sync. Each batch becomes a scoped sync of just
those paths (`core.scope`) through the sync runner, under its locks: never two syncs at once.
While a sync runs the watcher keeps collecting (inotify queues the events); a batch that finds
the runner busy (a scheduled or admin sync) stays pending and is tried again every
`BUSY_RETRY_S` until it runs — so what changed during a sync is synced once, right after it.

The watch runs in a thread of its own, started and stopped with the daemon's lifespan; stopping
sets an event watchfiles checks at least every `STOP_CHECK_MS`. Events under excluded folders
(`.git/`), editors' swap files and the writer's temporary files are dropped by the filter.
If the watch fails (the inotify watch limit, a corpus folder gone), `watch.failed` is logged
and it starts again after `RESTART_S`; the periodic sync (`sync.interval_s`) covers the gap.

Log lines: `watch.started` (roots), `watch.changes` (paths, the first few), `watch.sync_started`
/ `watch.sync_finished` (paths, documents, duration_ms), `watch.sync_deferred` (a sync was
running), `watch.failed`, `watch.stopped`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import watchfiles

from ragvisor.application.sync_runner import SyncRunner
from ragvisor.core.documents import CorpusSpec, glob_matches
from ragvisor.core.scope import included, scope_of
from ragvisor.errors import BusyError

# How often a pending batch that found the runner busy is tried again.
BUSY_RETRY_S = 0.25
# watchfiles' own timeout: how soon the watcher notices a stop (or retries a deferred batch).
STOP_CHECK_MS = 250
# Wait before watching again after the watch itself failed.
RESTART_S = 30.0
# Paths named in one `watch.changes` line.
LOGGED_PATHS = 10


def wanted(path: str, roots: tuple[str, ...], spec: CorpusSpec) -> bool:
    """Whether a changed path can matter to the corpus: a document the globs include, a folder
    (or something gone, which may have been one) not under an excluded folder."""
    for root in roots:
        if path.startswith(root + "/"):
            rel = path[len(root) + 1 :]
            break
    else:
        return False
    if included(rel, spec):
        return True
    parts = rel.split("/")
    if any(glob_matches("/".join(parts[: i + 1]) + "/", spec.exclude) for i in range(len(parts))):
        return False
    if Path(path).is_dir():
        return True
    return not os.path.lexists(path) and "." not in parts[-1]  # a folder renamed or removed


class CorpusWatch:
    """Watches the corpus roots in a thread; each batch of changes is one scoped sync."""

    def __init__(
        self,
        runner: SyncRunner,
        spec: CorpusSpec,
        *,
        debounce_s: float,
        max_wait_s: float,
        log: Any,
    ) -> None:
        self._runner = runner
        self._spec = spec
        self._debounce_ms = max(1, round(debounce_s * 1000))
        self._max_wait_ms = max(self._debounce_ms, round(max_wait_s * 1000))
        self._log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Paths the document endpoints wrote and synced themselves, with the stat they left.
        self._settled: dict[str, tuple[int, int, int] | None] = {}
        self._settled_lock = threading.Lock()
        self.syncs = 0  # syncs this watch ran (for /status)

    def start(self) -> None:
        """Start watching in a thread of its own."""
        self._thread = threading.Thread(target=self._serve, name="corpus-watch", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the watch to stop; it does within `STOP_CHECK_MS` (or after its running sync)."""
        self._stop.set()

    def join(self, timeout_s: float) -> bool:
        """Wait for the thread to end; whether it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def note_settled(self, path: str) -> None:
        """A document endpoint wrote (or removed) `path` and synced it: its own event is no
        change (unless the file changed again since)."""
        with self._settled_lock:
            self._settled[path] = _stat_key(path)

    def unsettled(self, paths: set[str]) -> set[str]:
        """`paths` without those a document endpoint settled (and that did not change since)."""
        with self._settled_lock:
            left = set()
            for path in paths:
                if path in self._settled and self._settled.pop(path) == _stat_key(path):
                    continue
                left.add(path)
            return left

    def _roots(self) -> tuple[str, ...]:
        return tuple(str(r.resolve()) for r in self._spec.roots if r.is_dir())

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch()
            except Exception as exc:  # noqa: BLE001 - the watch must not die silently
                self._log.error(
                    "watch.failed", error=f"{type(exc).__name__}: {exc}", retry_in_s=RESTART_S
                )
                self._stop.wait(RESTART_S)
        self._log.info("watch.stopped", syncs=self.syncs)

    def _watch(self) -> None:
        roots = self._roots()
        if not roots:
            raise FileNotFoundError("no corpus folder exists")
        self._log.info(
            "watch.started",
            roots=list(roots),
            debounce_ms=self._debounce_ms,
            max_wait_ms=self._max_wait_ms,
        )
        keep: Callable[[Any, str], bool] = lambda _change, path: wanted(path, roots, self._spec)  # noqa: E731
        pending: set[str] = set()
        for changes in watchfiles.watch(
            *roots,
            watch_filter=keep,
            debounce=self._max_wait_ms,
            step=self._debounce_ms,
            stop_event=self._stop,
            rust_timeout=STOP_CHECK_MS,
            yield_on_timeout=True,
            raise_interrupt=False,
            ignore_permission_denied=True,
        ):
            if changes:
                paths = self.unsettled({path for _, path in changes})
                if paths:
                    self._log.info(
                        "watch.changes",
                        paths=len(paths),
                        first=sorted(p[len(_root_of(p, roots)) + 1 :] for p in paths)[
                            :LOGGED_PATHS
                        ],
                    )
                pending |= paths
            if pending and not self._stop.is_set() and self._sync(pending, roots):
                pending = set()

    def _sync(self, paths: set[str], roots: tuple[str, ...]) -> bool:
        """Sync `paths`; False when the runner was busy (the batch stays pending)."""
        scope = scope_of(paths, roots)
        if not len(scope):
            return True
        started = time.perf_counter()
        self._log.info("watch.sync_started", paths=len(scope))
        try:
            report = self._runner.run(trigger="watch", scope=scope, wait_s=BUSY_RETRY_S)
        except BusyError as exc:
            self._log.debug("watch.sync_deferred", paths=len(scope), reason=str(exc))
            return False
        except Exception:  # noqa: BLE001 - logged as sync.failed by the runner
            # The paths are not retried here (a store that is away would fail every second):
            # the periodic sync catches up on them, or the next change to them does.
            return True
        self.syncs += 1
        self._log.info(
            "watch.sync_finished",
            paths=len(scope),
            documents=report.documents.as_dict(),
            embeddings_computed=report.embeddings_computed,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return True


def _root_of(path: str, roots: tuple[str, ...]) -> str:
    return next((r for r in roots if path.startswith(r + "/")), "")


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)
