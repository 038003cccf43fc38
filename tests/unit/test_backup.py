"""Backup and restore of the embedded store (fast, real SQLite, a fake embedder): the manifest
and its checksum, the snapshot, the folder written whole or not at all, and a restore that
checks everything before it touches the data directory."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from ragvisor.application.backup import read_manifest, verify_backup, write_backup
from ragvisor.application.restore import restore_backup, restore_owner
from ragvisor.cli import main
from ragvisor.core.backup import (
    DATABASE_FILE,
    FileEntry,
    Manifest,
    StoreFacts,
    check_manifest_files,
    manifest_json,
    parse_manifest,
)
from ragvisor.core.model import Generation, Generations
from ragvisor.errors import BusyError, InputError, StoreError
from ragvisor.store.sqlite import SqliteStore
from ragvisor.store.sqlite_backup import SqliteBackup, check_database
from ragvisor.testing import FakeEmbedder
from tests.helpers import commit_paragraphs, make_document

EMBEDDER = FakeEmbedder(name="fake-minilm")
LOG = structlog.get_logger(component="backup")


def synced_data_dir(root: Path, documents: int = 3) -> Path:
    """A data directory as a daemon leaves it: a store with documents, a generation record, a
    sync lease held, an admin token and a models/ folder."""
    data_dir = root / "data"
    store = SqliteStore(data_dir)
    for i in range(documents):
        commit_paragraphs(store, make_document(f"d{i}.md", f"alpha {i}\n\nbeta {i}"), EMBEDDER)
    f = EMBEDDER.fingerprint
    store.set_generations(Generations(active=Generation(f.key, f.name, f.dimensions, {})))
    store.take_lease("somehost:1234", 300.0)
    store.close()
    (data_dir / "admin_token").write_text("t" * 32 + "\n")
    (data_dir / "models").mkdir()
    (data_dir / "models" / "model.onnx").write_bytes(b"weights")
    return data_dir


def backup_of(tmp_path: Path, data_dir: Path, config: Path | None = None) -> Path:
    """A backup of `data_dir` in tmp_path/backups/one."""
    destination = tmp_path / "backups" / "one"
    write_backup(
        SqliteBackup(data_dir), destination, data_dir=data_dir, config_path=config, log=LOG
    )
    return destination


def flip_byte(path: Path, offset: int) -> None:
    """Corrupt one bit of a file, as bit rot or a bad copy would."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, to show a folder was not touched."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


# -- the manifest ----------------------------------------------------------------------------


def sample_manifest() -> Manifest:
    facts = StoreFacts("1", 7, 3, 6, {"sha256:ab/32": 6}, ("v1",), {"active": None})
    return Manifest(
        "0.1.0", "2026-12-04T14:00:00+00:00", "box", "/data", None, facts,
        (FileEntry(DATABASE_FILE, 10, "a" * 64),),
    )  # fmt: skip


def test_a_manifest_reads_back_as_written():
    """A manifest written and parsed again is the same manifest."""
    manifest = sample_manifest()
    assert parse_manifest(manifest_json(manifest), "m") == manifest


def test_any_changed_byte_of_a_manifest_breaks_its_checksum():
    """Changing a count in the manifest (valid JSON still) is found by its checksum."""
    text = manifest_json(sample_manifest()).replace('"documents": 3', '"documents": 4')
    with pytest.raises(StoreError, match="checksum does not match"):
        parse_manifest(text, "m")


def test_a_manifest_naming_a_path_outside_the_folder_is_refused():
    """A file name with a slash would be written outside the restore's folder: refused."""
    files = (FileEntry(DATABASE_FILE, 1, "a"), FileEntry("../etc/passwd", 1, "b"))
    bad = dataclasses.replace(sample_manifest(), files=files)
    with pytest.raises(StoreError, match="not allowed"):
        check_manifest_files(bad, "m")


def test_a_file_entry_names_what_differs():
    """Missing, resized and changed files each get their own message."""
    entry = FileEntry("f", 3, "c" * 64)
    assert entry.problem(None, None) == "f is missing"
    assert "is 4 bytes" in (entry.problem(4, "c" * 64) or "")
    assert "SHA-256" in (entry.problem(3, "d" * 64) or "")
    assert entry.problem(3, "c" * 64) is None


# -- the snapshot ----------------------------------------------------------------------------


def test_a_snapshot_is_standalone_holds_no_lease_and_reports_what_it_holds(tmp_path):
    """The copy needs no -wal beside it, the syncing daemon's lease is not in it, and the facts
    read in the copy's transaction match the store."""
    data_dir = synced_data_dir(tmp_path)
    facts = SqliteBackup(data_dir).snapshot(tmp_path / "copy.sqlite3")
    assert (facts.documents, facts.chunks) == (3, 6)
    assert facts.vectors == {EMBEDDER.fingerprint.key: 6}
    assert facts.models() == [f"fake-minilm ({EMBEDDER.fingerprint.key})"]
    assert stat.S_IMODE((tmp_path / "copy.sqlite3").stat().st_mode) == 0o600
    assert not (tmp_path / "copy.sqlite3-wal").exists()
    assert check_database(tmp_path / "copy.sqlite3") == facts
    with sqlite3.connect(tmp_path / "copy.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT count(*) FROM meta WHERE key='lease.sync'").fetchone()[0] == 0


def test_a_database_open_in_another_process_is_in_use_and_free_once_closed(tmp_path):
    """SQLite's own lock tells whether another process has the store open; a process that
    exited holds nothing."""
    data_dir = synced_data_dir(tmp_path)
    backup = SqliteBackup(data_dir)
    assert not backup.in_use()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys\n"
         f"c = sqlite3.connect({str(backup.path)!r})\n"
         "c.execute('PRAGMA journal_mode=WAL'); c.execute('SELECT 1 FROM meta').fetchall()\n"
         "print('open', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "open\n"
        assert backup.in_use()
    finally:
        holder.communicate("", timeout=10)
    assert not backup.in_use()


# -- backup ----------------------------------------------------------------------------------


def test_a_backup_holds_the_store_token_and_config_privately_with_a_manifest(tmp_path):
    """The folder is 0700 with 0600 files: the database, the admin token, the configuration
    and a manifest listing each with its SHA-256; models/ is not copied (rebuilt from pins)."""
    data_dir = synced_data_dir(tmp_path)
    config = tmp_path / "ragvisor.toml"
    config.write_text('[store]\ndata_dir = "data"\n')
    with capture_logs() as logs:
        destination = backup_of(tmp_path, data_dir, config)
    names = sorted(p.name for p in destination.iterdir())
    assert names == ["admin_token", "config.toml", "manifest.json", "ragvisor.sqlite3"]
    assert stat.S_IMODE(destination.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in destination.iterdir()} == {0o600}
    manifest = read_manifest(destination)
    assert manifest.config_path == str(config)
    assert manifest.store.documents == 3
    assert [e["event"] for e in logs] == [
        "backup.started", "backup.database_copied", "backup.finished"
    ]  # fmt: skip
    assert all("duration_ms" in e for e in logs[1:])
    assert list(destination.parent.iterdir()) == [destination]  # no .partial left
    assert verify_backup(destination, check_database) == manifest


def test_a_backup_never_writes_into_a_folder_that_holds_something(tmp_path):
    """An occupied destination is a usage error and stays as it was; an empty one is used."""
    data_dir = synced_data_dir(tmp_path)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="is not empty"):
        write_backup(SqliteBackup(data_dir), occupied, data_dir=data_dir, config_path=None, log=LOG)
    assert tree(occupied) == {"keep.txt": b"mine"}
    empty = tmp_path / "empty"
    empty.mkdir()
    write_backup(SqliteBackup(data_dir), empty, data_dir=data_dir, config_path=None, log=LOG)
    assert (empty / "manifest.json").is_file()


def test_a_backup_that_fails_leaves_nothing_that_looks_like_a_backup(tmp_path):
    """A store that cannot be read fails the backup: no destination, no .partial folder."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / DATABASE_FILE).write_bytes(b"not a database at all" * 100)
    destination = tmp_path / "backups" / "x"
    with pytest.raises(StoreError), capture_logs() as logs:
        write_backup(
            SqliteBackup(data_dir), destination, data_dir=data_dir, config_path=None, log=LOG
        )
    assert list((tmp_path / "backups").iterdir()) == []
    assert logs[-1]["event"] == "backup.failed"


def test_no_store_no_backup(tmp_path):
    """A data directory without a database is a failure naming the path, and creates none."""
    data_dir = tmp_path / "data"
    with pytest.raises(StoreError, match="there is no store"):
        write_backup(
            SqliteBackup(data_dir), tmp_path / "b", data_dir=data_dir, config_path=None, log=LOG
        )
    assert not data_dir.exists()


# -- restore ---------------------------------------------------------------------------------


def restore(source: Path, data_dir: Path, *, force: bool = False, config: Path | None = None):
    return restore_backup(
        source, SqliteBackup(data_dir), check_database, data_dir=data_dir, force=force,
        config_in_use=config, log=LOG,
    )  # fmt: skip


def test_a_restore_into_a_missing_data_dir_gives_back_the_same_store(tmp_path):
    """Wiped data directory, restored: the same documents, vectors, generation and token; the
    sync lease is gone; the folder is private."""
    data_dir = synced_data_dir(tmp_path)
    destination = backup_of(tmp_path, data_dir)
    before = SqliteStore(data_dir)
    documents, generations = before.stored_documents(), before.generations()
    before.close()
    token = (data_dir / "admin_token").read_text()
    shutil.rmtree(data_dir)
    report = restore(destination, data_dir)
    assert not report.replaced
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert (data_dir / "admin_token").read_text() == token
    after = SqliteStore(data_dir)
    assert after.stored_documents() == documents
    assert after.generations() == generations
    assert after.hashes_with_vectors(EMBEDDER.fingerprint) == {
        h for d in documents.values() for h in d.chunk_hashes
    }
    assert after.read_lease() is None
    after.close()


def test_a_restore_over_a_store_needs_force_and_then_keeps_models(tmp_path):
    """Over a data directory holding a store: refused without --force (untouched); with it the
    directory is replaced whole, its models/ moved in, the old one gone."""
    data_dir = synced_data_dir(tmp_path, documents=3)
    destination = backup_of(tmp_path, data_dir)
    store = SqliteStore(data_dir)
    commit_paragraphs(store, make_document("later.md", "gamma\n\ndelta"), EMBEDDER)
    store.close()
    untouched = tree(data_dir)
    with pytest.raises(InputError, match="add --force"):
        restore(destination, data_dir)
    assert tree(data_dir) == untouched
    report = restore(destination, data_dir, force=True)
    assert report.replaced
    assert report.models_kept
    assert (data_dir / "models" / "model.onnx").read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "data"]
    store = SqliteStore(data_dir)
    assert len(store.stored_documents()) == 3
    store.close()


def test_a_data_dir_holding_only_models_needs_no_force(tmp_path):
    """models/ and sync.lock are rebuilt by ragvisor: a data directory with only them is
    restored into without --force."""
    source = synced_data_dir(tmp_path)
    destination = backup_of(tmp_path, source)
    data_dir = tmp_path / "fresh"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "sync.lock").write_text("1")
    assert restore(destination, data_dir).models_kept


def test_a_data_dir_that_is_a_mount_point_is_refused_before_anything_changes(tmp_path, monkeypatch):
    """A volume mounted at the data directory cannot be renamed aside: InputError saying what
    to do, with --force too, and the directory as it was."""
    data_dir = synced_data_dir(tmp_path)
    destination = backup_of(tmp_path, data_dir)
    untouched = tree(data_dir)
    real_is_mount = Path.is_mount
    monkeypatch.setattr(Path, "is_mount", lambda p: p == data_dir or real_is_mount(p))
    with pytest.raises(InputError, match=r"is a mount point.*inside the volume"):
        restore(destination, data_dir, force=True)
    assert tree(data_dir) == untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "data"]


def test_a_flipped_byte_in_the_backup_fails_the_restore_and_touches_nothing(tmp_path):
    """A corrupted database file is found by its checksum: StoreError naming the file, the
    data directory exactly as it was, no staging folder left."""
    data_dir = synced_data_dir(tmp_path)
    destination = backup_of(tmp_path, data_dir)
    flip_byte(destination / DATABASE_FILE, 5000)
    untouched = tree(data_dir)
    with pytest.raises(StoreError, match=r"is damaged: ragvisor\.sqlite3 has SHA-256"):
        restore(destination, data_dir, force=True)
    assert tree(data_dir) == untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "data"]
    with pytest.raises(StoreError, match="is damaged"):
        verify_backup(destination, check_database)


def test_a_restore_refuses_while_the_store_is_open_elsewhere(tmp_path):
    """A process holding the store open (the daemon) makes the restore a BusyError that says
    to stop it, and nothing changes."""

    class Open(SqliteBackup):
        def in_use(self) -> bool:
            return True

    data_dir = synced_data_dir(tmp_path)
    destination = backup_of(tmp_path, data_dir)
    untouched = tree(data_dir)
    with pytest.raises(BusyError, match="stop it first"):
        restore_backup(
            destination, Open(data_dir), check_database, data_dir=data_dir, force=True,
            config_in_use=None, log=LOG,
        )  # fmt: skip
    assert tree(data_dir) == untouched


def test_restore_tells_whether_the_configuration_in_use_is_the_backed_up_one(tmp_path):
    """The backup's config.toml is compared with the file in use, not written over it."""
    data_dir = synced_data_dir(tmp_path)
    config = tmp_path / "ragvisor.toml"
    config.write_text("[sync]\ninterval_s = 60\n")
    destination = backup_of(tmp_path, data_dir, config)
    assert restore(destination, tmp_path / "a", config=config).config_matches is True
    config.write_text("[sync]\ninterval_s = 30\n")
    assert restore(destination, tmp_path / "b", config=config).config_matches is False
    assert config.read_text() == "[sync]\ninterval_s = 30\n"


def test_root_restores_files_for_the_data_directory_owner(tmp_path):
    """Only root changes owners: to the data directory's owner, else the backup's."""
    data_dir = synced_data_dir(tmp_path)
    destination = backup_of(tmp_path, data_dir)
    me = (os.getuid(), os.getgid())
    assert restore_owner(data_dir, destination, euid=1000) is None
    assert restore_owner(data_dir, destination, euid=0) == me
    assert restore_owner(tmp_path / "missing", destination, euid=0) == me


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def sigterm_untouched(monkeypatch):
    """The commands make SIGTERM interrupt them; in-process, the test runner's must stay."""
    monkeypatch.setattr("ragvisor.cli.backup.install_sigterm_as_interrupt", lambda: None)


@pytest.mark.usefixtures("sigterm_untouched")
def test_backup_with_the_neo4j_store_refuses_and_says_what_to_do(tmp_path, capsys):
    """With store.backend = neo4j both commands exit 2 and point at neo4j-admin and the docs."""
    config = tmp_path / "neo4j.toml"
    config.write_text('[store]\nbackend = "neo4j"\n')
    code = main(["backup", "--config", str(config), "--to", str(tmp_path / "b")])
    assert code == 2
    err = capsys.readouterr().err
    assert "neo4j-admin database dump" in err
    assert "docs/neo4j.md" in err
    assert not (tmp_path / "b").exists()
    assert main(["restore", "--config", str(config), "--from", str(tmp_path)]) == 2
    assert "neo4j-admin database load --overwrite-destination" in capsys.readouterr().err


@pytest.mark.usefixtures("sigterm_untouched")
def test_the_commands_print_and_exit_as_documented(tmp_path, capsys):
    """backup --json, restore --verify-only and restore --json exit 0 with their JSON; restore
    over a store without --force exits 2."""
    data_dir = synced_data_dir(tmp_path)
    destination = tmp_path / "b"
    assert main(["backup", "--data-dir", str(data_dir), "--to", str(destination), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["path"] == str(destination)
    assert written["store"]["documents"] == 3
    assert main(["restore", "--from", str(destination), "--verify-only"]) == 0
    assert "is whole" in capsys.readouterr().out
    assert main(["restore", "--from", str(destination), "--data-dir", str(data_dir)]) == 2
    assert "add --force" in capsys.readouterr().err
    args = ["restore", "--from", str(destination), "--data-dir", str(data_dir), "--force", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["replaced"] is True


def test_as_root_a_restore_gives_the_files_to_the_data_directory_owner(tmp_path):
    """Run as root over a data directory owned by the daemon's user, the restored folder and
    files belong to that user, not to root (the daemon could not open them otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("changing owners needs root; this run is not root")
    data_dir = synced_data_dir(tmp_path)
    destination = backup_of(tmp_path, data_dir)
    daemon_user = (4321, 4321)
    for path in [data_dir, *data_dir.rglob("*")]:
        os.chown(path, *daemon_user)
    restore(destination, data_dir, force=True)
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [data_dir, *data_dir.iterdir()]}
    assert owners == {daemon_user}
