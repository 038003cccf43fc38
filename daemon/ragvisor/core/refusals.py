"""Which texts an embedder refuses: one over-long text fails its whole request, so a refused
request is taken apart until the text to blame is found, and the rest is embedded all the same.

The embedding model refuses a text longer than its context (Ollama with `truncate: false`,
which ragvisor always sends so that no chunk is embedded half). Such a text can never be
embedded as it is; the others in its request can. Only :class:`InputRefused` is taken apart:
any other failure (a backend that is down, a deadline) is the caller's whole call's.
"""

from __future__ import annotations

from collections.abc import Sequence

from ragvisor.core.protocols import Embedder, Vector
from ragvisor.errors import InputRefused


def embed_sorting_refusals(
    embedder: Embedder, batch: Sequence[tuple[str, str]]
) -> tuple[dict[str, Vector], dict[str, str]]:
    """Embed (hash, text) pairs; returns the vectors by hash, and the hashes whose text the
    embedder refused with the reason.

    A refused request of more than a batch is embedded again batch by batch, and a refused batch
    text by text: each refused request costs its texts once more, and only when a text is
    refused. Raises whatever the embedder raises other than :class:`InputRefused`.
    """
    try:
        vectors = embedder.embed([text for _, text in batch])
    except InputRefused as exc:
        if len(batch) == 1:
            return {}, {batch[0][0]: str(exc)}
    else:
        return {h: v for (h, _), v in zip(batch, vectors, strict=True)}, {}
    size = embedder.batch_size if len(batch) > embedder.batch_size else 1
    embedded: dict[str, Vector] = {}
    refused: dict[str, str] = {}
    for start in range(0, len(batch), size):
        part_vectors, part_refused = embed_sorting_refusals(embedder, batch[start : start + size])
        embedded.update(part_vectors)
        refused.update(part_refused)
    return embedded, refused
