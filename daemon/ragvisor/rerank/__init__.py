"""Reranking: a cross-encoder rescores the best candidates of a search (`[rerank]`).

Off by default. No package registry ships a cross-encoder model, so the operator supplies an ONNX
export (docs/http-api.md#reranking); :func:`build_reranker` loads it when `[rerank]` is enabled.
"""

from __future__ import annotations

from ragvisor.config import RerankSettings
from ragvisor.errors import ConfigError
from ragvisor.rerank.cross_encoder import MODEL_FILES, TOKENIZER_FILE, OnnxCrossEncoder

__all__ = ["MODEL_FILES", "TOKENIZER_FILE", "OnnxCrossEncoder", "build_reranker"]


def build_reranker(settings: RerankSettings) -> OnnxCrossEncoder | None:
    """The cross-encoder `[rerank]` describes, loaded and ready; None when it is disabled.

    A relative `model_dir` is relative to the working directory, as every path setting is.
    Raises ModelFileError when the model directory, its files or the pinned hash are wrong;
    ConfigError when enabled without a `model_dir`.
    """
    if not settings.enabled:
        return None
    if settings.model_dir is None:  # the settings refuse this already; kept for the type
        raise ConfigError("rerank.model_dir: required when rerank.enabled is true")
    return OnnxCrossEncoder(
        settings.model_dir,
        threads=settings.threads,
        max_tokens=settings.max_tokens,
        sha256=settings.sha256,
    )
