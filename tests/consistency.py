"""Store invariants checked straight from the SQLite file, independent of the store's code."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from ragvisor.core.hashing import chunk_id, sha256_text


def check_store(db_path: Path, fingerprint_key: str) -> dict[str, int]:
    """Assert every invariant a crash must not break; return counts.

    - every chunk belongs to a stored document, positions are 0..n-1 with no duplicates;
    - every chunk id is derived from (document, position, text hash) and the hash matches the text;
    - every chunk's hash has exactly one vector under the fingerprint, of the stated dimensions;
    - the keyword index has exactly one row per chunk.
    """
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        docs = {row[0] for row in conn.execute("SELECT doc_id FROM documents")}
        by_doc: dict[str, list[int]] = {}
        for cid, doc_id, position, text, text_hash in conn.execute(
            "SELECT chunk_id, doc_id, position, text, text_sha256 FROM chunks"
        ):
            assert doc_id in docs, f"chunk {cid} has no document"
            assert sha256_text(text) == text_hash, f"chunk {cid} text does not match its hash"
            assert cid == chunk_id(doc_id, position, text_hash), f"chunk id {cid} not derived"
            by_doc.setdefault(doc_id, []).append(position)
        for doc_id, positions in by_doc.items():
            assert sorted(positions) == list(range(len(positions))), f"{doc_id} positions broken"
        for doc_id, listed in conn.execute("SELECT doc_id, chunk_hashes FROM documents"):
            actual = [
                h
                for (h,) in conn.execute(
                    "SELECT text_sha256 FROM chunks WHERE doc_id = ? ORDER BY position", (doc_id,)
                )
            ]
            assert (listed.split(",") if listed else []) == actual, f"{doc_id} hash list stale"
        missing = conn.execute(
            "SELECT count(*) FROM chunks c LEFT JOIN vectors v ON v.text_sha256 = c.text_sha256 "
            "AND v.fingerprint = ? WHERE v.text_sha256 IS NULL",
            (fingerprint_key,),
        ).fetchone()[0]
        assert missing == 0, f"{missing} chunks without a vector under {fingerprint_key}"
        for dims, blob in conn.execute(
            "SELECT dimensions, vector FROM vectors WHERE fingerprint = ?", (fingerprint_key,)
        ):
            vector = np.frombuffer(blob, dtype="<f4")
            assert vector.shape == (dims,)
            assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
        chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        fts = conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
        assert fts == chunks, f"keyword index has {fts} rows for {chunks} chunks"
        return {"documents": len(docs), "chunks": chunks}
    finally:
        conn.close()
