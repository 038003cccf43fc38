"""A cache of the embedding model as ONNX Runtime optimises it: later starts skip the
optimisation, and the memory it takes.

Measured here (the pinned MiniLM int8): a session made from ``model.onnx`` with the graph
optimisations on takes the process from 44 MB to a peak of 259 MB and 203 MB after — constant
folding turns the quantized weights into float32 ones (the optimised graph is 90 MB). The same
optimised graph, saved once and loaded with the optimisations off, peaks at 184 MB and stays at
156 MB, at the same speed per query (8.5 vs 8.8 ms median, busy box). Turning constant folding
off instead keeps 80 MB but makes a query 13 times slower.

The graph is saved at the `extended` level — ONNX Runtime warns that `all` may hold kernels
specific to this CPU, and a data directory moved to another machine must still work — keyed by
the model file's sha256 and the onnxruntime version, written under a temporary name and renamed
into place. A cache that cannot be read is rebuilt, one that cannot be written is skipped: it is
an optimisation, never a reason not to start.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Protocol

import onnxruntime as ort

from ragvisor.datadir import make_private_dir
from ragvisor.errors import ModelFileError


class SessionLoader(Protocol):
    """`embed.onnx.load_session` with its thread count bound."""

    def __call__(self, path: Path, *, optimize: bool = True, save_to: Path | None = None) -> Any:
        """An inference session of the model at `path`. Raises ModelFileError."""
        ...


def cached_path(cache_dir: Path, digest: str) -> Path:
    """Where the optimised graph of the model with this sha256 is kept, for this onnxruntime."""
    return cache_dir / f"{digest[:16]}-onnxruntime-{ort.__version__}.onnx"


def cached_session(model_path: Path, digest: str, cache_dir: Path, load: SessionLoader) -> Any:
    """A session of the model at `model_path` (whose sha256 is `digest`): from the optimised
    graph in `cache_dir` when it is there, else optimised now and saved there for the next start.

    Raises ModelFileError only when the model itself cannot be loaded.
    """
    cached = cached_path(cache_dir, digest)
    if cached.is_file():
        try:
            return load(cached, optimize=False)
        except ModelFileError:
            pass  # a torn or foreign file: made again below
    partial = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
    try:
        make_private_dir(cache_dir)
        session = load(model_path, save_to=partial)
        partial.chmod(0o600)  # private like every file of the data directory (`datadir`)
        partial.replace(cached)
    except (OSError, ModelFileError):
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        return load(model_path)  # not cached this time; raises if the model itself is bad
    return session
