"""The worker's two models, their names, and how Ollama describes a model (tags, show, ps).

The generator answers to `generator.model` (``gemma3-270m``) and the embedder to ``all-minilm``
and `embedder.model_name`, each with Ollama's normalisation: a name without a tag means
``:latest`` and names compare case-insensitively. Payload builders here are pure: the caller
passes the facts (GGUF metadata, digests, times) in.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ragvisor.errors import InputError
from ragvisor.llm.worker.engine import ModelFacts
from ragvisor.llm.worker.prompting import USER_TURN_STOP
from ragvisor.ollama.names import model_key, short_name

EMBEDDER_ALIAS = "all-minilm"

# llama.cpp's `enum llama_ftype` (`general.file_type`) as Ollama prints it.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
}

# The transcript `prompting.render_chat` writes, as the Go template Ollama would show.
CHAT_TEMPLATE = (
    '{{- range .Messages }}{{ if eq .Role "system" }}{{ .Content }}\n\n'
    '{{ else if eq .Role "assistant" }}Assistant: {{ .Content }}\n'
    "{{ else }}User: {{ .Content }}\n{{ end }}{{ end }}Assistant:"
)
# The embedder takes each input as it is: Ollama's default template for a model without one.
EMBEDDER_TEMPLATE = "{{ .Prompt }}"
# Go writes a float64 without a fraction or an exponent below this magnitude (1e6 as 1000000).
_GO_PLAIN_FLOAT_LIMIT = 1e21


class UnknownModelError(InputError):
    """The request names a model this worker does not serve (HTTP 404, as Ollama)."""

    def __init__(self, name: str) -> None:
        super().__init__(f'model "{name}" not found, try pulling it first')


class UnsupportedError(InputError):
    """The model exists but cannot do what was asked (chat with the embedder, say)."""


class ModelKind(enum.Enum):
    """Which of the two models a name refers to."""

    GENERATOR = "generator"
    EMBEDDER = "embedder"


@dataclass(frozen=True, slots=True)
class Catalog:
    """The names the worker answers to."""

    generator: str
    embedders: tuple[str, ...]

    @classmethod
    def build(cls, generator_name: str, embedder_name: str) -> Catalog:
        """Normalised names; the embedder's alias first, duplicates dropped."""
        embedders: list[str] = []
        for name in (EMBEDDER_ALIAS, embedder_name):
            if model_key(name) not in {model_key(known) for known in embedders}:
                embedders.append(short_name(name))
        return cls(generator=short_name(generator_name), embedders=tuple(embedders))

    def kind_of(self, requested: str) -> ModelKind:
        """Which model `requested` names. Raises UnknownModelError."""
        key = model_key(requested) if requested.strip() else ""
        if key == model_key(self.generator):
            return ModelKind.GENERATOR
        if key in {model_key(name) for name in self.embedders}:
            return ModelKind.EMBEDDER
        raise UnknownModelError(requested)

    def listed_name(self, requested: str) -> str:
        """The name `/api/tags` lists for the model `requested` names. Raises UnknownModelError."""
        key = model_key(requested)
        for name in (self.generator, *self.embedders):
            if model_key(name) == key:
                return name
        raise UnknownModelError(requested)


def rfc3339(moment: datetime) -> str:
    """A timestamp as Ollama writes one (RFC 3339, UTC with a `Z`)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def human_number(count: int) -> str:
    """Ollama's `format.HumanNumber`: 268098176 -> ``268.10M``, 7000000000 -> ``7B``."""
    for scale, suffix, decimals in ((1e12, "T", 1), (1e9, "B", 1), (1e6, "M", 2)):
        if count >= scale:
            number = count / scale
            return (
                f"{number:.0f}{suffix}" if number.is_integer() else f"{number:.{decimals}f}{suffix}"
            )
    if count >= 1e3:
        return f"{count / 1e3:.0f}K"
    return str(count)


def _typed(value: str) -> Any:
    """GGUF metadata arrives as text from llama.cpp; give numbers and booleans back their type.

    A whole float becomes an int, because that is what Ollama's JSON carries: Go's encoder
    writes `rope.freq_base` 1e6 as ``1000000``, which every JSON reader takes for an integer.
    """
    if value in ("true", "false"):
        return value == "true"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    if number.is_integer() and abs(number) < _GO_PLAIN_FLOAT_LIMIT:
        return int(number)
    return number


def generator_details(facts: ModelFacts) -> dict[str, Any]:
    """Ollama's `details` object for the GGUF generator."""
    arch = facts.architecture
    try:
        quantization = FILE_TYPES.get(int(facts.metadata["general.file_type"]), "unknown")
    except (KeyError, ValueError):
        quantization = "unknown"
    return {
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch],
        "parameter_size": human_number(facts.n_params),
        "quantization_level": quantization,
    }


def generator_model_info(facts: ModelFacts) -> dict[str, Any]:
    """`model_info`: the GGUF metadata with typed values, plus the parameter count."""
    info = {key: _typed(value) for key, value in sorted(facts.metadata.items())}
    # Left out as Ollama's show leaves them out (server/routes.go, GetModelInfo); the
    # template is shown as `template` instead.
    info.pop("tokenizer.chat_template", None)
    info.pop("general.name", None)
    info["general.parameter_count"] = facts.n_params
    return info


def generator_show(
    facts: ModelFacts, *, model_path: str, name: str, num_ctx: int, modified_at: datetime
) -> dict[str, Any]:
    """The `/api/show` body for the generator."""
    parameters = "\n".join(
        (f"{'stop':<30} {json.dumps(USER_TURN_STOP)}", f"{'num_ctx':<30} {num_ctx}")
    )
    return {
        "modelfile": _modelfile(name, model_path, f'"""{CHAT_TEMPLATE}"""', parameters),
        "parameters": parameters,
        "template": CHAT_TEMPLATE,
        "details": generator_details(facts),
        "model_info": generator_model_info(facts),
        "capabilities": ["completion"],
        "modified_at": rfc3339(modified_at),
    }


def _modelfile(name: str, model_path: str, template: str, parameters: str) -> str:
    """The Modelfile `ollama show` prints: header, FROM, TEMPLATE (quoted as given), PARAMETERs."""
    return (
        '# Modelfile generated by "ollama show"\n'
        f"# To build a new Modelfile based on this, replace FROM with:\n# FROM {name}\n\n"
        f"FROM {model_path}\n"
        f"TEMPLATE {template}\n"
        + "".join(f"PARAMETER {line}\n" for line in parameters.splitlines())
    )


@dataclass(frozen=True, slots=True)
class EmbedderFacts:
    """What the worker tells about the ONNX embedder (it has no GGUF metadata)."""

    dimensions: int
    max_tokens: int
    size_bytes: int
    n_params: int | None  # known for the pinned default model only


def embedder_details(facts: EmbedderFacts) -> dict[str, Any]:
    """Ollama's `details` for the ONNX sentence model (format ``onnx``: it is not a GGUF)."""
    return {
        "parent_model": "",
        "format": "onnx",
        "family": "bert",
        "families": ["bert"],
        "parameter_size": human_number(facts.n_params) if facts.n_params else "unknown",
        "quantization_level": "INT8" if facts.n_params else "unknown",
    }


def embedder_model_info(facts: EmbedderFacts) -> dict[str, Any]:
    """`model_info` in Ollama's keys: `bert.embedding_length` is the vector size."""
    info: dict[str, Any] = {
        "general.architecture": "bert",
        "bert.embedding_length": facts.dimensions,
        # The embedder cuts (or, with truncate:false, refuses) longer inputs at this many tokens.
        "bert.context_length": facts.max_tokens,
        "bert.pooling_type": 1,  # mean pooling, as llama.cpp numbers it
    }
    if facts.n_params:
        info["general.parameter_count"] = facts.n_params
    return info


def embedder_show(
    facts: EmbedderFacts, *, model_path: str, name: str, modified_at: datetime
) -> dict[str, Any]:
    """The `/api/show` body for the embedder: no `parameters`, as Ollama leaves an empty one out."""
    return {
        "modelfile": _modelfile(name, model_path, EMBEDDER_TEMPLATE, ""),
        "template": EMBEDDER_TEMPLATE,
        "details": embedder_details(facts),
        "model_info": embedder_model_info(facts),
        "capabilities": ["embedding"],
        "modified_at": rfc3339(modified_at),
    }


def tag_entry(
    name: str, *, size: int, digest: str, details: Mapping[str, Any], modified_at: datetime
) -> dict[str, Any]:
    """One model of `/api/tags`."""
    return {
        "name": name,
        "model": name,
        "modified_at": rfc3339(modified_at),
        "size": size,
        "digest": digest,
        "details": dict(details),
    }


def ps_entry(
    name: str,
    *,
    size: int,
    digest: str,
    details: Mapping[str, Any],
    expires_at: datetime,
    context_length: int,
) -> dict[str, Any]:
    """One loaded model of `/api/ps` (`size_vram` is 0: CPU only)."""
    return {
        "name": name,
        "model": name,
        "size": size,
        "digest": digest,
        "details": dict(details),
        "expires_at": rfc3339(expires_at),
        "size_vram": 0,
        "context_length": context_length,
    }
