"""Ollama model names: one rule decides which spellings name one model, everywhere."""

from __future__ import annotations

import pytest

from ragvisor.ollama.names import model_key, same_model, short_name


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("gemma3-270m", "gemma3-270m:latest"),
        ("a:latest", "a"),
        ("library/x", "x"),
        ("registry.ollama.ai/library/x:latest", "x"),
        ("Nomic-Embed-Text", "nomic-embed-text:latest"),
        ("x@sha256:abc", "x"),
    ],
)
def test_spellings_ollama_fills_in_name_one_model(a, b):
    """The host, namespace and `latest` tag Ollama fills in, and case, do not tell models apart."""
    assert same_model(a, b)
    assert model_key(a) == model_key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [("gemma3-270m", "gemma3-1b"), ("a:q4", "a"), ("me/embedder", "embedder"), ("h/n/x", "x")],
)
def test_another_tag_namespace_or_host_is_another_model(a, b):
    """A tag, namespace or host of its own makes another model."""
    assert not same_model(a, b)


def test_the_short_name_adds_latest_only_when_untagged():
    """The name `/api/tags` lists: `:latest` added to an untagged name, a tag kept as given."""
    assert short_name(" x ") == "x:latest"
    assert short_name("x:q4") == "x:q4"
    assert short_name("host:5000/me/x") == "host:5000/me/x:latest"
