"""Runs syncs one at a time — per process and across processes — and logs what they did.

The daemon's scheduler, `POST /admin/sync` and `ragvisor sync` all come through `SyncRunner.run`.
A thread lock stops two syncs inside one process, an `flock` on `<data_dir>/sync.lock` stops a
CLI sync from racing the daemon's; the loser gets `BusyError` at once instead of waiting.
A file that cannot be indexed — unreadable, or with a chunk the embedding model refuses — is one
skipped file, never a failed sync; a sync that fails as a whole is counted
(`consecutive_failures`) so readiness, `/status` and `ragvisor health` say so.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragvisor.allocator import release_free_memory
from ragvisor.application.generations import ModelGenerations
from ragvisor.application.sync_lease import SyncLease, dead_here
from ragvisor.core.chunking import ChunkingSpec, chunk_document
from ragvisor.core.documents import CorpusSpec, display_path, scan_corpus
from ragvisor.core.model import StoredDocument, SyncReport
from ragvisor.core.protocols import Embedder, Store
from ragvisor.core.scope import SyncScope, scan_scope, scoped_stored
from ragvisor.core.sync import (
    Action,
    PlannedDocument,
    apply_plan,
    plan_sync,
    quick_check_stamps,
)
from ragvisor.datadir import open_private
from ragvisor.errors import BusyError, RagvisorError, StoreError, SyncCancelled
from ragvisor.metrics import Metrics

ProgressCallback = Callable[[int, int], None]
# How often a sync that may wait for the locks (`run(wait_s=...)`) tries them again.
ACQUIRE_POLL_S = 0.02


@dataclass(slots=True)
class SyncState:
    """What `/admin/sync` and status pages report about syncing."""

    running: bool = False
    trigger: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    last_report: dict[str, object] | None = None
    last_error: str | None = None
    last_success_at: float | None = None  # unix time the last successful sync finished
    consecutive_failures: int = 0  # syncs in a row that failed as a whole; 0 after a success
    last_failure_at: float | None = None  # unix time the last failed sync ended

    def as_dict(self) -> dict[str, object]:
        """JSON shape."""
        return {
            "running": self.running,
            "trigger": self.trigger,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "last_report": self.last_report,
            "last_error": self.last_error,
            "last_success_at": self.last_success_at,
            "consecutive_failures": self.consecutive_failures,
            "last_failure_at": self.last_failure_at,
        }

    def readiness_check(self) -> dict[str, object]:
        """The `sync` entry of `/readyz`: ok unless the last sync failed; never required.

        A failing sync leaves search answering from the last good index, so it must not take a
        working replica out of a load balancer's rotation (`required: false` keeps `/readyz` at
        200); the check carries the error for the operator, and `ragvisor health` warns on it.
        """
        failing = self.consecutive_failures > 0
        check: dict[str, object] = {
            "ok": not failing,
            "required": False,
            "running": self.running,
            "consecutive_failures": self.consecutive_failures,
            "last_success_at": self.last_success_at,
        }
        if failing:
            check["error"] = self.last_error
            check["last_failure_at"] = self.last_failure_at
        return check

    def record_success(self, report: dict[str, object], now: float) -> None:
        """A sync finished: its report replaces the last, the failure streak ends."""
        self.last_report = report
        self.last_error = None
        self.last_success_at = now
        self.consecutive_failures = 0

    def record_failure(self, error: str, now: float) -> None:
        """A sync failed as a whole: one more in the streak (a cancelled sync is not one)."""
        self.last_error = error
        self.last_failure_at = now
        self.consecutive_failures += 1


class _FileLock:
    """A non-blocking exclusive flock; released by the kernel if the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock. Raises BusyError if another process holds it, OSError if the file
        cannot be opened."""
        fd = open_private(self.path, os.O_RDWR)  # 0600, like everything in the data dir
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BusyError(f"another sync is running (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def kept_by_skips(stored: Iterable[StoredDocument], skipped_paths: Sequence[str]) -> set[str]:
    """Ids of stored documents that a skip protects from deletion.

    A file that could not be read this time (or a folder that could not be listed, reported with
    a trailing "/") keeps what the store has for it: a transient error must never delete data.
    """
    files = {p for p in skipped_paths if not p.endswith("/")}
    folders = tuple(p for p in skipped_paths if p.endswith("/"))
    kept = set()
    for doc in stored:
        full = f"{doc.corpus_root.rstrip('/')}/{doc.path}"
        if full in files or (folders and full.startswith(folders)):
            kept.add(doc.doc_id)
    return kept


class SyncRunner:
    """Scan, plan, apply — one at a time — and log each step with its duration."""

    def __init__(
        self,
        *,
        corpus: CorpusSpec,
        chunking: ChunkingSpec,
        store: Store,
        embedder: Embedder,
        lock_path: Path,
        log: Any,
        quick_check: bool = True,
        metrics: Metrics | None = None,
        before_sync: Callable[[], object] | None = None,
        lease: SyncLease | None = None,
        generations: ModelGenerations | None = None,
        may_sync: bool = True,
    ) -> None:
        self.quick_check = quick_check
        # The store-wide lease (several daemons on one store: one syncs at a time).
        self.lease = lease
        # The store's model generations: a model change builds a new one without a gap.
        self.generations = generations
        # Whether this daemon syncs on its own (`sync.interval_s` or `sync.on_start`): only such
        # a daemon takes an abandoned lease over.
        self.may_sync = may_sync
        self._metrics = metrics
        # Run first thing in every sync: a remote embedder re-reads its model's identity, so a
        # model re-pulled since the last sync is re-embedded under its new fingerprint instead
        # of being stored under the old one.
        self._before_sync = before_sync
        # Run after every sync that succeeded, under its locks, so it must return at once: the
        # token-count job's kick (`application.token_counts`), set by the composition root.
        self.after_sync: Callable[[], object] | None = None
        self._corpus = corpus
        self._chunking = chunking
        self._store = store
        self._embedder = embedder
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._file_lock = _FileLock(lock_path)
        self._log = log
        self.state = SyncState()

    @property
    def running(self) -> bool:
        """Whether a sync is in progress in this process."""
        return self._lock.locked()

    def cancel(self) -> None:
        """Ask a running sync to stop after its current batch (used at shutdown).

        Documents committed so far stay committed; the next sync finishes the rest.
        """
        self._cancel.set()

    def _checked_progress(self, on_progress: ProgressCallback | None) -> ProgressCallback:
        def progress(done: int, total: int) -> None:
            if self._cancel.is_set():
                raise SyncCancelled(f"sync cancelled after {done} of {total} embeddings")
            if self.lease is not None:
                self.lease.check()
            if self.generations is not None:
                self.generations.note_progress(done, total)
            if on_progress is not None:
                on_progress(done, total)

        return progress

    def take_over(self) -> SyncReport | None:
        """Sync now if the store's lease was left to expire by another daemon (killed
        mid-sync): the periodic store watch calls this, so a sync cut short on one daemon is
        finished by another within `sync.lease_s` plus the watch interval."""
        if self.lease is None or not self.may_sync or self.running:
            return None
        lease = self.lease.read()
        if lease is None or lease.holder == self.lease.holder:
            return None
        if not lease.expired and not dead_here(lease.holder):
            return None
        self._log.warning(
            "sync.lease_taken_over",
            previous_holder=lease.holder,
            expired_s_ago=round(-lease.expires_in_s, 1),
        )
        return self.run_quietly(trigger="takeover")

    def run_quietly(self, *, trigger: str) -> SyncReport | None:
        """Run a sync for a background job (scheduler, admin thread); never raises.

        Busy is logged as `sync.skipped`; any failure was already logged as `sync.failed` and the
        next interval retries.
        """
        try:
            return self.run(trigger=trigger)
        except BusyError as exc:
            self._log.info("sync.skipped", trigger=trigger, reason=str(exc))
        except Exception:  # noqa: BLE001, S110 - logged with its traceback inside run()
            pass
        return None

    def _acquire(self, trigger: str, wait_s: float = 0.0) -> None:
        """Take both locks, waiting up to `wait_s` for a running sync to end.

        Raises BusyError when they are still held after `wait_s` (at once with 0).
        """
        deadline = time.monotonic() + wait_s
        waiting = False
        while True:
            try:
                self._try_acquire(trigger)
            except BusyError as exc:
                if time.monotonic() >= deadline:
                    raise
                if not waiting:
                    waiting = True
                    self._log.info("sync.waiting", trigger=trigger, reason=str(exc), wait_s=wait_s)
                time.sleep(ACQUIRE_POLL_S)
            else:
                return

    def _try_acquire(self, trigger: str) -> None:
        """Take both locks and mark the sync running.

        Raises BusyError if either is held, StoreError (recorded as a failed sync) if the lock
        file cannot be opened — a data directory gone read-only or full fails every sync.
        """
        if not self._lock.acquire(blocking=False):
            raise BusyError("a sync is already running")
        try:
            self._file_lock.acquire()
        except OSError as exc:
            self._lock.release()
            error = StoreError(f"cannot take the sync lock {self._file_lock.path}: {exc}")
            self._failed(self._log.bind(trigger=trigger), trigger, error, duration_s=0.0)
            raise error from exc
        except BaseException:
            self._lock.release()
            raise
        if self.lease is not None:
            try:
                self.lease.acquire()
            except BusyError:
                self._file_lock.release()
                self._lock.release()
                raise
            except StoreError as exc:
                self._file_lock.release()
                self._lock.release()
                self._failed(self._log.bind(trigger=trigger), trigger, exc, duration_s=0.0)
                raise
        self.state.running, self.state.trigger = True, trigger
        self.state.started_at = time.time()

    def _release(self) -> None:
        release_free_memory()  # the batch peak is garbage now; give it back to the OS
        self.state.running = False
        self.state.finished_at = time.time()
        if self.lease is not None:
            self.lease.release()
        self._file_lock.release()
        self._lock.release()

    def run(
        self,
        *,
        trigger: str,
        on_progress: ProgressCallback | None = None,
        full_check: bool = False,
        scope: SyncScope | None = None,
        wait_s: float = 0.0,
        prepare: Callable[[], object] | None = None,
    ) -> SyncReport:
        """Run one sync now. Raises BusyError when one is already running here or elsewhere
        (and still is after ``wait_s``).

        ``full_check`` reads and hashes every file even when its stamp is unchanged. ``scope``
        syncs only the paths it names (`core.scope`): the folder watch and the document
        endpoints, under the same locks as any sync. ``prepare`` runs once the locks are held,
        before the scan (a document endpoint writes its file there, so no other sync sees it
        half-done); what it raises ends the call without counting as a failed sync.
        """
        self._acquire(trigger, wait_s)
        try:
            if prepare is not None:
                prepare()
            return self._run(trigger, on_progress, full_check, scope)
        finally:
            self._release()

    def start(self, *, trigger: str) -> threading.Thread:
        """Start a sync in a background thread, or raise BusyError at once.

        The locks are taken before this returns, so a caller answering "started" is right.
        """
        self._acquire(trigger)

        def work() -> None:
            try:
                self._run(trigger, None)
            except Exception:  # noqa: BLE001 - logged as sync.failed / sync.cancelled by _run
                self._log.debug("sync.background_ended_with_error", trigger=trigger)
            finally:
                self._release()

        thread = threading.Thread(target=work, name=f"sync-{trigger}", daemon=True)
        thread.start()
        return thread

    def _run(
        self,
        trigger: str,
        on_progress: ProgressCallback | None,
        full_check: bool = False,
        scope: SyncScope | None = None,
    ) -> SyncReport:
        log = self._log.bind(trigger=trigger)
        started = time.perf_counter()
        if scope is None:
            log.info("sync.started", roots=[display_path(str(r)) for r in self._corpus.roots])
        else:
            log.info("sync.started", paths=len(scope), scope=scope.describe())
        try:
            if self._before_sync is not None:
                self._before_sync()
            if self.generations is not None:
                self.generations.reconcile()
            stored = self._store.stored_documents()
            if scope is not None:
                stored = scoped_stored(stored, scope)
            fingerprint = self._embedder.fingerprint
            have = self._store.hashes_with_vectors(fingerprint)
            stamps = (
                quick_check_stamps(stored, have, self._chunking.version)
                if self.quick_check and not full_check
                else None
            )
            scan = (
                scan_corpus(self._corpus, stamps)
                if scope is None
                else scan_scope(self._corpus, scope, stamps)
            )
            for root in scan.missing_roots:
                log.warning(
                    "sync.corpus_missing",
                    root=display_path(str(root)),
                    action="kept stored documents",
                )
            # Paths stay as the file system gave them for kept_by_skips (an undecodable name
            # never equals a stored one); everything shown renders them with display_path.
            skipped = [{"path": display_path(p), "reason": r} for p, r in scan.skipped]
            for skip in skipped:
                log.warning("sync.file_skipped", **skip)
            keep_ids = kept_by_skips(stored.values(), [path for path, _ in scan.skipped])
            plan = plan_sync(
                scan.documents,
                stored,
                have,
                chunk=lambda doc: chunk_document(doc, self._chunking),
                chunker_version=self._chunking.version,
                fingerprint_key=fingerprint.key,
                keep_doc_ids=keep_ids,
                keep_roots={str(r.resolve()) for r in scan.missing_roots},
                unchanged_ids=scan.unchanged_ids,
            )
            for skip in plan.skipped:  # documents the planner could not chunk
                log.warning("sync.file_skipped", **skip)
            plan.skipped = [*skipped, *plan.skipped]
            log.info(
                "sync.planned",
                documents=plan.document_counts().as_dict(),
                chunks=plan.chunk_counts().as_dict(),
                changed_because=plan.reason_counts(),
                files_read=len(scan.documents),
                quick_checked=len(scan.unchanged_ids),
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )

            def committed(planned: PlannedDocument) -> None:
                log.debug(
                    "sync.document_committed",
                    path=planned.path,
                    action=planned.action.value,
                    reasons=list(planned.reasons),
                )

            def refused(planned: PlannedDocument, reason: str) -> None:
                root = planned.source.corpus_root if planned.source is not None else ""
                log.warning(
                    "sync.document_skipped",
                    path=display_path(f"{root.rstrip('/')}/{planned.path}"),
                    action=planned.action.value,
                    reason=reason,
                    kept="the stored version" if planned.action is Action.CHANGED else "nothing",
                )

            report = apply_plan(
                plan,
                self._store,
                self._embedder,
                on_progress=self._checked_progress(on_progress),
                on_committed=committed,
                on_skipped=refused,
                keep=self.generations.keep_while_building() if self.generations else (),
            )
            if self.generations is not None:
                self.generations.finish_if_complete()
            report.seconds = time.perf_counter() - started
        except SyncCancelled as exc:
            self._count(trigger, "cancelled")
            self.state.last_error = str(exc)
            log.info(
                "sync.cancelled", duration_s=round(time.perf_counter() - started, 3), why=str(exc)
            )
            raise
        except Exception as exc:
            self._failed(log, trigger, exc, duration_s=time.perf_counter() - started)
            raise
        self.state.record_success(report.as_dict(), time.time())
        self._count(trigger, "ok", report)
        log.info(
            "sync.finished",
            documents=report.documents.as_dict(),
            chunks=report.chunks.as_dict(),
            embeddings_computed=report.embeddings_computed,
            embeddings_reused=report.embeddings_reused,
            skipped=len(report.skipped),
            duration_s=round(report.seconds, 3),
        )
        if self.after_sync is not None:
            self.after_sync()
        return report

    def _failed(self, log: Any, trigger: str, exc: BaseException, *, duration_s: float) -> None:
        """Record and log a sync that failed as a whole.

        One of our own errors (a store or backend that is away) says all in its message; any
        other exception is a bug, logged with its traceback.
        """
        self._count(trigger, "failed")
        self.state.record_failure(f"{type(exc).__name__}: {exc}", time.time())
        log.error(
            "sync.failed",
            duration_s=round(duration_s, 3),
            error=str(exc),
            consecutive_failures=self.state.consecutive_failures,
            exc_info=None if isinstance(exc, RagvisorError) else exc,
        )

    def _count(self, trigger: str, outcome: str, report: SyncReport | None = None) -> None:
        """Feed the sync metrics (runs by outcome; documents, embeddings, last success)."""
        m = self._metrics
        if m is None:
            return
        m.sync_runs_total.labels(trigger, outcome).inc()
        if report is None:
            return
        for kind, count in report.documents.as_dict().items():
            if isinstance(count, int) and count:
                m.sync_documents_total.labels(kind).inc(count)
        m.sync_embeddings_total.inc(report.embeddings_computed)
        m.last_sync_timestamp.set(time.time())
        m.last_sync_duration_seconds.set(report.seconds)
