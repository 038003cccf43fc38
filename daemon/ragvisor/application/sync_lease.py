"""The sync lease: one syncing daemon per store, however many serve from it.

A lease lives in the store (so every daemon on one Neo4j sees the same one), is taken
atomically when a sync starts, renewed in the background every third of `sync.lease_s` while it
runs, and given up when it ends. A daemon killed mid-sync stops renewing: its lease expires
after `sync.lease_s`, and any daemon that syncs takes it over (see `SyncRunner.take_over`); on
the same host, a holder whose process is gone is replaced at once.
A sync that finds its lease taken by another daemon (it stalled past `lease_s`) stops after its
current batch: every commit is atomic, so the store stays consistent either way.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import psutil

from ragvisor.core.model import Lease
from ragvisor.core.protocols import Store
from ragvisor.errors import BusyError, StoreError, SyncCancelled


def holder_id() -> str:
    """This process, as other daemons and `/status` see it: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_here(holder: str) -> bool:
    """Whether ``holder`` names a process of this host that is not a running ragvisor (gone, or
    its pid reused by another program)."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        command = " ".join(psutil.Process(int(pid)).cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.Error:
        return False  # not ours to judge (another user's process)
    return "ragvisor" not in command


class SyncLease:
    """Take, renew and give up the store's sync lease for this process."""

    def __init__(self, store: Store, ttl_s: float, log: Any, holder: str | None = None) -> None:
        self.holder = holder or holder_id()
        self.ttl_s = ttl_s
        self._store = store
        self._log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost_to: str | None = None

    def acquire(self) -> None:
        """Take the lease and start renewing it. Raises BusyError naming the holder when
        another daemon has it, StoreError when the store cannot be asked.

        A lease held by a process of this host that no longer runs (a `ragvisor sync` or a
        daemon killed mid-sync) is taken at once rather than after it expires."""
        lease = self._store.take_lease(self.holder, self.ttl_s)
        if lease.holder != self.holder and dead_here(lease.holder):
            self._log.warning("sync.lease_taken_from_dead_process", previous_holder=lease.holder)
            lease = self._store.take_lease(self.holder, self.ttl_s, replacing=lease.holder)
        if lease.holder != self.holder:
            raise BusyError(
                f"another daemon is syncing this store ({lease.holder}; its lease runs "
                f"{max(0.0, lease.expires_in_s):.0f} s more unless renewed)"
            )
        self._lost_to = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, name="sync-lease", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise SyncCancelled when another daemon took the lease over meanwhile."""
        if self._lost_to is not None:
            raise SyncCancelled(f"the sync lease was taken over by {self._lost_to}")

    def release(self) -> None:
        """Stop renewing and give the lease up (an unreachable store lets it expire)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self._store.release_lease(self.holder)
        except StoreError as exc:
            self._log.warning("sync.lease_release_failed", error=str(exc), ttl_s=self.ttl_s)

    def read(self) -> Lease | None:
        """The lease as it stands, or None when the store cannot say."""
        try:
            return self._store.read_lease()
        except StoreError:
            return None

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                lease = self._store.take_lease(self.holder, self.ttl_s)
            except StoreError as exc:
                self._log.warning("sync.lease_renewal_failed", error=str(exc))
                continue
            if lease.holder != self.holder:
                self._lost_to = lease.holder
                self._log.error("sync.lease_lost", holder=lease.holder, ttl_s=self.ttl_s)
                return
