"""The embedded store: SQLite in WAL mode, vectors as float32 blobs, FTS5 for keywords.

The tables are described in :mod:`ragvisor.store.sqlite_schema`. A document commit is one
``BEGIN IMMEDIATE`` transaction: new chunks and vectors are written, then the chunks the new
version no longer has are retired. A ``kill -9`` at any instant leaves either the old or the
new version.

Longer than 400 lines on purpose: it is one class, and every statement the store runs against
its schema is in it, so each transaction — what it reads, writes and retires — reads whole.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np

from ragvisor.core.model import (
    Chunk,
    ChunkRecord,
    DocumentVersion,
    Fingerprint,
    Generations,
    Lease,
    ScoredChunk,
    SourceDocument,
    StoredDocument,
)
from ragvisor.core.protocols import Vector
from ragvisor.datadir import make_private_dir, touch_private
from ragvisor.errors import StoreError
from ragvisor.store.dense_index import DenseIndex
from ragvisor.store.keyword_query import FtsQuery, common_phrases, fts_query
from ragvisor.store.records import (
    LEASE_KEY,
    generations_from_json,
    generations_to_json,
    lease_from_json,
    lease_to_json,
)
from ragvisor.store.sqlite_schema import DB_FILENAME, SCHEMA, SCHEMA_VERSION, from_blob, to_blob

P = ParamSpec("P")
R = TypeVar("R")


def _store_errors(
    method: Callable[Concatenate[SqliteStore, P], R],
) -> Callable[Concatenate[SqliteStore, P], R]:
    """SQLite's own errors leave the store as :class:`StoreError`, naming the operation and file.

    A locked database past ``store.busy_timeout_s``, a full disk or an I/O error is then one of
    our errors: a sync records it as failed and answers 503 (``store_unavailable``), where a raw
    ``sqlite3.OperationalError`` was a 500 and a traceback. The transaction is already rolled
    back by :meth:`SqliteStore._write`, so the store is as it was.
    """

    @functools.wraps(method)
    def translated(self: SqliteStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(f"{method.__name__} on {self.path} failed: {exc}") from exc

    return translated


class SqliteStore:
    """SQLite implementation of the Store protocol; safe to share between threads."""

    def __init__(self, data_dir: Path, *, busy_timeout_s: float = 10.0) -> None:
        """Open (creating if needed) the database under ``data_dir``.

        Raises StoreError when the directory cannot be created or the file is not a ragvisor
        database of a schema this version understands.
        """
        self.path = data_dir / DB_FILENAME
        try:
            make_private_dir(data_dir)
        except OSError as exc:
            raise StoreError(f"cannot create data directory {data_dir}: {exc}") from exc
        try:
            # SQLite gives -wal, -shm and -journal the mode of this file: 0600 before it opens.
            touch_private(self.path)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path}: {exc}") from exc
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        # Every connection opened, with the thread it belongs to: closed at close(), and when
        # that thread has ended (see _connect).
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._index: DenseIndex | None = None
        # How many chunks each keyword phrase matches, and how many chunks there are, as of
        # commit `_counts_seq`: what keyword search needs to leave out the common phrases.
        self._phrase_counts: dict[str, int] = {}
        self._chunk_total = 0
        self._counts_seq = -1
        self._init_schema()

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        with self._connections_lock:
            ended = [conn for thread, conn in self._connections if not thread.is_alive()]
            self._connections = [pair for pair in self._connections if pair[0].is_alive()]
            self._connections.append((threading.current_thread(), conn))
        for old in ended:
            old.close()
        return conn

    def _conn(self) -> sqlite3.Connection:
        """The calling thread's connection (readers never share a cursor).

        A connection lives as long as its thread. Threads come and go (a sync per thread, the
        HTTP thread pool retiring idle workers), and each connection holds up to 2 MB of page
        cache: kept for ended threads, they grew the daemon by 100 MB in a 30-minute soak with
        a sync every 45 s (bench/soak.py). Those of ended threads are closed when a new one
        opens.
        """
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self, *, bump: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction that bumps ``commit_seq`` if it changed a row (unless ``bump``
        is false: the lease and generation records change no chunk or vector, and must not make
        every reader reload its matrix); rolled back on any error.

        The sequence number it committed is left in ``self._local.committed_seq``, None when
        the body changed nothing (a prune with nothing to prune, as every unchanged re-sync
        ends with): then no reader has anything to reload, and the number says so.
        """
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                # The connection is this thread's and writes are serialised by the lock, so
                # the difference is exactly this transaction's rows.
                changes_before = conn.total_changes
                yield conn
                if not bump or conn.total_changes == changes_before:
                    self._local.committed_seq = None
                else:
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES('commit_seq', '1') "
                        "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
                    )
                    self._local.committed_seq = self.commit_seq()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself on some errors (SQLITE_FULL)
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _commit(self) -> Iterator[tuple[sqlite3.Connection, DenseIndex | None]]:
        """A write transaction plus the in-memory index, updated as one step.

        The body updates the index after its SQL; searches wait on the index lock meanwhile,
        so they see either the old or the new version. If anything fails the index is marked
        stale and the next search reloads it from the store.
        """
        index = self._index
        with index.lock if index is not None else nullcontext():
            try:
                with self._write() as conn:
                    yield conn, index
            except BaseException:
                if index is not None:
                    index.seq = -1
                raise
            if index is not None:
                self._advance(index)

    def _advance(self, index: DenseIndex) -> None:
        """Mark the index current if it was current just before our own commit.

        If another process committed in between, the index stays behind and the next search
        reloads it — exactly once. A transaction that changed nothing leaves it as it was.
        """
        committed: int | None = self._local.committed_seq
        if committed is not None and index.seq == committed - 1:
            index.seq = committed

    def _init_schema(self) -> None:
        try:
            with self._write_lock:
                conn = self._conn()
                conn.executescript(SCHEMA)
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES('schema_version', ?)",
                        (SCHEMA_VERSION,),
                    )
                elif row[0] != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} has schema version {row[0]}, this ragvisor reads "
                        f"{SCHEMA_VERSION}; use a new data_dir or a matching ragvisor"
                    )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable SQLite database: {exc}") from exc

    @_store_errors
    def commit_seq(self) -> int:
        """Sequence number of the last write transaction (0 for an empty store)."""
        row = self._conn().execute("SELECT value FROM meta WHERE key='commit_seq'").fetchone()
        return int(row[0]) if row else 0

    def kb_version(self) -> str:
        """The commit sequence: bumped by every write transaction that changed a chunk or a
        vector, in any process (one indexed read of the meta table)."""
        return str(self.commit_seq())

    # -- planning ----------------------------------------------------------------------------

    @_store_errors
    def stored_documents(self) -> dict[str, StoredDocument]:
        """Every stored document with its chunk hashes in position order."""
        rows = self._conn().execute(
            "SELECT doc_id, corpus_root, path, content_sha256, chunker_version, stamp, "
            "chunk_hashes FROM documents"
        )
        return {
            doc_id: StoredDocument(
                doc_id=doc_id,
                corpus_root=root,
                path=path,
                content_sha256=content,
                chunker_version=chunker,
                chunk_hashes=tuple(hashes.split(",")) if hashes else (),
                stamp=stamp,
            )
            for doc_id, root, path, content, chunker, stamp, hashes in rows
        }

    @_store_errors
    def hashes_with_vectors(self, fingerprint: Fingerprint) -> set[str]:
        """Text hashes that already have a vector under this fingerprint."""
        rows = self._conn().execute(
            "SELECT text_sha256 FROM vectors WHERE fingerprint = ?", (fingerprint.key,)
        )
        return {row[0] for row in rows}

    # -- writing -----------------------------------------------------------------------------

    @_store_errors
    def commit_document(
        self,
        document: SourceDocument,
        chunks: Sequence[Chunk],
        new_vectors: Mapping[str, Vector],
        fingerprint: Fingerprint,
        chunker_version: str,
    ) -> None:
        """Write the new version of a document, then retire the old, in one transaction.

        Raises StoreError (and changes nothing) when a chunk would be left without a vector.
        """
        with self._commit() as (conn, index):
            conn.executemany(
                "INSERT OR IGNORE INTO vectors(text_sha256, fingerprint, dimensions, vector) "
                "VALUES (?, ?, ?, ?)",
                [
                    (text_hash, fingerprint.key, fingerprint.dimensions, to_blob(vector))
                    for text_hash, vector in new_vectors.items()
                ],
            )
            wanted = sorted({chunk.text_sha256 for chunk in chunks})
            vectors = self._vectors_for(conn, wanted, fingerprint)
            missing = [h for h in wanted if h not in vectors]
            if missing:
                raise StoreError(
                    f"{document.path}: {len(missing)} chunk(s) have no vector under "
                    f"{fingerprint.key}; refusing a partial commit"
                )
            conn.execute(
                "INSERT INTO documents(doc_id, corpus_root, path, title, content_sha256, "
                "chunker_version, size_bytes, mtime_ns, stamp, chunk_hashes, committed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(doc_id) DO UPDATE SET "
                "corpus_root=excluded.corpus_root, path=excluded.path, title=excluded.title, "
                "content_sha256=excluded.content_sha256, "
                "chunker_version=excluded.chunker_version, size_bytes=excluded.size_bytes, "
                "mtime_ns=excluded.mtime_ns, stamp=excluded.stamp, "
                "chunk_hashes=excluded.chunk_hashes, "
                "committed_at=excluded.committed_at",
                (
                    document.doc_id,
                    document.corpus_root,
                    document.path,
                    document.title,
                    document.content_sha256,
                    chunker_version,
                    document.size_bytes,
                    document.mtime_ns,
                    document.stamp,
                    ",".join(c.text_sha256 for c in sorted(chunks, key=lambda c: c.position)),
                    time.time(),
                ),
            )
            keep = {chunk.chunk_id for chunk in chunks}
            existing = dict(
                conn.execute(
                    "SELECT chunk_id, rowid FROM chunks WHERE doc_id = ?", (document.doc_id,)
                )
            )
            for chunk in chunks:
                if chunk.chunk_id in existing:
                    continue
                cursor = conn.execute(
                    "INSERT INTO chunks(chunk_id, doc_id, position, heading, text, text_sha256, "
                    "chunker_version) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        chunk.chunk_id,
                        chunk.doc_id,
                        chunk.position,
                        chunk.heading,
                        chunk.text,
                        chunk.text_sha256,
                        chunk.chunker_version,
                    ),
                )
                conn.execute(
                    "INSERT INTO chunks_fts(rowid, text, title, heading) VALUES (?, ?, ?, ?)",
                    (cursor.lastrowid, chunk.text, document.title, chunk.heading),
                )
            retired = [(cid, rowid) for cid, rowid in existing.items() if cid not in keep]
            self._retire(conn, retired)
            if index is not None:
                # A retired chunk leaves whichever generation the matrix holds; a new chunk
                # enters it only with a vector of that generation (during a model change the
                # matrix serves the active one while this commit may write the next).
                for chunk_id, _ in retired:
                    index.remove(chunk_id)
                same = index.fingerprint_key == fingerprint.key
                for chunk in chunks:
                    if same:
                        index.upsert(chunk.chunk_id, vectors[chunk.text_sha256])
                    elif chunk.chunk_id not in existing:
                        index.seq = -1  # it may have a vector of the served generation: reload

    @staticmethod
    def _retire(conn: sqlite3.Connection, chunks: Sequence[tuple[str, int]]) -> None:
        conn.executemany("DELETE FROM chunks_fts WHERE rowid = ?", [(r,) for _, r in chunks])
        conn.executemany("DELETE FROM chunks WHERE chunk_id = ?", [(c,) for c, _ in chunks])

    @staticmethod
    def _vectors_for(
        conn: sqlite3.Connection, hashes: Sequence[str], fingerprint: Fingerprint
    ) -> dict[str, Vector]:
        found: dict[str, Vector] = {}
        for start in range(0, len(hashes), 500):
            part = hashes[start : start + 500]
            marks = ",".join("?" * len(part))
            for text_hash, blob in conn.execute(
                f"SELECT text_sha256, vector FROM vectors WHERE fingerprint = ? "
                f"AND text_sha256 IN ({marks})",
                (fingerprint.key, *part),
            ):
                found[text_hash] = from_blob(blob)
        return found

    @_store_errors
    def delete_document(self, doc_id: str) -> None:
        """Remove a document and its chunks; unused vectors go at the next prune."""
        with self._commit() as (conn, index):
            retired = list(
                conn.execute("SELECT chunk_id, rowid FROM chunks WHERE doc_id = ?", (doc_id,))
            )
            self._retire(conn, retired)
            conn.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
            if index is not None:
                for chunk_id, _ in retired:
                    index.remove(chunk_id)

    @_store_errors
    def prune_vectors(self, *keep: Fingerprint) -> int:
        """Drop vectors of fingerprints not kept and of hashes no chunk has any more."""
        marks = ",".join("?" * len(keep)) or "NULL"
        with self._commit() as (conn, _):
            cursor = conn.execute(
                f"DELETE FROM vectors WHERE fingerprint NOT IN ({marks}) "
                "OR text_sha256 NOT IN (SELECT text_sha256 FROM chunks)",
                tuple(f.key for f in keep),
            )
            return cursor.rowcount

    # -- prompt token counts (a cache: writing them bumps no commit_seq) ---------------------

    @_store_errors
    def token_counts(self, hashes: Sequence[str], counter: str) -> dict[str, int]:
        """Stored counts of these hashes under this counter."""
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = self._conn().execute(
            f"SELECT text_sha256, tokens FROM token_counts WHERE counter = ? "
            f"AND text_sha256 IN ({marks})",
            (counter, *wanted),
        )
        return {row[0]: int(row[1]) for row in rows}

    @_store_errors
    def uncounted_texts(self, counter: str, limit: int) -> dict[str, str]:
        """Chunk texts without a count under this counter, one per hash."""
        rows = self._conn().execute(
            "SELECT c.text_sha256, min(c.text) FROM chunks c WHERE NOT EXISTS "
            "(SELECT 1 FROM token_counts t WHERE t.text_sha256 = c.text_sha256 "
            "AND t.counter = ?) GROUP BY c.text_sha256 LIMIT ?",
            (counter, limit),
        )
        return {row[0]: row[1] for row in rows}

    @_store_errors
    def put_token_counts(self, counter: str, counts: Mapping[str, int]) -> None:
        """Upsert counts in one transaction."""
        with self._write(bump=False) as conn:
            conn.executemany(
                "INSERT INTO token_counts(text_sha256, counter, tokens) VALUES (?, ?, ?) "
                "ON CONFLICT(text_sha256, counter) DO UPDATE SET tokens = excluded.tokens",
                [(h, counter, int(n)) for h, n in counts.items()],
            )

    @_store_errors
    def prune_token_counts(self, counter: str) -> int:
        """Drop counts of other counters and of hashes no chunk has."""
        with self._write(bump=False) as conn:
            cursor = conn.execute(
                "DELETE FROM token_counts WHERE counter != ? "
                "OR text_sha256 NOT IN (SELECT text_sha256 FROM chunks)",
                (counter,),
            )
            return cursor.rowcount

    # -- copying -----------------------------------------------------------------------------

    @_store_errors
    def read_document(self, doc_id: str) -> DocumentVersion | None:
        """A stored document with its chunks, read in one transaction."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            row = conn.execute(
                "SELECT corpus_root, path, title, content_sha256, chunker_version, size_bytes, "
                "mtime_ns, stamp FROM documents WHERE doc_id = ?",
                (doc_id,),
            ).fetchone()
            rows = conn.execute(
                "SELECT chunk_id, position, text, text_sha256, heading, chunker_version "
                "FROM chunks WHERE doc_id = ? ORDER BY position",
                (doc_id,),
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        if row is None:
            return None
        root, path, title, content, chunker, size, mtime, stamp = row
        source = SourceDocument(doc_id, root, path, title, content, "", size, mtime, stamp)
        chunks = tuple(
            Chunk(cid, doc_id, position, text, text_hash, heading, version)
            for cid, position, text, text_hash, heading, version in rows
        )
        return DocumentVersion(source, chunks, chunker)

    @_store_errors
    def vectors(self, hashes: Sequence[str], fingerprint: Fingerprint) -> dict[str, Vector]:
        """Stored vectors of these hashes under this fingerprint."""
        return self._vectors_for(self._conn(), sorted(set(hashes)), fingerprint)

    @_store_errors
    def vector_counts(self) -> dict[str, tuple[int, int]]:
        """Per fingerprint: (dimensions, count)."""
        rows = self._conn().execute(
            "SELECT fingerprint, max(dimensions), count(*) FROM vectors GROUP BY fingerprint"
        )
        return {key: (int(dims), int(n)) for key, dims, n in rows}

    # -- generations and the sync lease ------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_store_errors
    def generations(self) -> Generations:
        """The active and the building generation, from the `meta` table."""
        return generations_from_json(self._meta("generations"))

    @_store_errors
    def set_generations(self, generations: Generations) -> None:
        """Both generations in one write."""
        with self._write(bump=False) as conn:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES('generations', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (generations_to_json(generations),),
            )

    @_store_errors
    def take_lease(self, holder: str, ttl_s: float, *, replacing: str | None = None) -> Lease:
        """Compare-and-set in one `BEGIN IMMEDIATE` transaction: atomic between processes."""
        with self._write(bump=False) as conn:
            now = time.time()
            current = lease_from_json(self._meta(LEASE_KEY), now)
            if current is None or current.expired or current.holder in (holder, replacing):
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES(?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (LEASE_KEY, lease_to_json(holder, now + ttl_s)),
                )
                return Lease(holder, ttl_s)
            return current

    @_store_errors
    def release_lease(self, holder: str) -> None:
        """Delete the lease if it is ``holder``'s."""
        with self._write(bump=False) as conn:
            current = lease_from_json(self._meta(LEASE_KEY), time.time())
            if current is not None and current.holder == holder:
                conn.execute("DELETE FROM meta WHERE key = ?", (LEASE_KEY,))

    @_store_errors
    def read_lease(self) -> Lease | None:
        """The lease as it stands, expired or not."""
        return lease_from_json(self._meta(LEASE_KEY), time.time())

    # -- reading -----------------------------------------------------------------------------

    def _current_index(self, fingerprint: Fingerprint) -> DenseIndex:
        """The in-memory matrix for this fingerprint, reloaded only if the store moved on."""
        index = self._index
        if index is None or index.fingerprint_key != fingerprint.key:
            index = DenseIndex(fingerprint.dimensions, fingerprint.key)
            self._index = index
        with index.lock:
            conn = self._conn()
            seq = self.commit_seq()
            if index.seq != seq:
                conn.execute("BEGIN")
                try:
                    seq = self.commit_seq()
                    rows = conn.execute(
                        "SELECT c.chunk_id, v.vector FROM chunks c JOIN vectors v "
                        "ON v.text_sha256 = c.text_sha256 AND v.fingerprint = ?",
                        (fingerprint.key,),
                    )
                    # One growing buffer the index then owns: a list of blobs, their join and
                    # the index's copy held the vectors three times at the start-up peak.
                    ids: list[str] = []
                    buffer = bytearray()
                    for chunk_id, blob in rows:
                        ids.append(chunk_id)
                        buffer += blob
                    index.replace_all(ids, np.frombuffer(buffer, dtype="<f4"), seq)
                finally:
                    conn.execute("COMMIT")
        return index

    @_store_errors
    def load_index(self, fingerprint: Fingerprint) -> int:
        """Build the in-memory matrix now (at start-up) instead of at the first search."""
        return len(self._current_index(fingerprint))

    @_store_errors
    def dense_search(self, query: Vector, k: int, fingerprint: Fingerprint) -> list[ScoredChunk]:
        """Exact cosine top-k over the in-memory matrix of this fingerprint."""
        return self._current_index(fingerprint).search(query, k)

    @_store_errors
    def keyword_search(self, query: str, k: int) -> list[ScoredChunk]:
        """BM25 top-k from the FTS5 index; the score is the negated bm25 (higher is better).

        Any word, or part of a name, may match. Chunks that contain a name of the query as
        written (``sync.lock``: its parts adjacent) come first and are marked ``exact_name``;
        the rest follow by BM25 (the query language is in :mod:`ragvisor.store.keyword_query`).
        """
        parsed = fts_query(query)
        if not parsed.match:
            return []
        parsed = parsed.led_by_rare(self._common_phrases(parsed))
        if parsed.names:
            exact_sql = (
                "chunks_fts.rowid IN (SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?)"
            )
            params: tuple[str | int, ...] = (parsed.names, parsed.match, k)
        else:
            exact_sql, params = "0", (parsed.match, k)
        # The top k are chosen inside the FTS table and only they are joined to their chunk
        # ids: joining every match before sorting cost ~40 % of the time at 32k chunks.
        rows = self._conn().execute(
            "SELECT c.chunk_id, f.rank, f.exact FROM ("
            f"SELECT rowid, bm25(chunks_fts) AS rank, {exact_sql} AS exact FROM chunks_fts "
            "WHERE chunks_fts MATCH ? ORDER BY exact DESC, rank LIMIT ?"
            ") f JOIN chunks c ON c.rowid = f.rowid ORDER BY f.exact DESC, f.rank",
            params,
        )
        return [
            ScoredChunk(chunk_id, -float(rank), exact_name=bool(exact))
            for chunk_id, rank, exact in rows
        ]

    def _common_phrases(self, parsed: FtsQuery) -> set[str]:
        """The phrases too common to score (`keyword_query.common_phrases`), counted with the
        index itself — a count reads a phrase's row list without scoring it, ~0.1 ms — and
        remembered until the next commit."""
        conn = self._conn()
        seq = self.commit_seq()
        if seq != self._counts_seq:
            self._phrase_counts = {}
            self._chunk_total = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
            self._counts_seq = seq
        counts = self._phrase_counts
        for phrase in parsed.phrases:
            if phrase not in counts:
                counts[phrase] = conn.execute(
                    "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (phrase,)
                ).fetchone()[0]
        return common_phrases(parsed, counts, self._chunk_total)

    @_store_errors
    def get_chunks(self, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        """Chunks joined with their documents, in the order asked."""
        if not chunk_ids:
            return []
        marks = ",".join("?" * len(chunk_ids))
        rows = self._conn().execute(
            "SELECT c.chunk_id, c.doc_id, d.corpus_root, d.path, d.title, c.heading, "
            "c.position, c.text, c.text_sha256 FROM chunks c "
            f"JOIN documents d ON d.doc_id = c.doc_id WHERE c.chunk_id IN ({marks})",
            tuple(chunk_ids),
        )
        by_id = {row[0]: ChunkRecord(*row) for row in rows}
        return [by_id[cid] for cid in chunk_ids if cid in by_id]

    @_store_errors
    def stats(self) -> dict[str, int]:
        """Counts for status pages and readiness."""
        conn = self._conn()
        return {
            "documents": conn.execute("SELECT count(*) FROM documents").fetchone()[0],
            "chunks": conn.execute("SELECT count(*) FROM chunks").fetchone()[0],
            "vectors": conn.execute("SELECT count(*) FROM vectors").fetchone()[0],
            "commit_seq": self.commit_seq(),
        }

    def close(self) -> None:
        """Close every connection any thread opened."""
        with self._connections_lock:
            for _, conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
