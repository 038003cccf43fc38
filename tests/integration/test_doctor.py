"""`ragvisor doctor` as an operator runs it: a subprocess reading a host laid out in a temp dir
(`/proc` files, neo4j.conf, Ollama's drop-in) through `[doctor]` paths, an Ollama-protocol
server on loopback for `/api/show`, the real GGUF model file, and the machine's real /proc.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.conftest import RAGVISOR, cli_env, free_port, gguf_file, run_cli
from tests.integration.corpus import write_corpus

SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
PROD_DROPIN = """[Service]
Environment="OLLAMA_KEEP_ALIVE=0"
Environment="OLLAMA_MAX_LOADED_MODELS=1"
Environment="OLLAMA_NUM_PARALLEL=1"
Environment="OLLAMA_CONTEXT_LENGTH=2048"
"""
PROD_NEO4J = """# managed by ansible (neo4j role)
server.memory.heap.initial_size=512m
server.memory.heap.max_size=512m
server.memory.pagecache.size=512m
"""


# Pulled models and the context each was trained for.
PULLED = {"gemma3:270m": 32768, "gemma3:4k": 4096}


class ShowHandler(BaseHTTPRequestHandler):
    """Ollama's `/api/show` for the pulled models; 404 for any other, as Ollama answers."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/api/show" or body.get("model") not in PULLED:
            self._reply(404, {"error": f"model '{body.get('model')}' not found"})
            return
        length = PULLED[body["model"]]
        info = {"general.architecture": "gemma3", "gemma3.context_length": length}
        self._reply(200, {"details": {"family": "gemma3"}, "model_info": info})

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        """Quiet: the test reads the doctor's output, not the stub's."""


@pytest.fixture(scope="module")
def ollama_url() -> Iterator[str]:
    """An Ollama-protocol `/api/show` on loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ShowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def lay_out_host(
    root: Path,
    *,
    swap_kib: int | None,
    swappiness: int,
    memtotal_kib: int = 4_028_144,
    neo4j: str | None = PROD_NEO4J,
    dropin: str | None = PROD_DROPIN,
) -> dict[str, str]:
    """Write a host's files under `root`; return the `[doctor]` table that points at them."""
    proc = root / "proc"
    (proc / "sys" / "vm").mkdir(parents=True)
    swaps = SWAPS_HEADER
    if swap_kib is not None:
        swaps += f"/swapfile                               file\t\t{swap_kib}\t\t0\t\t-2\n"
    (proc / "swaps").write_text(swaps)
    (proc / "sys" / "vm" / "swappiness").write_text(f"{swappiness}\n")
    (proc / "meminfo").write_text(f"MemTotal:       {memtotal_kib} kB\nMemFree: 1000 kB\n")
    if neo4j is not None:
        (root / "neo4j.conf").write_text(neo4j)
    if dropin is not None:
        (root / "override.conf").write_text(dropin)
    return {
        "proc_dir": str(proc),
        "neo4j_conf_path": str(root / "neo4j.conf"),
        "ollama_dropin_path": str(root / "override.conf"),
    }


def toml(tables: dict[str, dict[str, object]]) -> str:
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in table.items())
    return "\n".join(lines) + "\n"


def doctor(tmp_path: Path, tables: dict[str, dict[str, object]], *flags: str):
    """Run `ragvisor doctor --config <file> FLAGS` and return the finished process.

    Without a `[store]` table the data directory is a fresh 0700 one, as the role makes it (the
    default `.ragvisor` would be whatever lies in the working directory)."""
    if "store" not in tables:
        data = tmp_path / "data"
        data.mkdir(mode=0o700, exist_ok=True)
        tables = {**tables, "store": {"data_dir": str(data)}}
    config = tmp_path / "ragvisor.toml"
    config.write_text(toml(tables))
    return subprocess.run(
        [*RAGVISOR, "doctor", "--config", str(config), *flags],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def findings(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    body = json.loads(result.stdout)
    assert body["exit_code"] == result.returncode
    return {f["check"]: f for f in body["findings"]}


def test_a_prod_host_as_deployed_is_all_ok(tmp_path, ollama_url):
    """1. The host the prod inventory leaves behind: every check ok, exit 0."""
    host = lay_out_host(tmp_path, swap_kib=2_097_148, swappiness=10)
    result = doctor(
        tmp_path,
        {
            "generator": {
                "backend": "ollama",
                "url": ollama_url,
                "model": "gemma3:270m",
                "keep_alive": "0",
            },
            "doctor": {**host, "expected_swap_mb": 2048, "neo4j_budget_mb": 1024},
        },
        "--json",
    )
    assert result.returncode == 0, result.stderr
    found = findings(result)
    assert {name: f["severity"] for name, f in found.items()} == {
        "swap": "ok",
        "swappiness": "ok",
        "neo4j.heap": "ok",
        "neo4j.memory": "ok",
        "ollama.variables": "ok",
        "ollama.max_loaded_models": "ok",
        "ollama.num_parallel": "ok",
        "ollama.keep_alive": "ok",
        "ollama.context_length": "ok",
        "generator.num_ctx": "ok",
        "store.data_dir": "ok",
    }
    assert found["generator.num_ctx"]["expected"] == 32768


def test_a_drifted_host_is_critical_and_says_why(tmp_path, ollama_url):
    """2. Swap gone, swappiness 60, a 4 GB Neo4j, a seed's drop-in, num_ctx beyond the model:
    exit 1, the criticals first, each naming the key to change."""
    host = lay_out_host(
        tmp_path,
        swap_kib=None,
        swappiness=60,
        neo4j="server.memory.heap.initial_size=1g\nserver.memory.heap.max_size=2g\n"
        "server.memory.pagecache.size=2g\n",
        dropin='[Service]\nEnvironment="OLLAMA_NUM_THREADS=2" "OLLAMA_KEEP_ALIVE=30m"\n',
    )
    result = doctor(
        tmp_path,
        {
            "generator": {
                "backend": "ollama",
                "url": ollama_url,
                "model": "gemma3:4k",
                "num_ctx": 8192,
            },
            "doctor": {**host, "expected_swap_mb": 2048},
        },
        "--json",
    )
    assert result.returncode == 1, result.stderr
    found = findings(result)
    critical = {name for name, f in found.items() if f["severity"] == "critical"}
    assert critical == {"swap", "neo4j.memory", "generator.num_ctx"}
    assert "the machine's RAM" in found["neo4j.memory"]["message"]
    assert found["neo4j.heap"]["severity"] == "warning"
    assert found["swappiness"]["severity"] == "warning"
    assert found["ollama.variables"]["observed"] == ["OLLAMA_NUM_THREADS"]
    assert found["ollama.keep_alive"]["severity"] == "warning"
    body = json.loads(result.stdout)
    assert [f["severity"] for f in body["findings"]][:3] == ["critical"] * 3


def test_text_output_and_fail_on_warning(tmp_path):
    """3. Warnings only: exit 0 by default, 1 with --fail-on warning; the text names fixes."""
    host = lay_out_host(tmp_path, swap_kib=1_048_572, swappiness=60, neo4j=None, dropin=None)
    tables = {"generator": {"backend": "none"}, "doctor": {**host, "expected_swap_mb": 2048}}
    relaxed = doctor(tmp_path, tables)
    assert relaxed.returncode == 0, relaxed.stderr
    lines = relaxed.stdout.splitlines()
    assert lines[0] == "ragvisor doctor: 2 warning, 3 info, 1 ok"
    assert lines[1].startswith("WARNING   swap")
    assert any("fix: sysctl -w vm.swappiness=10" in line for line in lines)
    strict = doctor(tmp_path, tables, "--fail-on", "warning")
    assert strict.returncode == 1


def test_embedded_generator_is_checked_against_the_real_gguf_header(tmp_path):
    """4. The worker's GGUF (the pinned Gemma 3 270M) is trained for 32768 tokens."""
    host = lay_out_host(tmp_path, swap_kib=None, swappiness=10, neo4j=None, dropin=None)
    model = str(gguf_file())
    within = doctor(tmp_path, {"worker": {"model_path": model}, "doctor": host}, "--json")
    assert findings(within)["generator.num_ctx"]["severity"] == "ok"
    assert findings(within)["generator.num_ctx"]["expected"] == 32768
    beyond = doctor(
        tmp_path,
        {"generator": {"num_ctx": 40000}, "worker": {"model_path": model}, "doctor": host},
        "--json",
    )
    assert beyond.returncode == 1
    assert findings(beyond)["generator.num_ctx"]["severity"] == "critical"


def test_backend_down_or_model_missing(tmp_path, ollama_url):
    """5. Nothing listening: a warning within the timeout; a model not pulled: critical."""
    host = lay_out_host(tmp_path, swap_kib=None, swappiness=10)
    down = doctor(
        tmp_path,
        {
            "generator": {"backend": "ollama", "url": f"http://127.0.0.1:{free_port()}"},
            "doctor": {**host, "timeout_s": 1},
        },
        "--json",
    )
    assert down.returncode == 0, down.stderr
    assert findings(down)["generator.num_ctx"]["severity"] == "warning"
    missing = doctor(
        tmp_path,
        {
            "generator": {"backend": "ollama", "url": ollama_url, "model": "llama3:70b"},
            "doctor": host,
        },
        "--json",
    )
    assert missing.returncode == 1
    lost = findings(missing)["generator.num_ctx"]
    assert lost["severity"] == "critical"
    assert "llama3:70b" in lost["message"]
    assert "/ask cannot answer" in lost["message"]


def test_the_machines_real_proc_is_read(tmp_path):
    """6. With the default proc_dir, the finding shows this machine's vm.swappiness."""
    result = doctor(tmp_path, {"generator": {"backend": "none"}}, "--json")
    assert result.returncode in (0, 1), result.stderr
    real = int(Path("/proc/sys/vm/swappiness").read_text())
    assert findings(result)["swappiness"]["observed"] == real


def test_a_bad_configuration_exits_2(tmp_path):
    """7. An invalid [doctor] value is a usage error (exit 2) naming the key."""
    result = doctor(tmp_path, {"doctor": {"max_swappiness": 500}})
    assert result.returncode == 2
    assert "doctor.max_swappiness" in result.stderr


def test_a_data_dir_open_to_other_users_is_a_warning_with_the_fix(tmp_path):
    """8. A store left 0644 in a 0755 data directory: a warning naming both, and the chmod fix;
    once narrowed, ok."""
    host = lay_out_host(tmp_path, swap_kib=None, swappiness=10, neo4j=None, dropin=None)
    data = tmp_path / "store"
    data.mkdir()
    data.chmod(0o755)
    (data / "ragvisor.sqlite3").write_bytes(b"")
    (data / "ragvisor.sqlite3").chmod(0o644)
    tables = {"generator": {"backend": "none"}, "store": {"data_dir": str(data)}, "doctor": host}
    result = doctor(tmp_path, tables)
    assert result.returncode == 0, result.stderr  # a warning: exit 1 only with --fail-on warning
    [line] = [line for line in result.stdout.splitlines() if "store.data_dir" in line]
    assert line.startswith("WARNING")
    assert f"{data} (0755), {data}/ragvisor.sqlite3 (0644)" in line
    assert f"fix: chmod 700 {data} && chmod -R go= {data}" in result.stdout
    subprocess.run(["chmod", "700", str(data)], check=True)
    subprocess.run(["chmod", "-R", "go=", str(data)], check=True)
    after = findings(doctor(tmp_path, tables, "--json"))["store.data_dir"]
    assert after["severity"] == "ok"


# --- the Neo4j store: the real database (tests/infra/neo4j_engine.py) -------------------------


def neo4j_doctor(tmp_path: Path, store: dict[str, object]) -> dict[str, dict]:
    """`ragvisor doctor --json`'s findings for a host laid out under `tmp_path` and the given
    Neo4j `[store]`."""
    host = lay_out_host(tmp_path / "host", swap_kib=None, swappiness=10, neo4j=None, dropin=None)
    data = tmp_path / "data"
    data.mkdir(mode=0o700, exist_ok=True)
    tables = {
        "store": {"backend": "neo4j", "data_dir": str(data), **store},
        "generator": {"backend": "none"},
        "doctor": host,
    }
    return findings(doctor(tmp_path, tables, "--json"))


def test_neo4j_store_is_reached_and_its_vector_index_checked(neo4j_engine, tmp_path, model_dir):
    """9. Against the real Neo4j: (1) wiped, the database is reached and the missing index is a
    warning to run a sync; (2) after `ragvisor sync` the active model's index is ONLINE with
    384 dimensions and holds the corpus's vectors."""
    neo4j_engine.wipe()
    store = {"uri": neo4j_engine.uri, "password_file": str(neo4j_engine.password_file)}
    before = neo4j_doctor(tmp_path / "before", store)
    assert before["store.neo4j"]["severity"] == "ok", before["store.neo4j"]
    assert neo4j_engine.uri in before["store.neo4j"]["message"]
    assert before["store.vector_index"]["severity"] == "warning"
    assert "run a sync" in before["store.vector_index"]["hint"]

    corpus = write_corpus(tmp_path / "notes")
    synced = run_cli(
        ["sync", "--corpus", str(corpus), "--data-dir", str(tmp_path / "sync-data")],
        model_dir,
        **neo4j_engine.daemon_env(),
    )
    assert synced.returncode == 0, synced.stderr

    after = neo4j_doctor(tmp_path / "after", store)
    index = after["store.vector_index"]
    assert index["severity"] == "ok", index
    assert index["observed"]["state"] == "ONLINE"
    assert index["observed"]["dimensions"] == index["expected"]["dimensions"] == 384
    assert index["observed"]["vectors"] > 0
    assert "store.vector_index.building" not in after


def test_neo4j_refusing_the_password_or_away_is_critical(neo4j_engine, tmp_path):
    """10. A wrong password: critical, naming the uri and Neo4j's reason, never the password
    tried; nothing on the port: critical within the connect timeout, saying it cannot be
    reached."""
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-Password-42\n")
    wrong.chmod(0o600)
    refused = neo4j_doctor(
        tmp_path / "refused", {"uri": neo4j_engine.uri, "password_file": str(wrong)}
    )["store.neo4j"]
    assert refused["severity"] == "critical"
    assert neo4j_engine.uri in refused["message"]
    assert "authentication failure" in refused["message"]
    assert "not-the-Password-42" not in json.dumps(refused)

    away_uri = f"bolt://127.0.0.1:{free_port()}"
    started = time.monotonic()
    away = neo4j_doctor(
        tmp_path / "away",
        {"uri": away_uri, "password_file": str(wrong), "connect_timeout_s": 2},
    )["store.neo4j"]
    assert time.monotonic() - started < 30
    assert away["severity"] == "critical"
    assert away_uri in away["message"]
    assert "cannot be reached" in away["message"]
