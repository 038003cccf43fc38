"""The ONNX embedder on the real default model: shape, norm, batching, meaning, truncation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragvisor.core.hashing import file_sha256
from ragvisor.embed.model_files import assemble_default_model
from ragvisor.embed.onnx import OnnxEmbedder
from ragvisor.errors import InputError, ModelFileError

pytestmark = pytest.mark.slow

TEXTS = [
    "The cat sat on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue grew by twelve percent, driven by cloud subscriptions.",
    "How do I restart the Ollama service after changing its environment?",
    "x",
    "",
    "Swap files on small servers should be sized in megabytes and tuned with swappiness. " * 4,
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model assembled once for this module."""
    return assemble_default_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def embedder(model_dir: Path) -> OnnxEmbedder:
    """One embedder shared by the module: loading it is the slow part."""
    return OnnxEmbedder(model_dir, batch_size=4)


def test_vectors_are_unit_norm_float32_of_384_dimensions(embedder: OnnxEmbedder) -> None:
    """embed returns one float32 row of 384 values per text, each of length one."""
    vectors = embedder.embed(TEXTS)

    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_input_gives_empty_matrix(embedder: OnnxEmbedder) -> None:
    """No texts give a (0, 384) float32 array and count nothing."""
    before = embedder.embedded_texts_total

    vectors = embedder.embed([])

    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32
    assert embedder.embedded_texts_total == before


def test_batched_equals_one_by_one(embedder: OnnxEmbedder) -> None:
    """Padding a text inside a batch does not change its vector."""
    batched = embedder.embed(TEXTS)
    single = np.vstack([embedder.embed([text]) for text in TEXTS])

    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_similar_sentences_score_higher_than_unrelated(embedder: OnnxEmbedder) -> None:
    """Two sentences about a cat on a mat are closer than either is to a finance sentence."""
    cat, kitten, finance = embedder.embed(TEXTS[:3])

    related = float(cat @ kitten)
    assert related > float(cat @ finance) + 0.3
    assert related > float(kitten @ finance) + 0.3


def test_long_text_is_truncated_counted_and_embedded(embedder: OnnxEmbedder) -> None:
    """A 2000-word text is cut at max_tokens, counted once, and still yields a unit vector."""
    long_text = " ".join(f"word{i % 50}" for i in range(2000))
    truncated_before = embedder.truncated_texts
    total_before = embedder.embedded_texts_total

    vectors = embedder.embed([long_text, "short text"])

    assert embedder.truncated_texts == truncated_before + 1
    assert embedder.embedded_texts_total == total_before + 2
    assert vectors.shape == (2, 384)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_counter_counts_every_text_across_batches(embedder: OnnxEmbedder) -> None:
    """embedded_texts_total grows by the number of texts, however they are batched."""
    before = embedder.embedded_texts_total

    embedder.embed([f"sentence number {i}" for i in range(embedder.batch_size * 2 + 1)])

    assert embedder.embedded_texts_total == before + embedder.batch_size * 2 + 1


def test_text_with_a_lone_surrogate_is_an_input_error(embedder: OnnxEmbedder) -> None:
    """A lone surrogate (JSON can spell one) raises InputError, not the tokenizer's TypeError,
    and NUL characters embed like any other text."""
    with pytest.raises(InputError, match="not valid Unicode"):
        embedder.embed(["a fine text", "\ud800 backup"])
    assert embedder.embed(["a\x00b"]).shape == (1, 384)


def test_fingerprint_digest_is_model_file_sha256(embedder: OnnxEmbedder, model_dir: Path) -> None:
    """The fingerprint carries the model name, model.onnx's sha256 and the vector size."""
    fingerprint = embedder.fingerprint

    assert fingerprint.name == "all-MiniLM-L6-v2-int8"
    assert fingerprint.digest == file_sha256(model_dir / "model.onnx")
    assert fingerprint.dimensions == 384


def test_missing_directory_raises_model_file_error(tmp_path: Path) -> None:
    """Pointing the embedder at a directory that does not exist raises ModelFileError."""
    with pytest.raises(ModelFileError, match=r"model\.onnx"):
        OnnxEmbedder(tmp_path / "absent")


def test_unloadable_model_file_raises_model_file_error(tmp_path: Path, model_dir: Path) -> None:
    """A model.onnx that onnxruntime cannot parse raises ModelFileError chaining the cause."""
    (tmp_path / "model.onnx").write_bytes(b"not an onnx graph")
    (tmp_path / "tokenizer.json").write_bytes((model_dir / "tokenizer.json").read_bytes())

    with pytest.raises(ModelFileError, match="cannot load ONNX model") as caught:
        OnnxEmbedder(tmp_path)

    assert caught.value.__cause__ is not None
