"""The configuration examples in docs/ are valid configuration."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from ragvisor.config import parse_settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"```toml\n(.*?)```", re.DOTALL)
EXAMPLES = [
    (path.name, index, block)
    for path in sorted(DOCS.glob("*.md"))
    for index, block in enumerate(BLOCK.findall(path.read_text()))
]


@pytest.mark.parametrize(("doc", "index", "block"), EXAMPLES, ids=lambda v: str(v)[:20])
def test_toml_example_in_docs_validates(doc, index, block):
    """Every ```toml block in docs/ parses and passes validation (no stale keys)."""
    parse_settings(tomllib.loads(block))


def test_docs_have_toml_examples():
    """The configuration reference carries at least one full example."""
    assert any(doc == "configuration.md" for doc, _, _ in EXAMPLES)
