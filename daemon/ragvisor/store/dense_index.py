"""An in-memory matrix of unit vectors for exact cosine search.

The store keeps it consistent with what is committed: rows are added and removed as documents
commit, and it remembers which commit sequence it reflects so a commit made by another process
(a `ragvisor sync` beside the daemon) triggers exactly one reload, never one per query.
"""

from __future__ import annotations

import threading

import numpy as np

from ragvisor.core.model import ScoredChunk
from ragvisor.core.protocols import Matrix, Vector


class DenseIndex:
    """Chunk vectors of one fingerprint, searchable by dot product (cosine on unit vectors).

    Removal swaps the last row into the freed slot, so the matrix stays dense and a search is a
    single matrix-vector product over exactly the live rows.
    """

    def __init__(self, dimensions: int, fingerprint_key: str) -> None:
        self.dimensions = dimensions
        self.fingerprint_key = fingerprint_key
        self.seq = -1  # commit sequence of the store this index reflects; -1 = never loaded
        self._lock = threading.RLock()
        self._matrix: Matrix = np.zeros((0, dimensions), dtype=np.float32)
        self._size = 0
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return self._size

    @property
    def lock(self) -> threading.RLock:
        """Held by the store while it commits and updates the index as one step."""
        return self._lock

    def replace_all(self, chunk_ids: list[str], matrix: Matrix, seq: int) -> None:
        """Rebuild from scratch (initial load or after another process committed).

        Takes the whole matrix at once: loading 10k rows one upsert at a time cost ~70 ms of
        the time to first search. The index owns `matrix` from now on (no copy when it is
        already a writable float32 array: a copy would hold every vector twice at start-up).
        """
        with self._lock:
            self._matrix = np.require(matrix, dtype=np.float32, requirements=["C", "W"]).reshape(
                len(chunk_ids), self.dimensions
            )
            self._size = len(chunk_ids)
            self._ids = list(chunk_ids)
            self._rows = {chunk_id: row for row, chunk_id in enumerate(self._ids)}
            self.seq = seq

    def upsert(self, chunk_id: str, vector: Vector) -> None:
        """Add or overwrite the row of a chunk."""
        with self._lock:
            row = self._rows.get(chunk_id)
            if row is None:
                if self._size == self._matrix.shape[0]:
                    grown = np.zeros((max(64, self._size * 2), self.dimensions), dtype=np.float32)
                    grown[: self._size] = self._matrix[: self._size]
                    self._matrix = grown
                row = self._size
                self._size += 1
                self._ids.append(chunk_id)
                self._rows[chunk_id] = row
            self._matrix[row] = vector

    def remove(self, chunk_id: str) -> None:
        """Drop the row of a chunk, if present."""
        with self._lock:
            row = self._rows.pop(chunk_id, None)
            if row is None:
                return
            last = self._size - 1
            if row != last:
                moved = self._ids[last]
                self._matrix[row] = self._matrix[last]
                self._ids[row] = moved
                self._rows[moved] = row
            self._ids.pop()
            self._size -= 1

    def search(self, query: Vector, k: int) -> list[ScoredChunk]:
        """Top-k rows by dot product with a unit query vector, best first."""
        with self._lock:
            if self._size == 0 or k <= 0:
                return []
            scores = self._matrix[: self._size] @ query.astype(np.float32, copy=False)
            k = min(k, self._size)
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
            return [ScoredChunk(self._ids[i], float(scores[i])) for i in top]
