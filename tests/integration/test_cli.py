"""The `ragvisor` command as a user runs it: sync, search, exit codes, progress on a terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
import time

import pytest

from tests.integration.conftest import RAGVISOR, cli_env, run_cli
from tests.integration.corpus import synthetic_corpus, write_corpus


@pytest.fixture
def notes(tmp_path):
    return write_corpus(tmp_path / "notes")


def test_sync_json_reports_counts_then_zero_on_resync(tmp_path, notes, model_dir):
    """`sync --json` prints one object with documents/chunks counts, embeddings and seconds."""
    args = ["sync", "--corpus", str(notes), "--data-dir", str(tmp_path / "d"), "--json"]
    first = run_cli(args, model_dir)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert set(report) >= {"documents", "chunks", "embeddings_computed", "seconds"}
    for key in ("documents", "chunks"):
        assert set(report[key]) == {"new", "changed", "unchanged", "deleted"}
    assert report["documents"]["new"] == 4
    assert report["embeddings_computed"] == report["chunks"]["new"] > 0
    (notes / "recipes" / "bread.md").unlink()
    again = json.loads(run_cli(args, model_dir).stdout)
    assert again["embeddings_computed"] == 0
    assert again["documents"] == {"new": 0, "changed": 0, "unchanged": 3, "deleted": 1}


def test_sync_summary_and_logs_are_separate_streams(tmp_path, notes, model_dir):
    """Without --json the summary goes to stdout and the JSON log events to stderr."""
    result = run_cli(["sync", "--corpus", str(notes), "--data-dir", str(tmp_path / "d")], model_dir)
    assert result.returncode == 0
    assert "documents: 4 new" in result.stdout
    assert "embeddings computed:" in result.stdout
    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert "sync.finished" in events


def test_sync_skips_a_file_whose_name_is_not_utf8(tmp_path, notes, model_dir):
    """A note named in Latin-1 is one skipped file: exit 0, listed escaped, the rest indexed."""
    # 1. Beside the four notes, a file whose name is the Latin-1 bytes of "café.md".
    (notes / os.fsdecode(b"caf\xe9.md")).write_bytes(b"# Cafe\n\nEspresso needs a fine grind.\n")
    data = ["--corpus", str(notes), "--data-dir", str(tmp_path / "d")]
    skip = {
        "path": f"{notes.resolve()}/caf\\xe9.md",
        "reason": "name is not valid UTF-8 (rename it, e.g. with convmv)",
    }
    # 2. The sync completes with exit 0 and names the skip, its bytes escaped.
    human = run_cli(["sync", *data], model_dir)
    assert human.returncode == 0, human.stderr
    assert "documents: 4 new, 0 changed, 0 unchanged, 0 deleted; skipped 1" in human.stdout
    assert f"skipped {skip['path']}: {skip['reason']}" in human.stdout.splitlines()
    # 3. The JSON report lists and counts it; the other documents are stored and unchanged.
    again = run_cli(["sync", *data, "--json"], model_dir)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["skipped"], report["skipped_count"]) == ([skip], 1)
    assert report["documents"] == {"new": 0, "changed": 0, "unchanged": 4, "deleted": 0}
    # 4. Search works over everything else.
    found = json.loads(run_cli(["search", *data, "--json", "swappiness"], model_dir).stdout)
    assert found["results"][0]["path"] == "ops/swap.md"


def test_search_in_process_and_json(tmp_path, notes, model_dir):
    """`search` works in-process on the local store and prints JSON with --json."""
    data = ["--corpus", str(notes), "--data-dir", str(tmp_path / "d")]
    assert run_cli(["sync", *data], model_dir).returncode == 0
    human = run_cli(["search", *data, "-k", "1", "how do I bake sourdough"], model_dir)
    assert human.returncode == 0, human.stderr
    assert "recipes/bread.md" in human.stdout
    as_json = json.loads(run_cli(["search", *data, "--json", "swappiness"], model_dir).stdout)
    assert as_json["results"][0]["path"] == "ops/swap.md"


def test_search_with_url_talks_to_the_daemon(tmp_path, notes, model_dir, daemon_factory):
    """`search --url` asks a running daemon and maps its 4xx to exit code 2."""
    assert (
        run_cli(
            ["sync", "--corpus", str(notes), "--data-dir", str(tmp_path / "data")], model_dir
        ).returncode
        == 0
    )
    daemon = daemon_factory(notes, RAGVISOR_SYNC__ON_START="false")
    result = run_cli(["search", "--url", daemon.url, "--json", "-k", "2", "neo4j heap"], model_dir)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["path"] == "ops/neo4j.md"
    bad = run_cli(["search", "--url", daemon.url, "-k", "0", "x"], model_dir)
    assert bad.returncode == 2
    assert "k must be between" in bad.stderr
    down = run_cli(["search", "--url", "http://127.0.0.1:9", "x"], model_dir)
    assert down.returncode == 1
    assert "daemon unreachable at http://127.0.0.1:9" in down.stderr


@pytest.mark.parametrize("command", ["sync", "serve", "search"])
def test_missing_corpus_folder_is_a_clear_error(tmp_path, model_dir, command):
    """A corpus path that does not exist stops every command with exit 2 naming the key."""
    args = [command, "--corpus", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "d")]
    if command == "search":
        args.append("anything")
    result = run_cli(args, model_dir, timeout=60)
    assert result.returncode == 2
    assert "corpus.paths[0]" in result.stderr
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_file_and_env_are_exit_2(tmp_path, notes, model_dir):
    """An invalid key in the file or the environment stops the command, naming the key."""
    config = tmp_path / "ragvisor.toml"
    config.write_text("[server]\nport = 'x'\n")
    result = run_cli(["sync", "--config", str(config), "--corpus", str(notes)], model_dir)
    assert result.returncode == 2
    assert "server.port" in result.stderr
    env_bad = run_cli(
        ["sync", "--corpus", str(notes)], model_dir, RAGVISOR_EMBEDDER__THREADS="lots"
    )
    assert env_bad.returncode == 2
    assert "embedder.threads" in env_bad.stderr


def test_busy_sync_with_no_wait_exits_75_and_by_default_waits_then_runs(tmp_path, model_dir):
    """A second `ragvisor sync --wait 0` while one runs exits 75 at once with a clear message;
    without --wait, a second sync waits for the first to end and then runs (the daemon's
    folder watch may be syncing when a user types `ragvisor sync`)."""
    corpus = synthetic_corpus(tmp_path / "corpus", documents=120)
    args = ["sync", "--corpus", str(corpus), "--data-dir", str(tmp_path / "d")]
    first = subprocess.Popen(
        [*RAGVISOR, *args],
        env=cli_env(model_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        lock = tmp_path / "d" / "sync.lock"
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
            time.sleep(0.02)
        second = run_cli([*args, "--wait", "0"], model_dir)
        assert second.returncode == 75
        assert "another sync is running" in second.stderr
        assert first.poll() is None  # the first still runs as the third starts
        third = run_cli([*args, "--json"], model_dir)
        assert third.returncode == 0, third.stderr
        assert first.poll() is not None  # it ran once the first had ended
        assert json.loads(third.stdout.strip().splitlines()[-1])["documents"]["unchanged"] == 120
    finally:
        first.wait(120)
    assert first.returncode == 0


def test_progress_bar_is_shown_on_a_terminal(tmp_path, notes, model_dir):
    """On a terminal, `ragvisor sync` draws a progress bar (and readable logs) on stderr."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [*RAGVISOR, "sync", "--corpus", str(notes), "--data-dir", str(tmp_path / "d")],
        env=cli_env(model_dir),
        stdout=subprocess.DEVNULL,
        stderr=secondary,
    )
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            data = os.read(primary, 4096)
        except OSError:
            break
        if not data:
            break
        output += data
    process.wait(30)
    os.close(primary)
    text = output.decode(errors="replace")
    assert process.returncode == 0
    assert "embedding" in text
    assert "chunk" in text
    assert "100%" in text
    assert "sync.finished" in text
    assert not text.lstrip().startswith("{")
