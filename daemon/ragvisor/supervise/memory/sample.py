"""A memory sample (what the box and the stack's programs use right now) and the probe seam."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

MB = 1024 * 1024
TEST_MEMORY_FILE_ENV = "RAGVISOR_TEST_MEMORY_FILE"


def to_mb(value: float | None) -> float | None:
    return None if value is None else round(value / MB, 1)


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One reading of the host's memory and of the watched processes."""

    taken_at: float  # time.monotonic()
    total_bytes: int
    available_bytes: int  # MemAvailable
    swap_total_bytes: int
    swap_used_bytes: int
    swap_in_bytes_per_s: float | None  # None until a first rate window has passed
    swap_out_bytes_per_s: float | None
    psi_some_avg10: float | None  # /proc/pressure/memory; None where the kernel lacks it
    psi_full_avg10: float | None
    rss_bytes: Mapping[str, int]  # "daemon", "worker", "ollama", "neo4j": only those found

    @property
    def watched_rss_bytes(self) -> int:
        """RSS of every watched process together (what `memory.budget_mb` limits)."""
        return sum(self.rss_bytes.values())


class MemoryProbe(Protocol):
    """Where samples come from; `sample()` runs in a worker thread and may block briefly."""

    def sample(self) -> MemorySample: ...
