"""The cache of the model's optimised graph (`embed.optimized`), with the real MiniLM: made at
the first load (graph and weights in a folder of their own), used at the next, rebuilt when
torn, an older version's single-file cache removed, and the vectors the same either way."""

from __future__ import annotations

import subprocess

import numpy as np

from ragvisor.embed.onnx import OnnxEmbedder
from ragvisor.embed.optimized import cached_path, weights_path

TEXTS = ["how do I set vm.swappiness", "Neo4j heap and page cache on a 4 GB box"]


def test_the_optimised_graph_is_saved_once_then_loaded_and_gives_the_same_vectors(
    tmp_path, model_dir, embedder
):
    """First load: the graph and its weights file appear; second load reads them; both embed
    as the plain embedder does, under the same fingerprint."""
    cache = tmp_path / "optimized"
    # 1. The first load optimises the model and saves the graph.
    first = OnnxEmbedder(model_dir, optimized_dir=cache)
    saved = cached_path(cache, first.fingerprint.digest)
    assert saved.is_file()
    assert weights_path(saved).stat().st_size > 1_000_000, "the weights are in their own file"
    assert not list(cache.glob(".*partial")), "no temporary folder left behind"
    stamp = saved.stat().st_mtime_ns
    # 2. The second load uses it as it is.
    second = OnnxEmbedder(model_dir, optimized_dir=cache)
    assert saved.stat().st_mtime_ns == stamp
    # 3. Same identity and the same vectors as the embedder without a cache.
    reference = embedder.embed(TEXTS)
    for loaded in (first, second):
        assert loaded.fingerprint == embedder.fingerprint
        np.testing.assert_allclose(loaded.embed(TEXTS), reference, atol=1e-5)


def test_a_torn_cache_file_is_made_again(tmp_path, model_dir, embedder):
    """A cache file that ONNX Runtime cannot read is replaced by a good one, and the model
    loads."""
    cache = tmp_path / "optimized"
    saved = cached_path(cache, embedder.fingerprint.digest)
    saved.parent.mkdir(parents=True)
    saved.write_bytes(b"not an onnx graph")

    loaded = OnnxEmbedder(model_dir, optimized_dir=cache)

    np.testing.assert_allclose(loaded.embed(TEXTS), embedder.embed(TEXTS), atol=1e-5)
    assert weights_path(saved).stat().st_size > 1_000_000


def test_an_older_versions_single_file_cache_is_removed(tmp_path, model_dir, embedder):
    """The graph an earlier version saved as one file (weights inline, 90 MB) is deleted once
    the folder replacing it is written."""
    cache = tmp_path / "optimized"
    folder = cached_path(cache, embedder.fingerprint.digest).parent
    cache.mkdir()
    legacy = cache / f"{folder.name}.onnx"
    legacy.write_bytes(b"an older cache")

    OnnxEmbedder(model_dir, optimized_dir=cache)

    assert not legacy.exists()
    assert sorted(p.name for p in cache.iterdir()) == [folder.name]


def test_a_cache_folder_that_cannot_be_written_is_skipped(tmp_path, model_dir, embedder):
    """When the cache cannot be written (here: its folder is a file), the model loads anyway."""
    blocked = tmp_path / "optimized"
    blocked.write_text("a file where the folder should be")

    loaded = OnnxEmbedder(model_dir, optimized_dir=blocked)

    np.testing.assert_allclose(loaded.embed(TEXTS), embedder.embed(TEXTS), atol=1e-5)


def test_a_half_written_copy_of_a_dead_process_is_removed(tmp_path, model_dir, embedder):
    """A daemon killed while it optimised the model left `.<folder>.<pid>.partial` behind: the
    next load removes it; a live process's copy is left alone."""
    cache = tmp_path / "optimized"
    folder = cached_path(cache, embedder.fingerprint.digest).parent
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = cache / f".{folder.name}.{dead.pid}.partial"
    abandoned.mkdir(parents=True)
    (abandoned / "model.onnx.data").write_bytes(b"half the weights")
    live = cache / f".{folder.name}.1.partial"  # pid 1 is alive
    live.mkdir()

    OnnxEmbedder(model_dir, optimized_dir=cache)

    assert not abandoned.exists()
    assert live.exists()
