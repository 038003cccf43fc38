"""Rehearsal and test probes: readings overridden from a JSON file named by
`RAGVISOR_TEST_MEMORY_FILE` (see docs/memory.md) or set by a test, and the choice of probe."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from ragvisor.config import MemorySettings
from ragvisor.supervise.memory.probes import SystemProbe
from ragvisor.supervise.memory.sample import MB, TEST_MEMORY_FILE_ENV, MemoryProbe, MemorySample

# Keys of a rehearsal file (and of ScriptedProbe.set): MB-valued readings and the sample fields
# they replace. One vocabulary for operators and tests.
_BYTES_KEYS = {
    "available_mb": "available_bytes",
    "total_mb": "total_bytes",
    "swap_total_mb": "swap_total_bytes",
    "swap_used_mb": "swap_used_bytes",
}
_RATE_KEYS = {"swap_in_mb_s": "swap_in_bytes_per_s", "swap_out_mb_s": "swap_out_bytes_per_s"}
_PSI_KEYS = ("psi_some_avg10", "psi_full_avg10")
OVERRIDE_KEYS = frozenset({*_BYTES_KEYS, *_RATE_KEYS, *_PSI_KEYS, "rss_mb"})


def _number(key: str, value: Any, *, nullable: bool) -> float | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        kind = "a number >= 0" + (" or null" if nullable else "")
        raise ValueError(f"{key}: expected {kind}, got {value!r}")
    return float(value)


def apply_overrides(sample: MemorySample, overrides: Mapping[str, Any]) -> MemorySample:
    """`sample` with readings replaced by MB-valued `overrides` (the rehearsal file's keys).

    `rss_mb` merges into the measured RSS; a null removes a process. Raises ValueError naming an
    unknown key or a bad value.
    """
    unknown = sorted(set(overrides) - OVERRIDE_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown}; expected some of {sorted(OVERRIDE_KEYS)}")
    changes: dict[str, Any] = {}
    for key, name in _BYTES_KEYS.items():
        if key in overrides:
            changes[name] = int(_number(key, overrides[key], nullable=False) or 0) * MB
    for key, name in _RATE_KEYS.items():
        if key in overrides:
            rate = _number(key, overrides[key], nullable=True)
            changes[name] = None if rate is None else rate * MB
    for key in _PSI_KEYS:
        if key in overrides:
            changes[key] = _number(key, overrides[key], nullable=True)
    if "rss_mb" in overrides:
        table = overrides["rss_mb"]
        if not isinstance(table, Mapping):
            raise ValueError(f"rss_mb: expected a table of process -> MB, got {table!r}")
        rss = dict(sample.rss_bytes)
        for process, value in table.items():
            mb = _number(f"rss_mb.{process}", value, nullable=True)
            if mb is None:
                rss.pop(process, None)
            else:
                rss[process] = int(mb * MB)
        changes["rss_bytes"] = rss
    return dataclasses.replace(sample, **changes)


class FileProbe:
    """A rehearsal probe: the real readings of `base`, overridden by a JSON file read on each
    sample, so a test or an operator can simulate pressure on a running daemon by rewriting it.

    Keys (all optional, MB): ``available_mb``, ``total_mb``, ``swap_total_mb``, ``swap_used_mb``,
    ``swap_in_mb_s``, ``swap_out_mb_s``, ``psi_some_avg10``, ``psi_full_avg10`` and ``rss_mb``
    (``{"ollama": 2500}``). A missing file means "no overrides" (delete it to end a rehearsal);
    invalid JSON, an unknown key or a bad value raises ValueError (TypeError when the file holds
    no JSON object), which the guard logs as a failed probe.
    Write the file atomically (write a temporary file, then rename it over) so that a sample
    never reads half of it.
    """

    def __init__(self, path: Path, base: MemoryProbe) -> None:
        self.path = path
        self._base = base

    def sample(self) -> MemorySample:
        """The base probe's sample with the file's overrides applied."""
        measured = self._base.sample()
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return measured
        try:
            overrides = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}: not valid JSON: {exc}") from exc
        if not isinstance(overrides, Mapping):
            raise TypeError(f"{self.path}: expected a JSON object")
        try:
            return apply_overrides(measured, overrides)
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from exc


def synthetic_sample(
    *,
    available_mb: float = 2048,
    total_mb: float = 4096,
    swap_total_mb: float = 0,
    swap_used_mb: float = 0,
    swap_in_mb_s: float | None = None,
    swap_out_mb_s: float | None = None,
    psi_some_avg10: float | None = None,
    psi_full_avg10: float | None = None,
    rss_mb: Mapping[str, float] | None = None,
    taken_at: float = 0.0,
) -> MemorySample:
    """A sample described in MB (a calm 4 GB box by default), for tests and rehearsals."""
    return MemorySample(
        taken_at=taken_at,
        total_bytes=int(total_mb * MB),
        available_bytes=int(available_mb * MB),
        swap_total_bytes=int(swap_total_mb * MB),
        swap_used_bytes=int(swap_used_mb * MB),
        swap_in_bytes_per_s=None if swap_in_mb_s is None else swap_in_mb_s * MB,
        swap_out_bytes_per_s=None if swap_out_mb_s is None else swap_out_mb_s * MB,
        psi_some_avg10=psi_some_avg10,
        psi_full_avg10=psi_full_avg10,
        rss_bytes={name: int(mb * MB) for name, mb in (rss_mb or {}).items()},
    )


def probe_from_env(
    settings: MemorySettings,
    *,
    environ: Mapping[str, str] | None = None,
    extra_pids: Callable[[], Mapping[str, int | None]] = dict,
) -> MemoryProbe:
    """The probe the daemon should use: a SystemProbe built from the settings, wrapped in a
    FileProbe when `RAGVISOR_TEST_MEMORY_FILE` names a file (a rehearsal and testing aid, not a
    setting). The override is logged as a warning so a forgotten variable is visible.
    """
    system = SystemProbe(
        ollama_process=settings.ollama_process,
        neo4j_process=settings.neo4j_process,
        ollama_pid_file=settings.ollama_pid_file,
        neo4j_pid_file=settings.neo4j_pid_file,
        extra_pids=extra_pids,
    )
    path = (os.environ if environ is None else environ).get(TEST_MEMORY_FILE_ENV, "")
    if not path:
        return system
    structlog.get_logger(component="memory").warning(
        "memory.test_probe", file=path, note=f"readings overridden by {TEST_MEMORY_FILE_ENV}"
    )
    return FileProbe(Path(path), system)
