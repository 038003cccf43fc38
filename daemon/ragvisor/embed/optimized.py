"""A cache of the embedding model as ONNX Runtime optimises it: later starts skip the
optimisation, and the memory it takes.

Measured here (the pinned MiniLM int8): a session made from ``model.onnx`` with the graph
optimisations on takes the process from 44 MB to a peak of 259 MB and 203 MB after — constant
folding turns the quantized weights into float32 ones (the optimised graph is 90 MB). The same
optimised graph, saved once and loaded with the optimisations off, peaks at 184 MB and stays at
156 MB, at the same speed per query (8.5 vs 8.8 ms median, busy box). Turning constant folding
off instead keeps 80 MB but makes a query 13 times slower.

The weights are saved beside the graph, in a file of their own (``model.onnx.data``), which ONNX
Runtime maps into memory instead of parsing them out of the graph and copying them: measured in
isolation, the load takes 0.04 s instead of 0.23 s, and the process peaks at 139 MB instead of
187 MB (steady 139 vs 177 MB after a few queries), at the same speed per query (2.75 vs 2.88 ms
median). The file is only ever replaced by a rename, never written in place, so a mapping stays
valid.

The graph is saved at the `extended` level — ONNX Runtime warns that `all` may hold kernels
specific to this CPU, and a data directory moved to another machine must still work — in a folder
keyed by the model file's sha256 and the onnxruntime version, written under a temporary name and
renamed into place whole (graph and weights together). A cache that cannot be read is rebuilt,
one that cannot be written is skipped: it is an optimisation, never a reason not to start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

import onnxruntime as ort

from ragvisor.datadir import make_private_dir
from ragvisor.errors import ModelFileError

GRAPH_FILE = "model.onnx"
WEIGHTS_SUFFIX = ".data"  # the weights file is the graph's name plus this (`weights_path`)
PRIVATE_FILE_MODE = 0o600


class SessionLoader(Protocol):
    """`embed.onnx.load_session` with its thread count bound."""

    def __call__(self, path: Path, *, optimize: bool = True, save_to: Path | None = None) -> Any:
        """An inference session of the model at `path`. Raises ModelFileError."""
        ...


def cached_path(cache_dir: Path, digest: str) -> Path:
    """Where the optimised graph of the model with this sha256 is kept, for this onnxruntime
    (its weights beside it: `weights_path`)."""
    return cache_dir / f"{digest[:16]}-onnxruntime-{ort.__version__}" / GRAPH_FILE


def weights_path(graph: Path) -> Path:
    """The file a saved graph's weights are in (ONNX Runtime's external data)."""
    return graph.with_name(graph.name + WEIGHTS_SUFFIX)


def cached_session(model_path: Path, digest: str, cache_dir: Path, load: SessionLoader) -> Any:
    """A session of the model at `model_path` (whose sha256 is `digest`): from the optimised
    graph in `cache_dir` when it is there, else optimised now, saved there, and loaded from
    there — so even the first start keeps the weights mapped rather than copied.

    Raises ModelFileError only when the model itself cannot be loaded.
    """
    cached = cached_path(cache_dir, digest)
    if cached.is_file():
        try:
            return load(cached, optimize=False)
        except ModelFileError:
            discard(cached.parent)  # a torn or foreign folder: made again below
    try:
        save_optimized(model_path, cached, load)
    except (OSError, ModelFileError):
        if not cached.is_file():  # unless another process saved it meanwhile
            return load(model_path)  # not cached this time; raises if the model itself is bad
    try:
        return load(cached, optimize=False)
    except ModelFileError:
        return load(model_path)


def save_optimized(model_path: Path, cached: Path, load: SessionLoader) -> None:
    """Optimise the model and save graph and weights as `cached`'s folder, renamed into place
    whole; an older version's single-file cache of the same model is removed.

    Raises OSError when the folder cannot be written or another process renamed its own into
    place first, ModelFileError when the model cannot be loaded.
    """
    folder = cached.parent
    partial = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    discard_abandoned(folder)
    try:
        make_private_dir(partial)
        load(model_path, save_to=partial / cached.name)  # the session itself is not kept
        for path in partial.iterdir():
            path.chmod(PRIVATE_FILE_MODE)  # private like every file of the data directory
        partial.rename(folder)  # fails if the folder is there already (another process's)
    finally:
        discard(partial)
    with contextlib.suppress(OSError):  # before the weights had a file of their own
        folder.with_name(folder.name + ".onnx").unlink(missing_ok=True)


def discard_abandoned(folder: Path) -> None:
    """Remove the half-written copies of `folder` whose process is gone (a daemon killed while
    it optimised the model leaves ~90 MB behind otherwise)."""
    for partial in folder.parent.glob(f".{folder.name}.*.partial"):
        pid = partial.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            discard(partial)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def discard(folder: Path) -> None:
    """Remove a cache folder, if it is there, ignoring errors: a process that has its weights
    mapped keeps them (the files are unlinked, not truncated)."""
    shutil.rmtree(folder, ignore_errors=True)
