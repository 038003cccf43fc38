"""Task prefixes: the words some embedding models expect before a query and before a document.

`nomic-embed-text` was trained with `search_query: ` before a question and `search_document: `
before each text searched, and its model card asks for them (e5 models want `query: ` and
`passage: `). The composition root wraps the one embedder it
built twice: the sync embeds chunks through the document side, searches embed queries through
the query side — one place each, and the core never knows.

A prefix is part of what is embedded, so it is part of the fingerprint: changing one makes a
new generation of vectors, which the next sync builds while searches keep the old one
(`application.generations`). Empty prefixes leave the model's own fingerprint, so a store
synced before this setting existed keeps every vector.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from ragvisor.config import EmbedderSettings
from ragvisor.core.model import Fingerprint
from ragvisor.core.protocols import Embedder, Matrix


@dataclass(frozen=True, slots=True)
class TaskPrefixes:
    """The text put before every query and before every document chunk."""

    query: str = ""
    document: str = ""

    @classmethod
    def from_settings(cls, settings: EmbedderSettings) -> TaskPrefixes:
        """`embedder.query_prefix` and `embedder.document_prefix`."""
        return cls(query=settings.query_prefix, document=settings.document_prefix)

    @property
    def empty(self) -> bool:
        """Whether texts are embedded as they are."""
        return not self.query and not self.document

    def fingerprint(self, model: Fingerprint) -> Fingerprint:
        """The identity of vectors `model` makes with these prefixes: the model's own when both
        are empty, else a digest of the model's digest and both prefixes (the name stays)."""
        if self.empty:
            return model
        mixed = json.dumps([model.digest, self.query, self.document]).encode()
        return Fingerprint(model.name, hashlib.sha256(mixed).hexdigest(), model.dimensions)


class PrefixedEmbedder:
    """An :class:`Embedder` that puts `prefix` before every text it embeds, under the
    fingerprint of its model with both task prefixes."""

    def __init__(self, inner: Embedder, prefix: str, prefixes: TaskPrefixes) -> None:
        self.inner = inner
        self.prefix = prefix
        self._prefixes = prefixes

    @property
    def fingerprint(self) -> Fingerprint:
        """Asked of the model each time: a remote model may be re-resolved between syncs."""
        return self._prefixes.fingerprint(self.inner.fingerprint)

    @property
    def batch_size(self) -> int:
        """The model's."""
        return self.inner.batch_size

    def embed(self, texts: Sequence[str]) -> Matrix:
        """The model's vectors of the prefixed texts; raises what the model raises."""
        return self.inner.embed([self.prefix + text for text in texts])


def for_documents(embedder: Embedder, prefixes: TaskPrefixes) -> Embedder:
    """What the sync embeds chunks with: `embedder` itself when there are no prefixes."""
    return embedder if prefixes.empty else PrefixedEmbedder(embedder, prefixes.document, prefixes)


def for_queries(embedder: Embedder, prefixes: TaskPrefixes) -> Embedder:
    """What searches embed queries with: `embedder` itself when there are no prefixes."""
    return embedder if prefixes.empty else PrefixedEmbedder(embedder, prefixes.query, prefixes)
