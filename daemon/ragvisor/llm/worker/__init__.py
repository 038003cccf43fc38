"""`ragvisor worker`: llama.cpp (and the ONNX embedder) behind the subset of Ollama's HTTP API
the daemon uses, so one Ollama client talks to a real Ollama and to this worker alike.

Start it with `run_worker` (what `ragvisor worker` calls) or mount `create_worker_app`. Beyond
Ollama's API it serves `POST /api/ragvisor/token_count` for context packing.
"""

from __future__ import annotations

from ragvisor.llm.worker.api import create_worker_app
from ragvisor.llm.worker.keepalive import FOREVER, parse_keep_alive
from ragvisor.llm.worker.prompting import render_chat
from ragvisor.llm.worker.runtime import Worker
from ragvisor.llm.worker.serve import run_worker

__all__ = [
    "FOREVER",
    "Worker",
    "create_worker_app",
    "parse_keep_alive",
    "render_chat",
    "run_worker",
]
