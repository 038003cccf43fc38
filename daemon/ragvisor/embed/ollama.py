"""The production embedder: Ollama's `POST /api/embed`, reached over HTTP from worker threads.

The sync and the search call :meth:`OllamaEmbedder.embed` from threads, so this adapter is
synchronous and shares one thread-safe `httpx.Client`. Model identity follows Ollama, not the
configured name: the fingerprint is the digest `/api/tags` lists for the model plus the vector
size `/api/show` reports, so `ollama cp` to a new name keeps every stored vector and a new
`ollama pull` behind the same name re-embeds. Every request sends `truncate: false`: Ollama
would otherwise cut an over-long chunk silently and store a vector of half a chunk.

Each call is bounded (connect, time to the first byte of the answer, the whole call) by
:class:`ragvisor.ollama.sync_calls.SyncCalls`, which maps httpx's exceptions and Ollama's error
statuses to :mod:`ragvisor.errors` as the generator's client does. Retries, the circuit breaker
and restarts belong to the supervision layer, which calls the methods below.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx
import numpy as np
import structlog

from ragvisor.core.model import Fingerprint
from ragvisor.core.protocols import Matrix
from ragvisor.errors import BackendError, BackendRejected, ConfigError, InputRefused
from ragvisor.ollama.names import bare_digest, find_model
from ragvisor.ollama.sync_calls import SyncCalls
from ragvisor.ollama.wire import Deadlines, is_context_exceeded, keep_alive_value


class ModelChanged(BackendError):
    """The server answered with vectors another model made: retrying cannot help, only a new
    fingerprint (reconnect) and a re-embed can.
    """

    retryable = False


class OllamaEmbedder:
    """Implements :class:`ragvisor.core.protocols.Embedder` with an Ollama server.

    Nothing is contacted at construction: :meth:`connect` (or the first use of
    :attr:`fingerprint`) resolves the model. Safe to use from several threads.
    """

    def __init__(
        self,
        url: str,
        *,
        model: str,
        batch_size: int,
        num_ctx: int,
        keep_alive: str,
        deadlines: Deadlines,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base_url = url.rstrip("/")
        self._model = model
        self._batch_size = batch_size
        self._num_ctx = num_ctx
        self._keep_alive = keep_alive
        self._deadlines = deadlines
        self._http = SyncCalls(self._base_url, deadlines, backend="embedder", transport=transport)
        self._fingerprint: Fingerprint | None = None
        self._context_length: int | None = None
        self._connect_lock = threading.Lock()
        self._log = structlog.get_logger(component="embedder")

    # -- identity ----------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model name every request carries, as configured."""
        return self._model

    @property
    def base_url(self) -> str:
        """The Ollama server's address, without a trailing slash."""
        return self._base_url

    @property
    def batch_size(self) -> int:
        """Texts per `/api/embed` request; the sync hands over this many at once."""
        return self._batch_size

    @property
    def fingerprint(self) -> Fingerprint:
        """The model's identity, resolved by :meth:`connect` on first use and then cached.

        Raises what :meth:`connect` raises while it is not resolved yet.
        """
        fingerprint = self._fingerprint
        if fingerprint is None:
            with self._connect_lock:  # one resolution for all the threads that wait here
                fingerprint = self._fingerprint or self.connect()
        return fingerprint

    def connect(self, timeout_s: float = 30.0) -> Fingerprint:
        """Resolve the fingerprint now (digest from `/api/tags`, dimensions from `/api/show`).

        Always asks the server, so calling it again picks up a model re-pulled since; the
        result replaces the cached fingerprint (`embedder.fingerprint_changed` is logged when it
        differs). Call it between syncs, never during one: vectors stored by a running sync
        carry the fingerprint it started with.

        Raises BackendUnavailable (server unreachable or busy), BackendTimeout, ConfigError (the
        model is not pulled, or is not an embedding model) or BackendError (`/api/show` has no
        vector size).
        """
        started = time.perf_counter()
        until = time.monotonic() + timeout_s
        tags = self._models("/api/tags", until)
        entry = find_model(tags, self._model)
        if entry is None:
            raise ConfigError(self._not_pulled_message(tags))
        digest = _digest_of(entry, self._model)
        shown = self._call("POST", "/api/show", {"model": self._model}, what="show", until=until)
        dimensions, context_length = self._read_show(shown)
        fingerprint = Fingerprint(name=self._model, digest=digest, dimensions=dimensions)
        previous, self._fingerprint = self._fingerprint, fingerprint
        self._context_length = context_length
        if previous is not None and previous.key != fingerprint.key:
            self._log.warning(
                "embedder.fingerprint_changed",
                model=self._model,
                previous=previous.key,
                fingerprint=fingerprint.key,
            )
        self._log.info(
            "embedder.connected",
            model=self._model,
            url=self._base_url,
            fingerprint=fingerprint.key,
            context_length=context_length,
            duration_ms=_ms_since(started),
        )
        return fingerprint

    def _not_pulled_message(self, tags: list[dict[str, Any]]) -> str:
        names = ", ".join(str(entry.get("name") or entry.get("model")) for entry in tags)
        return (
            f'embedder.model: "{self._model}" is not on the Ollama server at {self._base_url}; '
            f"run `ollama pull {self._model}` there (it has: {names or 'no models'})"
        )

    def _read_show(self, shown: dict[str, Any]) -> tuple[int, int | None]:
        """(dimensions, trained context length) from `/api/show`'s `model_info`."""
        capabilities = shown.get("capabilities")
        if isinstance(capabilities, list) and "embedding" not in capabilities:
            raise ConfigError(
                f'embedder.model: "{self._model}" is not an embedding model (Ollama says it can '
                f"do: {', '.join(map(str, capabilities)) or 'nothing'}); pick one such as "
                "nomic-embed-text"
            )
        info = shown.get("model_info")
        info = info if isinstance(info, dict) else {}
        arch = info.get("general.architecture") or "<architecture>"
        dimensions = info.get(f"{arch}.embedding_length")
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            raise BackendError(
                f'/api/show for "{self._model}" has no {arch}.embedding_length in model_info: '
                "is it an embedding model?"
            )
        context = info.get(f"{arch}.context_length")
        return dimensions, context if isinstance(context, int) and context > 0 else None

    # -- embedding ---------------------------------------------------------------------------

    def embed(self, texts: Sequence[str], *, until: float | None = None) -> Matrix:
        """Embed texts, one `/api/embed` request per `batch_size` of them, in order.

        Returns float32 of shape (len(texts), dimensions), rows L2-normalised. `until`
        (time.monotonic()) ends the call early when the caller's own deadline comes first.

        Raises BackendUnavailable (unreachable, 503/429), BackendTimeout (a deadline passed,
        `phase` says which), InputRefused (a text longer than the model's context),
        BackendRejected (another 4xx: unknown model), BackendOutOfMemory, ModelChanged (vectors
        of another size than the fingerprint's) or BackendError (5xx, a cut connection, a
        malformed answer).
        """
        fingerprint = self.fingerprint
        out: Matrix = np.empty((len(texts), fingerprint.dimensions), dtype=np.float32)
        for start in range(0, len(texts), self._batch_size):
            batch = [str(text) for text in texts[start : start + self._batch_size]]
            out[start : start + len(batch)] = self._embed_batch(batch, fingerprint, until)
        return out

    def _embed_batch(
        self, batch: list[str], fingerprint: Fingerprint, until: float | None
    ) -> Matrix:
        started = time.perf_counter()
        body = {
            "model": self._model,
            "input": batch,
            "truncate": False,
            "options": {"num_ctx": self._num_ctx},
            "keep_alive": keep_alive_value(self._keep_alive),
        }
        d = self._deadlines
        cap, phase = time.monotonic() + d.total_s, "total"
        if until is not None and until < cap:
            cap, phase = until, "request"  # the caller's deadline comes first
        data = self._call(
            "POST",
            "/api/embed",
            body,
            what="embed",
            until=cap,
            first_byte_s=d.first_token_s,
            limit=(phase, d.total_s),
            texts=batch,
        )
        vectors = self._vectors(data, len(batch), fingerprint)
        load_ns = data.get("load_duration")
        self._log.debug(
            "embedder.batch",
            texts=len(batch),
            prompt_eval_count=data.get("prompt_eval_count"),
            load_ms=round(load_ns / 1e6, 1) if isinstance(load_ns, int) else None,
            duration_ms=_ms_since(started),
        )
        return vectors

    def _vectors(self, data: dict[str, Any], expected: int, fingerprint: Fingerprint) -> Matrix:
        """The answer's vectors, checked against the batch and the fingerprint, normalised."""
        raw = data.get("embeddings")
        if not isinstance(raw, list):
            raise BackendError("embedder answered /api/embed without an embeddings list")
        if len(raw) != expected:
            raise BackendError(f"embedder returned {len(raw)} vectors for {expected} texts")
        try:
            matrix = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise BackendError("embedder returned vectors that are not lists of numbers") from exc
        if matrix.ndim != 2 or matrix.shape[1] != fingerprint.dimensions:
            got = matrix.shape[1] if matrix.ndim == 2 else "ragged"
            raise ModelChanged(
                f'the model behind "{self._model}" changed under us: it returned {got}-dimension '
                f"vectors, its fingerprint {fingerprint.key} says {fingerprint.dimensions}; "
                "run a sync: it reads the new fingerprint first and re-embeds"
            )
        if not np.isfinite(matrix).all():
            raise BackendError("embedder returned a vector with NaN or infinite values")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        normalised: Matrix = (matrix / np.clip(norms, 1e-12, None)).astype(np.float32)
        return normalised

    def _context_advice(self, error: Exception, texts: Sequence[str]) -> InputRefused:
        """The refusal of an over-long input, with what to change and where."""
        limit = self._context_length
        if limit is not None and self._num_ctx >= limit:
            advice = (
                f"embedder.num_ctx ({self._num_ctx}) is already at or above the model's context "
                f"({limit} tokens): lower corpus.chunk_size_chars"
            )
        else:
            allowed = f"; the model allows {limit}" if limit is not None else ""
            advice = (
                f"raise embedder.num_ctx (now {self._num_ctx}{allowed}) or lower "
                "corpus.chunk_size_chars"
            )
        longest = max((len(text) for text in texts), default=0)
        return InputRefused(
            f"{error}. A text of this batch (the longest has {longest} characters) does not fit "
            f"the embedding model's context: {advice}, then sync again. ragvisor sends "
            "truncate: false so that no chunk is embedded with its tail silently cut off."
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def loaded(self, timeout_s: float = 5.0) -> bool:
        """Whether `/api/ps` lists the model (by name, or by digest under another name).

        Raises BackendUnavailable, BackendTimeout or BackendError.
        """
        return self._loaded_entry(time.monotonic() + timeout_s) is not None

    def unload(self, timeout_s: float = 10.0) -> None:
        """Ask the server to drop the model from memory now (`/api/embed`, `keep_alive: 0`).

        Skipped when `/api/ps` does not list the model: Ollama loads a model to serve even an
        empty embed request, and loading it to unload it is the last thing a box short of
        memory needs. Confirm with :meth:`loaded`: the server may take a moment to let go.
        Raises BackendUnavailable, BackendTimeout or BackendError.
        """
        started = time.perf_counter()
        until = time.monotonic() + timeout_s
        if self._loaded_entry(until) is None:
            return
        body = {"model": self._model, "input": [], "keep_alive": 0}
        self._call("POST", "/api/embed", body, what="unload", until=until)
        self._log.info(
            "embedder.unload_requested", model=self._model, duration_ms=_ms_since(started)
        )

    def model_size_bytes(self, timeout_s: float = 5.0) -> int | None:
        """Bytes the model takes: resident size from `/api/ps` when loaded, else its size on
        disk from `/api/tags` (what loading it will cost, roughly); None when neither lists it.

        Raises BackendUnavailable, BackendTimeout or BackendError.
        """
        until = time.monotonic() + timeout_s
        entry = self._loaded_entry(until) or find_model(
            self._models("/api/tags", until), self._model
        )
        size = entry.get("size") if entry is not None else None
        return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None

    def version(self, timeout_s: float = 2.0) -> str:
        """The server's version: the cheapest liveness probe (loads no model).

        Raises BackendUnavailable, BackendTimeout or BackendError.
        """
        data = self._call(
            "GET", "/api/version", None, what="version", until=time.monotonic() + timeout_s
        )
        return str(data.get("version", ""))

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> OllamaEmbedder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _loaded_entry(self, until: float) -> dict[str, Any] | None:
        fingerprint = self._fingerprint
        digest = fingerprint.digest if fingerprint is not None else None
        return find_model(self._models("/api/ps", until), self._model, digest)

    def _models(self, path: str, until: float) -> list[dict[str, Any]]:
        models = self._call("GET", path, None, what=path, until=until).get("models")
        return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []

    # -- HTTP --------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        what: str,
        until: float,
        first_byte_s: float | None = None,
        limit: tuple[str, float] | None = None,
        texts: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """One bounded call (see :meth:`SyncCalls.call`); `texts` (embed only) explains the
        refusal of an over-long input."""
        try:
            return self._http.call(
                method, path, body, what=what, until=until, first_byte_s=first_byte_s, limit=limit
            )
        except BackendRejected as exc:
            if texts is not None and is_context_exceeded(str(exc)):
                raise self._context_advice(exc, texts) from exc
            raise


def _digest_of(entry: dict[str, Any], model: str) -> str:
    """The model's digest in bare hex (the fingerprint adds the `sha256:` itself)."""
    digest = bare_digest(entry.get("digest"))
    if not digest:
        raise BackendError(f'/api/tags lists "{model}" without a digest')
    return digest


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
