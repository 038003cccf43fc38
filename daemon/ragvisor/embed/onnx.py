"""The in-process embedder: a BERT-like sentence model on ONNX Runtime, CPU only.

It loads ``model.onnx`` and ``tokenizer.json`` from a directory, so any ONNX export with the
usual inputs (``input_ids``, ``attention_mask``, optionally ``token_type_ids``) and a
``[batch, sequence, hidden]`` output works; sentence vectors are the attention-masked mean of
that output, L2-normalised, as sentence-transformers computes them. onnxruntime and tokenizer
errors are translated here and nowhere else: into :class:`ragvisor.errors.ModelFileError` for
the files, into :class:`ragvisor.errors.InputError` for a text the tokenizer refuses.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from ragvisor.config import EmbedderSettings
from ragvisor.core.hashing import file_sha256
from ragvisor.core.model import Fingerprint
from ragvisor.core.protocols import Matrix
from ragvisor.embed.model_files import DEFAULT_MODEL_NAME, assemble_default_model
from ragvisor.embed.optimized import cached_session, weights_path
from ragvisor.errors import InputError, ModelFileError

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
OPTIMIZED_DIR = "onnx-optimized"  # under <data_dir>/models: `embed.optimized`'s cache
_REQUIRED_INPUTS = ("input_ids", "attention_mask")
_TOKEN_TYPE_INPUT = "token_type_ids"  # noqa: S105  (an ONNX input name, not a secret)
_PREFERRED_OUTPUT = "last_hidden_state"


class OnnxEmbedder:
    """Implements :class:`ragvisor.core.protocols.Embedder` with ONNX Runtime and tokenizers.

    Safe to call from several threads: ``InferenceSession.run`` and ``encode_batch`` are
    thread-safe, and the counters are updated under a lock.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        name: str = DEFAULT_MODEL_NAME,
        batch_size: int = 4,
        threads: int = 2,
        max_tokens: int = 256,
        optimized_dir: Path | None = None,
    ) -> None:
        """Load the model and tokenizer from ``model_dir`` — the model's optimised graph from
        ``optimized_dir`` when given (`embed.optimized`: less memory at start and after).

        Raises :class:`ModelFileError` if a file is missing, cannot be loaded, or the model does
        not have the inputs and output a sentence model needs; :class:`InputError` for a
        non-positive ``batch_size``, ``threads`` or ``max_tokens``.
        """
        for label, value in (
            ("batch_size", batch_size),
            ("threads", threads),
            ("max_tokens", max_tokens),
        ):
            if value < 1:
                raise InputError(f"{label} must be at least 1, got {value}")
        self._model_dir = model_dir
        self._batch_size = batch_size
        self._max_tokens = max_tokens
        self._lock = threading.Lock()
        self._truncated_texts = 0
        self._embedded_texts_total = 0

        model_path = model_dir / MODEL_FILE
        tokenizer_path = model_dir / TOKENIZER_FILE
        for path in (model_path, tokenizer_path):
            if not path.is_file():
                raise ModelFileError(f"model directory {model_dir} has no {path.name}")
        self._tokenizer = load_tokenizer(tokenizer_path, max_tokens)
        try:
            digest = file_sha256(model_path)
        except OSError as exc:
            raise ModelFileError(f"cannot read {model_path}: {exc}") from exc
        load = functools.partial(load_session, threads=threads)
        self._session = (
            load(model_path)
            if optimized_dir is None
            else cached_session(model_path, digest, optimized_dir, load)
        )
        self._feeds_token_types, self._output_name, dimensions = _check_signature(
            self._session, model_path
        )
        if dimensions is None:
            # Exports with a symbolic hidden size: one probe answers it, once, at load.
            dimensions = int(self._run([self._tokenizer.encode("probe")]).shape[1])
        self._fingerprint = Fingerprint(name=name, digest=digest, dimensions=dimensions)

    @property
    def fingerprint(self) -> Fingerprint:
        """Identity of the model: its name, the sha256 of model.onnx and the vector size."""
        return self._fingerprint

    @property
    def batch_size(self) -> int:
        """How many texts one inference run takes; the sync hands over this many at once."""
        return self._batch_size

    @property
    def model_dir(self) -> Path:
        """The directory the model was loaded from."""
        return self._model_dir

    @property
    def max_tokens(self) -> int:
        """Tokens per text (special tokens included) beyond which a text is cut."""
        return self._max_tokens

    @property
    def truncated_texts(self) -> int:
        """Texts ever embedded that were longer than ``max_tokens`` and lost their tail."""
        with self._lock:
            return self._truncated_texts

    @property
    def embedded_texts_total(self) -> int:
        """Texts ever embedded by this instance (tests count embedding work here)."""
        with self._lock:
            return self._embedded_texts_total

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed texts in batches of ``batch_size``; returns float32 of shape (n, dimensions).

        Rows are L2-normalised, so a dot product is the cosine similarity. Texts are grouped
        into batches by length (results come back in the caller's order): a batch is padded to
        its longest text, so mixing short and long texts wastes most of the work — measured
        here, unsorted batches of 16 ran at 30 chunks/s, length-sorted ones at 43.

        Raises InputError for a text the tokenizer refuses (one with a lone surrogate).
        """
        count = len(texts)
        out: Matrix = np.zeros((count, self._fingerprint.dimensions), dtype=np.float32)
        order = sorted(range(count), key=lambda i: len(texts[i]))
        for start in range(0, count, self._batch_size):
            rows = order[start : start + self._batch_size]
            batch = [texts[i] for i in rows]
            encodings = encode(self._tokenizer, batch)
            out[rows] = self._run(encodings)
            # tokenizers keeps the cut-off tail in `overflowing`, so this counts exactly the
            # texts longer than max_tokens, not those that merely fill it.
            truncated = sum(1 for encoding in encodings if encoding.overflowing)
            with self._lock:
                self._truncated_texts += truncated
                self._embedded_texts_total += len(batch)
        return out

    def _run(self, encodings: list[Encoding]) -> Matrix:
        """One inference run over already padded encodings, pooled and normalised."""
        input_ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._feeds_token_types:
            feeds[_TOKEN_TYPE_INPUT] = np.asarray([e.type_ids for e in encodings], dtype=np.int64)
        hidden = np.asarray(self._session.run([self._output_name], feeds)[0], dtype=np.float32)
        mask = attention_mask[:, :, np.newaxis].astype(np.float32)
        summed = (hidden * mask).sum(axis=1)
        pooled = summed / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: Matrix = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return vectors


def encode(tokenizer: Tokenizer, texts: list[str] | list[tuple[str, str]]) -> list[Encoding]:
    """Tokenize a batch of texts, or of (first, second) pairs as a cross-encoder reads them
    (``ragvisor.rerank``). Raises InputError for a text the tokenizer refuses: for a lone
    surrogate, which UTF-8 cannot encode, it raises a bare TypeError ("TextEncodeInput must be
    Union[…]") — once a 500 for a question spelling `"\\ud800"` in JSON."""
    try:
        return tokenizer.encode_batch(texts)
    except TypeError as exc:
        raise InputError(
            "cannot tokenize the text: it is not valid Unicode (a lone surrogate?)"
        ) from exc


def load_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
    """Load a tokenizer and override the padding and truncation its file may carry.

    The default tokenizer.json pads every text to a fixed 128 tokens and truncates at 128;
    padding to the longest text in the batch is cheaper, and the length limit is ours to set.
    """
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
        raise ModelFileError(f"cannot load tokenizer {path}: {exc}") from exc
    tokenizer.enable_truncation(max_length=max_tokens)
    padding = tokenizer.padding or {}
    pad_token = str(padding.get("pad_token", "[PAD]"))
    pad_id = padding.get("pad_id", tokenizer.token_to_id(pad_token))
    tokenizer.enable_padding(
        direction=str(padding.get("direction", "right")).lower(),
        pad_id=int(pad_id or 0),
        pad_type_id=int(padding.get("pad_type_id", 0)),
        pad_token=pad_token,
    )
    return tokenizer


def load_session(
    path: Path, threads: int, *, optimize: bool = True, save_to: Path | None = None
) -> Any:
    """Create a CPU inference session tuned for a small, long-running process.

    ``optimize=False`` loads a graph optimised before (`embed.optimized`) as it is; ``save_to``
    saves the optimised graph there (at the portable `extended` level), its weights in a file
    beside it (`embed.optimized.weights_path`) that later loads map instead of copying.

    The memory arena is off because it keeps every peak allocation: RSS grew to ~0.9 GB in a
    long-running process (reference/field-notes.md). One inter-op thread: BERT graphs are a
    chain, and the box has few cores to share with the generator.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    # The memory-pattern planner allocates one block for every intermediate of a run, sized for
    # the largest shape seen: a batch of 8 full-length (256-token) texts peaked at 714 MB with
    # it and 371 MB without, at the same speed on real chunks.
    options.enable_mem_pattern = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if save_to is not None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(save_to)
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", weights_path(save_to).name
        )
        # Every tensor of a kilobyte or more (all the weight matrices); small ones stay inline.
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # Idle intra-op threads otherwise spin for a while after each run, stealing the core the
    # search's matrix product needs next: measured, retrieve 2.0 ms -> 1.1 ms median, embedding
    # speed unchanged (single queries and batches).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime's errors share no public base class
        raise ModelFileError(f"cannot load ONNX model {path}: {exc}") from exc


def _check_signature(session: Any, path: Path) -> tuple[bool, str, int | None]:
    """Check the model's inputs and output; returns (feeds token types, output name, dims).

    dims is None when the export leaves the hidden size symbolic.
    """
    inputs = {node.name for node in session.get_inputs()}
    missing = [name for name in _REQUIRED_INPUTS if name not in inputs]
    if missing:
        raise ModelFileError(f"{path} lacks input(s) {', '.join(missing)}; got {sorted(inputs)}")
    outputs = [node for node in session.get_outputs() if len(node.shape) == 3]
    if not outputs:
        raise ModelFileError(f"{path} has no [batch, sequence, hidden] output")
    chosen = next((node for node in outputs if node.name == _PREFERRED_OUTPUT), outputs[0])
    hidden = chosen.shape[2]
    dimensions = hidden if isinstance(hidden, int) and hidden > 0 else None
    return _TOKEN_TYPE_INPUT in inputs, str(chosen.name), dimensions


def model_dir(settings: EmbedderSettings, data_dir: Path) -> Path:
    """The embedder's model directory: the configured one, or the pinned default assembled
    under the data directory on first use.
    """
    if settings.model_dir is not None:
        return Path(settings.model_dir).expanduser()
    return assemble_default_model(data_dir / "models" / DEFAULT_MODEL_NAME)


def build_onnx_embedder(settings: EmbedderSettings, data_dir: Path) -> OnnxEmbedder:
    """The in-process embedder `[embedder]` describes, loaded and ready — for the daemon and
    for the embedded worker alike. Raises ModelFileError.
    """
    return OnnxEmbedder(
        model_dir(settings, data_dir),
        name=settings.model_name,
        batch_size=settings.batch_size,
        threads=settings.threads,
        max_tokens=settings.max_tokens,
        optimized_dir=data_dir / "models" / OPTIMIZED_DIR,
    )
