"""The store benchmark's texts and vectors: real English passages (docstring paragraphs of the
Python standard library, then of the packages in the venv, in sorted file order), their real
MiniLM embeddings (cached, since 10k of them take minutes on a 2-core box), the perturbed
copies that take a store to 100k chunks without embedding 100k texts, and the two ways they
reach a store: straight through ``Store.commit_document`` (the fill) and as Markdown files for
``ragvisor sync`` (the first-sync comparison).

Same Python and same pinned packages → same passages, in the same order, on every machine.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sysconfig
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import REPO, progress
from ragvisor.core.chunking import CHUNKER_VERSION, ChunkingSpec, chunk_document
from ragvisor.core.documents import read_document
from ragvisor.core.hashing import chunk_id, document_id, sha256_text
from ragvisor.core.model import Chunk, Fingerprint, SourceDocument
from ragvisor.core.protocols import Embedder, Store

# Paragraphs shorter than this are mostly "Return the foo." one-liners; longer ones are cut at
# a sentence end (MiniLM reads 256 tokens; a default chunk is at most 800 characters).
PASSAGE_MIN_CHARS = 100
PASSAGE_MAX_CHARS = 700
QUERY_MAX_WORDS = 12
QUERY_MIN_WORDS = 3  # shorter ones are mostly markup (`>>> ...`) and validate as empty
SKIPPED_DIRS = {"test", "tests", "idle_test", "__pycache__"}


@dataclass(frozen=True, slots=True)
class Passage:
    """One docstring paragraph and where it came from."""

    source: str  # module path relative to its root
    heading: str  # qualified name of the documented object
    text: str


def _python_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if SKIPPED_DIRS.intersection(rel) or "site-packages" in rel:
            continue
        yield path


def _docstrings(path: Path) -> Iterator[tuple[str, str]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                yield getattr(node, "name", path.stem), doc


def _cut(text: str) -> str:
    if len(text) <= PASSAGE_MAX_CHARS:
        return text
    head = text[:PASSAGE_MAX_CHARS]
    end = head.rfind(". ")
    return head[: end + 1] if end > PASSAGE_MIN_CHARS else head


def passages(count: int) -> list[Passage]:
    """``count`` distinct passages: the standard library's docstring paragraphs, then the
    venv's packages', each folded to one line. Raises RuntimeError if there are too few."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    seen: set[str] = set()
    found: list[Passage] = []
    for root in roots:
        for path in _python_files(root):
            for name, doc in _docstrings(path):
                for paragraph in doc.split("\n\n"):
                    text = _cut(" ".join(paragraph.split()))
                    if len(text) < PASSAGE_MIN_CHARS or text in seen:
                        continue
                    seen.add(text)
                    found.append(Passage(str(path.relative_to(root)), name, text))
                    if len(found) >= count:
                        return found
    raise RuntimeError(f"only {len(found)} docstring paragraphs found; {count} wanted")


def query_of(passage: Passage) -> str:
    """What someone looking for this passage might type: its first sentence, at most
    QUERY_MAX_WORDS words, without markup."""
    sentence = re.split(r"(?<=[.?!])\s", passage.text, maxsplit=1)[0]
    words = re.sub(r"[`*:>\[\]()]", " ", sentence).split()[:QUERY_MAX_WORDS]
    return " ".join(words).rstrip(".,;")


def embed_cached(embedder: Embedder, texts: Sequence[str], cache: Path) -> tuple[Any, float]:
    """The embedder's vectors of ``texts`` (float32, one row each) and the seconds it took
    (0 when read from ``cache``: keyed by the model and every text, so a stale file is never
    used)."""
    digest = hashlib.sha256(embedder.fingerprint.key.encode())
    for text in texts:
        digest.update(text.encode() + b"\0")
    path = cache / f"embeddings-{digest.hexdigest()[:20]}.npy"
    if path.exists():
        return np.load(path), 0.0
    started = time.perf_counter()
    rows = []
    step = 500
    for at in range(0, len(texts), step):
        rows.append(embedder.embed(texts[at : at + step]))
        done = at + len(rows[-1])
        rate = done / (time.perf_counter() - started)
        progress(f"embedding: {done}/{len(texts)} ({rate:.1f} texts/s)")
    matrix = np.vstack(rows).astype(np.float32)
    seconds = time.perf_counter() - started
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, matrix)
    return matrix, seconds


def perturbed(real: Any, total: int, seed: int) -> Any:
    """``total`` unit vectors: the real ones, then copies of them in turn, each moved by
    Gaussian noise of norm 0.4-0.8 and renormalised (cosine 0.78-0.93 to its original: a
    paraphrase, not a duplicate)."""
    rng = np.random.default_rng(seed)
    n_real = len(real)
    extra = total - n_real
    if extra <= 0:
        return real[:total]
    base = real[np.arange(extra) % n_real]
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise *= rng.uniform(0.4, 0.8, size=(extra, 1)) / np.linalg.norm(noise, axis=1, keepdims=True)
    moved = base + noise
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    return np.vstack([real, moved.astype(np.float32)])


def fill_text(items: Sequence[Passage], index: int) -> str:
    """Chunk text number ``index`` of the fill: the passage itself, then (beyond the real
    ones) the passage with its copy number appended, so every chunk has its own hash."""
    passage = items[index % len(items)]
    copy = index // len(items)
    return passage.text if copy == 0 else f"{passage.text} (copy {copy})"


def fill_store(
    store: Store,
    items: Sequence[Passage],
    vectors: Any,
    span: range,
    fingerprint: Fingerprint,
    corpus_root: str,
    chunks_per_document: int,
    threads: int,
) -> None:
    """Commit chunks ``span`` (indexes into ``vectors``) as documents of
    ``chunks_per_document`` chunks, through ``Store.commit_document`` as a sync would, from
    ``threads`` threads (the first document alone: it creates the vector index)."""
    starts = list(range(span.start, span.stop, chunks_per_document))

    def commit(start: int) -> None:
        stop = min(start + chunks_per_document, span.stop)
        path = f"fill/doc-{start // chunks_per_document:05d}.md"
        doc_id = document_id(corpus_root, path)
        texts = [fill_text(items, i) for i in range(start, stop)]
        first = items[start % len(items)]
        chunks = [
            Chunk(
                chunk_id(doc_id, pos, sha256_text(text)),
                doc_id,
                pos,
                text,
                sha256_text(text),
                items[i % len(items)].heading,
                CHUNKER_VERSION,
            )
            for pos, (i, text) in enumerate(zip(range(start, stop), texts, strict=True))
        ]
        document = SourceDocument(
            doc_id=doc_id,
            corpus_root=corpus_root,
            path=path,
            title=first.source,
            content_sha256=sha256_text("\n\n".join(texts)),
            text="",
            size_bytes=sum(len(t) + 2 for t in texts),
            mtime_ns=0,
        )
        new = {c.text_sha256: vectors[i] for c, i in zip(chunks, range(start, stop), strict=True)}
        store.commit_document(document, chunks, new, fingerprint, CHUNKER_VERSION)

    if not starts:
        return
    commit(starts[0])
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for done, _ in enumerate(pool.map(commit, starts[1:]), start=2):
            if done % 200 == 0:
                progress(f"fill: {done}/{len(starts)} documents")


def write_sync_corpus(
    folder: Path, items: Sequence[Passage], target_chunks: int, chunking: ChunkingSpec
) -> tuple[list[str], int]:
    """Markdown files (one per source module: its docstring paragraphs under `##` headings of
    the documented names) until the real chunker counts ``target_chunks``; returns the distinct
    chunk texts in document order (what the sync embeds) and the number of files."""
    folder.mkdir(parents=True, exist_ok=True)
    by_source: dict[str, list[Passage]] = {}
    for passage in items:
        by_source.setdefault(passage.source, []).append(passage)
    texts: list[str] = []
    seen: set[str] = set()
    files = 0
    for source, group in by_source.items():
        if len(texts) >= target_chunks:
            break
        parts = [f"# {source}"]
        heading = ""
        for passage in group:
            if passage.heading != heading:
                heading = passage.heading
                parts.append(f"## {heading}")
            parts.append(passage.text)
        path = folder / f"doc-{files:04d}.md"
        path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
        files += 1
        doc = read_document(folder, path, max_file_bytes=2_000_000)
        for chunk in chunk_document(doc, chunking):
            if chunk.text_sha256 not in seen:
                seen.add(chunk.text_sha256)
                texts.append(chunk.text)
    return texts, files


def model_folder(work: Path) -> Path:
    """The pinned default model, assembled once for every process of the run."""
    from ragvisor.embed.model_files import assemble_default_model  # noqa: PLC0415

    return assemble_default_model(work / "models" / "minilm")


CACHE = REPO / "bench" / "out" / "cache"
