"""The Neo4j archive assembled from Maven Central (tests/infra/neo4j_dist.py) is a working Neo4j.

The scenario, as an operator of the `neo4j` role's archive install path meets it:

1. the archive unpacks into one `neo4j-community-<version>/` folder laid out like Neo4j's own;
2. `bin/neo4j-admin dbms set-initial-password` runs before the first start;
3. `bin/neo4j console` serves Bolt on a free loopback port, with NEO4J_CONF pointing at a
   configuration outside the unpacked tree, as the role's unit does;
4. the official Python driver authenticates with that password (and not with neo4j/neo4j) and
   runs a query; 5. SIGTERM stops the server cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import neo4j_dist
from tests.infra.engine_steps import free_port

pytestmark = pytest.mark.slow

PASSWORD = "dist-test-password-1"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def archive(neo4j_archive: Path) -> Path:
    """The archive (the session's `neo4j_archive`, tests/infra/conftest.py)."""
    return neo4j_archive


@pytest.fixture(scope="module")
def unpacked(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive unpacked into a fresh folder; its single top folder."""
    dest = tmp_path_factory.mktemp("neo4j-dist")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / neo4j_dist.TOP


def test_archive_is_laid_out_like_neo4js_own(archive: Path) -> None:
    """One top folder holding executable bin scripts, lib jars, conf and the empty folders."""
    with tarfile.open(archive) as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert {name.split("/")[0] for name in members} == {neo4j_dist.TOP}
    top = neo4j_dist.TOP
    for script in ("neo4j", "neo4j-admin"):
        assert members[f"{top}/bin/{script}"].mode == 0o755
    assert members[f"{top}/conf/neo4j.conf"].isfile()
    for folder in ("data", "logs", "plugins", "import", "run", "lib"):
        assert members[f"{top}/{folder}"].isdir()
    jars = [name for name in members if name.startswith(f"{top}/lib/") and name.endswith(".jar")]
    assert f"{top}/lib/neo4j-server-{neo4j_dist.NEO4J_VERSION}.jar" in jars
    assert len(jars) > 100
    assert {member.uid for member in members.values()} == {0}


def test_archive_is_reproducible(archive: Path, tmp_path: Path) -> None:
    """Packing the same jars again gives the same bytes, so one pinned sha256 holds everywhere."""
    lib = tmp_path / "lib"
    lib.mkdir()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name.startswith(f"{neo4j_dist.TOP}/lib/") and member.isfile():
                source = tar.extractfile(member)
                assert source is not None
                (lib / Path(member.name).name).write_bytes(source.read())
    again = tmp_path / neo4j_dist.ARCHIVE_NAME
    neo4j_dist.write_archive(lib, again)
    assert neo4j_dist.sha256_of(again) == neo4j_dist.sha256_of(archive)


@pytest.fixture
def console(unpacked: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """Steps 2-3: the initial password set, then `bin/neo4j console` on a free Bolt port with
    its configuration in a folder of its own (NEO4J_CONF); stopped (SIGTERM) afterwards."""
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    port = free_port()
    conf = (unpacked / "conf" / "neo4j.conf").read_text()
    conf += (
        f"server.bolt.listen_address=127.0.0.1:{port}\n"
        f"server.http.listen_address=127.0.0.1:{free_port()}\n"
        f"server.directories.data={tmp_path / 'data'}\n"
        f"server.directories.logs={tmp_path / 'logs'}\n"
        "server.memory.heap.initial_size=256m\nserver.memory.heap.max_size=256m\n"
        "server.memory.pagecache.size=64m\n"
    )
    (conf_dir / "neo4j.conf").write_text(conf)
    env = {**os.environ, "NEO4J_CONF": str(conf_dir)}
    env.pop("NEO4J_HOME", None)  # the scripts find their home themselves
    admin = subprocess.run(
        [unpacked / "bin" / "neo4j-admin", "dbms", "set-initial-password", PASSWORD],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert admin.returncode == 0, admin.stdout + admin.stderr
    log_path = tmp_path / "console.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [unpacked / "bin" / "neo4j", "console"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"Started." not in log_path.read_bytes():
            assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "not started within the deadline"
            time.sleep(0.5)
        yield port, log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT_S)


def test_console_serves_bolt_with_the_initial_password(console: tuple[int, Path]) -> None:
    """Step 4: the driver gets in with the initial password, and neo4j/neo4j is refused."""
    port, log_path = console
    neo4j_dist.assert_only_password_opens(f"bolt://127.0.0.1:{port}", PASSWORD)
    log = log_path.read_text()
    assert re.search(rf"Bolt enabled on (?:localhost|127\.0\.0\.1):{port}\.", log), log[-2000:]
