"""The cross-encoder reranker: a BERT-like sequence classifier on ONNX Runtime, CPU only.

A cross-encoder reads the query and one passage together (``[CLS] query [SEP] passage [SEP]``,
the passage in segment 1) and answers one relevance logit, so it sees how the two relate where
the embedder only compares two vectors made apart — and costs one model run per passage instead
of none. No package registry carries such a model (flashrank, fastembed and rerankers fetch theirs
from Hugging Face at run time), so the operator supplies the folder of any ONNX export: inputs
``input_ids``, ``attention_mask`` and optionally ``token_type_ids``; output logits shaped
``[batch, 1]``, ``[batch]`` or ``[batch, 2]``. A two-class model's score is ``logit[1] -
logit[0]``, the log-odds of "relevant": the same order as the softmax's positive class, without
squashing the scores into [0, 1] where near-ties lose their difference in float32.

The model is loaded as the embedder's is (:func:`ragvisor.embed.onnx.load_session`: one
intra-op pool, memory arena off), and its errors are translated here into
:class:`ragvisor.errors.ModelFileError` naming the path, or :class:`ragvisor.errors.InputError`
for a query the tokenizer refuses.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding

from ragvisor.core.hashing import file_sha256
from ragvisor.embed.onnx import encode, load_session, load_tokenizer
from ragvisor.errors import InputError, ModelFileError

# Where exports keep the model, in the order looked for: the first that exists is loaded, so an
# operator who wants the int8 file of an export that ships both copies it to the top as
# model.onnx (or deletes the float one).
MODEL_FILES = ("model.onnx", "model_quantized.onnx", "onnx/model.onnx", "onnx/model_quantized.onnx")
TOKENIZER_FILE = "tokenizer.json"
_REQUIRED_INPUTS = ("input_ids", "attention_mask")
_TOKEN_TYPE_INPUT = "token_type_ids"  # noqa: S105  (an ONNX input name, not a secret)
_PREFERRED_OUTPUT = "logits"
_INPUT_DTYPES: dict[str, type[np.signedinteger[Any]]] = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
# Pairs per inference run. A run's memory grows with the batch (its attention alone holds
# batch x heads x tokens² floats per layer) and a larger batch is no faster on a small CPU:
# measured with bench/rerank_bench.py --proxy-minilm (MiniLM-L6 int8, 800-character passages,
# one thread, on the busy 2-core test box), 4 pairs a run scored 50 passages in 5.4 s and
# peaked 139 MB above the loaded model; 16 a run took 8.9 s and peaked 292 MB above it (the
# embedder's batch_size of 4 was chosen on the same grounds).
BATCH_PAIRS = 4


@dataclass(frozen=True, slots=True)
class _Signature:
    """What the model takes and gives, checked once at load."""

    input_dtypes: dict[str, type[np.signedinteger[Any]]]
    output_name: str


class OnnxCrossEncoder:
    """Implements :class:`ragvisor.core.protocols.Reranker` with ONNX Runtime and tokenizers.

    Safe to call from several threads: ``InferenceSession.run`` and ``encode_batch`` are
    thread-safe, and the counters are updated under a lock.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        threads: int = 1,
        max_tokens: int = 256,
        sha256: str = "",
        batch_pairs: int = BATCH_PAIRS,
    ) -> None:
        """Load the model and tokenizer from ``model_dir``; with ``sha256``, pin the model file.

        Raises :class:`ModelFileError` if a file is missing or unreadable, the model file's hash
        differs from ``sha256``, or the model or tokenizer does not look like a cross-encoder's;
        :class:`InputError` for a non-positive ``threads``, ``max_tokens`` or ``batch_pairs``.
        """
        for label, value in (
            ("threads", threads),
            ("max_tokens", max_tokens),
            ("batch_pairs", batch_pairs),
        ):
            if value < 1:
                raise InputError(f"{label} must be at least 1, got {value}")
        self._model_dir = model_dir
        self._max_tokens = max_tokens
        self._batch_pairs = batch_pairs
        self._lock = threading.Lock()
        self._truncated_pairs = 0
        self._scored_pairs_total = 0

        self._model_path = find_model_file(model_dir)
        tokenizer_path = model_dir / TOKENIZER_FILE
        if not tokenizer_path.is_file():
            raise ModelFileError(f"reranker model directory {model_dir} has no {TOKENIZER_FILE}")
        if sha256:
            check_sha256(self._model_path, sha256)
        self._tokenizer = load_tokenizer(tokenizer_path, max_tokens)
        self._session = load_session(self._model_path, threads)
        self._signature = _check_signature(self._session, self._model_path)
        if _TOKEN_TYPE_INPUT in self._signature.input_dtypes:
            _check_pair_template(self.encode_pairs("probe", ["probe"])[0], tokenizer_path)

    @property
    def name(self) -> str:
        """The model as logs and `/status` show it: its folder's name."""
        return self._model_dir.name

    @property
    def model_path(self) -> Path:
        """The ONNX file that was loaded (the first of :data:`MODEL_FILES` found)."""
        return self._model_path

    @property
    def max_tokens(self) -> int:
        """Tokens per (query, passage) pair, special tokens included, beyond which it is cut."""
        return self._max_tokens

    @property
    def truncated_pairs(self) -> int:
        """Pairs ever scored that were longer than ``max_tokens`` and lost tokens."""
        with self._lock:
            return self._truncated_pairs

    @property
    def scored_pairs_total(self) -> int:
        """Pairs ever scored by this instance."""
        with self._lock:
            return self._scored_pairs_total

    def encode_pairs(self, query: str, passages: Sequence[str]) -> list[Encoding]:
        """The model's input for each (query, passage) pair, padded to the longest.

        A pair longer than ``max_tokens`` is cut longest-first: the longer of the two loses
        tokens first — the passage, as a rule, since queries are short; a query that fills the
        window alone still leaves the passage some room, where cutting only the passage would
        fail. Raises InputError for a query the tokenizer refuses (a lone surrogate).
        """
        return encode(self._tokenizer, [(query, passage) for passage in passages])

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage, higher is better; comparable within one call.

        Pairs are scored in runs of ``batch_pairs``, grouped by length (a run is padded to its
        longest pair); results come back in the caller's order.

        Raises InputError for a query the tokenizer refuses; ModelFileError when the model
        fails to run (a ``max_tokens`` beyond the model's positions, say).
        """
        count = len(passages)
        scores = np.zeros(count, dtype=np.float32)
        order = sorted(range(count), key=lambda i: len(passages[i]))
        for start in range(0, count, self._batch_pairs):
            rows = order[start : start + self._batch_pairs]
            encodings = self.encode_pairs(query, [passages[i] for i in rows])
            scores[rows] = self._run(encodings)
            truncated = sum(1 for encoding in encodings if encoding.overflowing)
            with self._lock:
                self._truncated_pairs += truncated
                self._scored_pairs_total += len(rows)
        return [float(value) for value in scores]

    def _run(self, encodings: list[Encoding]) -> npt.NDArray[np.float32]:
        """One inference run over padded pair encodings; one score per pair."""
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            _TOKEN_TYPE_INPUT: [e.type_ids for e in encodings],
        }
        feeds = {
            name: np.asarray(columns[name], dtype=dtype)
            for name, dtype in self._signature.input_dtypes.items()
        }
        try:
            outputs = self._session.run([self._signature.output_name], feeds)
        except Exception as exc:  # onnxruntime's errors share no public base class
            raise ModelFileError(
                f"reranker {self._model_path} failed to score {len(encodings)} pair(s) of "
                f"{len(encodings[0].ids)} tokens: {exc}"
            ) from exc
        return logit_scores(np.asarray(outputs[0], dtype=np.float32), self._model_path)


def find_model_file(model_dir: Path) -> Path:
    """The first of :data:`MODEL_FILES` in ``model_dir``. Raises ModelFileError naming them."""
    if not model_dir.is_dir():
        raise ModelFileError(f"reranker model directory {model_dir} does not exist")
    for relative in MODEL_FILES:
        path = model_dir / relative
        if path.is_file():
            return path
    raise ModelFileError(
        f"reranker model directory {model_dir} holds none of {', '.join(MODEL_FILES)}"
    )


def check_sha256(path: Path, expected: str) -> None:
    """Raise ModelFileError unless ``path`` hashes to ``expected`` (hex, either case)."""
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc}") from exc
    if digest != expected.lower():
        raise ModelFileError(
            f"{path} has sha256 {digest}, but rerank.sha256 pins {expected.lower()}: "
            "a different or damaged file"
        )


def logit_scores(logits: npt.NDArray[np.float32], path: Path) -> npt.NDArray[np.float32]:
    """One score per row of a classifier's output: ``[batch]`` and ``[batch, 1]`` as they are,
    ``[batch, 2]`` as ``logit[1] - logit[0]`` (see the module's docstring).

    Raises ModelFileError for any other shape.
    """
    if logits.ndim == 1:
        return logits
    if logits.ndim == 2 and logits.shape[1] == 1:
        return logits[:, 0]
    if logits.ndim == 2 and logits.shape[1] == 2:
        difference: npt.NDArray[np.float32] = logits[:, 1] - logits[:, 0]
        return difference
    raise ModelFileError(
        f"{path} answered logits shaped {list(logits.shape)}; a cross-encoder answers "
        "[batch, 1] or [batch, 2]"
    )


def _check_signature(session: Any, path: Path) -> _Signature:
    """Check that the model takes token ids and gives one or two logits per pair."""
    inputs = {node.name: node for node in session.get_inputs()}
    missing = [name for name in _REQUIRED_INPUTS if name not in inputs]
    if missing:
        raise ModelFileError(
            f"{path} lacks input(s) {', '.join(missing)} (got {sorted(inputs)}): "
            "not a BERT-like cross-encoder export"
        )
    unknown = sorted(set(inputs) - {*_REQUIRED_INPUTS, _TOKEN_TYPE_INPUT})
    if unknown:
        raise ModelFileError(f"{path} takes input(s) {unknown} the reranker cannot feed")
    dtypes: dict[str, type[np.signedinteger[Any]]] = {}
    for name, node in inputs.items():
        if node.type not in _INPUT_DTYPES:
            raise ModelFileError(f"{path} takes {name} as {node.type}; expected integer ids")
        dtypes[name] = _INPUT_DTYPES[node.type]
    outputs = [node for node in session.get_outputs() if _is_logits_shape(node.shape)]
    if not outputs:
        found = ", ".join(f"{node.name} {list(node.shape)}" for node in session.get_outputs())
        raise ModelFileError(
            f"{path} has no [batch, 1] or [batch, 2] logits output (it has {found}): not a "
            "cross-encoder — a [batch, sequence, hidden] output is a sentence-embedding model's"
        )
    chosen = next((node for node in outputs if node.name == _PREFERRED_OUTPUT), outputs[0])
    return _Signature(input_dtypes=dtypes, output_name=str(chosen.name))


def _is_logits_shape(shape: Sequence[object]) -> bool:
    """Whether an output's declared shape can be ``[batch]``, ``[batch, 1]`` or ``[batch, 2]``
    (a symbolic second dimension is checked on the first run, by :func:`logit_scores`)."""
    if len(shape) == 1:
        return True
    return len(shape) == 2 and (shape[1] in (1, 2) or not isinstance(shape[1], int))


def _check_pair_template(probe: Encoding, tokenizer_path: Path) -> None:
    """A model that takes segment ids needs the passage marked as segment 1; a tokenizer.json
    without a pair template marks every token 0, and the model would then score nonsense
    without any error."""
    if 1 not in probe.type_ids:
        raise ModelFileError(
            f"{tokenizer_path} does not put the second text of a pair in segment 1 (no pair "
            "template in its post_processor), which this model's token_type_ids input needs"
        )
