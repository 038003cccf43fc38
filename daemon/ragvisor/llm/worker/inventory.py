"""What the worker has and what it holds: `/api/tags`, `/api/ps` and `/api/show` bodies.

These functions block (the first call reads the GGUF's metadata and hashes the files), so the
routes run them on a thread. Digests are cached per file by `file_sha256`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ragvisor.core.hashing import file_sha256
from ragvisor.errors import RagvisorError
from ragvisor.llm.worker.catalog import (
    ModelKind,
    embedder_details,
    embedder_show,
    generator_details,
    generator_show,
    ps_entry,
    tag_entry,
)
from ragvisor.llm.worker.runtime import Worker


def mtime(path: Path) -> datetime:
    """A file's modification time, as `modified_at`."""
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def digest_of(path: Path) -> str:
    """A file's sha256 in bare hex, as Ollama's /api/tags and /api/ps write digests."""
    return file_sha256(path)


def tags(worker: Worker) -> list[dict[str, Any]]:
    """Both models (the embedder under each of its names); the first call hashes the files."""
    facts = worker.engine.facts()
    models = [
        tag_entry(
            worker.catalog.generator,
            size=worker.model_path.stat().st_size,
            digest=digest_of(worker.model_path),
            details=generator_details(facts),
            modified_at=mtime(worker.model_path),
        )
    ]
    try:
        embedder_facts, digest, path = worker.embeddings.facts_blocking()
    except (OSError, RagvisorError) as exc:  # list the generator anyway, and say why
        worker.log.warning("worker.embedder_unavailable", error=str(exc))
        return models
    for name in worker.catalog.embedders:
        models.append(
            tag_entry(
                name,
                size=embedder_facts.size_bytes,
                digest=digest,
                details=embedder_details(embedder_facts),
                modified_at=mtime(path),
            )
        )
    return models


def loaded_models(worker: Worker) -> list[dict[str, Any]]:
    """Loaded models only, with their expiry and context size."""
    models = []
    generator = worker.slot.loaded()
    if generator is not None:
        facts = worker.engine.facts()
        models.append(
            ps_entry(
                generator.name,
                size=facts.size_bytes + facts.kv_cache_bytes(generator.spec),
                digest=digest_of(worker.model_path),
                details=generator_details(facts),
                expires_at=generator.expires_at,
                context_length=generator.spec,
            )
        )
    embedder = worker.embeddings.slot.loaded()
    if embedder is not None:
        embedder_facts, digest, _path = worker.embeddings.facts_blocking()
        models.append(
            ps_entry(
                embedder.name,
                size=embedder_facts.size_bytes,
                digest=digest,
                details=embedder_details(embedder_facts),
                expires_at=embedder.expires_at,
                context_length=embedder_facts.max_tokens,
            )
        )
    return models


def show(worker: Worker, kind: ModelKind, name: str) -> dict[str, Any]:
    """The `/api/show` body for one of the two models, `name` being the one asked for."""
    if kind is ModelKind.GENERATOR:
        return generator_show(
            worker.engine.facts(),
            model_path=str(worker.model_path),
            name=worker.catalog.generator,
            num_ctx=worker.engine.loaded_n_ctx or worker.default_num_ctx,
            modified_at=mtime(worker.model_path),
        )
    facts, _digest, path = worker.embeddings.facts_blocking()
    return embedder_show(
        facts,
        model_path=str(path),
        name=worker.catalog.listed_name(name),
        modified_at=mtime(path),
    )
