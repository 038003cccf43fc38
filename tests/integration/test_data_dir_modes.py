"""Private by default, with the real daemon: whatever umask it starts under, nothing it writes
to its data directory is open to other users, and an old install's wider modes are narrowed."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ragvisor.core.hashing import file_sha256
from ragvisor.embed.optimized import cached_path, weights_path
from tests.integration.conftest import run_cli, start_daemon, stop_daemon
from tests.integration.corpus import write_corpus

NO_GENERATOR = {"RAGVISOR_GENERATOR__BACKEND": "none", "RAGVISOR_SYNC__INTERVAL_S": "0"}


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """The process umask while a child is started (the child inherits it), then the old one."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def optimized_graph(model_dir: Path) -> Path:
    """The file name `embed.optimized` caches this model's optimised graph under."""
    return cached_path(Path("models/onnx-optimized"), file_sha256(model_dir / "model.onnx"))


def modes_below(root: Path) -> dict[str, int]:
    """Every path under `root` (itself as ".") with its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def wait_for_sync(url: str, timeout_s: float = 120.0) -> dict:
    """The sync state once the start-up sync has finished (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/status").json()["sync"]
        if state["last_success_at"] is not None and not state["running"]:
            return state
        time.sleep(0.1)
    raise AssertionError("the start-up sync did not finish in time")


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_everything_the_daemon_writes_is_private_whatever_the_umask(tmp_path, model_dir, mask):
    """Under umask 022 or 000: the folder 0700; database, -wal, -shm, admin_token, sync.lock
    and the optimised model graph and its weights 0600, their folders 0700 — checked while the
    daemon runs, when all of them exist."""
    corpus = write_corpus(tmp_path / "notes")
    data = tmp_path / "data"
    # 1. Start the daemon on no data directory at all, under the umask; it syncs at start.
    with umask(mask):
        daemon = start_daemon(corpus, data, model_dir, tmp_path / "daemon.log", **NO_GENERATOR)
    try:
        assert wait_for_sync(daemon.url)["last_report"]["documents"]["new"] == 4
        # 2. Everything it wrote is its owner's alone.
        assert modes_below(data) == {
            ".": 0o700,
            "ragvisor.sqlite3": 0o600,
            "ragvisor.sqlite3-wal": 0o600,
            "ragvisor.sqlite3-shm": 0o600,
            "admin_token": 0o600,
            "sync.lock": 0o600,
            "models": 0o700,
            "models/onnx-optimized": 0o700,
            str(optimized_graph(model_dir).parent): 0o700,
            str(optimized_graph(model_dir)): 0o600,
            str(weights_path(optimized_graph(model_dir))): 0o600,
        }
    finally:
        stop_daemon(daemon)


def test_an_old_installs_wide_modes_are_narrowed_at_start(tmp_path, model_dir):
    """A data directory left 0755 with 0644 files (an older ragvisor under umask 022) is
    narrowed when the daemon starts, one warning per path."""
    corpus = write_corpus(tmp_path / "notes")
    data = tmp_path / "data"
    # 1. A synced store, then the modes an older version left behind.
    synced = run_cli(["sync", "--corpus", str(corpus), "--data-dir", str(data)], model_dir)
    assert synced.returncode == 0, synced.stderr
    (data / "admin_token").write_text("an-operators-own-token-0123\n")
    data.chmod(0o755)
    for name in ("ragvisor.sqlite3", "admin_token", "sync.lock"):
        (data / name).chmod(0o644)
    # 2. The daemon starts, serves with the operator's token, and every mode is narrowed.
    daemon = start_daemon(
        corpus, data, model_dir, tmp_path / "daemon.log", RAGVISOR_SYNC__ON_START="false",
        **NO_GENERATOR,
    )  # fmt: skip
    try:
        found = modes_below(data)
        assert found["."] == 0o700
        assert all(
            mode == (0o700 if (data / name).is_dir() else 0o600)
            for name, mode in found.items()
            if name != "."
        ), found
        state = httpx.get(
            f"{daemon.url}/admin/sync",
            headers={"Authorization": "Bearer an-operators-own-token-0123"},
        )
        assert state.status_code == 200
    finally:
        stop_daemon(daemon)
    # 3. One data_dir.mode_tightened warning per path, with the old and the new mode.
    logged = [json.loads(line) for line in daemon.logs().splitlines() if line.startswith("{")]
    tightened = {
        Path(e["path"]).name: (e["mode_was"], e["mode"])
        for e in logged
        if e["event"] == "data_dir.mode_tightened"
    }
    assert tightened == {
        "data": ("0755", "0700"),
        "admin_token": ("0644", "0600"),
        "ragvisor.sqlite3": ("0644", "0600"),
        "sync.lock": ("0644", "0600"),
    }
