"""Where settings come from: defaults < TOML file < `RAGVISOR_<SECTION>__<KEY>` variables <
command-line flags, merged and validated once — and the way back, settings as environment
variables for a child process.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from ragvisor.config.sections import Settings
from ragvisor.errors import ConfigError

ENV_PREFIX = "RAGVISOR_"
# Variables with our prefix that are not settings: the config file path (read by the CLI), the
# Makefile's download cache and the rehearsal files of the memory guard (see docs/memory.md) and
# of the systemd watchdog (see docs/systemd.md).
NOT_SETTINGS = frozenset({"CONFIG", "CACHE", "TEST_MEMORY_FILE", "TEST_WATCHDOG_FILE"})
# Variables taken as text exactly as set, never read as TOML: a password of `123` or `true` is
# that text, not a number or a boolean.
VERBATIM = frozenset({"STORE__PASSWORD"})


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


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Collect `RAGVISOR_<SECTION>__<KEY>` variables into a nested mapping.

    Deeper tables nest with more separators: `RAGVISOR_GENERATOR__DEADLINES__REQUEST_S`.
    Raises ConfigError for a variable with the prefix whose name has no `__` separator.
    """
    nested: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        if rest in NOT_SETTINGS:
            continue
        parts = [part.lower() for part in rest.split("__")]
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"{name}: expected RAGVISOR_<SECTION>__<KEY>")
        table = nested
        for part in parts[:-1]:
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {part} is a value, not a table")
            table = child
        table[parts[-1]] = raw if rest in VERBATIM else _env_value(raw)
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


def _toml_literal(value: Any) -> str:
    """A value written so that `_env_value` reads it back unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    return json.dumps(str(value))


def settings_env(settings: Settings, sections: tuple[str, ...]) -> dict[str, str]:
    """The given sections as `RAGVISOR_<SECTION>__<KEY>` variables (unset keys left out).

    How the daemon hands its effective configuration to a child process (the worker), whatever
    mix of file, environment and flags produced it. Secrets (the store's password) are left out:
    the child has no use for them, and a process's environment is readable longer than a file.
    """
    env: dict[str, str] = {}

    def walk(prefix: str, model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            key = f"{prefix}__{name.upper()}"
            if isinstance(value, BaseModel):
                walk(key, value)
            elif value is not None and not isinstance(value, SecretStr):  # secrets stay here
                env[key] = _toml_literal(value)

    for section in sections:
        walk(ENV_PREFIX + section.upper(), getattr(settings, section))
    return env
