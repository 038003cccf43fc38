"""Prompt token counts with the chat model's own tokenizer, computed at sync, not per `/ask`.

`/ask` packs passages into the model's context by their token counts. Asking the worker for
them costs a round trip per question (and loads the chat model to count with); counting each
chunk once when it is stored, keyed by its text hash, makes packing a lookup.

The counting runs in a short-lived child process (``python -m ragvisor.llm.token_counter
MODEL.gguf``): loading llama.cpp and the GGUF's vocabulary (``vocab_only``, no weights) adds
about 75 MB of RSS, which the daemon must not keep; the child exits when the sync's counting is
done. It reads one JSON array of texts per line on stdin and answers one JSON array of counts
per line on stdout.

The counter's identity is the model file's sha256 (the pinned default's is known without
reading the file), so daemons on several hosts sharing one Neo4j store agree on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from ragvisor.core.hashing import file_sha256
from ragvisor.errors import BackendError
from ragvisor.llm.gguf import DEFAULT_GGUF_BYTES, DEFAULT_GGUF_NAME, DEFAULT_GGUF_SHA256

# The child's start: importing llama.cpp and reading the vocabulary takes ~1 s on our boxes.
START_TIMEOUT_S = 60.0
# One batch of texts: ~0.3 ms a chunk, so a whole batch is well inside this.
BATCH_TIMEOUT_S = 120.0


def gguf_counter_key(path: Path) -> str:
    """``gguf-sha256:<hex>``: the file's sha256 (known for the pinned default by name and size,
    read once per process otherwise)."""
    pinned = pinned_counter_key(path)
    if pinned is not None:
        return pinned
    try:
        return f"gguf-sha256:{file_sha256(path)}"
    except OSError as exc:
        raise BackendError(f"cannot read the generator model {path}: {exc}") from exc


def pinned_counter_key(path: Path) -> str | None:
    """The pinned default GGUF's key, from its name and size alone (its sha256 is checked
    whenever the file is written: `llm.gguf`); None for any other file."""
    try:
        if path.name == DEFAULT_GGUF_NAME and path.stat().st_size == DEFAULT_GGUF_BYTES:
            return f"gguf-sha256:{DEFAULT_GGUF_SHA256}"
    except OSError:
        return None
    return None


class GgufTokenCounter:
    """A :class:`ragvisor.core.protocols.TokenCounter` over a GGUF file's vocabulary.

    Not thread-safe by itself: the token-count job uses it from one thread at a time.
    """

    def __init__(self, model_path: Path, *, python: str = sys.executable) -> None:
        self.model_path = model_path
        self._python = python
        # The pinned default's identity costs a stat, so /ask can use stored counts from the
        # start; another file's is hashed by the first counting pass, off the serving path.
        self._key: str | None = pinned_counter_key(model_path)
        self._child: subprocess.Popen[str] | None = None
        self._errors: IO[bytes] | None = None  # the child's stderr: a file never fills up
        self._lock = threading.Lock()

    @property
    def key(self) -> str:
        """The model file's identity (hashes a user-supplied file the first time)."""
        if self._key is None:
            self._key = gguf_counter_key(self.model_path)
        return self._key

    @property
    def known_key(self) -> str | None:
        """:attr:`key` once worked out; None before (never reads the file)."""
        return self._key

    def count(self, texts: Sequence[str]) -> list[int]:
        """Counts from the child, started on first use. Raises BackendError."""
        if not texts:
            return []
        with self._lock:
            child = self._started()
            try:
                answer = self._exchange(child, list(texts))
            except BackendError:
                self._stop()
                raise
        if not isinstance(answer, list) or len(answer) != len(texts):
            raise BackendError("the token counter answered with the wrong number of counts")
        return [int(n) for n in answer]

    def close(self) -> None:
        """End the child (it holds ~75 MB); the next :meth:`count` starts another."""
        with self._lock:
            self._stop()

    def _started(self) -> subprocess.Popen[str]:
        if self._child is not None and self._child.poll() is None:
            return self._child
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _stop
        try:
            child = subprocess.Popen(
                [self._python, "-m", "ragvisor.llm.token_counter", str(self.model_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._errors,
                text=True,
                encoding="utf-8",
                env=env,
            )
        except OSError as exc:
            self._stop()
            raise BackendError(f"cannot start the token counter: {exc}") from exc
        self._child = child
        try:
            ready = self._read_line(child, START_TIMEOUT_S)
        except BackendError:
            self._stop()
            raise
        if ready != {"ready": True}:
            self._stop()
            raise BackendError(f"the token counter did not start: {ready!r}")
        return child

    def _stop(self) -> None:
        child, self._child = self._child, None
        errors, self._errors = self._errors, None
        if child is not None:
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)
        if errors is not None:
            errors.close()

    def _failure(self, child: subprocess.Popen[str]) -> str:
        """Why the child failed: the end of its stderr, or its exit status."""
        if child.poll() is None:
            child.kill()
            child.wait(timeout=5)
        lines: list[str] = []
        if self._errors is not None:
            self._errors.seek(0)
            lines = self._errors.read()[-4000:].decode("utf-8", "replace").strip().splitlines()
        # A traceback's last line says what went wrong (`ValueError: Failed to load model ...`).
        return lines[-1].strip()[:300] if lines else f"exit status {child.returncode}"

    def _exchange(self, child: subprocess.Popen[str], texts: list[str]) -> Any:
        assert child.stdin is not None
        try:
            child.stdin.write(json.dumps(texts) + "\n")
            child.stdin.flush()
        except OSError as exc:  # the child died: its stderr says why
            raise BackendError(f"the token counter exited: {self._failure(child)}") from exc
        return self._read_line(child, BATCH_TIMEOUT_S)

    def _read_line(self, child: subprocess.Popen[str], timeout_s: float) -> Any:
        """One JSON line from the child; BackendError when it exits or stays silent too long."""
        stdout = child.stdout
        assert stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        if reader.is_alive():
            child.kill()
            raise BackendError(f"the token counter did not answer within {timeout_s:.0f} s")
        line = result[0] if result else ""
        if not line:
            raise BackendError(f"the token counter exited: {self._failure(child)}")
        try:
            return json.loads(line)
        except ValueError as exc:
            raise BackendError(f"the token counter answered {line[:200]!r}") from exc


def _serve(model_path: str, lines: IO[str]) -> None:
    """The child: load the vocabulary, say ready, then count each line's texts.

    The answers go to a copy of stdout taken first; stdout itself then points at stderr, so
    nothing llama.cpp prints can corrupt the protocol.
    """
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    import llama_cpp  # noqa: PLC0415 - the child's alone; the daemon never imports it

    vocab = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in lines:
        texts = json.loads(line)
        counts = [
            len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))
            for text in texts
        ]
        out.write(json.dumps(counts) + "\n")
        out.flush()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m ragvisor.llm.token_counter MODEL.gguf")
    _serve(sys.argv[1], sys.stdin)
