"""llama.cpp behind a small synchronous interface: load, unload, tokenize, describe, generate.

Everything here blocks; the scheduler runs it on one dedicated thread so that llama.cpp is only
ever driven from that thread, while the event loop keeps answering `/api/version` and `/api/ps`.
Generation uses llama-cpp-python's `create_completion` (it handles stop strings, UTF-8 split
across tokens and the KV-cache prefix reuse); a `stopping_criteria` callback, called once per
sampled token, is the per-token hook for cancellation, token counting and timing.

Output of llama.cpp: its C log goes through our callback (ragvisor.llm.worker.llama_log) into
structlog, never straight to stderr. We construct `Llama` with ``verbose=True`` and swallow the
Python-level prints of its constructor instead of passing ``verbose=False``, because the latter
silences loads by pointing file descriptors 1 and 2 at /dev/null for the whole process, which
would drop log lines other threads write during a load.
"""

from __future__ import annotations

import contextlib
import gc
import io
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp import _internals as llama_internals

from ragvisor.allocator import release_free_memory
from ragvisor.errors import ModelFileError, NotReadyError, RagvisorError
from ragvisor.llm.worker.llama_log import LlamaLogRouter

DoneReason = Literal["stop", "length"]


class GenerationError(RagvisorError):
    """llama.cpp failed in the middle of a generation (a decode error, say)."""


@dataclass(frozen=True, slots=True)
class Sampling:
    """How to sample one generation; defaults are Ollama's (`api/types.go` DefaultOptions)."""

    max_tokens: int = 128  # <= 0: until the context is full
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None  # None: a fresh random seed per request, as Ollama's -1
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineStats:
    """What one generation did, as the engine counts it in Ollama's terms (durations in
    nanoseconds); the daemon's side reads it as `core.model.GenerationStats`."""

    done_reason: DoneReason
    cancelled: bool
    prompt_eval_count: int
    prompt_eval_duration_ns: int
    eval_count: int
    eval_duration_ns: int


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """A GGUF file's description: its metadata (all values as text), parameters and size."""

    metadata: Mapping[str, str]
    n_params: int
    size_bytes: int

    @property
    def architecture(self) -> str:
        """`general.architecture`, e.g. ``gemma3``."""
        return self.metadata.get("general.architecture", "unknown")

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """Estimated f16 KV-cache size for a context of `n_ctx` tokens (0 when unknown).

        Layers x KV heads x (key + value width) x 2 bytes per token; what `/api/ps` adds to the
        weights to approximate the memory a loaded model holds.
        """
        arch = self.architecture
        try:
            layers = int(self.metadata[f"{arch}.block_count"])
            kv_heads = int(
                self.metadata.get(
                    f"{arch}.attention.head_count_kv", self.metadata[f"{arch}.attention.head_count"]
                )
            )
            width = int(self.metadata[f"{arch}.attention.key_length"]) + int(
                self.metadata[f"{arch}.attention.value_length"]
            )
        except (KeyError, ValueError):
            return 0
        return n_ctx * layers * kv_heads * width * 2


class LlamaEngine:
    """One GGUF model: at most one loaded copy, loaded with a given context size on demand.

    `load`, `unload` and `generate` must be called from one thread at a time (the scheduler's
    llama thread). `tokenize` and `facts` may be called from any thread: a lock keeps them from
    running while the model is being swapped, and tokenizing only reads the vocabulary.
    """

    def __init__(self, model_path: Path, *, threads: int, batch_size: int, log: Any) -> None:
        self._path = model_path
        self._threads = threads
        self._batch_size = batch_size
        self._log = log
        self._guard = threading.Lock()
        self._llm: llama_cpp.Llama | None = None
        self._n_ctx: int | None = None
        self._facts: ModelFacts | None = None
        LlamaLogRouter.install(log)

    @property
    def model_path(self) -> Path:
        """The GGUF file."""
        return self._path

    @property
    def loaded_n_ctx(self) -> int | None:
        """Context size of the loaded model, or None when nothing is loaded."""
        return self._n_ctx

    def load(self, n_ctx: int) -> bool:
        """Make the model resident with context `n_ctx`; True if it had to be (re)loaded.

        A different context size needs a new llama.cpp context, so the old copy is freed first:
        two copies never coexist. Raises ModelFileError if llama.cpp cannot load the file.
        """
        with self._guard:
            if self._llm is not None and self._n_ctx == n_ctx:
                return False
            self._free_locked()
            sink = io.StringIO()
            try:
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    llm = llama_cpp.Llama(
                        model_path=str(self._path),
                        n_ctx=n_ctx,
                        n_batch=self._batch_size,
                        n_threads=self._threads,
                        n_threads_batch=self._threads,
                        verbose=True,  # see the module docstring; printing is swallowed here
                    )
            except (ValueError, RuntimeError, OSError) as exc:
                raise ModelFileError(f"llama.cpp cannot load {self._path}: {exc}") from exc
            llm.verbose = False  # no timing prints on every completion
            self._llm = llm
            self._n_ctx = n_ctx
            if self._facts is None:
                self._facts = _facts_from(dict(llm.metadata), llm.model)
            return True

    def unload(self) -> bool:
        """Free the model and give the memory back to the OS; True if one was loaded."""
        with self._guard:
            return self._free_locked()

    def _free_locked(self) -> bool:
        llm, self._llm, self._n_ctx = self._llm, None, None
        if llm is None:
            return False
        llm.close()
        del llm
        gc.collect()
        release_free_memory()
        return True

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        """Token ids of `text` (special-token text is treated as plain text).

        Raises NotReadyError when the model is not loaded.
        """
        with self._guard:
            if self._llm is None:
                raise NotReadyError("the generator model is not loaded")
            return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False))

    def facts(self) -> ModelFacts:
        """The file's metadata, parameter count and size, read once.

        Without the model loaded this loads only the vocabulary (no weights, about a second) and
        frees it again. Raises ModelFileError if the file cannot be read.
        """
        with self._guard:
            if self._facts is None:
                self._facts = self._read_facts_locked()
            return self._facts

    def _read_facts_locked(self) -> ModelFacts:
        if self._llm is not None:
            return _facts_from(dict(self._llm.metadata), self._llm.model)
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            vocab = llama_internals.LlamaModel(
                path_model=str(self._path), params=params, verbose=True
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelFileError(f"llama.cpp cannot read {self._path}: {exc}") from exc
        try:
            return _facts_from(vocab.metadata(), vocab.model)
        finally:
            vocab.close()  # type: ignore[no-untyped-call]
            del vocab
            gc.collect()
            release_free_memory()

    def generate(
        self,
        prompt_tokens: Sequence[int],
        sampling: Sampling,
        *,
        cancel: threading.Event,
        on_piece: Callable[[str], None],
    ) -> EngineStats:
        """Generate from `prompt_tokens`, calling `on_piece` with each piece of text.

        Setting `cancel` stops the generation at the next token. The prompt must leave room
        for at least one token in the context. Raises NotReadyError when the model is not
        loaded and GenerationError when llama.cpp fails.
        """
        llm = self._llm
        if llm is None or self._n_ctx is None:
            raise NotReadyError("the generator model is not loaded")
        if len(prompt_tokens) >= self._n_ctx:
            raise GenerationError(
                f"prompt of {len(prompt_tokens)} tokens does not fit the context ({self._n_ctx})"
            )
        counter = _TokenCounter(cancel)
        started_ns = time.perf_counter_ns()
        done_reason: DoneReason = "length"
        try:
            if not _prefill(llm, prompt_tokens, cancel):
                return EngineStats(
                    done_reason="stop",
                    cancelled=True,
                    prompt_eval_count=len(prompt_tokens),
                    prompt_eval_duration_ns=time.perf_counter_ns() - started_ns,
                    eval_count=0,
                    eval_duration_ns=0,
                )
            chunks = llm.create_completion(
                list(prompt_tokens),
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                min_p=sampling.min_p,
                repeat_penalty=sampling.repeat_penalty,
                presence_penalty=sampling.presence_penalty,
                frequency_penalty=sampling.frequency_penalty,
                seed=sampling.seed if sampling.seed is not None else secrets.randbits(32),
                stop=list(sampling.stop),
                stream=True,
                stopping_criteria=llama_cpp.StoppingCriteriaList([counter]),
            )
            for chunk in cast("Any", chunks):
                choice = chunk["choices"][0]
                if choice["text"]:
                    on_piece(choice["text"])
                if choice["finish_reason"] == "stop":
                    done_reason = "stop"
        except (RuntimeError, ValueError) as exc:
            raise GenerationError(f"llama.cpp failed during generation: {exc}") from exc
        finally:
            _free_sampler(llm)
        ended_ns = time.perf_counter_ns()
        first_ns = counter.first_token_ns or ended_ns
        return EngineStats(
            done_reason=done_reason,
            cancelled=cancel.is_set(),
            prompt_eval_count=len(prompt_tokens),
            prompt_eval_duration_ns=first_ns - started_ns,
            eval_count=counter.sampled,
            eval_duration_ns=ended_ns - first_ns,
        )


class _TokenCounter:
    """The per-token hook: counts sampled tokens, notes the first one's time, checks cancel.

    `create_completion` calls its stopping criteria once per sampled token and once more after
    the loop, so the count of sampled tokens is the number of calls minus one.
    """

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel
        self._calls = 0
        self.first_token_ns: int | None = None

    @property
    def sampled(self) -> int:
        return max(self._calls - 1, 0)

    def __call__(self, _ids: npt.NDArray[np.intc], _logits: npt.NDArray[np.single]) -> bool:
        self._calls += 1
        if self.first_token_ns is None:
            self.first_token_ns = time.perf_counter_ns()
        return self._cancel.is_set()


def _prefill(llm: llama_cpp.Llama, tokens: Sequence[int], cancel: threading.Event) -> bool:
    """Evaluate the prompt batch by batch, checking `cancel` in between; False if cancelled.

    `create_completion` evaluates a prompt in one uninterruptible call, seconds for a long RAG
    prompt on two cores. Done here first, the prompt is in the KV cache when `create_completion`
    runs, which then samples at once. The part of the prompt the cache already holds from the
    previous request (a shared instruction prefix, say) is kept; the last token is always
    evaluated again so that its logits are fresh.
    """
    limit = min(llm.n_tokens, len(tokens) - 1)
    cached = 0
    if limit > 0:
        previous = llm.input_ids[:limit]
        differs = np.flatnonzero(previous != np.asarray(tokens[:limit], dtype=previous.dtype))
        cached = int(differs[0]) if differs.size else limit
    memory = llama_cpp.llama_get_memory(llm.ctx)
    if cached and (memory is None or not llama_cpp.llama_memory_seq_rm(memory, 0, cached, -1)):
        cached = 0  # partial removal unsupported: evaluate everything
    llm.n_tokens = cached
    for start in range(cached, len(tokens), llm.n_batch):
        if cancel.is_set():
            return False
        llm.eval(tokens[start : start + llm.n_batch])
    return True


def _free_sampler(llm: llama_cpp.Llama) -> None:
    """Free the sampler chain of the last generation now, not whenever the garbage collector runs.

    `Llama.generate` builds a new `LlamaSampler` for every completion and keeps it until the
    next one replaces it. The replaced chain is freed by its finalizer, which closes over the
    object itself: a reference cycle, so only Python's cyclic collector frees it, and that runs
    rarely in a process with few allocations. Each chain holds 3.1 MB of C memory at Gemma 3's
    262,144-token vocabulary (one `llama_token_data` per token). Measured on the pinned model,
    40 generations in a row: the heap in use grew 91 -> 211 MB, 3.1 MB per generation, until a
    full collection freed it; glibc kept the freed pages, so RSS stayed at the peak. The 10-minute
    soak showed the same as a worker RSS rising in steps (501 -> 542 MB). Closed here, the heap
    in use stays flat (see docs/performance.md, "Soak").
    """
    sampler = getattr(llm, "_sampler", None)
    if sampler is not None:
        setattr(llm, "_sampler", None)  # noqa: B010 - a private attribute of llama-cpp-python
        sampler.close()


def _facts_from(metadata: dict[str, str], model: Any) -> ModelFacts:
    return ModelFacts(
        metadata=metadata,
        n_params=int(llama_cpp.llama_model_n_params(model)),
        size_bytes=int(llama_cpp.llama_model_size(model)),
    )
