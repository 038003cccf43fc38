"""What the daemon says about itself: `/readyz`'s checks and the picture of `GET /status`.

Both are cheap (no backend call: the breaker's, ladder's and guard's last states are read, not
probed), so load balancers and `ragvisor status` can ask as often as they like.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ragvisor import __version__
from ragvisor.runtime.services import Services


def readiness(services: Services) -> dict[str, dict[str, Any]]:
    """Cheap checks for `/readyz`: the model answers, the store can be read, and how the
    last sync went.

    A check with ``required: false`` (the sync's) is reported but does not make the daemon
    unready: see `SyncState.readiness_check`.
    """
    checks: dict[str, dict[str, Any]] = {}
    fingerprint = services.embedder.fingerprint
    checks["embedder"] = {"ok": True, "model": fingerprint.name, "fingerprint": fingerprint.key}
    try:
        stats = services.store.stats()
        checks["store"] = {"ok": True, **stats}
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        checks["store"] = {"ok": False, "error": str(exc)}
    checks["sync"] = services.sync_runner.state.readiness_check()
    return checks


def capabilities(checks: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """What the daemon can serve now, from `/readyz`'s checks: `search` once the store answers
    and the embedder is loaded (served while the worker still starts), `ask` once the generator
    answers too. A load balancer for search alone routes on `capabilities.search`."""
    search = checks["embedder"]["ok"] and checks["store"]["ok"]
    generator = checks.get("generator")
    return {"search": search, "ask": search and generator is not None and generator["ok"]}


def status(services: Services) -> dict[str, Any]:
    """The whole picture for `GET /status` and `ragvisor status` (cheap: no backend call)."""
    sync = services.sync_runner.state.as_dict()
    last = services.sync_runner.state.last_success_at
    sync["last_sync_age_s"] = None if last is None else round(time.time() - last, 1)
    sync["interval_s"] = services.settings.sync.interval_s
    store: dict[str, Any] = store_location(services)
    try:
        store.update(ok=True, **services.store.stats())
    except Exception as exc:  # noqa: BLE001 - a status page reports, it does not fail
        store.update(ok=False, error=str(exc))
    if services.generations is not None:
        store["generations"] = services.generations.snapshot()
    sync["lease"] = _lease_status(services)
    # `ask.stored_token_counts`: the last pass of the job that counts new chunks' tokens.
    counts = services.token_counts
    sync["token_counts"] = None if counts is None else {"running": counts.running, **counts.last}
    guard = services.memory_guard
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(time.time() - services.started_at, 1),
        "lanes": {name: lane.snapshot() for name, lane in services.lanes.items()},
        "backends": {
            "generator": _generator_status(services),
            "embedder": _embedder_status(services),
        },
        "memory": guard.snapshot() if guard is not None else {"level": "unknown"},
        "sync": sync,
        "store": store,
    }


def _lease_status(services: Services) -> dict[str, Any] | None:
    """Who holds the store's sync lease (None: nobody is syncing)."""
    lease = services.sync_runner.lease
    current = lease.read() if lease is not None else None
    if lease is None or current is None:
        return None
    return {
        "holder": current.holder,
        "mine": current.holder == lease.holder,
        "expires_in_s": round(current.expires_in_s, 1),
        "expired": current.expired,
    }


def store_location(services: Services) -> dict[str, Any]:
    """Which store, and where: the SQLite file, or Neo4j's URI and database (no credential)."""
    s = services.settings.store
    if s.backend == "neo4j":
        return {"backend": "neo4j", "uri": s.uri, "database": s.database, "user": s.user}
    return {"backend": "sqlite", "data_dir": str(s.data_dir)}


def _generator_status(services: Services) -> dict[str, Any] | None:
    g = services.settings.generator
    if services.generator is None:
        return {"kind": "none", "url": None, "model": None, "breaker": None, "ladder": None}
    status: dict[str, Any] = {
        "kind": g.backend,
        "url": services.generator.base_url,
        "model": g.model,
        "num_ctx": g.num_ctx,
        "num_predict": g.num_predict,
        **services.supervisors["generator"].snapshot(),
    }
    if services.worker is not None:
        status["worker"] = services.worker.describe()
    return status


def _embedder_status(services: Services) -> dict[str, Any]:
    fingerprint = services.embedder.fingerprint
    status: dict[str, Any] = {
        "kind": services.settings.embedder.backend,
        "model": fingerprint.name,
        "fingerprint": fingerprint.key,
        "url": None,
        "breaker": None,
        "ladder": None,
    }
    if services.remote_embedder is not None:
        status["url"] = services.remote_embedder.base_url
        status.update(services.supervisors["embedder"].snapshot())
    return status
