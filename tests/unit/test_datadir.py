"""The data directory is private whatever the umask: folders 0700, files 0600, wider ones
narrowed at start — with the real SQLite store, sync lock, token file and model files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from ragvisor.admin_token import load_admin_token
from ragvisor.application.sync_runner import SyncRunner
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.documents import CorpusSpec
from ragvisor.datadir import (
    OpenPath,
    find_open_paths,
    make_private_dir,
    tighten_data_dir,
    touch_private,
)
from ragvisor.embed.model_files import assemble_default_model
from ragvisor.errors import StoreError
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request):
    """Run the test under a given process umask, restored afterwards."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes_below(root: Path) -> dict[str, int]:
    """Every path under `root` (itself included) with its permission bits."""
    found = {".": mode(root)}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = mode(path)
    return found


def test_store_sync_lock_and_token_are_private_whatever_the_umask(tmp_path, umask):
    """Folder 0700; database, -wal, -shm, sync.lock and admin_token 0600, under umask 022 or 0."""
    corpus = tmp_path / "notes"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Alpha\n\nswap files and swappiness on a small box")
    data = tmp_path / "var" / "data"  # a missing parent too
    store = SqliteStore(data)
    try:
        runner = SyncRunner(
            corpus=CorpusSpec(roots=(corpus,)),
            chunking=ChunkingSpec(size_chars=300, overlap_chars=40),
            store=store,
            embedder=FakeEmbedder(),
            lock_path=data / "sync.lock",
            log=structlog.get_logger(component="sync"),
        )
        assert runner.run(trigger="test").documents.new == 1
        load_admin_token("", data, structlog.get_logger())
        found = modes_below(data)  # while the store is open: -wal and -shm exist
    finally:
        store.close()
    assert found == {
        ".": 0o700,
        "ragvisor.sqlite3": 0o600,
        "ragvisor.sqlite3-wal": 0o600,
        "ragvisor.sqlite3-shm": 0o600,
        "sync.lock": 0o600,
        "admin_token": 0o600,
    }
    assert mode(tmp_path / "var") == 0o700


def test_model_files_assembled_under_the_data_dir_are_private(tmp_path, umask):
    """`<data_dir>/models/<name>/` and the files copied into it: 0700 and 0600."""
    data = tmp_path / "data"
    assemble_default_model(data / "models" / "minilm")
    assert modes_below(data) == {
        ".": 0o700,
        "models": 0o700,
        "models/minilm": 0o700,
        "models/minilm/model.onnx": 0o600,
        "models/minilm/tokenizer.json": 0o600,
    }


def test_wider_modes_are_narrowed_at_start_one_event_each(tmp_path):
    """An old install's 0755 folders and 0644 files lose group and other bits, each logged;
    a symlink's target outside the data directory is left alone."""
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    data.chmod(0o755)
    (data / "models").chmod(0o750)
    touch_private(data / "ragvisor.sqlite3")
    (data / "ragvisor.sqlite3").chmod(0o644)
    touch_private(data / "admin_token")
    (data / "admin_token").chmod(0o400)  # private already: untouched
    outside = tmp_path / "shared.txt"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (data / "link").symlink_to(outside)
    with capture_logs() as events:
        changed = tighten_data_dir(data, structlog.get_logger())
    assert changed == (
        OpenPath(data, 0o755, is_dir=True),
        OpenPath(data / "models", 0o750, is_dir=True),
        OpenPath(data / "ragvisor.sqlite3", 0o644, is_dir=False),
    )
    assert modes_below(data) == {
        ".": 0o700,
        "models": 0o700,
        "ragvisor.sqlite3": 0o600,
        "admin_token": 0o400,
        "link": 0o777,  # a symlink's own bits, never used
    }
    assert mode(outside) == 0o644
    assert [(e["event"], e["path"], e["mode_was"], e["mode"]) for e in events] == [
        ("data_dir.mode_tightened", str(data), "0755", "0700"),
        ("data_dir.mode_tightened", str(data / "models"), "0750", "0700"),
        ("data_dir.mode_tightened", str(data / "ragvisor.sqlite3"), "0644", "0600"),
    ]
    assert find_open_paths(data) == ()


def test_a_path_that_cannot_be_narrowed_is_logged_and_start_goes_on(tmp_path, monkeypatch):
    """Someone else's file (chmod refused): a `data_dir.mode_not_tightened` warning, and the
    rest is still narrowed."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    for name in ("theirs.sqlite3", "ours.sqlite3"):
        touch_private(data / name)
        (data / name).chmod(0o644)
    real_chmod = Path.chmod

    def chmod(path: Path, mode: int, **kwargs: object) -> None:
        if path.name == "theirs.sqlite3":
            raise PermissionError(1, "Operation not permitted", str(path))
        real_chmod(path, mode, **kwargs)

    monkeypatch.setattr(Path, "chmod", chmod)
    with capture_logs() as events:
        changed = tighten_data_dir(data, structlog.get_logger())
    assert changed == (OpenPath(data / "ours.sqlite3", 0o644, is_dir=False),)
    assert mode(data / "ours.sqlite3") == 0o600
    assert mode(data / "theirs.sqlite3") == 0o644
    assert [(e["event"], Path(e["path"]).name) for e in events] == [
        ("data_dir.mode_tightened", "ours.sqlite3"),
        ("data_dir.mode_not_tightened", "theirs.sqlite3"),
    ]
    assert events[1]["error"] == "Operation not permitted"


def test_a_missing_data_dir_is_created_private_and_nothing_is_logged(tmp_path, umask):
    """First start: the folder is made 0700; there was nothing to narrow."""
    with capture_logs() as events:
        assert tighten_data_dir(tmp_path / "new", structlog.get_logger()) == ()
    assert mode(tmp_path / "new") == 0o700
    assert events == []


def test_an_existing_private_dir_is_left_as_it_is(tmp_path):
    """make_private_dir on a folder that exists changes nothing (the start-up sweep decides)."""
    folder = tmp_path / "kept"
    folder.mkdir()
    folder.chmod(0o711)
    assert make_private_dir(folder) == folder
    assert mode(folder) == 0o711


def test_a_file_where_the_data_dir_should_be_is_a_store_error(tmp_path):
    """`store.data_dir` naming a file is refused with the path, as before."""
    (tmp_path / "data").write_text("oops")
    with pytest.raises(StoreError, match="cannot create data directory"):
        SqliteStore(tmp_path / "data")
