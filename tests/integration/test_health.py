"""`ragvisor health` and `ragvisor status` against a real daemon and a real generator (its
embedded worker, then a real Ollama built from source), and daemons that are down, silent or
pointed at a dead backend.

The plugin runs as a subprocess exactly as Nagios runs it; every scenario checks the exit code
and the status line with its perfdata.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import (
    Daemon,
    cli_env,
    free_port,
    start_daemon,
    stop_daemon,
)
from tests.integration.corpus import write_corpus

pytestmark = pytest.mark.slow

HEALTH = [sys.executable, "-m", "ragvisor", "health"]
STATUS = [sys.executable, "-m", "ragvisor", "status"]
PERFDATA = re.compile(r"'([^']+)'=([-0-9.]+|U)([a-zA-Z%]*)((;[^; ]*){0,4})")


def run(command: list[str], model_dir: Path, *args: str, timeout: float = 60):
    """Run the plugin (or status) to completion; returns the CompletedProcess."""
    return subprocess.run(
        [*command, *args],
        env=cli_env(model_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def perfdata(line: str) -> dict[str, str]:
    """label -> the whole `value[UOM];warn;crit;min;max` text, from the status line."""
    _, _, perf = line.partition(" | ")
    return {m.group(1): m.group(0).split("=", 1)[1] for m in PERFDATA.finditer(perf)}


def loaded_models(worker_url: str) -> list[str]:
    """Names of the models the worker has in memory (`/api/ps`)."""
    return [m["name"] for m in httpx.get(f"{worker_url}/api/ps", timeout=10).json()["models"]]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_dir, generator) -> Iterator[Daemon]:
    """A daemon with the module's generator over the small notes corpus, synced at start."""
    base = tmp_path_factory.mktemp("health")
    corpus = write_corpus(base / "notes")
    env = generator.daemon_env()
    d = start_daemon(corpus, base / "data", model_dir, base / "daemon.log", **env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the sync on start runs once the daemon is up
        status = httpx.get(f"{d.url}/status", timeout=5).json()
        if status["sync"]["last_sync_age_s"] is not None:
            break
        time.sleep(0.1)
    else:
        stop_daemon(d)
        pytest.fail(f"the sync on start did not finish in 60 s:\n{d.logs()}")
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def worker_url(daemon) -> str:
    """The generator backend's URL (the worker's, or Ollama's), as the daemon reports it."""
    return httpx.get(f"{daemon.url}/status", timeout=5).json()["backends"]["generator"]["url"]


def test_healthy_daemon_is_ok_without_loading_a_model(daemon, worker_url, model_dir, generator):
    """1. the model is not loaded; 2. health runs three times: OK, exit 0, perfdata with the
    defaults from the daemon's interval; 3. the model is still not loaded."""
    assert loaded_models(worker_url) == []
    for _ in range(3):
        result = run(HEALTH, model_dir, "--url", daemon.url)
        assert result.returncode == 0, result.stdout + result.stderr
    line = result.stdout
    assert line.count("\n") == 1
    assert line.startswith("RAGVISOR OK - generator gemma3-270m (not loaded); last sync ")
    assert "4 documents" in line
    perf = perfdata(line)
    assert re.fullmatch(r"[0-9.]+s;900;3000;0", perf["sync_age"]), perf
    assert perf["queue"] == "0;3;7;0;72"
    assert re.fullmatch(r"[0-9.]+MB;400:;200:;0;[0-9.]+", perf["mem_available"]), perf
    assert re.fullmatch(r"[0-9.]+MB;;;0", perf["rss_daemon"]), perf
    assert perf["breaker_generator"] == "0;;;0;2"
    assert perf["generator_loaded"] == "0;;;0;1"
    assert set(perf) >= {"time", "rss_worker" if generator.server is None else "rss_ollama"}
    assert loaded_models(worker_url) == []


def test_stale_sync_is_a_warning(daemon, model_dir):
    """A sync older than the -w threshold (0 s here) makes the plugin WARNING, exit 1."""
    result = run(HEALTH, model_dir, "--url", daemon.url, "-w", "sync_age=0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("RAGVISOR WARNING - last sync ")
    assert "(warning threshold 0)" in result.stdout
    assert re.fullmatch(r"[0-9.]+s;0;3000;0", perfdata(result.stdout)["sync_age"])


def test_critical_threshold_wins(daemon, model_dir):
    """-c on available memory above what the box has makes the plugin CRITICAL, exit 2."""
    result = run(HEALTH, model_dir, "--url", daemon.url, "-c", "mem_available=100000000:")
    assert result.returncode == 2, result.stdout
    assert "MB available (critical threshold 100000000:)" in result.stdout


def test_deep_check_searches_generates_and_leaves_the_model_unloaded(daemon, worker_url, model_dir):
    """--deep runs a real search and a one-token generation, then the worker has unloaded the
    model again (it was not loaded before, so the check asked with keep_alive 0)."""
    assert loaded_models(worker_url) == []
    result = run(HEALTH, model_dir, "--url", daemon.url, "--deep", "--timeout", "120", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "search ok (1 hit in " in result.stdout
    assert "generated 1 token in " in result.stdout
    perf = perfdata(result.stdout)
    assert {"search_time", "generate_time"} <= set(perf)
    deadline = time.monotonic() + 10
    while loaded_models(worker_url) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert loaded_models(worker_url) == []


def test_deep_check_leaves_a_loaded_model_loaded(daemon, worker_url, model_dir):
    """The other half of "as it found it": a model loaded before --deep is still loaded after
    (the check must not unload what someone else is using)."""
    preload = httpx.post(
        f"{worker_url}/api/generate", json={"model": "gemma3-270m", "keep_alive": "10m"}, timeout=60
    )
    assert preload.status_code == 200, preload.text
    assert loaded_models(worker_url)
    try:
        result = run(
            HEALTH, model_dir, "--url", daemon.url, "--deep", "--timeout", "120", timeout=180
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "generated 1 token in " in result.stdout
        assert loaded_models(worker_url)
    finally:
        unload = {"model": "gemma3-270m", "keep_alive": 0}
        httpx.post(f"{worker_url}/api/generate", json=unload, timeout=60)


def test_frozen_worker_is_critical(daemon, model_dir, generator):
    """1. SIGSTOP the backend's server (the worker; `ollama serve` and its runners) — alive but
    silent, as in a hang; 2. health with a short timeout is CRITICAL "generator backend down";
    3. SIGCONT: OK again."""
    if generator.server is None:
        ready = httpx.get(f"{daemon.url}/readyz", timeout=10).json()["checks"]["generator"]
        pid, signal_to = ready["worker"]["pid"], os.kill
    else:
        pid, signal_to = generator.server.pid, os.killpg
    signal_to(pid, signal.SIGSTOP)
    try:
        result = run(HEALTH, model_dir, "--url", daemon.url, "--timeout", "4")
    finally:
        signal_to(pid, signal.SIGCONT)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.startswith("RAGVISOR CRITICAL - generator backend down (")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        again = run(HEALTH, model_dir, "--url", daemon.url)
        if again.returncode == 0:
            break
        time.sleep(0.5)
    assert again.returncode == 0, again.stdout


def test_status_prints_every_section_and_json(daemon, model_dir, generator):
    """`status` prints the table with every section; `--json` the combined JSON."""
    table = run(STATUS, model_dir, "--url", daemon.url)
    assert table.returncode == 0, table.stderr
    for heading in ("daemon", "lanes", "backends", "memory", "sync", "store"):
        assert re.search(rf"^{heading}$", table.stdout, re.MULTILINE), table.stdout
    row = rf"^  generator\s+{generator.label}\s+gemma3-270m\s+http://"
    assert re.search(row, table.stdout, re.M), table.stdout
    assert re.search(r"^  ready\s+yes \(", table.stdout, re.M)
    raw = run(STATUS, model_dir, "--url", daemon.url, "--json")
    assert raw.returncode == 0, raw.stderr
    body = json.loads(raw.stdout)
    assert body["reachable"] is True
    assert body["readiness"]["ready"] is True
    assert body["status"]["store"]["documents"] == 4
    assert set(body["status"]["lanes"]) == {"search", "ask", "sync"}


def test_daemon_down_is_critical_and_status_fails(model_dir):
    """Nothing listening: health is CRITICAL (exit 2), status exits 1 with a clear message."""
    url = f"http://127.0.0.1:{free_port()}"
    result = run(HEALTH, model_dir, "--url", url)
    assert result.returncode == 2
    assert result.stdout.startswith(f"RAGVISOR CRITICAL - daemon unreachable at {url}")
    assert re.fullmatch(r"'time'=[0-9.]+s;;;0", result.stdout.split(" | ")[1].strip())
    status = run(STATUS, model_dir, "--url", url)
    assert status.returncode == 1
    assert status.stdout == ""
    assert f"daemon unreachable at {url}" in status.stderr


def test_silent_daemon_is_critical_within_the_timeout(model_dir):
    """A port that accepts connections but never answers: CRITICAL after --timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        result = run(HEALTH, model_dir, "--url", url, "--timeout", "1", timeout=30)
        elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stdout
    assert result.stdout.startswith(
        f"RAGVISOR CRITICAL - daemon at {url} did not answer within 1 s"
    )
    assert elapsed < 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-w", "nonsense"], "RAGVISOR UNKNOWN - bad threshold 'nonsense'"),
        (["-c", "queue=@"], "RAGVISOR UNKNOWN - bad threshold range '@'"),
        (["--timeout", "abc"], "RAGVISOR UNKNOWN - bad arguments: argument -t/--timeout"),
    ],
)
def test_bad_arguments_are_unknown(args, message, model_dir):
    """Usage mistakes exit 3 (UNKNOWN) with a status line, before any network call."""
    result = run(HEALTH, model_dir, "--url", "http://127.0.0.1:9", *args)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.startswith(message)


def test_dead_backend_is_critical(tmp_path, model_dir):
    """A daemon whose Ollama URL has nothing behind it: CRITICAL "generator backend down",
    named first, with the URL; status still prints (exit 0) and shows the failed check."""
    dead = f"http://127.0.0.1:{free_port()}"
    corpus = write_corpus(tmp_path / "notes")
    d = start_daemon(
        corpus,
        tmp_path / "data",
        model_dir,
        tmp_path / "daemon.log",
        ready=False,
        RAGVISOR_GENERATOR__BACKEND="ollama",
        RAGVISOR_GENERATOR__URL=dead,
        RAGVISOR_SYNC__ON_START="false",
    )
    try:
        result = run(HEALTH, model_dir, "--url", d.url)
        status = run(STATUS, model_dir, "--url", d.url)
    finally:
        stop_daemon(d)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.startswith(f"RAGVISOR CRITICAL - generator backend down ({dead}: ")
    assert result.stdout.count("generator backend down") == 1
    assert status.returncode == 0, status.stderr
    assert re.search(r"^  ready\s+no \(.*generator FAILED", status.stdout, re.M)
