"""`ragvisor backup` and `ragvisor restore` with the real ONNX model, real SQLite and the real
daemon: a backup taken while the daemon serves (and while a sync writes) restores into a store
whose next sync embeds nothing and whose searches answer exactly as before."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.consistency import check_store
from tests.integration.conftest import (
    QUIET,
    RAGVISOR,
    cli_env,
    run_cli,
    start_daemon,
    stop_daemon,
)
from tests.integration.corpus import synthetic_corpus, write_corpus
from tests.integration.test_crash_safety import committed_documents

QUERIES = ("how do I set swappiness", "bake sourdough bread", "neo4j heap size", "cat windowsill")


def searches(url: str) -> dict[str, list[tuple[str, str, float]]]:
    """Every query's ranked results over HTTP: path, chunk and score (to 6 places)."""
    found = {}
    for query in QUERIES:
        response = httpx.get(f"{url}/search", params={"q": query, "k": 5}, timeout=30)
        assert response.status_code == 200, response.text
        found[query] = [
            (hit["path"], hit["chunk_id"], round(hit["score"], 6))
            for hit in response.json()["results"]
        ]
    return found


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, to show a folder was not touched."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_backup_under_the_daemon_wipe_restore_then_nothing_to_embed_and_same_results(
    tmp_path, model_dir, embedder
):
    """1. The notes synced, the daemon serving them, their searches recorded; 2. a backup taken
    while the daemon runs; 3. a restore under the running daemon is refused (75), untouched;
    4. the daemon stopped, a backup with one flipped byte is refused (1), untouched; 5. the data
    directory wiped and the backup restored; 6. the next sync embeds nothing; 7. the daemon,
    started again, answers every search exactly as before, with the same admin token."""
    # 1. The notes, synced by the CLI, served by the daemon.
    corpus = write_corpus(tmp_path / "notes")
    data = tmp_path / "data"
    first = run_cli(["sync", "--corpus", str(corpus), "--data-dir", str(data), "--json"], model_dir)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["embeddings_computed"] > 0
    daemon = start_daemon(corpus, data, model_dir, tmp_path / "daemon.log", **QUIET)
    try:
        before = searches(daemon.url)
        token = daemon.token
        assert all(before.values())
        # 2. The backup, online.
        backup = tmp_path / "backups" / "20261204T030000Z"
        made = run_cli(
            ["backup", "--data-dir", str(data), "--to", str(backup), "--json"], model_dir
        )
        assert made.returncode == 0, made.stderr
        manifest = json.loads(made.stdout)
        assert manifest["store"]["documents"] == 4
        assert manifest["store"]["vectors"] == {
            embedder.fingerprint.key: manifest["store"]["chunks"]
        }
        assert sorted(manifest["files"]) == ["admin_token", "ragvisor.sqlite3"]
        events = [json.loads(line)["event"] for line in made.stderr.splitlines()]
        assert events == ["backup.started", "backup.database_copied", "backup.finished"]
        # 3. Restoring beneath the running daemon would be lost: refused, nothing changed.
        untouched = tree(data)
        beneath = run_cli(
            ["restore", "--from", str(backup), "--data-dir", str(data), "--force"], model_dir
        )
        assert beneath.returncode == 75, beneath.stderr
        assert "stop it first" in beneath.stderr
    finally:
        stop_daemon(daemon)
    untouched = tree(data)
    # 4. A backup with one flipped byte (bit rot, a bad copy) is refused before anything moves.
    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    database = bytearray((damaged / "ragvisor.sqlite3").read_bytes())
    database[len(database) // 2] ^= 0x10
    (damaged / "ragvisor.sqlite3").write_bytes(bytes(database))
    refused = run_cli(
        ["restore", "--from", str(damaged), "--data-dir", str(data), "--force"], model_dir
    )
    assert refused.returncode == 1, refused.stderr
    assert "is damaged: ragvisor.sqlite3 has SHA-256" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert tree(data) == untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # 5. The data directory wiped, the backup restored.
    shutil.rmtree(data)
    restored = run_cli(["restore", "--from", str(backup), "--data-dir", str(data)], model_dir)
    assert restored.returncode == 0, restored.stderr
    assert "restored" in restored.stdout
    check_store(data / "ragvisor.sqlite3", embedder.fingerprint.key)
    # 6. The content hashes match: nothing to embed.
    again = run_cli(["sync", "--corpus", str(corpus), "--data-dir", str(data), "--json"], model_dir)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["embeddings_computed"] == 0
    assert report["documents"]["unchanged"] == 4
    # 7. The same answers, the same token.
    daemon = start_daemon(corpus, data, model_dir, tmp_path / "daemon2.log", **QUIET)
    try:
        assert searches(daemon.url) == before
        assert daemon.token == token
    finally:
        stop_daemon(daemon)


def test_a_backup_taken_mid_sync_is_consistent_and_the_next_sync_finishes_the_rest(
    tmp_path, model_dir, embedder
):
    """1. A sync of 60 documents running; 2. a backup taken while it writes is a consistent
    store holding some of them, the sync itself unharmed; 3. restored elsewhere, a sync embeds
    exactly what the backup did not hold; 4. both stores answer the same searches."""
    # 1. A sync long enough to be caught half-way.
    corpus = synthetic_corpus(tmp_path / "corpus", documents=60)
    data = tmp_path / "data"
    command = [*RAGVISOR, "sync", "--corpus", str(corpus), "--data-dir", str(data), "--json"]
    sync = subprocess.Popen(
        command, env=cli_env(model_dir), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while committed_documents(data / "ragvisor.sqlite3") < 5 and time.monotonic() < deadline:
        assert sync.poll() is None, "the sync ended before it could be caught mid-way"
        time.sleep(0.01)
    # 2. The backup, while the sync commits.
    backup = tmp_path / "backup"
    made = run_cli(["backup", "--data-dir", str(data), "--to", str(backup), "--json"], model_dir)
    assert made.returncode == 0, made.stderr
    caught_running = sync.poll() is None
    out, _ = sync.communicate(timeout=300)
    assert sync.returncode == 0
    full = json.loads(out)
    assert caught_running, "the sync finished before the backup did: make the corpus larger"
    held = json.loads(made.stdout)["store"]
    assert 5 <= held["documents"] < 60
    # 3. Restored into another data directory: consistent, and a sync completes it.
    elsewhere = tmp_path / "elsewhere"
    restored = run_cli(["restore", "--from", str(backup), "--data-dir", str(elsewhere)], model_dir)
    assert restored.returncode == 0, restored.stderr
    counts = check_store(elsewhere / "ragvisor.sqlite3", embedder.fingerprint.key)
    assert counts["documents"] == held["documents"]
    rest = run_cli(
        ["sync", "--corpus", str(corpus), "--data-dir", str(elsewhere), "--json"], model_dir
    )
    assert rest.returncode == 0, rest.stderr
    report = json.loads(rest.stdout)
    assert report["documents"]["unchanged"] == held["documents"]
    assert report["documents"]["new"] == 60 - held["documents"]
    vectors_held = held["vectors"][embedder.fingerprint.key]
    assert report["embeddings_computed"] == full["embeddings_computed"] - vectors_held
    # 4. The two stores are the same store.
    for query in ("topic7 detail2 sentence", "item40 about"):
        answers = [
            json.loads(
                run_cli(
                    ["search", query, "--corpus", str(corpus), "--data-dir", str(d), "--json"],
                    model_dir,
                ).stdout
            )["results"]
            for d in (data, elsewhere)
        ]
        assert [(h["chunk_id"], round(h["score"], 6)) for h in answers[0]] == [
            (h["chunk_id"], round(h["score"], 6)) for h in answers[1]
        ]
