"""Ollama model names: which spellings name one model, and the short form people read.

Ollama fills in a name's missing parts (types/model/name.go): the host
``registry.ollama.ai``, the namespace ``library`` and the tag ``latest``, and compares names
without regard to case. ``nomic-embed-text``, ``Nomic-Embed-Text:latest`` and
``registry.ollama.ai/library/nomic-embed-text:latest`` are one model; ``x:q4`` and ``x`` are
not. Every comparison of model names in ragvisor goes through :func:`model_key`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"


def model_key(name: str) -> str:
    """A model name in Ollama's full form, case-folded: equal keys mean one model to Ollama.

    A digest suffix (``name@sha256:…``) is ignored.
    """
    bare = name.strip().split("@", 1)[0]
    parts = bare.split("/")
    model, _, tag = parts[-1].partition(":")
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    host = "/".join(parts[:-2]) if len(parts) >= 3 else DEFAULT_HOST
    return f"{host}/{namespace}/{model}:{tag or DEFAULT_TAG}".casefold()


def same_model(a: str, b: str) -> bool:
    """Whether Ollama takes the two names for one model (see :func:`model_key`)."""
    return model_key(a) == model_key(b)


def short_name(name: str) -> str:
    """The form `/api/tags` lists a name in: as given, with ``:latest`` added when untagged."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:{DEFAULT_TAG}"


def bare_digest(value: Any) -> str:
    """A digest as bare lower-case hex: `sha256:` and case dropped ("" when there is none)."""
    return str(value or "").strip().lower().removeprefix("sha256:")


def find_model(
    entries: Iterable[Any], name: str, digest: str | None = None
) -> dict[str, Any] | None:
    """The entry of an `/api/tags` or `/api/ps` list for the model `name`: by either of the
    names Ollama gives (`name`, `model`), else — with `digest` — by digest under another name
    (`ollama cp`). Entries that are not objects are passed over.
    """
    models = [entry for entry in entries if isinstance(entry, dict)]
    key = model_key(name)
    for entry in models:
        names = (entry.get("name"), entry.get("model"))
        if any(isinstance(n, str) and model_key(n) == key for n in names):
            return entry
    if digest is not None:
        for entry in models:
            if bare_digest(entry.get("digest")) == digest:
                return entry
    return None
