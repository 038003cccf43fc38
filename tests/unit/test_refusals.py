"""Finding the text an embedder refuses: a refused request is taken apart, batch by batch, then
text by text, and everything else in it is embedded all the same."""

from __future__ import annotations

import numpy as np
import pytest

from ragvisor.core.refusals import embed_sorting_refusals
from ragvisor.errors import BackendUnavailable
from ragvisor.testing import FakeEmbedder

MARK = "TOO-LONG"


def pairs(*texts: str) -> list[tuple[str, str]]:
    return [(f"h{n}", text) for n, text in enumerate(texts)]


def test_a_request_nothing_is_refused_in_is_one_call():
    """Without a refusal the texts go to the embedder once, in one call, vectors by hash."""
    embedder = FakeEmbedder()
    vectors, refused = embed_sorting_refusals(embedder, pairs("a b", "c d", "e f"))
    assert embedder.calls == [3]
    assert refused == {}
    assert list(vectors) == ["h0", "h1", "h2"]
    np.testing.assert_allclose(vectors["h1"], embedder.embed(["c d"])[0])


def test_a_refused_window_is_taken_apart_batch_by_batch_then_text_by_text():
    """Ten texts, batch size 4, the seventh refused: the window is refused, the first and the
    last batch go through, the second is tried text by text, and only the seventh is left."""
    embedder = FakeEmbedder(batch_size=4, refuses=lambda text: MARK in text)
    texts = [f"text {n}" for n in range(10)]
    texts[6] = f"text 6 {MARK}"
    vectors, refused = embed_sorting_refusals(embedder, pairs(*texts))
    assert embedder.calls == [4, 1, 1, 1, 2]  # successful calls only: the refused ones raised
    assert embedder.refused_calls == 3  # the window, the second batch, the seventh text
    assert sorted(vectors) == sorted(f"h{n}" for n in range(10) if n != 6)
    assert list(refused) == ["h6"]
    assert "exceeds the context length" in refused["h6"]


def test_several_refused_texts_are_all_found():
    """Two refused texts in two batches: both are named, the eight others embedded."""
    embedder = FakeEmbedder(batch_size=4, refuses=lambda text: MARK in text)
    texts = [f"text {n}" + (f" {MARK}" if n in (1, 9) else "") for n in range(10)]
    vectors, refused = embed_sorting_refusals(embedder, pairs(*texts))
    assert sorted(refused) == ["h1", "h9"]
    assert len(vectors) == 8


def test_a_single_refused_text_is_refused_without_another_call():
    """A request of one text that is refused needs no taking apart."""
    embedder = FakeEmbedder(refuses=lambda text: MARK in text)
    vectors, refused = embed_sorting_refusals(embedder, pairs(MARK))
    assert (vectors, list(refused)) == ({}, ["h0"])
    assert embedder.refused_calls == 1


def test_a_backend_that_fails_while_a_refusal_is_sorted_out_fails_the_call():
    """Only a refused input is taken apart: a backend that goes down meanwhile is raised."""

    class DownAfterRefusal(FakeEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            if self.refused_calls:
                raise BackendUnavailable("cannot connect to the embedder")
            return super().embed(texts)

    embedder = DownAfterRefusal(refuses=lambda text: MARK in text)
    with pytest.raises(BackendUnavailable):
        embed_sorting_refusals(embedder, pairs("a", f"b {MARK}", "c"))
