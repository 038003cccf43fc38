"""`ragvisor status`: the daemon's whole picture — lanes, backends, memory, sync, store — as a
table for a person or as JSON for a script.

It asks a running daemon (`GET /status` and `GET /readyz`) and never touches a model or the
store itself, so it is safe to run at any time, as often as wanted. The fetch is shared with
`ragvisor health`, which judges the same two answers. A daemon older than `/status` still gets a
readiness summary: every section is read tolerantly, and a missing one is shown as missing
rather than breaking the output.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ragvisor.errors import RagvisorError
from ragvisor.oncall.daemon_client import DaemonClient, DaemonTimeout, DaemonUnreachable

DEFAULT_TIMEOUT_S = 10.0
EXIT_OK, EXIT_UNREACHABLE = 0, 1


@dataclass(frozen=True, slots=True)
class DaemonReply:
    """What the daemon said to `/readyz` and `/status`.

    `error` is set when the daemon could not be asked at all (refused, timed out, not a ragvisor
    daemon); `timed_out` tells a silent daemon from an absent one. `notes` say what is missing.
    """

    url: str
    readyz: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    error: str | None = None
    timed_out: bool = False
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The combined JSON that `ragvisor status --json` prints."""
        return {
            "url": self.url,
            "reachable": self.error is None,
            "error": self.error,
            "readiness": self.readyz,
            "status": self.status,
            "notes": list(self.notes),
        }


def dig(data: Any, *keys: str) -> Any:
    """`data[k1][k2]…`, or None as soon as a level is missing or not a mapping (older daemons
    lack sections; a status page must not crash on them)."""
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def number(value: Any) -> float | None:
    """A JSON value as a finite float, or None (missing, null, text, bool, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def default_url(host: str, port: int) -> str:
    """The daemon's URL from `server.host`/`server.port`: a wildcard listen address is reached on
    loopback, an IPv6 literal goes in brackets."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - a listen address being translated, not bound
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def url_from_config(config: Path | None) -> str:
    """The daemon's URL as the configuration (file, then environment) says. Raises ConfigError."""
    from ragvisor.config import load_settings  # noqa: PLC0415 - pydantic only when needed

    server = load_settings(config, os.environ).server
    return default_url(server.host, server.port)


async def fetch_daemon(url: str, timeout_s: float) -> DaemonReply:
    """Ask `/readyz` and `/status` at once, each bounded by `timeout_s`. Never raises: every
    failure becomes `DaemonReply.error`."""
    daemon = DaemonClient(url, timeout_s)
    log = structlog.get_logger(component="ops")
    started = time.perf_counter()
    try:
        async with daemon.session() as pool, asyncio.timeout(timeout_s):
            # /readyz answers 503 with its checks when not ready: that is an answer too.
            readyz, status = await asyncio.gather(
                daemon.get_json("/readyz", ok=(200, 503), client=pool),
                daemon.get_json("/status", client=pool),
            )
    except (TimeoutError, DaemonTimeout):
        return DaemonReply(
            daemon.url,
            error=f"daemon at {daemon.url} did not answer within {timeout_s:g} s",
            timed_out=True,
        )
    except DaemonUnreachable as exc:
        return DaemonReply(daemon.url, error=str(exc))
    except RagvisorError as exc:
        return DaemonReply(daemon.url, error=f"daemon at {daemon.url}: {exc}")
    notes = []
    if readyz is None:
        notes.append("daemon has no /readyz: is it a ragvisor daemon?")
    if status is None:
        notes.append("daemon has no /status (older than this command): showing readiness only")
    log.debug(
        "ops.daemon_fetched",
        url=daemon.url,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return DaemonReply(daemon.url, readyz=readyz, status=status, notes=tuple(notes))


# --- rendering ------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """`3h 12m`, `4m 05s`, `12.3 s`: short, exact enough for a person."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def _seconds(value: float | None) -> str:
    """A short duration: milliseconds below one second, seconds above."""
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _show(value: Any, unit: str = "", digits: int = 0) -> str:
    """A value for a cell: numbers rounded with their unit, None as `-`."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        text = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
        return f"{text} {unit}".rstrip()
    return str(value)


def columns(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows aligned in columns under the first row's headings: columns whose every value is a
    number (or `-`) right-aligned, the others left-aligned."""
    count = len(rows[0])
    widths = [max(len(row[i]) for row in rows) for i in range(count)]
    numeric = [
        all(r[i][:1].isdigit() or r[i] == "-" for r in rows[1:])
        and any(r[i][:1].isdigit() for r in rows[1:])
        for i in range(count)
    ]
    lines = []
    for row in rows:
        cells = (
            text.rjust(width) if right else text.ljust(width)
            for text, width, right in zip(row, widths, numeric, strict=True)
        )
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def _pairs(rows: Iterable[tuple[str, str]]) -> list[str]:
    items = list(rows)
    width = max(len(key) for key, _ in items)
    return [f"  {key.ljust(width)}  {value}" for key, value in items]


def _verdict(check: Any) -> str:
    """ok, FAILED, or "failing" for a check the daemon stays ready without (the sync's)."""
    if dig(check, "ok"):
        return "ok"
    return "failing" if dig(check, "required") is False else "FAILED"


def _daemon_section(reply: DaemonReply) -> list[str]:
    s = reply.status or {}
    checks = dig(reply.readyz, "checks") or {}
    verdicts = ", ".join(f"{name} {_verdict(check)}" for name, check in checks.items())
    ready = dig(reply.readyz, "ready")
    failed = [
        f"{name}: {dig(check, 'error') or 'not ok'}"
        for name, check in checks.items()
        if not dig(check, "ok")
    ]
    rows = [
        ("url", reply.url),
        ("version", _show(s.get("version"))),
        ("pid", _show(s.get("pid"))),
        ("uptime", duration(number(s.get("uptime_s")))),
        ("ready", f"{_show(ready)} ({verdicts})" if verdicts else _show(ready)),
    ]
    rows += [("failed", text) for text in failed]
    return ["daemon", *_pairs(rows)]


def _lanes_section(status: Mapping[str, Any]) -> list[str]:
    lanes = status.get("lanes")
    if not isinstance(lanes, Mapping) or not lanes:
        return ["lanes", "  (not reported)"]
    rows = [["lane", "active", "waiting", "max_concurrent", "max_queue", "service_time",
             "admitted", "rejected"]]  # fmt: skip
    for name, lane in lanes.items():
        service = number(dig(lane, "service_time_s"))
        rows.append(
            [
                name,
                *(
                    _show(dig(lane, key))
                    for key in ("active", "waiting", "max_concurrent", "max_queue")
                ),
                _seconds(service),
                _show(dig(lane, "admitted")),
                _show(dig(lane, "rejected")),
            ]
        )
    return ["lanes", *columns(rows)]


def _breaker_text(breaker: Any) -> str:
    if not isinstance(breaker, Mapping):
        return "-"
    state = str(breaker.get("state", "?"))
    retry = number(breaker.get("retry_in_s"))
    failures = breaker.get("consecutive_failures")
    extra = f", retry in {retry:.0f} s" if retry is not None else ""
    extra += f", {failures} failures in a row" if failures else ""
    return state + extra


def _ladder_text(ladder: Any) -> str:
    if not isinstance(ladder, Mapping):
        return "-"
    step = dig(ladder, "last_step", "step")
    outcome = dig(ladder, "last_step", "outcome")
    text = "running" if ladder.get("running") else "idle"
    if step:
        text += f", last step {step} ({outcome})"
    restarts, budget = ladder.get("restarts_last_hour"), ladder.get("restart_budget_per_hour")
    return text + f", {_show(restarts)}/{_show(budget)} restarts this hour"


def _process_text(worker: Any) -> str:
    """The embedded worker child process, when the daemon runs one."""
    if not isinstance(worker, Mapping):
        return "-"
    text = f"{worker.get('state', '?')} pid {_show(worker.get('pid'))}"
    text += f", {_show(worker.get('restarts'))} restarts"
    if worker.get("last_exit") is not None:
        text += f", last exit {worker['last_exit']}"
    return text


def _backends_section(status: Mapping[str, Any]) -> list[str]:
    backends = status.get("backends")
    if not isinstance(backends, Mapping) or not backends:
        return ["backends", "  (not reported)"]
    rows = [["backend", "kind", "model", "url", "process", "breaker", "ladder"]]
    for name, backend in backends.items():
        if not isinstance(backend, Mapping):
            rows.append([name, "off", "-", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                name,
                _show(backend.get("kind")),
                _show(backend.get("model")),
                _show(backend.get("url")),
                _process_text(backend.get("worker")),
                _breaker_text(backend.get("breaker")),
                _ladder_text(backend.get("ladder")),
            ]
        )
    return ["backends", *columns(rows)]


def _memory_section(status: Mapping[str, Any]) -> list[str]:
    memory = status.get("memory")
    if not isinstance(memory, Mapping):
        return ["memory", "  (not reported)"]

    def show(key: str, unit: str, digits: int = 0) -> str:
        return _show(memory.get(key), unit, digits)

    rows = [("level", _show(memory.get("level")))]
    reasons = memory.get("reasons")
    if reasons:
        rows.append(("reasons", "; ".join(str(r) for r in reasons)))
    if memory.get("available_mb") is not None:
        rows += [
            ("available", f"{show('available_mb', 'MB')} of {show('total_mb', 'MB')}"),
            ("swap", f"{show('swap_used_mb', 'MB')} used of {show('swap_total_mb', 'MB')}"),
            ("swap rate", f"in {show('swap_in_mb_s', 'MB/s', 1)}, "
                          f"out {show('swap_out_mb_s', 'MB/s', 1)}"),
            ("pressure", f"some {show('psi_some_avg10', '%', 1)}, "
                         f"full {show('psi_full_avg10', '%', 1)} (PSI avg10)"),
        ]  # fmt: skip
    rss = memory.get("rss_mb")
    if isinstance(rss, Mapping) and rss:
        rows.append(("rss", ", ".join(f"{k} {_show(v, 'MB')}" for k, v in rss.items())))
    if memory.get("sampled_at") is not None:
        rows.append(("sampled", f"{memory['sampled_at']} (every {show('interval_s', 's', 1)})"))
    return ["memory", *_pairs(rows)]


def _report_text(report: Mapping[str, Any]) -> str:
    """One line for the last sync report: documents by outcome, skips, embeddings, time."""
    docs = report.get("documents")
    summary = ", ".join(f"{v} {k}" for k, v in docs.items()) if isinstance(docs, Mapping) else "-"
    skipped = report.get("skipped")
    # `skipped` lists at most SKIPPED_LISTED_MAX; `skipped_count` counts them all.
    skips = report.get("skipped_count", len(skipped) if isinstance(skipped, list) else "-")
    embedded = _show(report.get("embeddings_computed"))
    return f"documents {summary}; skipped {skips}; {embedded} embedded in " + _show(
        report.get("seconds"), "s", 2
    )


def _last_error(sync: Mapping[str, Any]) -> str:
    """The last sync's error, with how many syncs in a row have failed when more than one."""
    failures = number(sync.get("consecutive_failures"))
    text = _show(sync.get("last_error"))
    return f"{text} ({failures:.0f} syncs in a row)" if failures and failures > 1 else text


def _sync_section(status: Mapping[str, Any]) -> list[str]:
    sync = status.get("sync")
    if not isinstance(sync, Mapping):
        return ["sync", "  (not reported)"]
    interval = number(sync.get("interval_s"))
    age = number(sync.get("last_sync_age_s"))
    state = "running" if sync.get("running") else "idle"
    rows = [
        ("state", f"{state} (last trigger: {sync.get('trigger') or '-'})"),
        ("last success", "never since start" if age is None else f"{duration(age)} ago"),
        ("last error", _last_error(sync)),
        ("interval", "off (no scheduled sync)" if interval == 0 else duration(interval)),
    ]
    report = sync.get("last_report")
    if isinstance(report, Mapping):
        rows.append(("last report", _report_text(report)))
    lease = sync.get("lease")
    if isinstance(lease, Mapping):
        whose = "this daemon" if lease.get("mine") else _show(lease.get("holder"))
        left = number(lease.get("expires_in_s"))
        rows.append(
            ("lease", f"{whose}, expired {duration(-left)} ago" if left is not None and left <= 0
             else f"{whose}, {_show(left, 's', 0)} left")
        )  # fmt: skip
    elif "lease" in sync:
        rows.append(("lease", "free (no daemon is syncing)"))
    counts = sync.get("token_counts")
    if isinstance(counts, Mapping):
        rows.append(("token counts", _token_counts_text(counts)))
    return ["sync", *_pairs(rows)]


def _token_counts_text(counts: Mapping[str, Any]) -> str:
    """The token-count job's last pass (`ask.stored_token_counts`), in a line."""
    if counts.get("running"):
        return "counting now"
    if not counts.get("finished_at"):
        return "not run yet (after the next sync, or 10 s after start)"
    return (
        f"last pass counted {_show(counts.get('counted'))}, pruned {_show(counts.get('pruned'))}"
        f" in {_show(counts.get('duration_ms'), 'ms', 0)}"
    )


def _store_section(reply: DaemonReply) -> list[str]:
    store = dig(reply.status, "store")
    if not isinstance(store, Mapping):
        store = dig(reply.readyz, "checks", "store")  # older daemons: readiness has the counts
    if not isinstance(store, Mapping):
        return ["store", "  (not reported)"]
    rows = [(k, _show(v)) for k, v in store.items() if k not in ("ok", "generations")]
    if store.get("ok") is False:
        rows.insert(0, ("state", "NOT REACHABLE"))
    rows += _generation_rows(store.get("generations"))
    return ["store", *(_pairs(rows) if rows else ["  (no counts)"])]


def _generation_rows(generations: Any) -> list[tuple[str, str]]:
    """The active model's generation and, during a model change, how far the new one is."""
    if not isinstance(generations, Mapping):
        return []

    def name(g: Any) -> str:
        return f"{g.get('model')} ({g.get('fingerprint')})" if isinstance(g, Mapping) else "-"

    rows = [("model", name(generations.get("active")))]
    migration = generations.get("migration")
    if isinstance(migration, Mapping):
        done, total = number(migration.get("chunks_done")), number(migration.get("chunks_total"))
        ratio = number(migration.get("ratio"))
        share = f" ({ratio * 100:.0f} %)" if ratio is not None else ""
        rows.append(
            ("migrating to", f"{name(generations.get('building'))}: "
             f"{_show(done)} of {_show(total)} chunks embedded{share}")
        )  # fmt: skip
    return rows


def render_status(reply: DaemonReply) -> str:
    """The table `ragvisor status` prints: daemon, lanes, backends, memory, sync, store."""
    sections = [_daemon_section(reply)]
    status = reply.status
    if status is not None:
        sections += [
            _lanes_section(status),
            _backends_section(status),
            _memory_section(status),
            _sync_section(status),
        ]
    sections.append(_store_section(reply))
    lines = [line for section in sections for line in (*section, "")]
    lines += [f"note: {note}" for note in reply.notes]
    return "\n".join(lines).rstrip() + "\n"
