"""A real Neo4j for development and tests: the database engine from Maven Central, not an imitation.

Why: the production store is Neo4j (issue 12), and a store proven only against a stand-in is not
proven. Neo4j publishes its engine as Maven artifacts (`org.neo4j:neo4j`, the community edition
for embedding); `tools/neo4j/Launcher.java` starts it with its Bolt connector on loopback, so the
official Python driver talks to it exactly as to a server, with the vector and full-text indexes
the store uses.

The pieces:

- `build()` resolves the pinned artifacts with Maven (`tools/neo4j/pom.xml`) and compiles the
  launcher with `javac`, once per machine, into `$RAGVISOR_CACHE/neo4j/<version>` (~125 MB;
  about 10 s on a fast mirror). A half-built tree is never used: it is assembled beside the
  cache and renamed into place.
- `Engine.start()` runs one in a home folder with auth on (user `neo4j`, a password from a file),
  heap and page cache as `inventory/prod` gives the `neo4j` role, and waits (bounded) until
  Bolt accepts; `Engine.stop()` shuts it down (SIGTERM, then SIGKILL, bounded).

Command line (what `make` calls): `python -m tests.infra.neo4j_engine build`; `start` (a server
on 127.0.0.1:7687 with data and a generated password under `.neo4j/`, printing the lines to
export) and `stop`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.infra.engine_steps import EngineError, cache_root, publish_build, run_step

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools" / "neo4j"
NEO4J_VERSION = "5.26.30"  # as in tools/neo4j/pom.xml
LAUNCHER = "ragvisor.neo4j.Launcher"
USER = "neo4j"
DEFAULT_PORT = 7687
DEFAULT_DIR = REPO / ".neo4j"
PROD_VARS = REPO / "inventory" / "prod" / "group_vars" / "ragvisor.yml"

# Every wait is bounded; generous on a loaded 2-core box.
RESOLVE_TIMEOUT_S = 900.0
COMPILE_TIMEOUT_S = 300.0
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


def cache_dir() -> Path:
    """`$RAGVISOR_CACHE/neo4j/<version>` (default under `~/.cache/ragvisor`): outside the clone."""
    return cache_root() / "neo4j" / NEO4J_VERSION


def _recipe_stamp() -> str:
    """What the cached tree was built from: the pom and the launcher's source."""
    digest = hashlib.sha256()
    for path in (TOOLS / "pom.xml", TOOLS / "Launcher.java"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _classpath(root: Path) -> str:
    return f"{root / 'classes'}{os.pathsep}{root / 'lib' / '*'}"


def missing_tools() -> list[str]:
    """The programs `build` needs that this machine lacks."""
    return [tool for tool in ("mvn", "java", "javac") if shutil.which(tool) is None]


def build() -> Path:
    """The cached engine, resolved and compiled on first use. Raises EngineError saying why not."""
    root = cache_dir()
    stamp = _recipe_stamp()
    if (root / "stamp").exists() and (root / "stamp").read_text().strip() == stamp:
        return root
    missing = missing_tools()
    if missing:
        raise EngineError(f"cannot build Neo4j: {', '.join(missing)} not found on PATH")
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{NEO4J_VERSION}-", dir=root.parent))
    try:
        run_step(
            [
                "mvn", "-q", "-B", "-f", str(TOOLS / "pom.xml"),
                "dependency:copy-dependencies", f"-DoutputDirectory={work / 'lib'}",
            ],
            RESOLVE_TIMEOUT_S,
            f"resolving org.neo4j:neo4j:{NEO4J_VERSION} from Maven",
        )  # fmt: skip
        run_step(
            [
                "javac", "--release", "17", "-cp", str(work / "lib" / "*"),
                "-d", str(work / "classes"), str(TOOLS / "Launcher.java"),
            ],
            COMPILE_TIMEOUT_S,
            "compiling tools/neo4j/Launcher.java",
        )  # fmt: skip
        publish_build(work, root, stamp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root


def _mb(size: str) -> int:
    """`512m`, `1g` or `1024k` (neo4j.conf's sizes) in MiB."""
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", size.strip().lower())
    if match is None:
        raise EngineError(f"cannot read the size {size!r}")
    number, unit = int(match[1]), match[2]
    return {"k": number // 1024, "": number // (1024 * 1024), "m": number, "g": number * 1024}[unit]


def prod_memory() -> tuple[int, int]:
    """(heap MiB, page cache MiB) as `inventory/prod` gives them to the `neo4j` role."""
    values = yaml.safe_load(PROD_VARS.read_text())
    return _mb(str(values["neo4j_heap_size"])), _mb(str(values["neo4j_pagecache_size"]))


def write_password(path: Path) -> str:
    """A new random password, written private (0600) to `path`."""
    password = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(password + "\n")
    return password


@dataclass
class Engine:
    """One Neo4j process: its home (data, logs), its Bolt port and the password file."""

    home: Path
    port: int
    password_file: Path
    heap_mb: int = 512
    pagecache_mb: int = 256
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def in_folder(cls, home: Path, port: int) -> Engine:
        """An engine under `home` (its password file created there if missing), with heap and
        page cache as inventory/prod gives them; not started."""
        password_file = home / "password"
        if not password_file.exists():
            write_password(password_file)
        heap_mb, pagecache_mb = prod_memory()
        return cls(home, port, password_file, heap_mb, pagecache_mb)

    @property
    def uri(self) -> str:
        """Where the driver connects."""
        return f"bolt://127.0.0.1:{self.port}"

    @property
    def password(self) -> str:
        """The `neo4j` user's password."""
        return self.password_file.read_text().strip()

    @property
    def log_path(self) -> Path:
        """The engine's own output (Neo4j's log lines, then the launcher's READY line)."""
        return self.home / "neo4j.log"

    def command(self, root: Path) -> list[str]:
        """The java command line."""
        return [
            "java",
            f"-Xms{self.heap_mb}m",
            f"-Xmx{self.heap_mb}m",
            "-cp",
            _classpath(root),
            LAUNCHER,
            str(self.home / "data"),
            str(self.port),
            str(self.password_file),
            str(self.pagecache_mb),
        ]

    def start(self, *, detach: bool = False) -> Engine:
        """Build if needed, start, and wait until the launcher reports Bolt ready.

        `detach` starts it in a session of its own that outlives this process (`make neo4j`).
        Raises EngineError with the end of its log when it does not come up in time.
        """
        root = build()
        self.home.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(root),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=detach,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._ready_since(offset):
                return self
            if self.process.poll() is not None:
                raise EngineError(f"Neo4j exited ({self.process.returncode}):\n{self._tail()}")
            time.sleep(0.2)
        self.stop()
        raise EngineError(f"Neo4j not ready within {START_TIMEOUT_S:g} s:\n{self._tail()}")

    def wipe(self) -> None:
        """Empty the database (Community edition has one): every node and relationship, so
        each test starts from nothing. Constraints and indexes stay; the store re-uses them."""
        import neo4j  # noqa: PLC0415 - the driver only for the tests that use the engine

        with neo4j.GraphDatabase.driver(self.uri, auth=(USER, self.password)) as driver:
            driver.execute_query("MATCH (n) DETACH DELETE n")

    def daemon_env(self) -> dict[str, str]:
        """The environment that points a daemon or `ragvisor sync` at this database."""
        return {
            "RAGVISOR_STORE__BACKEND": "neo4j",
            "RAGVISOR_STORE__URI": self.uri,
            "RAGVISOR_STORE__PASSWORD_FILE": str(self.password_file),
        }

    def _ready_since(self, offset: int) -> bool:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return f"READY {self.uri}".encode() in log.read()

    def _tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it takes longer than STOP_TIMEOUT_S."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)


# --- command line (`make neo4j`, `make neo4j-stop`) -------------------------------------------


def _pid_file(folder: Path) -> Path:
    return folder / "neo4j.pid"


def start_detached(folder: Path, port: int) -> Engine:
    """A server for development under `folder`, left running; its pid in `folder/neo4j.pid`."""
    pid_file = _pid_file(folder)
    if pid_file.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)
            raise EngineError(f"a Neo4j started from {folder} is running; `make neo4j-stop` first")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = Engine.in_folder(folder, port).start(detach=True)
    assert engine.process is not None
    pid_file.write_text(f"{engine.process.pid}\n")
    return engine


def stop_detached(folder: Path) -> bool:
    """Stop the server `start_detached` left; False when none was running."""
    pid_file = _pid_file(folder)
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink()
        return False
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink()
    return True


def main(argv: list[str] | None = None) -> int:
    """`build`, `start` or `stop`; exit 1 with the reason when a step fails."""
    parser = argparse.ArgumentParser(prog="python -m tests.infra.neo4j_engine")
    parser.add_argument("command", choices=["build", "start", "stop"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="data, password, log, pid")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="Bolt port on 127.0.0.1")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(f"neo4j {NEO4J_VERSION}: {build()}")
        elif args.command == "start":
            engine = start_detached(args.dir.resolve(), args.port)
            print(f"neo4j {NEO4J_VERSION} is running (log: {engine.log_path}); export:")
            print(f"export NEO4J_URI={engine.uri}")
            print(f"export NEO4J_USER={USER}")
            print(f"export NEO4J_PASSWORD={engine.password}")
            print(f"export NEO4J_PASSWORD_FILE={engine.password_file}")
        else:
            print("neo4j stopped" if stop_detached(args.dir.resolve()) else "neo4j was not running")
    except EngineError as exc:
        print(f"neo4j: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
