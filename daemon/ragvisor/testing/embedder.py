"""A fake of the `Embedder` protocol: deterministic bag-of-words vectors, no model loaded."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence

import numpy as np

from ragvisor.core.model import Fingerprint
from ragvisor.core.protocols import Matrix
from ragvisor.errors import InputRefused


class FakeEmbedder:
    """Deterministic pseudo-embeddings: the same text always gives the same unit vector.

    Texts sharing words get correlated vectors (each word contributes a fixed random direction),
    so ranking tests behave like a bag-of-words model. Counts every text it embeds. With
    `refuses`, a call holding a text it says yes to fails whole with InputRefused, as Ollama
    refuses a request with one text longer than the model's context.
    """

    def __init__(
        self,
        *,
        name: str = "fake",
        dimensions: int = 32,
        batch_size: int = 4,
        refuses: Callable[[str], bool] | None = None,
    ) -> None:
        self._fingerprint = Fingerprint(name, hashlib.sha256(name.encode()).hexdigest(), dimensions)
        self._batch_size = batch_size
        self._refuses = refuses
        self._lock = threading.Lock()
        self.embedded_texts_total = 0
        self.calls: list[int] = []
        self.refused_calls = 0

    @property
    def fingerprint(self) -> Fingerprint:
        """Identity of this fake model."""
        return self._fingerprint

    @property
    def batch_size(self) -> int:
        """Batch size the sync should use."""
        return self._batch_size

    def _word(self, word: str) -> Matrix:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        return (
            np.random.default_rng(seed)
            .standard_normal(self.fingerprint.dimensions)
            .astype(np.float32)
        )

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Sum of word directions, L2-normalised. Raises InputRefused (see `refuses`)."""
        if self._refuses is not None and any(self._refuses(text) for text in texts):
            with self._lock:
                self.refused_calls += 1
            longest = max(len(text) for text in texts)
            raise InputRefused(
                f"embedder refused embed (400): the input length exceeds the context length "
                f"(the longest text has {longest} characters)"
            )
        with self._lock:
            self.embedded_texts_total += len(texts)
            self.calls.append(len(texts))
        out = np.zeros((len(texts), self.fingerprint.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            words = text.lower().split() or [""]
            vector = sum((self._word(w) for w in words), np.zeros_like(out[0]))
            out[row] = vector / (np.linalg.norm(vector) or 1.0)
        return out
