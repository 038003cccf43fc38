"""Settings: one TOML file, overridden by `RAGVISOR_<SECTION>__<KEY>` variables, validated once.

Reading the file (`read_toml`) is kept apart from turning a mapping into `Settings`
(`parse_settings`), which is pure and unit-tested. Every error names the offending key, e.g.
``sync.interval_s: Input should be greater than or equal to 0``. Values are never clamped
silently. With no file at all, the embedded defaults below apply.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ragvisor.errors import ConfigError

ENV_PREFIX = "RAGVISOR_"
# Variables with our prefix that are not settings: the config file path (read by the CLI) and
# the Makefile's download cache.
NOT_SETTINGS = frozenset({"CONFIG", "CACHE"})


def _expand_user(path: Path) -> Path:
    return path.expanduser()


# A path setting: `~` is expanded; relative paths stay relative to the working directory.
UserPath = Annotated[Path, AfterValidator(_expand_user)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusSettings(_Section):
    """Which folders are the knowledge base and how their files become chunks."""

    paths: tuple[UserPath, ...] = (Path("docs"),)
    include: tuple[str, ...] = ("**/*.md", "**/*.markdown", "**/*.txt")
    exclude: tuple[str, ...] = ("**/.git/**", "**/node_modules/**", "**/.venv/**", "**/.*/**")
    max_file_bytes: int = Field(2_000_000, ge=1)
    chunk_size_chars: int = Field(800, ge=100, le=100_000)
    chunk_overlap_chars: int = Field(120, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> CorpusSettings:
        if self.chunk_overlap_chars >= self.chunk_size_chars:
            raise ValueError("chunk_overlap_chars must be smaller than chunk_size_chars")
        if not self.paths:
            raise ValueError("paths must name at least one folder")
        return self


class StoreSettings(_Section):
    """Where vectors, chunks and documents live."""

    backend: Literal["sqlite"] = "sqlite"
    data_dir: UserPath = Path(".ragvisor")
    busy_timeout_s: float = Field(10.0, gt=0)


class EmbedderSettings(_Section):
    """The embedding model. An empty `model_dir` means the pinned, packaged MiniLM."""

    backend: Literal["onnx"] = "onnx"
    model_dir: UserPath | None = None
    model_name: str = "all-MiniLM-L6-v2-int8"
    batch_size: int = Field(4, ge=1, le=512)
    threads: int = Field(2, ge=1, le=64)
    max_tokens: int = Field(256, ge=8, le=8192)


class GeneratorSettings(_Section):
    """The answer generator; used by `/ask` (next release), validated now so files stay stable."""

    backend: Literal["embedded", "ollama", "none"] = "embedded"
    url: str = "http://127.0.0.1:11434"
    model: str = "gemma3-270m"
    num_ctx: int = Field(2048, ge=256)
    num_predict: int = Field(256, ge=1)


class ServerSettings(_Section):
    """The HTTP server and its request limits."""

    host: str = "127.0.0.1"
    port: int = Field(8321, ge=0, le=65535)
    admin_token: str = ""
    default_k: int = Field(5, ge=1)
    max_k: int = Field(50, ge=1, le=1000)
    max_query_chars: int = Field(1000, ge=1)
    snippet_chars: int = Field(240, ge=20)
    shutdown_grace_s: float = Field(10.0, ge=0)

    @model_validator(mode="after")
    def _k_within_max(self) -> ServerSettings:
        if self.default_k > self.max_k:
            raise ValueError("default_k must not exceed max_k")
        return self


class SyncSettings(_Section):
    """When the daemon syncs on its own."""

    interval_s: float = Field(300.0, ge=0)
    on_start: bool = True
    # Skip reading a file whose size, mtime, ctime and inode are those of its stored version.
    quick_check: bool = True
    # At shutdown, how long to wait for a running sync to stop after its current batch.
    stop_timeout_s: float = Field(30.0, ge=0)


class Settings(_Section):
    """Every setting of ragvisor, one frozen value built once at start."""

    corpus: CorpusSettings = CorpusSettings()
    store: StoreSettings = StoreSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    generator: GeneratorSettings = GeneratorSettings()
    server: ServerSettings = ServerSettings()
    sync: SyncSettings = SyncSettings()


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file. Raises ConfigError when it is missing or malformed."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc


def _env_value(raw: str) -> Any:
    """Interpret an environment value as a TOML value when it parses as one, else as text.

    So `RAGVISOR_SYNC__INTERVAL_S=60` is a number and `RAGVISOR_CORPUS__PATHS='["a","b"]'` a list,
    while `RAGVISOR_SERVER__HOST=0.0.0.0` stays a string.
    """
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Collect `RAGVISOR_<SECTION>__<KEY>` variables into a nested mapping.

    Raises ConfigError for a variable with the prefix whose name has no `__` separator.
    """
    nested: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        if rest in NOT_SETTINGS:
            continue
        section, sep, key = rest.partition("__")
        if not sep or not key:
            raise ConfigError(f"{name}: expected RAGVISOR_<SECTION>__<KEY>")
        nested.setdefault(section.lower(), {})[key.lower()] = _env_value(raw)
    return nested


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two mappings; values of `override` win."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_settings(data: Mapping[str, Any]) -> Settings:
    """Validate a mapping into Settings. Raises ConfigError naming each bad key."""
    try:
        return Settings.model_validate(dict(data))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            problems.append(f"{key}: {message}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def load_settings(
    path: Path | None,
    environ: Mapping[str, str],
    cli_overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults < TOML file < environment < command-line flags, validated once.

    Raises ConfigError when the file is unreadable or any value is invalid.
    """
    data: dict[str, Any] = read_toml(path) if path is not None else {}
    data = merge(data, env_overrides(environ))
    if cli_overrides:
        data = merge(data, cli_overrides)
    return parse_settings(data)
