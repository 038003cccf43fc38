"""`/api/embed` with the daemon's ONNX sentence model, loaded on first use like any Ollama model.

Ollama cuts an over-long input silently unless the request says `truncate: false`, in which case
it answers 400. The embedder cuts at `embedder.max_tokens` on its own, so to tell a cut input
from one that fits we count tokens with the same tokenizer file, minus the embedder's truncation.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ragvisor.allocator import release_free_memory
from ragvisor.core.hashing import file_sha256
from ragvisor.core.protocols import Matrix
from ragvisor.embed.model_files import DEFAULT_MODEL
from ragvisor.embed.onnx import MODEL_FILE, TOKENIZER_FILE, OnnxEmbedder
from ragvisor.errors import InputError, ModelFileError
from ragvisor.llm.worker.catalog import EmbedderFacts
from ragvisor.llm.worker.slot import ModelSlot, finish_blocking

# all-MiniLM-L6-v2's parameter count (sentence-transformers' figure; the ONNX file does not say).
_DEFAULT_MODEL_PARAMS = 22_713_216
_DEFAULT_ONNX_SHA256 = next(f.sha256 for f in DEFAULT_MODEL.files if f.name == MODEL_FILE)
CONTEXT_EXCEEDED = "the input length exceeds the context length"


@dataclass(frozen=True, slots=True)
class LoadedEmbedder:
    """The embedder and an untruncated twin of its tokenizer, for counting input tokens."""

    embedder: OnnxEmbedder
    counter: Tokenizer

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, special tokens included, before any truncation."""
        return [len(encoding.ids) for encoding in self.counter.encode_batch(list(texts))]


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """Vectors plus Ollama's accounting."""

    embeddings: list[list[float]]
    load_duration_ns: int
    prompt_eval_count: int


EmbedderSlot = ModelSlot[LoadedEmbedder, None]


def load_embedder(build: Callable[[], OnnxEmbedder]) -> LoadedEmbedder:
    """Build the embedder and its counting tokenizer. Raises ModelFileError."""
    embedder = build()
    path = embedder.model_dir / TOKENIZER_FILE
    try:
        counter = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
        raise ModelFileError(f"cannot load tokenizer {path}: {exc}") from exc
    counter.no_truncation()
    counter.no_padding()
    return LoadedEmbedder(embedder=embedder, counter=counter)


def unload_embedder(_loaded: LoadedEmbedder) -> None:
    """Nothing to close: the ONNX session goes with the last reference, which the slot drops
    before it collects garbage and trims the heap.
    """


def describe(embedder: OnnxEmbedder) -> EmbedderFacts:
    """What `/api/show`, `/api/tags` and `/api/ps` say about this embedder."""
    model_path = embedder.model_dir / MODEL_FILE
    known = embedder.fingerprint.digest == _DEFAULT_ONNX_SHA256
    return EmbedderFacts(
        dimensions=embedder.fingerprint.dimensions,
        max_tokens=embedder.max_tokens,
        size_bytes=model_path.stat().st_size,
        n_params=_DEFAULT_MODEL_PARAMS if known else None,
    )


class EmbeddingService:
    """Embeds through the slot; describes the model without keeping it loaded."""

    def __init__(
        self,
        slot: EmbedderSlot,
        executor: Executor,
        *,
        build: Callable[[], OnnxEmbedder],
    ) -> None:
        self._slot = slot
        self._executor = executor
        self._build = build
        self._facts: EmbedderFacts | None = None
        self._digest: str | None = None
        self._model_path: Path | None = None

    @property
    def slot(self) -> EmbedderSlot:
        """The model's lifecycle (for `/api/ps` and unloading)."""
        return self._slot

    async def embed(
        self,
        texts: Sequence[str],
        *,
        name: str,
        keep_alive_s: float,
        truncate: bool,
        dimensions: int | None,
    ) -> EmbedResult:
        """Embed `texts` (none: just load). Raises InputError for an over-long input when
        `truncate` is false, ModelFileError when the model cannot be loaded.
        """
        async with self._slot.use(None, name=name, keep_alive_s=keep_alive_s) as lease:
            load_ns = lease.load_duration_ns
            self._remember(lease.resource.embedder)
            work = await self._run(lease.resource, texts, truncate=truncate) if texts else None
            # With keep_alive 0 the slot unloads on leaving this block; a reference held here
            # would keep the ONNX session (and its memory) alive past the unload.
            del lease
        if work is None:
            return EmbedResult([], load_ns, 0)
        matrix, counts, limit = work
        if dimensions is not None and dimensions < matrix.shape[1]:
            matrix = matrix[:, :dimensions]
            matrix = matrix / np.clip(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12, None)
        return EmbedResult(
            embeddings=matrix.astype(float).tolist(),
            load_duration_ns=load_ns,
            prompt_eval_count=sum(min(count, limit) for count in counts),
        )

    async def _run(
        self, loaded: LoadedEmbedder, texts: Sequence[str], *, truncate: bool
    ) -> tuple[Matrix, list[int], int]:
        loop = asyncio.get_running_loop()
        counts = await finish_blocking(
            loop.run_in_executor(self._executor, loaded.token_counts, list(texts))
        )
        limit = loaded.embedder.max_tokens
        if not truncate and any(count > limit for count in counts):
            raise InputError(CONTEXT_EXCEEDED)
        matrix = await finish_blocking(
            loop.run_in_executor(self._executor, loaded.embedder.embed, list(texts))
        )
        return matrix, counts, limit

    async def count_tokens(
        self, texts: Sequence[str], *, name: str, keep_alive_s: float
    ) -> list[int]:
        """Tokens of each text without special tokens (the token_count extension)."""
        loop = asyncio.get_running_loop()
        async with self._slot.use(None, name=name, keep_alive_s=keep_alive_s) as lease:
            counter = lease.resource.counter
            encodings = await finish_blocking(
                loop.run_in_executor(
                    self._executor,
                    lambda: counter.encode_batch(list(texts), add_special_tokens=False),
                )
            )
        return [len(encoding.ids) for encoding in encodings]

    def _remember(self, embedder: OnnxEmbedder) -> None:
        if self._facts is None:
            self._facts = describe(embedder)
            self._digest = embedder.fingerprint.digest
            self._model_path = embedder.model_dir / MODEL_FILE

    def facts_blocking(self) -> tuple[EmbedderFacts, str, Path]:
        """Facts, sha256 digest and model path, read once (blocking: may build the embedder
        once, without keeping it). Raises ModelFileError.
        """
        if self._facts is None:
            loaded = self._slot.loaded()
            if loaded is None:
                embedder = self._build()
                self._remember(embedder)
                del embedder
                gc.collect()
                release_free_memory()
        assert self._facts is not None
        assert self._model_path is not None
        if self._digest is None:
            self._digest = file_sha256(self._model_path)
        return self._facts, self._digest, self._model_path
