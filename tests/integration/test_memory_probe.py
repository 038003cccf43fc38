"""The real SystemProbe on this machine: psutil, /proc/pressure/memory and real processes named
like Ollama and Neo4j (copies of /bin/sleep and /bin/sh), plus the FileProbe rehearsal overrides.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from ragvisor.config import MemorySettings
from ragvisor.supervise.memory import (
    MB,
    TEST_MEMORY_FILE_ENV,
    FileProbe,
    SystemProbe,
    probe_from_env,
    read_psi,
)

PROC_PRESSURE = Path("/proc/pressure/memory")
Spawn = Callable[..., subprocess.Popen[bytes]]


def wait_for(condition: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    """Poll until `condition()` holds; fail after `timeout_s` (no test waits forever)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(0.02)


@pytest.fixture
def spawn(tmp_path) -> Iterator[Spawn]:
    """Start a copy of a system binary under another name; every copy is killed and reaped."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, source: str, *args: str) -> subprocess.Popen[bytes]:
        folder = tmp_path / f"bin-{len(started)}"
        folder.mkdir()
        exe = folder / name
        shutil.copy(source, exe)
        try:
            proc = subprocess.Popen([str(exe), *args])
        except PermissionError as exc:
            pytest.skip(f"cannot execute a copied binary in {folder} (noexec mount?): {exc}")
        started.append(proc)
        seen = psutil.Process(proc.pid).name()
        if seen != name:
            pytest.skip(f"psutil names the copy of {source} {seen!r}, not {name!r}")
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def others_named(name: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == name]


def test_totals_and_daemon_rss_are_sane():
    """Totals match psutil's, available is within total, and this process reports as daemon."""
    probe = SystemProbe()
    sample = probe.sample()
    assert sample.total_bytes == psutil.virtual_memory().total
    assert 0 < sample.available_bytes <= sample.total_bytes
    assert 0 <= sample.swap_used_bytes <= sample.swap_total_bytes
    own = psutil.Process().memory_info().rss
    assert abs(sample.rss_bytes["daemon"] - own) < 64 * MB
    assert sample.taken_at <= time.monotonic()


def test_swap_rates_are_unknown_first_then_measured():
    """The first sample has no swap rate; one taken after the rate window has a number >= 0."""
    probe = SystemProbe(min_rate_window_s=0.2)
    first = probe.sample()
    assert (first.swap_in_bytes_per_s, first.swap_out_bytes_per_s) == (None, None)
    quick = probe.sample()  # inside the window: still no rate from a few microseconds
    assert quick.swap_in_bytes_per_s is None
    time.sleep(0.3)
    later = probe.sample()
    assert later.swap_in_bytes_per_s is not None
    assert later.swap_in_bytes_per_s >= 0
    assert later.swap_out_bytes_per_s is not None
    assert later.swap_out_bytes_per_s >= 0


def test_psi_is_read_from_the_kernel_when_it_has_it():
    """Where /proc/pressure/memory exists, both avg10 figures are percentages."""
    some, _ = read_psi(PROC_PRESSURE)
    if some is None:
        pytest.skip(f"{PROC_PRESSURE} is missing or unreadable: this kernel has no PSI")
    sample = SystemProbe().sample()
    assert sample.psi_some_avg10 is not None
    assert 0.0 <= sample.psi_some_avg10 <= 100.0
    assert sample.psi_full_avg10 is not None
    assert 0.0 <= sample.psi_full_avg10 <= 100.0


def test_psi_file_is_parsed_and_its_absence_is_none(tmp_path):
    """A PSI file in the kernel's format is parsed; a missing one reads as None, not an error."""
    fake = tmp_path / "memory"
    fake.write_text(
        "some avg10=42.10 avg60=10.00 avg300=2.00 total=1\n"
        "full avg10=5.50 avg60=1.00 avg300=0.10 total=1\n"
    )
    sample = SystemProbe(proc_pressure=fake).sample()
    assert (sample.psi_some_avg10, sample.psi_full_avg10) == (42.1, 5.5)
    missing = SystemProbe(proc_pressure=tmp_path / "absent").sample()
    assert (missing.psi_some_avg10, missing.psi_full_avg10) == (None, None)


def test_finds_ollama_by_name_with_its_children_and_follows_its_exit(spawn):
    """A process named ollama is found with its children; its exit and successor are seen."""
    if others_named("ollama"):
        pytest.skip(f"processes named ollama already run here: {others_named('ollama')}")
    # 1. A shell copied as "ollama" with two children: the server and its model runners.
    server = spawn("ollama", "/bin/sh", "-c", "sleep 60 & sleep 60; exit 0")
    wait_for(lambda: len(psutil.Process(server.pid).children()) == 2)
    probe = SystemProbe()
    sample = probe.sample()
    family = [psutil.Process(server.pid), *psutil.Process(server.pid).children()]
    expected = sum(p.memory_info().rss for p in family)
    # 2. Its RSS is the family's: server plus both runners.
    assert "ollama" in sample.rss_bytes
    assert abs(sample.rss_bytes["ollama"] - expected) < 2 * MB
    assert sample.rss_bytes["ollama"] > psutil.Process(server.pid).memory_info().rss
    # 3. Kill the whole family and reap the server: no RSS is reported for ollama any more.
    for proc in family:
        proc.kill()
    server.wait(timeout=10)
    wait_for(lambda: not any(p.is_running() and p.status() != "zombie" for p in family[1:]))
    assert "ollama" not in probe.sample().rss_bytes
    # 4. A successor (the service restarted) is found soon after, without waiting 30 s.
    successor = spawn("ollama", "/bin/sleep", "60")
    time.sleep(1.1)
    assert probe.sample().rss_bytes.get("ollama") == pytest.approx(
        psutil.Process(successor.pid).memory_info().rss, abs=2 * MB
    )


def test_an_exited_but_unreaped_process_is_not_counted(spawn):
    """A watched process that died but is still a zombie drops out of the RSS readings."""
    if others_named("ollama"):
        pytest.skip(f"processes named ollama already run here: {others_named('ollama')}")
    runner = spawn("ollama", "/bin/sleep", "60")
    probe = SystemProbe()
    assert "ollama" in probe.sample().rss_bytes
    runner.kill()  # not reaped: the process stays a zombie until wait()
    wait_for(lambda: psutil.Process(runner.pid).status() == psutil.STATUS_ZOMBIE)
    assert "ollama" not in probe.sample().rss_bytes


def test_finds_neo4j_as_a_java_process_and_through_a_pid_file(spawn, tmp_path, neo4j_engine):
    """Neo4j is found as a java process whose command line mentions neo4j, or by pid file."""
    # 1. The run's real Neo4j (a JVM whose class path names neo4j) is found by name.
    assert neo4j_engine.process is not None
    jvm_rss = psutil.Process(neo4j_engine.process.pid).memory_info().rss
    by_name = SystemProbe().sample()
    assert by_name.rss_bytes.get("neo4j", 0) >= 0.5 * jvm_rss > 100 * MB
    # 2. A process of any name, named by a pid file instead.
    db = spawn("graphdb", "/bin/sleep", "60")
    pid_file = tmp_path / "neo4j.pid"
    pid_file.write_text(f"{db.pid}\n")
    by_file = SystemProbe(neo4j_pid_file=pid_file).sample()
    assert by_file.rss_bytes["neo4j"] == pytest.approx(
        psutil.Process(db.pid).memory_info().rss, abs=2 * MB
    )
    # 3. A worker passed in by the composition root is reported under its own label.
    worker = spawn("rv-worker", "/bin/sleep", "60")
    pids: dict[str, int | None] = {"worker": worker.pid}
    probe = SystemProbe(extra_pids=lambda: pids)
    assert probe.sample().rss_bytes["worker"] > 0
    # 4. When the worker exits (pid dropped, or still given but gone), it is not reported.
    worker.kill()
    worker.wait(timeout=10)
    assert "worker" not in probe.sample().rss_bytes
    pids["worker"] = None
    assert "worker" not in probe.sample().rss_bytes


def test_a_sample_is_cheap():
    """Samples after the first reuse the process scan; print the cost per sample."""
    probe = SystemProbe()
    started = time.perf_counter()
    probe.sample()
    first_ms = (time.perf_counter() - started) * 1000
    count = 50
    started = time.perf_counter()
    for _ in range(count):
        probe.sample()
    per_sample_ms = (time.perf_counter() - started) * 1000 / count
    print(
        f"SystemProbe: first sample (with the process scan) {first_ms:.1f} ms, "
        f"then {per_sample_ms:.2f} ms per sample"
    )
    assert per_sample_ms < 250  # generous: a few /proc reads, far below the 5 s interval


def test_file_probe_overrides_real_readings(tmp_path):
    """A rehearsal file overrides what it names, keeps the rest real, and can be removed."""
    path = tmp_path / "memory.json"
    probe = FileProbe(path, SystemProbe())
    # 1. No file yet: the real readings.
    real = probe.sample()
    assert real.total_bytes == psutil.virtual_memory().total
    # 2. Overrides for available memory, swap-in, PSI and an Ollama RSS; the rest stays real.
    path.write_text(
        json.dumps(
            {
                "available_mb": 350,
                "swap_in_mb_s": 6,
                "psi_some_avg10": 55,
                "rss_mb": {"ollama": 2500},
            }
        )
    )
    faked = probe.sample()
    assert faked.available_bytes == 350 * MB
    assert faked.swap_in_bytes_per_s == 6 * MB
    assert faked.psi_some_avg10 == 55
    assert faked.rss_bytes["ollama"] == 2500 * MB
    assert "daemon" in faked.rss_bytes
    assert faked.total_bytes == real.total_bytes
    # 3. A broken file is an error naming it, never silently ignored.
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"memory\.json: not valid JSON"):
        probe.sample()
    path.write_text(json.dumps({"availabel_mb": 1}))
    with pytest.raises(ValueError, match="unknown keys"):
        probe.sample()
    # 4. Deleting the file ends the rehearsal.
    path.unlink()
    after = probe.sample()
    assert after.available_bytes != 350 * MB
    assert after.rss_bytes.get("ollama") != 2500 * MB


def test_probe_from_env_uses_the_file_only_when_the_variable_is_set(tmp_path):
    """RAGVISOR_TEST_MEMORY_FILE selects a FileProbe; without it the daemon gets a SystemProbe."""
    settings = MemorySettings()
    assert isinstance(probe_from_env(settings, environ={}), SystemProbe)
    path = tmp_path / "pressure.json"
    path.write_text(json.dumps({"available_mb": 150}))
    probe = probe_from_env(settings, environ={TEST_MEMORY_FILE_ENV: str(path)})
    assert isinstance(probe, FileProbe)
    assert probe.sample().available_bytes == 150 * MB
