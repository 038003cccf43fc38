"""The search benchmark's synthetic corpus: deterministic Markdown prose about ``--chunks`` chunks
long, its content words drawn from the pinned tokenizer's vocabulary, so a seed gives the same
corpus on every machine.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    progress,
)
from ragvisor.core.chunking import chunk_document
from ragvisor.core.documents import read_document

# -- synthetic corpus ---------------------------------------------------------------------------

# Function words make the text read like prose; content words come from the tokenizer's
# vocabulary, which is pinned by sha256 (see ragvisor.embed.model_files), so the corpus is the
# same on every machine for a given seed.
_FUNCTION_WORDS_TEXT = (
    "the of and to a in is that for it as with was on be by this are or from at which an "
    "not but have has can will when if then so all more also its into only than each "
    "other these there their they we our you your it's one two some any most such very "
    "how what where why does should must may after before between during without within "
    "over under"
)
FUNCTION_WORDS = _FUNCTION_WORDS_TEXT.split()


def load_vocabulary(tokenizer_json: Path, size: int, rng: random.Random) -> list[str]:
    """Whole, lowercase alphabetic words of the tokenizer vocabulary, most frequent first.

    BERT-style vocabularies list whole words roughly by corpus frequency, so rank order doubles
    as a Zipf order. A few compounds of two words are mixed in so some words split into several
    word pieces, as real technical prose does.
    """
    vocab: dict[str, int] = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    words = [
        w
        for w, _ in sorted(vocab.items(), key=lambda item: item[1])
        if w.isascii() and w.isalpha() and w.islower() and 3 <= len(w) <= 14
    ][:size]
    compounds = [rng.choice(words[200:]) + rng.choice(words[200:]) for _ in range(size // 20)]
    return words + compounds


class ProseGenerator:
    """Seeded Markdown prose: titles, `##` sections, paragraphs, the odd list and code span."""

    def __init__(self, vocabulary: list[str], seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary
        # Zipf-like weights over rank: frequent words recur, rare ones give queries their bite.
        self.weights = [1.0 / (rank + 20) for rank in range(len(vocabulary))]
        self._cum = list(np.cumsum(self.weights))

    def word(self) -> str:
        """One word: a function word a third of the time, else a Zipf-weighted content word."""
        if self.rng.random() < 0.33:
            return self.rng.choice(FUNCTION_WORDS)
        return self.rng.choices(self.words, cum_weights=self._cum, k=1)[0]

    def content_word(self) -> str:
        """A content word from the less frequent part of the vocabulary (for titles, queries)."""
        return self.rng.choice(self.words[100:])

    def sentence(self) -> str:
        """One sentence of 6-22 words, sometimes with a comma, number or code span."""
        n = self.rng.randint(6, 22)
        words = [self.word() for _ in range(n)]
        if self.rng.random() < 0.3:
            words.insert(self.rng.randint(1, n - 1), str(self.rng.choice([2, 3, 8, 16, 42, 100])))
        if self.rng.random() < 0.15:
            words.insert(self.rng.randint(1, n), f"`{self.content_word()}_{self.content_word()}`")
        if n > 10 and self.rng.random() < 0.4:
            words[self.rng.randint(3, n - 4)] += ","
        text = " ".join(words)
        return text[0].upper() + text[1:] + self.rng.choice(".....?!")

    def paragraph(self) -> str:
        """3-6 sentences, or now and then a short bullet list."""
        if self.rng.random() < 0.12:
            return "\n".join(f"- {self.sentence()}" for _ in range(self.rng.randint(3, 5)))
        return " ".join(self.sentence() for _ in range(self.rng.randint(3, 6)))

    def title(self) -> str:
        """A 2-5 word title."""
        words = [self.content_word() for _ in range(self.rng.randint(2, 5))]
        return " ".join(words).capitalize()

    def document(self, target_bytes: int) -> str:
        """A Markdown document of roughly ``target_bytes``: a title, an intro and sections."""
        parts = [f"# {self.title()}", self.paragraph()]
        size = sum(len(p) + 2 for p in parts)
        while size < target_bytes:
            section = [f"## {self.title()}"]
            section_size = 0
            section_target = self.rng.randint(500, 900)
            while section_size < section_target:
                paragraph = self.paragraph()
                section.append(paragraph)
                section_size += len(paragraph) + 2
            parts.extend(section)
            size += sum(len(p) + 2 for p in section)
        return "\n\n".join(parts) + "\n"

    def query(self) -> str:
        """A short query: 2-5 content words, sometimes phrased as a question."""
        words = [self.content_word() for _ in range(self.rng.randint(2, 5))]
        if self.rng.random() < 0.25:
            return f"how does {' '.join(words)} work"
        return " ".join(words)


def build_corpus(
    corpus: Path, vocabulary: list[str], target_chunks: int, seed: int, chunking: Any
) -> dict[str, Any]:
    """Write files into ``corpus`` until the real chunker counts ``target_chunks`` chunks."""
    gen = ProseGenerator(vocabulary, seed)
    corpus.mkdir(parents=True, exist_ok=True)
    chunks = files = total_bytes = 0
    per_dir = 200
    while chunks < target_chunks:
        folder = corpus / f"area-{files // per_dir:03d}"
        folder.mkdir(exist_ok=True)
        path = folder / f"note-{files:05d}.md"
        text = gen.document(gen.rng.randint(2400, 3600))
        path.write_text(text, encoding="utf-8")
        doc = read_document(corpus, path, max_file_bytes=2_000_000)
        chunks += len(chunk_document(doc, chunking))
        files += 1
        total_bytes += len(text.encode())
        if files % 500 == 0:
            progress(f"corpus: {files} files, {chunks} chunks so far")
    return {"files": files, "chunks_by_chunker": chunks, "bytes": total_bytes}


# -- processes ----------------------------------------------------------------------------------


# -- phases -------------------------------------------------------------------------------------
