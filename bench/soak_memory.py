"""The soak's memory readings: the daemon's and its worker's RSS sampled every few seconds,
folded per minute, and the growth after the warm-up that the soak judges.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psutil

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    median,
)

# -- memory -------------------------------------------------------------------------------------


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and VmHWM of a process in kB (empty if it is gone)."""
    wanted = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {
        key: int(rest.split()[0])
        for key, _, rest in (line.partition(":") for line in lines)
        if key in wanted
    }


def worker_child(daemon: psutil.Process) -> psutil.Process | None:
    """The daemon's `ragvisor worker` child, if it runs."""
    try:
        for child in daemon.children():
            if "worker" in child.cmdline():
                return child
    except psutil.Error:
        pass
    return None


def sampler(daemon: psutil.Process, t0: float, every_s: float, stop: threading.Event) -> list[dict]:
    """RSS samples of daemon and worker (MB), every `every_s` until `stop`; filled in place."""
    samples: list[dict[str, Any]] = []

    def run() -> None:
        while True:
            worker = worker_child(daemon)
            d = status_kb(daemon.pid)
            w = status_kb(worker.pid) if worker else {}
            try:
                fds = daemon.num_fds()  # a leak of connections or files shows here first
            except psutil.Error:
                fds = 0
            samples.append(
                {
                    "t_s": time.monotonic() - t0,
                    "daemon_mb": d.get("VmRSS", 0) / 1000,
                    "worker_mb": w.get("VmRSS", 0) / 1000,
                    "worker_anon_mb": w.get("RssAnon", 0) / 1000,
                    "worker_file_mb": w.get("RssFile", 0) / 1000,
                    "daemon_hwm_mb": d.get("VmHWM", 0) / 1000,
                    "worker_hwm_mb": w.get("VmHWM", 0) / 1000,
                    "worker_pid": worker.pid if worker else None,
                    "daemon_fds": fds,
                }
            )
            if stop.wait(every_s):
                return

    threading.Thread(target=run, name="rss-sampler", daemon=True).start()
    return samples


def per_minute(samples: list[dict[str, Any]], minutes: int) -> list[dict[str, Any]]:
    """Each minute's median of every sampled figure, and the daemon's and worker's peak.

    A single sample per minute is noise: a sync or a batch of queries lifts the daemon by 10 to
    20 MB for a few seconds, so growth read from one sample each at minute 5 and minute 30 swings
    by ±8 % between identical runs. Minute 0 is the first sample (before any load); minute m
    holds the samples taken during it.
    """
    rows = []
    for minute in range(minutes + 1):
        lo, hi = (minute - 1) * 60 + 1.0, minute * 60 + 1.0
        mine = [s for s in samples if lo < s["t_s"] <= hi] if minute else samples[:1]
        if not mine:
            continue
        row: dict[str, Any] = {"minute": minute, "samples": len(mine)}
        for key, value in mine[-1].items():
            if key in ("t_s", "worker_pid"):
                row[key] = value
            else:
                row[key] = median([s[key] for s in mine])
        row["daemon_peak_mb"] = max(s["daemon_mb"] for s in mine)
        row["worker_peak_mb"] = max(s["worker_mb"] for s in mine)
        rows.append(row)
    return rows


def growth_pct(rows: list[dict[str, Any]], key: str, start_min: int) -> float:
    """Growth of `key` from minute `start_min` to the last minute, in percent of the first."""
    start = [r for r in rows if r["minute"] == start_min]
    if not start or not start[0][key] or rows[-1]["minute"] <= start_min:
        return float("nan")
    return 100.0 * (rows[-1][key] - start[0][key]) / start[0][key]
