"""Value objects shared by the core, the stores and the embedders."""

from __future__ import annotations

from dataclasses import dataclass, field

# How many skipped files a sync report's JSON lists (all are counted, and each is logged).
SKIPPED_LISTED_MAX = 100


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Identity of an embedding model: a different fingerprint means every vector is re-embedded.

    Keyed on the digest of the model file and the dimensions, not the name, so renaming a model
    does not force a re-embed and a new file behind the same name does. The name is for people.
    """

    name: str
    digest: str
    dimensions: int

    @property
    def key(self) -> str:
        """Compact string form stored beside every vector: digest prefix and dimensions."""
        return f"sha256:{self.digest[:16]}/{self.dimensions}"

    @property
    def label(self) -> str:
        """Name plus key, for logs and status pages."""
        return f"{self.name} ({self.key})"

    @classmethod
    def from_key(cls, key: str, name: str = "") -> Fingerprint:
        """A fingerprint whose :attr:`key` is ``key`` (what stores compare), for vectors whose
        model is known only by the key they are stored under."""
        digest, _, dimensions = key.removeprefix("sha256:").partition("/")
        return cls(name, digest, int(dimensions))


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a document, the unit that is embedded and retrieved."""

    chunk_id: str
    doc_id: str
    position: int
    text: str
    text_sha256: str
    heading: str
    chunker_version: str


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """A document read from a corpus: its text exactly as hashed and chunked."""

    doc_id: str
    corpus_root: str
    path: str  # relative to corpus_root, with forward slashes
    title: str
    content_sha256: str
    text: str
    size_bytes: int
    mtime_ns: int
    # size:mtime:ctime:inode when the file was read, or "" when it had been modified less than
    # STABLE_AFTER_S before (a later edit in the same clock tick could go unnoticed).
    stamp: str = ""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """What the store remembers of a document, enough to plan the next sync."""

    doc_id: str
    corpus_root: str
    path: str
    content_sha256: str
    chunker_version: str
    chunk_hashes: tuple[str, ...]  # text_sha256 per position
    stamp: str = ""  # the file's stamp at its last commit ("" = never trust, always re-read)


@dataclass(frozen=True, slots=True)
class DocumentVersion:
    """A stored document whole — what it was read as and its chunks — as a copy needs it.

    ``source.text`` is empty: a store keeps the chunks' text, not the file's.
    """

    source: SourceDocument
    chunks: tuple[Chunk, ...]
    chunker_version: str


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """A stored chunk joined with its document, as retrieval returns it."""

    chunk_id: str
    doc_id: str
    corpus_root: str
    path: str
    title: str
    heading: str
    position: int
    text: str
    text_sha256: str


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """A chunk id with a retrieval score (cosine for dense, rank-based for keyword)."""

    chunk_id: str
    score: float
    # Keyword search: the chunk contains a name of the query (``sync.lock``) as written.
    exact_name: bool = False


@dataclass(slots=True)
class Counts:
    """new / changed / unchanged / deleted counters, for documents or chunks."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0

    def subtract(self, other: Counts) -> None:
        """Take `other`'s counts off these (a planned document that was skipped after all)."""
        self.new -= other.new
        self.changed -= other.changed
        self.unchanged -= other.unchanged
        self.deleted -= other.deleted

    def as_dict(self) -> dict[str, int]:
        """Plain mapping for JSON output."""
        return {
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
        }


@dataclass(slots=True)
class SyncReport:
    """What one sync did; printed by `ragvisor sync --json` and logged as `sync.finished`.

    ``skipped`` holds every file that could not be indexed (``path``, shown with ``\\xff`` for
    bytes that are not UTF-8, and ``reason``), read errors and documents with a chunk the
    embedding model refused alike. The JSON shape lists the first
    ``SKIPPED_LISTED_MAX`` of them and counts all in ``skipped_count``: the report is served in
    every `/status` answer, and a folder of 5,000 Latin-1 files must not make that megabytes
    (each skip is also logged, as ``sync.file_skipped`` or ``sync.document_skipped``).
    """

    documents: Counts = field(default_factory=Counts)
    chunks: Counts = field(default_factory=Counts)
    embeddings_computed: int = 0
    embeddings_reused: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    fingerprint: str = ""
    changed_because: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """Plain mapping for JSON output."""
        return {
            "documents": self.documents.as_dict(),
            "chunks": self.chunks.as_dict(),
            "embeddings_computed": self.embeddings_computed,
            "embeddings_reused": self.embeddings_reused,
            "changed_because": dict(self.changed_because),
            "skipped": self.skipped[:SKIPPED_LISTED_MAX],
            "skipped_count": len(self.skipped),
            "seconds": round(self.seconds, 3),
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a chat request, in Ollama's roles: system, user, assistant."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of generated text, as it streams."""

    text: str


@dataclass(frozen=True, slots=True)
class Retrying:
    """The answer so far is void: the backend failed mid-answer and attempt `attempt` begins."""

    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class GenerationStats:
    """The backend's own account of a generation (Ollama's final-chunk fields, in ns).

    A field the backend did not report is None: "unknown", never zero.
    """

    done_reason: str | None = None
    load_ns: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_ns: int | None = None
    eval_count: int | None = None
    eval_ns: int | None = None
    total_ns: int | None = None

    @property
    def tokens_per_s(self) -> float | None:
        """Generation speed: eval_count / eval_duration."""
        if not self.eval_count or not self.eval_ns:
            return None
        return round(self.eval_count / self.eval_ns * 1e9, 2)

    def timings_ms(self) -> dict[str, float]:
        """The backend's phases in milliseconds: load, prompt eval, generation."""
        phases = {
            "load": self.load_ns,
            "prompt_eval": self.prompt_eval_ns,
            "generation": self.eval_ns,
        }
        return {name: round(ns / 1e6, 3) for name, ns in phases.items() if ns is not None}


@dataclass(frozen=True, slots=True)
class Generation:
    """One complete set of vectors: every chunk embedded by one model.

    ``embedder`` holds the `[embedder]` settings that made it (as JSON values), so a daemon
    can load that model again to embed queries for it while a newer generation is built.
    """

    fingerprint: str  # Fingerprint.key
    model: str  # Fingerprint.name, for people
    dimensions: int
    embedder: dict[str, object] = field(default_factory=dict, hash=False, compare=False)
    started_at: float = 0.0  # unix time the generation was begun

    def as_dict(self) -> dict[str, object]:
        """JSON shape (stored, and shown in `/status` without the settings)."""
        return {
            "fingerprint": self.fingerprint,
            "model": self.model,
            "dimensions": self.dimensions,
            "embedder": dict(self.embedder),
            "started_at": self.started_at,
        }

    def identity(self) -> Fingerprint:
        """The fingerprint its vectors are stored under (stores compare only its key)."""
        return Fingerprint.from_key(self.fingerprint, self.model)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Generation:
        """Back from :meth:`as_dict`."""
        embedder = data.get("embedder")
        return cls(
            fingerprint=str(data["fingerprint"]),
            model=str(data.get("model", "")),
            dimensions=int(str(data.get("dimensions", 0))),
            embedder=dict(embedder) if isinstance(embedder, dict) else {},
            started_at=float(str(data.get("started_at", 0.0))),
        )


@dataclass(frozen=True, slots=True)
class Generations:
    """The store's generations: ``active`` serves every search; ``building`` (during a model
    change) is being embedded and becomes active, in one write, once complete."""

    active: Generation | None = None
    building: Generation | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """Who may sync the store now, and for how much longer (by the store's clock)."""

    holder: str
    expires_in_s: float  # negative once expired: free to take

    @property
    def expired(self) -> bool:
        """Whether another daemon may take it."""
        return self.expires_in_s <= 0
