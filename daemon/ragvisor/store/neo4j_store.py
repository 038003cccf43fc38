"""The production store: Neo4j, with a vector index for dense search and a full-text index for
keywords, reached with the official driver.

The graph (schema version 1):

- ``(:Document {doc_id, corpus_root, path, title, content_sha256, chunker_version, size_bytes,
  mtime_ns, stamp, chunk_hashes, committed_at})`` — one per document;
- ``(:Document)-[:HAS_CHUNK]->(:Chunk {chunk_id, doc_id, position, heading, text, text_sha256,
  chunker_version, path, title, words})`` — the chunks of its current version; ``words`` is
  title, heading and text cut into letters-and-digits tokens, as the SQLite index cuts them;
- ``(:Vector {key, text_sha256, fingerprint, dimensions, embedding})`` — one per (chunk text
  hash, model fingerprint), as in SQLite: identical text is embedded once and a renamed file
  embeds nothing. Each fingerprint's vectors also carry a label of their own (``Vectors_<id>``)
  with a cosine vector index on it, since an index has one dimension count.

Uniqueness constraints guard ``doc_id``, ``chunk_id`` and the vector ``key``; a full-text index
(English analyzer: Porter-stemmed) covers ``words``. :meth:`Neo4jStore.commit_document` is one
transaction: a crash leaves the old or the new version. Keyword queries are phrases of letters
and digits (:func:`ragvisor.store.keyword_query.lucene_query`), so Lucene syntax typed by a user
never reaches Lucene as syntax.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import neo4j
import numpy as np
from neo4j.exceptions import (
    DriverError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)

from ragvisor.core.deadline import remaining_s
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
from ragvisor.errors import StoreError
from ragvisor.store.keyword_query import index_words, lucene_query
from ragvisor.store.records import LEASE_KEY, generations_from_json, generations_to_json

SCHEMA_VERSION = 1
FULLTEXT_INDEX = "ragvisor_chunk_words"
# Porter-stemmed like the SQLite store's index; English stop words are left out.
FULLTEXT_ANALYZER = "english"
# Vector results are per text hash; several chunks may share one, and a vector may have no
# chunk left before a prune: ask the index for more than k.
_OVERSAMPLE = 4
# Fewest candidates asked of the vector index, then ranked by the exact cosine (dense_search).
_CANDIDATES = 100
# Vectors deleted per transaction by a prune.
_PRUNE_BATCH = 2000
# Back-off between attempts of a transient failure: doubling from the first to the last.
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 1.0
# A transaction that cannot have this long is not started: it would only time out.
_MIN_QUERY_S = 0.05
T = TypeVar("T")

_CONSTRAINTS = (
    "CREATE CONSTRAINT ragvisor_document_id IF NOT EXISTS "
    "FOR (d:Document) REQUIRE d.doc_id IS UNIQUE",
    "CREATE CONSTRAINT ragvisor_chunk_id IF NOT EXISTS FOR (c:Chunk) REQUIRE c.chunk_id IS UNIQUE",
    "CREATE CONSTRAINT ragvisor_vector_key IF NOT EXISTS FOR (v:Vector) REQUIRE v.key IS UNIQUE",
    "CREATE CONSTRAINT ragvisor_meta_id IF NOT EXISTS FOR (m:RagvisorMeta) REQUIRE m.id IS UNIQUE",
    "CREATE CONSTRAINT ragvisor_token_count_key IF NOT EXISTS "
    "FOR (t:TokenCount) REQUIRE t.key IS UNIQUE",
    "CREATE INDEX ragvisor_chunk_hash IF NOT EXISTS FOR (c:Chunk) ON (c.text_sha256)",
    "CREATE INDEX ragvisor_vector_fingerprint IF NOT EXISTS FOR (v:Vector) ON (v.fingerprint)",
    f"CREATE FULLTEXT INDEX {FULLTEXT_INDEX} IF NOT EXISTS FOR (c:Chunk) ON EACH [c.words] "
    f"OPTIONS {{indexConfig: {{`fulltext.analyzer`: '{FULLTEXT_ANALYZER}'}}}}",
)


def _reason(exc: Exception) -> str:
    """The driver's message without its noise: the server's message for a server error, the
    socket's (`Connection refused`) for a database that cannot be reached."""
    if isinstance(exc, ServiceUnavailable):
        cause: BaseException = exc
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
        detail = getattr(cause, "strerror", None) or str(cause)
        return f"Neo4j cannot be reached ({' '.join(str(detail).split())})"
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())


def _fingerprint_id(fingerprint: Fingerprint) -> str:
    """A name-safe id of a fingerprint, for its label and its vector index."""
    return hashlib.sha256(fingerprint.key.encode()).hexdigest()[:16]


class Neo4jStore:
    """Implements :class:`ragvisor.core.protocols.Store` on a Neo4j database.

    Every transaction is bounded by `query_timeout_s` (the driver's transaction timeout,
    enforced by the server) or by what is left of the current request's deadline, whichever is
    shorter; waiting for a connection is bounded the same way, and a retry of a transient
    failure never outlives it. Driver and server errors leave as :class:`StoreError`, naming the
    operation.

    Nothing is asked of Neo4j when the store is made: the schema is set up by the first
    operation that reaches the database, so a daemon started while Neo4j is away comes up,
    answers 503 `store_unavailable`, and works as soon as Neo4j is back.
    """

    def __init__(
        self,
        uri: str,
        *,
        user: str,
        password: str,
        database: str = "neo4j",
        connect_timeout_s: float = 5.0,
        query_timeout_s: float = 10.0,
    ) -> None:
        self.uri = uri
        self._database = database
        self._timeout = query_timeout_s
        self._driver = neo4j.GraphDatabase.driver(
            uri,
            auth=(user, password),
            connection_timeout=connect_timeout_s,
            connection_acquisition_timeout=connect_timeout_s,
            max_transaction_retry_time=0.0,  # retried by `_attempts`, within our deadlines
            # A connection idle this long is checked before use: one that died with a restarted
            # Neo4j is then replaced instead of failing a request.
            liveness_check_timeout=30.0,
            # The server's query notes ("this label is not in the database yet", on a fresh
            # database) are not the operator's business: our own events say what matters.
            notifications_min_severity="OFF",
        )
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._indexed: set[str] = set()

    # -- plumbing ----------------------------------------------------------------------------

    def _budget_s(self) -> float:
        """Seconds one transaction may take: the query timeout, or less if the request that
        asked has less left. Raises StoreError when the request has no time left at all."""
        left = remaining_s()
        if left is None:
            return self._timeout
        if left <= _MIN_QUERY_S:
            raise StoreError("the request's deadline passed before the store was asked")
        return min(self._timeout, left)

    def _guard(self, what: str, action: Callable[[], T], *, set_up: bool = True) -> T:
        """Run ``action`` with driver and server errors as StoreError naming ``what``; the
        schema is set up first unless ``set_up`` is false (the doctor reads a database as it
        is, without waiting for or creating the schema the daemon sets up)."""
        try:
            if set_up:
                self._ensure_schema()
            return action()
        except StoreError:
            raise
        except (Neo4jError, DriverError, OSError) as exc:
            raise StoreError(f"{what} on {self.uri} failed: {_reason(exc)}") from exc

    def _session(self, budget_s: float) -> neo4j.Session:
        # The driver's own retries are off: its back-off sleeps (1, 2, 4 s) are not bounded by
        # any deadline of ours, so `_attempts` retries instead.
        return self._driver.session(
            database=self._database,
            connection_acquisition_timeout=budget_s,
            max_transaction_retry_time=0.0,
        )

    def _attempts(self, work: Callable[[neo4j.Session, float], T]) -> T:
        """Run ``work(session, seconds_left)``, retrying what Neo4j calls transient (a lost
        connection, a leader switch, a deadlock) with short back-offs, all within one budget
        (`_budget_s`): the last attempt gets what is left, and none starts without time."""
        deadline = time.monotonic() + self._budget_s()
        delay = _RETRY_FIRST_S
        while True:
            left = deadline - time.monotonic()
            try:
                with self._session(left) as session:
                    return work(session, left)
            except (ServiceUnavailable, SessionExpired, TransientError):
                left = deadline - time.monotonic()
                if left <= delay + _MIN_QUERY_S:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    def _read(self, query: str, **params: Any) -> list[neo4j.Record]:
        def work(session: neo4j.Session, left: float) -> list[neo4j.Record]:
            return session.execute_read(
                neo4j.unit_of_work(timeout=left)(lambda tx: list(tx.run(query, **params)))
            )

        return self._attempts(work)

    def _write(self, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
        def attempt(session: neo4j.Session, left: float) -> T:
            return session.execute_write(neo4j.unit_of_work(timeout=left)(work))

        return self._attempts(attempt)

    def _schema(self, statement: str, **params: Any) -> None:
        with self._driver.session(
            database=self._database, connection_acquisition_timeout=self._budget_s()
        ) as session:
            session.run(statement, **params).consume()

    def _ensure_schema(self) -> None:
        """Create the constraints and indexes once per process (every statement is idempotent:
        several daemons may run it at once), and refuse a database of a newer schema."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with self._driver.session(
                database=self._database, connection_acquisition_timeout=self._budget_s()
            ) as session:
                record = session.run(
                    "OPTIONAL MATCH (m:RagvisorMeta {id: 'schema'}) RETURN m.version AS v"
                ).single()
            found = record["v"] if record is not None else None
            if found is not None and int(found) > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self._database!r} on {self.uri} has ragvisor schema version "
                    f"{found}; this ragvisor reads {SCHEMA_VERSION}: upgrade ragvisor"
                )
            for statement in _CONSTRAINTS:
                self._schema(statement)
            self._schema(
                "MERGE (m:RagvisorMeta {id: 'schema'}) SET m.version = $v", v=SCHEMA_VERSION
            )
            self._schema("CALL db.awaitIndexes(120)")
            self._schema_ready = True

    def _vector_index(self, fingerprint: Fingerprint) -> tuple[str, str]:
        """(label, index name) of this fingerprint's vectors, the index created if missing.

        Under the schema lock: a search and a sync's first commit arriving together would both
        create it, and Neo4j refuses the second ("an equivalent index already exists").
        """
        ident = _fingerprint_id(fingerprint)
        label, index = f"Vectors_{ident}", f"ragvisor_vectors_{ident}"
        if index in self._indexed:
            return label, index
        with self._schema_lock:
            if index not in self._indexed:
                try:
                    self._schema(
                        f"CREATE VECTOR INDEX {index} IF NOT EXISTS FOR (v:{label}) "
                        f"ON v.embedding OPTIONS {{indexConfig: {{`vector.dimensions`: "
                        f"{int(fingerprint.dimensions)}, "
                        "`vector.similarity_function`: 'cosine'}}"
                    )
                except Neo4jError as exc:  # another daemon created it a moment ago
                    if "already exists" not in str(exc):
                        raise
                self._schema("CALL db.awaitIndexes(120)")
                self._indexed.add(index)
        return label, index

    # -- writing -----------------------------------------------------------------------------

    def commit_document(
        self,
        document: SourceDocument,
        chunks: Sequence[Chunk],
        new_vectors: Mapping[str, Vector],
        fingerprint: Fingerprint,
        chunker_version: str,
    ) -> None:
        """New vectors, the document and its chunks in one transaction; the chunks the new
        version no longer has are retired in it too. A chunk left without a vector raises
        StoreError and the transaction is rolled back."""
        label, _ = self._guard("commit_document", lambda: self._vector_index(fingerprint))
        ordered = sorted(chunks, key=lambda c: c.position)
        rows = [
            {
                "key": f"{fingerprint.key}:{text_hash}",
                "text_sha256": text_hash,
                "vector": [float(x) for x in vector],
            }
            for text_hash, vector in new_vectors.items()
        ]
        wanted = sorted({c.text_sha256 for c in ordered})

        def work(tx: neo4j.ManagedTransaction) -> None:
            tx.run(
                "UNWIND $rows AS row MERGE (v:Vector {key: row.key}) "
                "SET v.text_sha256 = row.text_sha256, v.fingerprint = $fp, v.dimensions = $dims "
                f"SET v:{label} "
                "WITH v, row CALL db.create.setNodeVectorProperty(v, 'embedding', row.vector)",
                rows=rows,
                fp=fingerprint.key,
                dims=fingerprint.dimensions,
            ).consume()
            found = tx.run(
                "MATCH (v:Vector) WHERE v.key IN $keys RETURN count(v) AS n",
                keys=[f"{fingerprint.key}:{h}" for h in wanted],
            ).single()
            missing = len(wanted) - (found["n"] if found else 0)
            if missing:
                raise StoreError(
                    f"{document.path}: {missing} chunk(s) have no vector under "
                    f"{fingerprint.key}; refusing a partial commit"
                )
            tx.run(
                "MERGE (d:Document {doc_id: $doc.doc_id}) SET d += $doc",
                doc={
                    "doc_id": document.doc_id,
                    "corpus_root": document.corpus_root,
                    "path": document.path,
                    "title": document.title,
                    "content_sha256": document.content_sha256,
                    "chunker_version": chunker_version,
                    "size_bytes": document.size_bytes,
                    "mtime_ns": document.mtime_ns,
                    "stamp": document.stamp,
                    "chunk_hashes": [c.text_sha256 for c in ordered],
                    "committed_at": time.time(),
                },
            ).consume()
            tx.run(
                "MATCH (d:Document {doc_id: $doc_id})-[:HAS_CHUNK]->(c:Chunk) "
                "WHERE NOT c.chunk_id IN $keep DETACH DELETE c",
                doc_id=document.doc_id,
                keep=[c.chunk_id for c in ordered],
            ).consume()
            tx.run(
                # A chunk id names its text, so a chunk that exists is written again only when
                # its document's path or title changed: a model change re-commits every
                # document, and rewriting unchanged chunks would re-index their words.
                "MATCH (d:Document {doc_id: $doc_id}) UNWIND $chunks AS row "
                "MERGE (c:Chunk {chunk_id: row.chunk_id}) ON CREATE SET c += row "
                "WITH d, c, row FOREACH (_ IN CASE WHEN c.path <> row.path "
                "OR c.title <> row.title THEN [1] ELSE [] END | SET c += row) "
                "MERGE (d)-[:HAS_CHUNK]->(c)",
                doc_id=document.doc_id,
                chunks=[
                    {
                        "chunk_id": c.chunk_id,
                        "doc_id": c.doc_id,
                        "position": c.position,
                        "heading": c.heading,
                        "text": c.text,
                        "text_sha256": c.text_sha256,
                        "chunker_version": c.chunker_version,
                        "path": document.path,
                        "title": document.title,
                        "words": index_words(f"{document.title}\n{c.heading}\n{c.text}"),
                    }
                    for c in ordered
                ],
            ).consume()
            _bump_kb_version(tx)

        self._guard("commit_document", lambda: self._write(work))

    def delete_document(self, doc_id: str) -> None:
        """Remove a document and its chunks; unused vectors go at the next prune."""

        def work(tx: neo4j.ManagedTransaction) -> None:
            tx.run(
                "MATCH (d:Document {doc_id: $doc_id}) OPTIONAL MATCH (d)-[:HAS_CHUNK]->(c:Chunk) "
                "DETACH DELETE c, d",
                doc_id=doc_id,
            ).consume()
            _bump_kb_version(tx)

        self._guard("delete_document", lambda: self._write(work))

    def prune_vectors(self, *keep: Fingerprint) -> int:
        """Drop vectors of fingerprints not kept and of hashes no chunk has any more, in
        batches (a whole generation is too much for one transaction on a 512 MB heap), then
        the vector indexes of fingerprints no longer kept."""
        kept = [f.key for f in keep]

        def prune() -> int:
            total = self._delete_in_batches(
                "MATCH (v:Vector) WHERE NOT v.fingerprint IN $kept "
                "OR NOT EXISTS { MATCH (c:Chunk {text_sha256: v.text_sha256}) } "
                "WITH v LIMIT $batch DETACH DELETE v RETURN count(*) AS n",
                kept=kept,
            )
            wanted = {f"ragvisor_vectors_{_fingerprint_id(f)}" for f in keep}
            for record in self._read(
                "SHOW VECTOR INDEXES YIELD name WHERE name STARTS WITH 'ragvisor_vectors_' "
                "RETURN name"
            ):
                if record["name"] not in wanted:
                    self._schema(f"DROP INDEX {record['name']} IF EXISTS")
                    self._indexed.discard(record["name"])
            return total

        return self._guard("prune_vectors", prune)

    # -- copying -----------------------------------------------------------------------------

    def read_document(self, doc_id: str) -> DocumentVersion | None:
        """A stored document with its chunks, read in one transaction."""
        records = self._guard(
            "read_document",
            lambda: self._read(
                "MATCH (d:Document {doc_id: $doc_id}) OPTIONAL MATCH (d)-[:HAS_CHUNK]->(c:Chunk) "
                "WITH d, c ORDER BY c.position RETURN d, collect(c) AS chunks",
                doc_id=doc_id,
            ),
        )
        if not records:
            return None
        d = records[0]["d"]
        source = SourceDocument(
            doc_id=doc_id,
            corpus_root=d["corpus_root"],
            path=d["path"],
            title=d["title"],
            content_sha256=d["content_sha256"],
            text="",
            size_bytes=int(d["size_bytes"]),
            mtime_ns=int(d["mtime_ns"]),
            stamp=d.get("stamp", ""),
        )
        chunks = tuple(
            Chunk(
                c["chunk_id"],
                doc_id,
                int(c["position"]),
                c["text"],
                c["text_sha256"],
                c["heading"],
                c["chunker_version"],
            )
            for c in records[0]["chunks"]
        )
        return DocumentVersion(source, chunks, d["chunker_version"])

    def vectors(self, hashes: Sequence[str], fingerprint: Fingerprint) -> dict[str, Vector]:
        """Stored vectors of these hashes under this fingerprint."""
        keys = [f"{fingerprint.key}:{h}" for h in sorted(set(hashes))]
        records = self._guard(
            "vectors",
            lambda: self._read(
                "MATCH (v:Vector) WHERE v.key IN $keys RETURN v.text_sha256 AS h, v.embedding AS e",
                keys=keys,
            ),
        )
        return {r["h"]: np.asarray(r["e"], dtype=np.float32) for r in records}

    # -- prompt token counts: (:TokenCount {key: "<counter>:<hash>"}), a cache ---------------

    def token_counts(self, hashes: Sequence[str], counter: str) -> dict[str, int]:
        """Stored counts of these hashes under this counter: one indexed read."""
        keys = [f"{counter}:{h}" for h in sorted(set(hashes))]
        if not keys:
            return {}
        records = self._guard(
            "token_counts",
            lambda: self._read(
                "MATCH (t:TokenCount) WHERE t.key IN $keys "
                "RETURN t.text_sha256 AS h, t.tokens AS n",
                keys=keys,
            ),
        )
        return {r["h"]: int(r["n"]) for r in records}

    def uncounted_texts(self, counter: str, limit: int) -> dict[str, str]:
        """Chunk texts without a count under this counter, one per hash."""
        records = self._guard(
            "uncounted_texts",
            lambda: self._read(
                "MATCH (c:Chunk) WHERE NOT EXISTS "
                "{ MATCH (t:TokenCount {key: $counter + ':' + c.text_sha256}) } "
                "WITH c.text_sha256 AS h, min(c.text) AS text RETURN h, text LIMIT $limit",
                counter=counter,
                limit=limit,
            ),
        )
        return {r["h"]: r["text"] for r in records}

    def put_token_counts(self, counter: str, counts: Mapping[str, int]) -> None:
        """Upsert counts in one transaction."""
        rows = [{"key": f"{counter}:{h}", "h": h, "n": int(n)} for h, n in sorted(counts.items())]

        def work(tx: neo4j.ManagedTransaction) -> None:
            tx.run(
                "UNWIND $rows AS row MERGE (t:TokenCount {key: row.key}) "
                "SET t.text_sha256 = row.h, t.counter = $counter, t.tokens = row.n",
                rows=rows,
                counter=counter,
            ).consume()

        if rows:
            self._guard("put_token_counts", lambda: self._write(work))

    def prune_token_counts(self, counter: str) -> int:
        """Drop counts of other counters and of hashes no chunk has, in batches."""
        return self._guard(
            "prune_token_counts",
            lambda: self._delete_in_batches(
                "MATCH (t:TokenCount) WHERE t.counter <> $counter "
                "OR NOT EXISTS { MATCH (c:Chunk {text_sha256: t.text_sha256}) } "
                "WITH t LIMIT $batch DELETE t RETURN count(*) AS n",
                counter=counter,
            ),
        )

    def _delete_in_batches(self, query: str, **params: Any) -> int:
        """Run a deleting ``query`` (``LIMIT $batch``, ``RETURN count(*) AS n``) one
        transaction per batch until it deletes nothing; returns how many it deleted."""

        def batch(tx: neo4j.ManagedTransaction) -> int:
            record = tx.run(query, batch=_PRUNE_BATCH, **params).single()
            return int(record["n"]) if record else 0

        total = 0
        while (n := self._write(batch)) > 0:
            total += n
        return total

    def vector_counts(self) -> dict[str, tuple[int, int]]:
        """Per fingerprint: (dimensions, count)."""
        records = self._guard(
            "vector_counts",
            lambda: self._read(
                "MATCH (v:Vector) RETURN v.fingerprint AS fp, max(v.dimensions) AS dims, "
                "count(v) AS n"
            ),
        )
        return {r["fp"]: (int(r["dims"]), int(r["n"])) for r in records}

    # -- generations and the sync lease ------------------------------------------------------

    def generations(self) -> Generations:
        """The active and the building generation, from the `RagvisorMeta` node."""
        return self._generations(set_up=True)

    def _generations(self, *, set_up: bool) -> Generations:
        records = self._guard(
            "generations",
            lambda: self._read(
                "OPTIONAL MATCH (m:RagvisorMeta {id: 'generations'}) RETURN m.value AS v"
            ),
            set_up=set_up,
        )
        return generations_from_json(records[0]["v"] if records else None)

    def set_generations(self, generations: Generations) -> None:
        """Both generations in one write."""

        def work(tx: neo4j.ManagedTransaction) -> None:
            tx.run(
                "MERGE (m:RagvisorMeta {id: 'generations'}) SET m.value = $v",
                v=generations_to_json(generations),
            ).consume()

        self._guard("set_generations", lambda: self._write(work))

    def take_lease(self, holder: str, ttl_s: float, *, replacing: str | None = None) -> Lease:
        """Compare-and-set by Neo4j's clock, under the lease node's write lock (taken first, so
        two daemons cannot both see it free)."""

        def work(tx: neo4j.ManagedTransaction) -> Lease:
            record = tx.run(
                "MERGE (l:RagvisorMeta {id: $key}) SET l.locked_at = timestamp() "
                "WITH l, timestamp() AS now "
                "WITH l, now, (l.holder IS NULL OR l.expires_at <= now OR l.holder = $holder "
                "OR l.holder = $replacing) AS free "
                "FOREACH (_ IN CASE WHEN free THEN [1] ELSE [] END | "
                "SET l.holder = $holder, l.expires_at = now + $ttl_ms) "
                "RETURN l.holder AS holder, (l.expires_at - now) / 1000.0 AS left",
                key=LEASE_KEY,
                holder=holder,
                replacing=replacing,
                ttl_ms=int(ttl_s * 1000),
            ).single()
            assert record is not None  # MERGE returns its node
            return Lease(str(record["holder"]), float(record["left"]))

        return self._guard("take_lease", lambda: self._write(work))

    def release_lease(self, holder: str) -> None:
        """Clear the lease if it is ``holder``'s."""

        def work(tx: neo4j.ManagedTransaction) -> None:
            tx.run(
                "MATCH (l:RagvisorMeta {id: $key}) WHERE l.holder = $holder "
                "REMOVE l.holder, l.expires_at",
                key=LEASE_KEY,
                holder=holder,
            ).consume()

        self._guard("release_lease", lambda: self._write(work))

    def read_lease(self) -> Lease | None:
        """The lease as it stands, by Neo4j's clock."""
        records = self._guard(
            "read_lease",
            lambda: self._read(
                "OPTIONAL MATCH (l:RagvisorMeta {id: $key}) "
                "RETURN l.holder AS holder, (l.expires_at - timestamp()) / 1000.0 AS left",
                key=LEASE_KEY,
            ),
        )
        if not records or records[0]["holder"] is None:
            return None
        return Lease(str(records[0]["holder"]), float(records[0]["left"]))

    # -- reading -----------------------------------------------------------------------------

    def stored_documents(self) -> dict[str, StoredDocument]:
        """Every stored document by id, with its chunk hashes in position order."""
        records = self._guard("stored_documents", lambda: self._read("MATCH (d:Document) RETURN d"))
        out = {}
        for record in records:
            d = record["d"]
            out[d["doc_id"]] = StoredDocument(
                doc_id=d["doc_id"],
                corpus_root=d["corpus_root"],
                path=d["path"],
                content_sha256=d["content_sha256"],
                chunker_version=d["chunker_version"],
                chunk_hashes=tuple(d["chunk_hashes"]),
                stamp=d.get("stamp", ""),
            )
        return out

    def hashes_with_vectors(self, fingerprint: Fingerprint) -> set[str]:
        """Text hashes that already have a vector under this fingerprint."""
        records = self._guard(
            "hashes_with_vectors",
            lambda: self._read(
                "MATCH (v:Vector {fingerprint: $fp}) RETURN v.text_sha256 AS h",
                fp=fingerprint.key,
            ),
        )
        return {record["h"] for record in records}

    def load_index(self, fingerprint: Fingerprint) -> int:
        """Make sure this fingerprint's vector index exists and is online; returns how many
        chunks have a vector under it."""

        def count() -> int:
            self._vector_index(fingerprint)
            records = self._read(
                "MATCH (v:Vector {fingerprint: $fp}) MATCH (c:Chunk {text_sha256: v.text_sha256}) "
                "RETURN count(c) AS n",
                fp=fingerprint.key,
            )
            return int(records[0]["n"])

        return self._guard("load_index", count)

    def dense_search(self, query: Vector, k: int, fingerprint: Fingerprint) -> list[ScoredChunk]:
        """Top-k chunks by cosine similarity: candidates from this fingerprint's vector index,
        ranked by the exact cosine of their stored vectors.

        The index searches only as widely as the candidates asked for, and ranks on vectors it
        quantizes to 8 bits: asked for k, it finds about 0.90 of the true top 10; asked for at
        least `_CANDIDATES` and re-ranked exactly, 0.99+ (bench/store_bench.py). Neo4j scores
        cosine as (1 + cos) / 2; the score returned is the cosine itself, as the other stores
        return it.
        """

        def search() -> list[ScoredChunk]:
            _, index = self._vector_index(fingerprint)
            records = self._read(
                f"CALL db.index.vector.queryNodes('{index}', $n, $q) YIELD node "
                "WITH node, vector.similarity.cosine(node.embedding, $q) AS score "
                "MATCH (c:Chunk {text_sha256: node.text_sha256}) "
                "RETURN c.chunk_id AS id, score ORDER BY score DESC, id LIMIT $k",
                n=max(k * _OVERSAMPLE, _CANDIDATES),
                q=[float(x) for x in query],
                k=k,
            )
            return [ScoredChunk(r["id"], 2.0 * float(r["score"]) - 1.0) for r in records]

        return self._guard("dense_search", search)

    def keyword_search(self, query: str, k: int) -> list[ScoredChunk]:
        """Top-k chunks by full-text relevance, any of the query's words matching; chunks that
        contain a name of the query as written come first, marked ``exact_name`` (as in the
        SQLite store: :mod:`ragvisor.store.keyword_query`)."""
        parsed = lucene_query(query)
        if not parsed.match:
            return []

        def search(text: str) -> list[ScoredChunk]:
            records = self._read(
                f"CALL db.index.fulltext.queryNodes('{FULLTEXT_INDEX}', $q, {{limit: $k}}) "
                "YIELD node, score RETURN node.chunk_id AS id, score ORDER BY score DESC, id",
                q=text,
                k=k,
            )
            return [ScoredChunk(r["id"], float(r["score"])) for r in records]

        def both() -> list[ScoredChunk]:
            exact = search(parsed.names) if parsed.names else []
            seen = {hit.chunk_id for hit in exact}
            hits = [ScoredChunk(h.chunk_id, h.score, exact_name=True) for h in exact]
            hits += [h for h in search(parsed.match) if h.chunk_id not in seen]
            return hits[:k]

        return self._guard("keyword_search", both)

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        """Chunks with their document's path and title, in the order asked."""
        if not chunk_ids:
            return []
        records = self._guard(
            "get_chunks",
            lambda: self._read(
                "MATCH (d:Document)-[:HAS_CHUNK]->(c:Chunk) WHERE c.chunk_id IN $ids "
                "RETURN c, d.corpus_root AS root, d.path AS path, d.title AS title",
                ids=list(chunk_ids),
            ),
        )
        by_id = {}
        for record in records:
            c = record["c"]
            by_id[c["chunk_id"]] = ChunkRecord(
                chunk_id=c["chunk_id"],
                doc_id=c["doc_id"],
                corpus_root=record["root"],
                path=record["path"],
                title=record["title"],
                heading=c["heading"],
                position=c["position"],
                text=c["text"],
                text_sha256=c["text_sha256"],
            )
        return [by_id[cid] for cid in chunk_ids if cid in by_id]

    def stats(self) -> dict[str, int]:
        """Counts of documents, chunks and vectors."""
        records = self._guard(
            "stats",
            lambda: self._read(
                "CALL () { MATCH (d:Document) RETURN count(d) AS documents } "
                "CALL () { MATCH (c:Chunk) RETURN count(c) AS chunks } "
                "CALL () { MATCH (v:Vector) RETURN count(v) AS vectors } "
                "RETURN documents, chunks, vectors"
            ),
        )
        record = records[0]
        return {name: int(record[name]) for name in ("documents", "chunks", "vectors")}

    def kb_version(self) -> str:
        """The knowledge base's commit counter and the epoch it was created in (a database
        wiped and filled again counts from 0 under another epoch): one indexed read."""
        records = self._guard(
            "kb_version",
            lambda: self._read(
                "OPTIONAL MATCH (m:RagvisorMeta {id: 'kb_version'}) "
                "RETURN m.epoch AS epoch, m.seq AS seq"
            ),
        )
        if not records or records[0]["seq"] is None:
            return "0"
        return f"{records[0]['epoch']}:{records[0]['seq']}"

    def close(self) -> None:
        """Close the driver's connections."""
        self._driver.close()

    # -- for `ragvisor doctor`: read-only, no schema set up, nothing written ------------------

    def _peek(self, what: str, query: str, **params: Any) -> list[neo4j.Record]:
        """One bounded read without setting the schema up."""
        return self._guard(what, lambda: self._read(query, **params), set_up=False)

    def recorded_generations(self) -> Generations:
        """The generations as recorded, like :meth:`generations` but read-only: a database no
        daemon has used yet reads as no generation at all. Raises StoreError naming the uri and
        the reason (unreachable, credentials refused) when the database cannot be read."""
        return self._generations(set_up=False)

    def vector_index_info(self, fingerprint: Fingerprint) -> VectorIndexInfo:
        """This fingerprint's vector index as Neo4j reports it (`SHOW VECTOR INDEXES`), and how
        many vectors the fingerprint has; creates nothing. Raises StoreError like
        :meth:`recorded_generations`."""
        name = f"ragvisor_vectors_{_fingerprint_id(fingerprint)}"
        shown = self._peek(
            "vector_index_info",
            "SHOW VECTOR INDEXES YIELD name, state, options WHERE name = $name "
            "RETURN state, options",
            name=name,
        )
        counted = self._peek(
            "vector_index_info",
            "MATCH (v:Vector {fingerprint: $fp}) RETURN count(v) AS n",
            fp=fingerprint.key,
        )
        vectors = int(counted[0]["n"]) if counted else 0
        if not shown:
            return VectorIndexInfo(name, exists=False, vectors=vectors)
        config = (shown[0]["options"] or {}).get("indexConfig") or {}
        dimensions = config.get("vector.dimensions")
        return VectorIndexInfo(
            name,
            exists=True,
            state=str(shown[0]["state"]),
            dimensions=int(dimensions) if dimensions is not None else None,
            vectors=vectors,
        )


def _bump_kb_version(tx: neo4j.ManagedTransaction) -> None:
    """Count a committed change, last in its transaction (every writer takes this node's lock
    last, so two daemons' commits cannot deadlock on it)."""
    tx.run(
        "MERGE (m:RagvisorMeta {id: 'kb_version'}) "
        "ON CREATE SET m.seq = 0, m.epoch = randomUUID() SET m.seq = m.seq + 1"
    ).consume()


@dataclass(frozen=True, slots=True)
class VectorIndexInfo:
    """One fingerprint's vector index as Neo4j reports it (:meth:`Neo4jStore.vector_index_info`):
    its name, whether it exists, its state (`ONLINE`, `POPULATING`, `FAILED`), its
    `vector.dimensions`, and the vectors stored under the fingerprint."""

    name: str
    exists: bool
    state: str | None = None
    dimensions: int | None = None
    vectors: int = 0
