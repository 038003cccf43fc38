"""The seams of the core: a store, an embedder and a generator, as small structural protocols.

The embedded default implements them with SQLite and ONNX Runtime; production adds Neo4j and
Ollama behind the same shapes. The core never imports an implementation.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ragvisor.core.model import (
    ChatMessage,
    Chunk,
    ChunkRecord,
    DocumentVersion,
    Fingerprint,
    Generations,
    GenerationStats,
    Lease,
    Retrying,
    ScoredChunk,
    SourceDocument,
    StoredDocument,
    TextDelta,
)

Vector = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float32]


class Clock(Protocol):
    """Monotonic seconds: ``time.monotonic`` (or ``perf_counter``) in the daemon,
    ``ragvisor.testing.FakeClock`` in tests, which moves only when the test moves it."""

    def __call__(self) -> float:
        """Seconds since an arbitrary start; never goes back."""
        ...


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def fingerprint(self) -> Fingerprint:
        """Identity of the model; stored beside every vector it produced."""
        ...

    @property
    def batch_size(self) -> int:
        """How many texts the sync should hand to :meth:`embed` at once."""
        ...

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed texts; returns an array of shape (len(texts), dimensions)."""
        ...


class TokenCountStore(Protocol):
    """Prompt token counts of chunk texts, kept beside the chunks like vectors: keyed by (text
    hash, counter), so a changed text or another generator model simply has no count yet.

    Counts are a cache, not content: writing or pruning them changes no search result, so it
    leaves :meth:`Store.kb_version` as it was.
    """

    def token_counts(self, hashes: Sequence[str], counter: str) -> dict[str, int]:
        """The stored counts of these text hashes under this counter (missing ones left out)."""
        ...

    def uncounted_texts(self, counter: str, limit: int) -> dict[str, str]:
        """Up to ``limit`` chunk texts, by text hash, that have no count under this counter."""
        ...

    def put_token_counts(self, counter: str, counts: Mapping[str, int]) -> None:
        """Store counts (text hash to tokens) under this counter, replacing any there."""
        ...

    def prune_token_counts(self, counter: str) -> int:
        """Drop counts of other counters and of hashes no chunk has any more; returns how many."""
        ...


class Store(TokenCountStore, Protocol):
    """Documents, chunks, vectors and the indexes over them (and the chunks' token counts).

    Contract every implementation keeps (the contract tests in tests/ check it):
    - :meth:`commit_document` is atomic: after a crash either the old or the new version of the
      document is stored, never a mix, never neither.
    - a vector is keyed by (chunk text hash, fingerprint); a chunk whose hash has a vector under
      the active fingerprint is never embedded again.
    - searches see every committed document without a reload — from any process using the
      same store.
    - the generation records are written in one step, so a reader sees the old pair or the new.
    - the sync lease has one holder at a time, across processes and hosts (compare-and-set by
      the store's own clock).
    """

    def stored_documents(self) -> dict[str, StoredDocument]:
        """Every stored document by id, with its chunk hashes in position order."""
        ...

    def hashes_with_vectors(self, fingerprint: Fingerprint) -> set[str]:
        """Text hashes that already have a vector under this fingerprint."""
        ...

    def commit_document(
        self,
        document: SourceDocument,
        chunks: Sequence[Chunk],
        new_vectors: Mapping[str, Vector],
        fingerprint: Fingerprint,
        chunker_version: str,
    ) -> None:
        """Write the document's new chunks and the vectors computed for them, then retire the old.

        ``new_vectors`` maps text hash to vector for hashes that had none under ``fingerprint``;
        every chunk's hash must then have a vector, else :class:`StoreError` and nothing changes.
        """
        ...

    def delete_document(self, doc_id: str) -> None:
        """Remove a document, its chunks and vectors no other chunk uses."""
        ...

    def prune_vectors(self, *keep: Fingerprint) -> int:
        """Drop vectors of fingerprints not in ``keep`` and of hashes no chunk has; returns how
        many."""
        ...

    def read_document(self, doc_id: str) -> DocumentVersion | None:
        """A stored document with its chunks in position order (for copying a store)."""
        ...

    def vectors(self, hashes: Sequence[str], fingerprint: Fingerprint) -> dict[str, Vector]:
        """The stored vectors of these text hashes under this fingerprint (missing ones left
        out)."""
        ...

    def vector_counts(self) -> dict[str, tuple[int, int]]:
        """Per fingerprint key: (dimensions, how many vectors)."""
        ...

    def generations(self) -> Generations:
        """The active generation (searches use it) and the one being built, if any."""
        ...

    def set_generations(self, generations: Generations) -> None:
        """Record both generations in one write: activating a complete one is a single step."""
        ...

    def take_lease(self, holder: str, ttl_s: float, *, replacing: str | None = None) -> Lease:
        """Take the sync lease for ``ttl_s`` if it is free, expired, already ``holder``'s (a
        renewal) or held by ``replacing`` (a holder known to be dead); atomic across processes
        and hosts. Returns the lease as it now stands — another holder's when it could not be
        taken."""
        ...

    def release_lease(self, holder: str) -> None:
        """Give the sync lease up, if ``holder`` has it."""
        ...

    def read_lease(self) -> Lease | None:
        """The sync lease, expired or not; None when nobody ever took it or it was released."""
        ...

    def load_index(self, fingerprint: Fingerprint) -> int:
        """Build the dense index of this fingerprint now (at start-up) rather than at the first
        search; returns how many chunks it holds."""
        ...

    def dense_search(self, query: Vector, k: int, fingerprint: Fingerprint) -> list[ScoredChunk]:
        """Top-k chunks by cosine similarity among vectors of this fingerprint."""
        ...

    def keyword_search(self, query: str, k: int) -> list[ScoredChunk]:
        """Top-k chunks by full-text (BM25) relevance, any query word matching.

        Chunks containing a name of the query as written (``sync.lock``, ``kill-9``: its parts
        adjacent, in order) come first, marked ``exact_name``; hybrid search counts them twice.
        """
        ...

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        """Chunks with their document's path and title, in the order asked (missing ids dropped)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counts of documents, chunks and vectors, for status and readiness."""
        ...

    def kb_version(self) -> str:
        """An opaque token that changes whenever a committed change (a document written or
        deleted) could change what a search returns — from any process using the store; cheap
        enough to read per `/ask` (the answer cache's scope)."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class TokenCounter(Protocol):
    """Counts prompt tokens with the generator model's own tokenizer, away from the serving
    path (`ragvisor.llm.token_counter`: the GGUF's vocabulary in a short-lived process)."""

    @property
    def key(self) -> str:
        """Identity of the tokenizer (the model file's sha256); may take a while the first time."""
        ...

    @property
    def known_key(self) -> str | None:
        """:attr:`key` if already worked out, else None — cheap, for the serving path."""
        ...

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text without special tokens. Raises BackendError."""
        ...

    def close(self) -> None:
        """End the counting process, if one is running."""
        ...


class Reranker(Protocol):
    """Scores (query, passage) pairs together — a cross-encoder — to reorder the top candidates
    of a search (`ragvisor.rerank`)."""

    @property
    def name(self) -> str:
        """The model, as logs and `/status` show it."""
        ...

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage, higher is better; comparable within one call."""
        ...


class Generator(Protocol):
    """Writes answers: a chat model behind Ollama's API (the embedded worker or Ollama itself).

    ``chat`` yields :class:`TextDelta` pieces and ends with one :class:`GenerationStats`
    (a supervised generator may interject :class:`Retrying` when it starts over);
    closing the iterator early cancels the generation at the backend.
    """

    @property
    def model(self) -> str:
        """The model name sent with every request."""
        ...

    @property
    def num_ctx(self) -> int:
        """Context window requested from the backend, in tokens."""
        ...

    @property
    def num_predict(self) -> int:
        """Most tokens an answer may have."""
        ...

    def chat(
        self, messages: Sequence[ChatMessage], *, until: float | None = None
    ) -> AsyncGenerator[TextDelta | GenerationStats | Retrying, None]:
        """Stream an answer to the messages, finishing by `until` (time.monotonic()) if given.

        A `Retrying` event voids the text streamed so far.
        """
        ...

    async def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Token counts with the model's own tokenizer, or None when the backend cannot say."""
        ...


class ServedGenerator(Generator, Protocol):
    """The generator as the daemon serves it: answers, plus a cheap probe and a shutdown
    (`ragvisor.supervise.calls.SupervisedGenerator`)."""

    @property
    def base_url(self) -> str:
        """Where the backend answers."""
        ...

    async def version(self, timeout: float = 2.0) -> str:
        """The backend's version: loads no model."""
        ...

    async def loaded(self, timeout: float = 5.0) -> bool:
        """Whether the model is resident in the backend's memory (`/api/ps`)."""
        ...

    async def unload(self) -> None:
        """Ask the backend to drop the model from memory now."""
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...


class ProcessRunner(Protocol):
    """A child program the daemon started and watches: the embedded worker
    (`ragvisor.supervise.worker_process.WorkerProcess`)."""

    @property
    def pid(self) -> int | None:
        """The running child's process id, if any (the memory guard reads its RSS)."""
        ...

    def wait_ready(self) -> None:
        """Block until the child answers. Raises BackendUnavailable when it does not."""
        ...

    def describe(self) -> dict[str, Any]:
        """State for `/readyz` and `/status`: state, pid, url, restarts, last exit."""
        ...

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after its timeout)."""
        ...


class RemoteEmbedder(Protocol):
    """An embedder reached over HTTP, whose connections the daemon closes at the end
    (`ragvisor.embed.ollama.OllamaEmbedder`)."""

    @property
    def base_url(self) -> str:
        """Where the server answers."""
        ...

    def loaded(self, timeout_s: float = 5.0) -> bool:
        """Whether the model is resident in the server's memory."""
        ...

    def unload(self, timeout_s: float = 10.0) -> None:
        """Ask the server to drop the model from memory now."""
        ...

    def close(self) -> None:
        """Close the connections."""
        ...
