"""The store's two small records — the generations and the sync lease — as the JSON every store
keeps them in, so SQLite's `meta` table and Neo4j's `RagvisorMeta` node read the same shape."""

from __future__ import annotations

import json

from ragvisor.core.model import Generation, Generations, Lease

LEASE_KEY = "lease.sync"


def generations_to_json(generations: Generations) -> str:
    """Both generations as one JSON text."""
    return json.dumps(
        {
            "active": generations.active.as_dict() if generations.active else None,
            "building": generations.building.as_dict() if generations.building else None,
        },
        sort_keys=True,
    )


def generations_from_json(text: str | None) -> Generations:
    """Back from :func:`generations_to_json`; nothing stored yet is no generation at all."""
    if not text:
        return Generations()
    data = json.loads(text)
    active, building = data.get("active"), data.get("building")
    return Generations(
        active=Generation.from_dict(active) if active else None,
        building=Generation.from_dict(building) if building else None,
    )


def lease_to_json(holder: str, expires_at: float) -> str:
    """A lease held by ``holder`` until ``expires_at`` (unix seconds)."""
    return json.dumps({"holder": holder, "expires_at": expires_at})


def lease_from_json(text: str | None, now: float) -> Lease | None:
    """The lease as seen at ``now`` (unix seconds); None when there is none."""
    if not text:
        return None
    data = json.loads(text)
    return Lease(str(data["holder"]), float(data["expires_at"]) - now)
