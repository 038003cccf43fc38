"""A small, realistic knowledge base whose answers are unambiguous, for search tests."""

from __future__ import annotations

from pathlib import Path

NOTES = {
    "ops/swap.md": """---
title: Swap on a small droplet
---
# Swap

A swap file gives a 4 GB droplet room to breathe when the chat model loads beside the
embedding model. Create it with fallocate, format it with mkswap and enable it with swapon.

## Swappiness

Set vm.swappiness to 10 so the kernel prefers dropping page cache over swapping out the
daemon's working set.
""",
    "ops/neo4j.md": """# Neo4j memory

The Neo4j heap is set with server.memory.heap.max_size; on a shared 4 GB box 512 MB is enough.
The page cache holds the graph store files and is sized separately.
""",
    "recipes/bread.md": """# Sourdough bread

Mix flour, water and starter, let the dough rise overnight, then bake it in a hot Dutch oven
for forty minutes until the crust is dark brown.
""",
    "notes.txt": """Plain text notes.

The cat sleeps on the windowsill every afternoon when the sun is out.
""",
}


def write_corpus(root: Path) -> Path:
    """Write the notes under `root` and return it."""
    for rel, text in NOTES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def synthetic_corpus(root: Path, documents: int, sections: int = 4) -> Path:
    """Many documents of several sections each, with distinct words per document."""
    root.mkdir(parents=True, exist_ok=True)
    for d in range(documents):
        body = "\n\n".join(
            f"## Part {s}\n\n"
            + " ".join(
                f"topic{d} detail{s} sentence number {w} about item{d * 31 + w % 17}."
                for w in range(12)
            )
            for s in range(sections)
        )
        (root / f"doc{d:03d}.md").write_text(f"# Document {d}\n\n{body}\n")
    return root
