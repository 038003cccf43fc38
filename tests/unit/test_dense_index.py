"""The in-memory matrix: upsert, swap-remove and exact top-k."""

from __future__ import annotations

import numpy as np

from ragvisor.store.dense_index import DenseIndex


def _unit(values):
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_search_returns_exact_top_k_best_first():
    """Top-k equals a brute-force ranking by dot product."""
    rng = np.random.default_rng(7)
    index = DenseIndex(8, "fp")
    vectors = {f"c{i}": _unit(rng.standard_normal(8)) for i in range(200)}
    for cid, v in vectors.items():
        index.upsert(cid, v)
    query = _unit(rng.standard_normal(8))
    expected = sorted(vectors, key=lambda c: -float(vectors[c] @ query))[:5]
    assert [s.chunk_id for s in index.search(query, 5)] == expected


def test_remove_keeps_remaining_rows_addressable():
    """Removing a row moves the last one into its slot without losing or duplicating rows."""
    index = DenseIndex(2, "fp")
    index.upsert("a", _unit([1, 0]))
    index.upsert("b", _unit([0, 1]))
    index.upsert("c", _unit([1, 1]))
    index.remove("a")
    index.remove("missing")
    assert len(index) == 2
    assert index.search(_unit([0, 1]), 1)[0].chunk_id == "b"
    assert {s.chunk_id for s in index.search(_unit([1, 0]), 5)} == {"b", "c"}


def test_upsert_overwrites_and_k_larger_than_size_is_fine():
    """Upserting an existing id replaces its vector; k beyond the size returns every row."""
    index = DenseIndex(2, "fp")
    index.upsert("a", _unit([1, 0]))
    index.upsert("a", _unit([0, 1]))
    hits = index.search(_unit([0, 1]), 10)
    assert len(hits) == 1
    assert abs(hits[0].score - 1.0) < 1e-6
    assert DenseIndex(2, "fp").search(_unit([1, 0]), 3) == []
