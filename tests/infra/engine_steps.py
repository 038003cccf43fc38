"""What the engines the tests build and run (tests/infra/neo4j_engine.py, ollama_engine.py) share:
the cache they build into, a bounded build step that reports why it failed, a free port.

Why one place: both build once per machine into `$RAGVISOR_CACHE` and must fail with the step and
the end of its output, never hang; a fix to either belongs to both.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path


class EngineError(RuntimeError):
    """An engine could not be built, started or stopped; the message says which step and why."""


def cache_root() -> Path:
    """`$RAGVISOR_CACHE` (default `~/.cache/ragvisor`): outside the clone, kept between runs."""
    return Path(os.environ.get("RAGVISOR_CACHE") or "~/.cache/ragvisor").expanduser()


def run_step(
    argv: list[str], timeout_s: float, what: str, env: dict[str, str] | None = None
) -> None:
    """Run one build step to completion within `timeout_s`; EngineError with its output's end
    when it fails or takes longer."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, check=False, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"{what}: no result within {timeout_s:g} s") from exc
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-3000:]
        raise EngineError(f"{what} failed (exit {done.returncode}):\n{tail}")


def publish_build(work: Path, root: Path, stamp: str) -> None:
    """Stamp a finished build in `work` and put it in `root`'s place (the old tree removed):
    a build cut short never leaves a stamped tree that looks whole."""
    (work / "stamp").write_text(stamp + "\n")
    if root.exists():
        shutil.rmtree(root)
    work.rename(root)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
