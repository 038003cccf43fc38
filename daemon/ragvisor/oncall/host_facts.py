"""What `ragvisor doctor` reads from the host, from pure to I/O: parsers turn file text into
values (/proc/swaps, /proc/meminfo, neo4j.conf, Ollama's systemd drop-in, Go durations); the
readers gather them into :class:`HostFacts` — files under `doctor.proc_dir`, and the model's
trained context from Ollama's `/api/show` or from the GGUF header (a short timeout, never a
model load). The checks (ragvisor.oncall.doctor_checks) only ever see the facts.
"""

from __future__ import annotations

import re
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from ragvisor.core.durations import parse_keep_alive_setting
from ragvisor.datadir import OpenPath, find_open_paths, is_open
from ragvisor.errors import InputError, ModelFileError
from ragvisor.llm.gguf_header import gguf_context_length
from ragvisor.oncall.store_facts import StoreFacts, StoreOpener, read_store

if TYPE_CHECKING:
    from ragvisor.config import Settings

MB = 1024 * 1024


# --------------------------------------------------------------------------- parsers (pure)


@dataclass(frozen=True, slots=True)
class SwapArea:
    """One line of /proc/swaps (sizes in KiB, as the kernel reports them)."""

    path: str
    kind: str
    size_kib: int
    used_kib: int


def parse_swaps(text: str) -> tuple[SwapArea, ...]:
    """The active swap areas listed in /proc/swaps (header skipped)."""
    areas = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 4 and parts[2].isdigit() and parts[3].isdigit():
            path = parts[0].replace("\\040", " ")
            areas.append(SwapArea(path, parts[1], int(parts[2]), int(parts[3])))
    return tuple(areas)


def parse_meminfo_total_mb(text: str) -> int | None:
    """MemTotal from /proc/meminfo, in MB."""
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1 / MB, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0 * 1024}


def parse_size_mb(value: str) -> float | None:
    """A Neo4j byte size (`512m`, `1g`, `1.5GiB`, `1048576`) in MB; None when unreadable."""
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        return None
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_properties(text: str) -> dict[str, str]:
    """`key=value` lines of neo4j.conf (comments and blank lines skipped; the last one wins)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True, slots=True)
class DropIn:
    """What a systemd drop-in sets: its `Environment=` variables and `EnvironmentFile=` paths."""

    environment: Mapping[str, str]
    environment_files: tuple[str, ...] = ()


def _logical_lines(text: str) -> list[str]:
    """Lines with systemd's trailing-backslash continuations joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and stripped.startswith(("#", ";")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def parse_dropin(text: str) -> DropIn:
    """The `[Service]` section's `Environment=` and `EnvironmentFile=` of a unit drop-in.

    Quoting follows systemd (`Environment="A=1" "B=two words"`); an empty `Environment=`
    resets the list, as systemd does. Words without `=` are ignored, as systemd does.
    """
    environment: dict[str, str] = {}
    files: list[str] = []
    section = ""
    for line in _logical_lines(text):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, sep, value = line.partition("=")
        if section != "Service" or not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Environment":
            if not value:
                environment.clear()
                continue
            try:
                words = shlex.split(value)
            except ValueError:
                words = value.split()
            for word in words:
                name, eq, setting = word.partition("=")
                if eq and name:
                    environment[name] = setting
        elif key == "EnvironmentFile" and value:
            files.append(value)
    return DropIn(environment, tuple(files))


def keep_alive_s(value: str) -> float | None:
    """A keep-alive as Ollama reads `OLLAMA_KEEP_ALIVE` — whole seconds or a Go duration — in
    seconds (`math.inf` for negative: forever); None when Ollama would ignore the value. Quotes
    around it (an env file's) are not part of it."""
    try:
        return parse_keep_alive_setting(value.strip().strip("\"'"))
    except InputError:
        return None


# --------------------------------------------------------------------------- host facts


@dataclass(frozen=True, slots=True)
class ModelContext:
    """The generator model's trained context, as its backend or its GGUF file says."""

    source: str  # URL or file
    model: str
    context_length: int | None = None
    architecture: str | None = None
    error: str | None = None
    missing: bool = False  # the model does not exist there (not pulled; no such file)
    missing_is_fatal: bool = True  # False: the pinned default, assembled at first start


@dataclass(frozen=True, slots=True)
class DataDirModes:
    """Who else can get into the data directory (ragvisor.datadir): the paths group or other
    may access, `store.data_dir` itself first."""

    path: str
    exists: bool = True
    open_paths: tuple[OpenPath, ...] = ()
    error: str | None = None  # what could not be looked into (someone else's 0700 folder)


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What `read_host` found. None means "not there"; `errors` says what could not be read."""

    swaps: tuple[SwapArea, ...] | None = None
    swappiness: int | None = None
    memtotal_mb: int | None = None
    neo4j_conf: Mapping[str, str] | None = None
    dropin: DropIn | None = None
    model: ModelContext | None = None  # None: generator.backend is "none"
    data_dir: DataDirModes | None = None  # None: not examined (facts assembled by hand)
    store: StoreFacts | None = None  # None: the SQLite store, or facts assembled by hand
    errors: Mapping[str, str] = field(default_factory=dict)


def _read_file(
    path: Path, name: str, errors: dict[str, str], *, required: bool = False
) -> str | None:
    """A text file's content; None when absent (an error only if `required`) or unreadable."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        if required:
            errors[name] = f"{path} does not exist"
    except OSError as exc:
        errors[name] = f"cannot read {path}: {exc.strerror or exc}"
    return None


def ollama_model_context(url: str, model: str, timeout_s: float) -> ModelContext:
    """`<arch>.context_length` from Ollama's `/api/show` (reads the manifest; loads nothing)."""
    source = url.rstrip("/") + "/api/show"
    try:
        response = httpx.post(source, json={"model": model}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return ModelContext(source, model, error=str(exc) or type(exc).__name__)
    if response.status_code == 404:
        return ModelContext(source, model, missing=True, error="model not found")
    try:
        info = response.json().get("model_info") or {}
    except (ValueError, AttributeError):
        return ModelContext(source, model, error=f"HTTP {response.status_code}, not JSON")
    if response.status_code >= 400:
        return ModelContext(source, model, error=f"HTTP {response.status_code}")
    arch = str(info.get("general.architecture") or "")
    length = info.get(f"{arch}.context_length")
    return ModelContext(
        source, model, context_length=length if isinstance(length, int) else None, architecture=arch
    )


def gguf_model_context(path: Path, model: str, *, configured: bool) -> ModelContext:
    """The embedded worker's context from its GGUF header (never loads the model)."""
    try:
        with path.open("rb") as stream:
            arch, length = gguf_context_length(stream)
    except FileNotFoundError:
        return ModelContext(
            str(path), model, missing=True, error="no such file", missing_is_fatal=configured
        )
    except (OSError, ModelFileError) as exc:
        return ModelContext(str(path), model, error=str(exc))
    return ModelContext(str(path), model, context_length=length, architecture=arch)


def model_context(settings: Settings) -> ModelContext | None:
    """Where the generator's model lives and what context it was trained for."""
    from ragvisor.llm.gguf import DEFAULT_GGUF_NAME  # noqa: PLC0415 - only for the embedded case

    g = settings.generator
    if g.backend == "none":
        return None
    if g.backend == "ollama":
        return ollama_model_context(g.url, g.model, settings.doctor.timeout_s)
    configured = settings.worker.model_path
    path = configured or Path(settings.store.data_dir) / "models" / DEFAULT_GGUF_NAME
    return gguf_model_context(Path(path), g.model, configured=configured is not None)


def data_dir_modes(data_dir: Path) -> DataDirModes:
    """The data directory's paths open to group or other; when it cannot be listed (another
    user's folder), at least the folder's own mode."""
    try:
        mode = stat.S_IMODE(data_dir.stat().st_mode)
    except FileNotFoundError:
        return DataDirModes(str(data_dir), exists=False)
    except OSError as exc:
        return DataDirModes(str(data_dir), error=f"cannot read its mode: {exc.strerror or exc}")
    try:
        return DataDirModes(str(data_dir), open_paths=find_open_paths(data_dir))
    except OSError as exc:
        wide = (OpenPath(data_dir, mode, is_dir=True),) if is_open(mode) else ()
        error = f"cannot look inside: {exc.strerror or exc}"
        return DataDirModes(str(data_dir), open_paths=wide, error=error)


def read_host(settings: Settings, open_store: StoreOpener | None = None) -> HostFacts:
    """Gather the facts: /proc files, neo4j.conf, the Ollama drop-in, the model's context and,
    with `store.backend = "neo4j"`, the database as `open_store` reaches it (without an opener
    the store is noted as not checked)."""
    d = settings.doctor
    errors: dict[str, str] = {}
    proc = Path(d.proc_dir)
    swaps = _read_file(proc / "swaps", "swaps", errors, required=True)
    swappiness = _read_file(proc / "sys/vm/swappiness", "swappiness", errors, required=True)
    meminfo = _read_file(proc / "meminfo", "meminfo", errors)
    neo4j = _read_file(Path(d.neo4j_conf_path), "neo4j_conf", errors)
    dropin = _read_file(Path(d.ollama_dropin_path), "ollama_dropin", errors)
    return HostFacts(
        swaps=parse_swaps(swaps) if swaps is not None else None,
        swappiness=int(swappiness) if swappiness and swappiness.strip().isdigit() else None,
        memtotal_mb=parse_meminfo_total_mb(meminfo) if meminfo else None,
        neo4j_conf=parse_properties(neo4j) if neo4j is not None else None,
        dropin=parse_dropin(dropin) if dropin is not None else None,
        model=model_context(settings),
        data_dir=data_dir_modes(Path(settings.store.data_dir)),
        store=read_store(settings, open_store),
        errors=errors,
    )
