"""The ask benchmark's figures: per-phase times from the daemon's log, medians and paired
differences of the rounds, verdicts against the targets, and the printed and JSON report.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    finish_report,
    median,
    pct,
)

TARGETS: dict[str, tuple[str, float, str]] = {
    "overhead_ms": ("<=", 50.0, "ms"),  # brief: /ask overhead over the raw generator, to TTFT
    "daemon_rss_mb": ("<=", 300.0, "MB"),  # brief: daemon RSS with the embedder loaded
}


# -- figures ------------------------------------------------------------------------------------


def log_phases(log_path: Path, request_ids: set[str]) -> dict[str, list[float]]:
    """The daemon's `http.request` lines for our `/ask` requests: every `*_ms` field."""
    phases: dict[str, list[float]] = {}
    if not log_path.exists():
        return phases
    for raw in log_path.read_bytes().splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("event") != "http.request":
            continue
        if record.get("path") != "/ask" or record.get("request_id") not in request_ids:
            continue
        for key, value in record.items():
            if key.endswith("_ms") and isinstance(value, int | float):
                phases.setdefault(key, []).append(float(value))
    return phases


def summarize(rounds: list[dict[str, Any]], prompts: dict[str, Any], log_path: Path) -> dict:
    """Medians and friends over the timed rounds (rounds with an error on either side are
    left out of the paired figures and counted)."""
    ok = [r for r in rounds if "error" not in r["daemon"] and "error" not in r["worker"]]
    daemon = [r["daemon"] for r in ok]
    worker = [r["worker"] for r in ok]
    ttft_a = [d["ttft_ms"] for d in daemon]
    ttft_b = [w["ttft_ms"] for w in worker]
    paired = [a - b for a, b in zip(ttft_a, ttft_b, strict=True)]
    paired_daemon_first = [
        r["daemon"]["ttft_ms"] - r["worker"]["ttft_ms"] for r in ok if r["daemon_first"]
    ]
    paired_worker_first = [
        r["daemon"]["ttft_ms"] - r["worker"]["ttft_ms"] for r in ok if not r["daemon_first"]
    ]
    done = [d["done"] for d in daemon]
    finals = [w.get("final", {}) for w in worker]
    server: dict[str, list[float]] = {}
    for event in done:
        for key, value in (event.get("timings_ms") or {}).items():
            server.setdefault(key, []).append(float(value))
    pre_generation = [
        sum(float(e["timings_ms"].get(p, 0.0)) for p in ("embed", "retrieve", "fetch", "pack"))
        for e in done
    ]
    first_token = [float(e["timings_ms"].get("first_token", float("nan"))) for e in done]
    # The worker's own prompt-eval time (request → first sampled token, inside llama.cpp):
    # the same both ways unless the cache state or the CPU available differed.
    eval_a = [float(e["timings_ms"].get("prompt_eval", float("nan"))) for e in done]
    eval_b = [f.get("prompt_eval_duration", float("nan")) / 1e6 for f in finals]
    prompt_daemon = [e["tokens"].get("prompt") for e in done]
    prompt_worker = [f.get("prompt_eval_count") for f in finals]
    mismatched = sum(1 for a, b in zip(prompt_daemon, prompt_worker, strict=True) if a != b)
    ids = {r["daemon"]["request_id"] for r in rounds}
    rest_a = [t - e for t, e in zip(ttft_a, eval_a, strict=True)]
    rest_b = [t - e for t, e in zip(ttft_b, eval_b, strict=True)]
    # An answer that never reached the model (a cache hit, say) would flatter the daemon.
    no_model = sum(1 for e in done if not e["timings_ms"].get("prompt_eval"))
    median_a, median_b = median(ttft_a), median(ttft_b)
    return {
        "rounds": len(rounds),
        "rounds_ok": len(ok),
        "errors": [
            {
                "question": r["question"],
                "daemon": r["daemon"].get("error"),
                "worker": r["worker"].get("error"),
            }
            for r in rounds
            if r not in ok
        ],
        "ttft_daemon_ms": {"median": median_a, "p90": pct(ttft_a, 90), "values": ttft_a},
        "ttft_worker_ms": {"median": median_b, "p90": pct(ttft_b, 90), "values": ttft_b},
        "overhead_diff_of_medians_ms": median_a - median_b,
        "overhead_paired_median_ms": median(paired),
        "overhead_paired_ms": {
            "p10": pct(paired, 10),
            "p90": pct(paired, 90),
            "median_when_daemon_first": median(paired_daemon_first),
            "median_when_worker_first": median(paired_worker_first),
        },
        "ratio_daemon_to_worker": median_a / median_b if median_b else float("nan"),
        "tokens_per_s_daemon": median(
            [float(e["tokens"]["per_second"]) for e in done if e["tokens"].get("per_second")]
        ),
        "tokens_per_s_worker": median([w["tokens_per_s"] for w in worker if "tokens_per_s" in w]),
        "total_daemon_ms": median([d["total_ms"] for d in daemon]),
        "total_worker_ms": median([w["total_ms"] for w in worker]),
        "citations_event_ms": median([d["citations_ms"] for d in daemon]),
        "prompt_tokens": median([float(p) for p in prompt_daemon if p is not None]),
        "prompt_tokens_worker": median([float(p) for p in prompt_worker if p is not None]),
        "prompt_token_mismatches": mismatched,
        "completion_tokens": median(
            [float(e["tokens"]["completion"]) for e in done if e["tokens"].get("completion")]
        ),
        "prompt_eval_ms": {
            "via_ask": median(eval_a),
            "direct": median(eval_b),
            "paired_diff": median([a - b for a, b in zip(eval_a, eval_b, strict=True)]),
        },
        "ttft_minus_prompt_eval_ms": {"via_ask": median(rest_a), "direct": median(rest_b)},
        "overhead_outside_model_paired_median_ms": median(
            [a - b for a, b in zip(rest_a, rest_b, strict=True)]
        ),
        "rounds_without_prompt_eval": no_model,
        "cpu_ms_per_ask_median": {
            f"{who}_during_{path}": median([r[path]["cpu_ms"][who] for r in ok])
            for path in ("daemon", "worker")
            for who in ("daemon", "worker")
        },
        "server_timings_median_ms": {k: median(v) for k, v in server.items()},
        # How /ask counted its prompt's tokens: "stored" (at sync), "tokenizer" (a round trip
        # to the worker per question) or "estimate".
        "counted_with": dict(Counter(e.get("tokens", {}).get("counted_with") for e in done)),
        # The baseline of the same run: the in-process prompt building (Answerer.prepare without
        # stored counts) asks the worker's tokenizer for every question.
        "pack_with_tokenizer_median_ms": median(
            [float(p["timings_ms"]["pack"]) for p in prompts.values() if "timings_ms" in p]
        ),
        "breakdown_median_ms": {
            "server_before_generator": median(pre_generation),
            "server_generator_call_to_first_token": median(
                [f - p for f, p in zip(first_token, pre_generation, strict=True)]
            ),
            "client_minus_server_first_token": median(
                [a - f for a, f in zip(ttft_a, first_token, strict=True)]
            ),
        },
        "request_log_median_ms": {
            k: median(v) for k, v in sorted(log_phases(log_path, ids).items())
        },
        "prompts": {q: {k: v for k, v in p.items() if k != "messages"} for q, p in prompts.items()},
    }


def verdict(key: str, value: float) -> tuple[str, str]:
    """(target, verdict) against the brief, or empty strings when there is no target."""
    if key not in TARGETS:
        return "", ""
    op, bound, unit = TARGETS[key]
    target = f"{op} {bound:g} {unit}".strip()
    if value != value:  # NaN
        return target, ""
    ok = value <= bound if op == "<=" else value >= bound
    return target, "met" if ok else "NOT met"


def summary_rows(fig: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) rows of the final table."""
    rows: list[tuple[str, str, str, str]] = []

    def add(label: str, value: float, fmt: str, key: str = "") -> None:
        rows.append((label, format(value, fmt), *verdict(key, value)))

    s, m = fig["ask"], fig["memory"]
    add("TTFT through /ask, median ms", s["ttft_daemon_ms"]["median"], ".1f")
    add("TTFT through /ask, p90 ms", s["ttft_daemon_ms"]["p90"], ".1f")
    add("TTFT worker alone (same prompt), median ms", s["ttft_worker_ms"]["median"], ".1f")
    add("TTFT worker alone, p90 ms", s["ttft_worker_ms"]["p90"], ".1f")
    add("daemon overhead, difference of medians ms", s["overhead_diff_of_medians_ms"], ".1f")
    add(
        "daemon overhead, median of paired diffs ms",
        s["overhead_paired_median_ms"],
        ".1f",
        "overhead_ms",
    )
    add(
        "daemon overhead outside the model, paired median ms",
        s["overhead_outside_model_paired_median_ms"],
        ".1f",
        "overhead_ms",
    )
    add("TTFT ratio /ask / worker (medians)", s["ratio_daemon_to_worker"], ".3f")
    add(
        "pack (token counts) on the daemon, median ms",
        s["server_timings_median_ms"].get("pack", float("nan")),
        ".2f",
    )
    add(
        "pack asking the worker's tokenizer (same run), median ms",
        s["pack_with_tokenizer_median_ms"],
        ".2f",
    )
    add("asks packed by token counts stored at sync", s["counted_with"].get("stored", 0), "d")
    for label, value in s["breakdown_median_ms"].items():
        add(f"  {label.replace('_', ' ')}, median ms", value, ".1f")
    add("tokens/s, /ask done events (median)", s["tokens_per_s_daemon"], ".1f")
    add("tokens/s, worker alone (median)", s["tokens_per_s_worker"], ".1f")
    add("total answer time through /ask, median ms", s["total_daemon_ms"], ".0f")
    add("total answer time worker alone, median ms", s["total_worker_ms"], ".0f")
    add("prompt tokens (median)", s["prompt_tokens"], ".0f")
    add("completion tokens (median)", s["completion_tokens"], ".0f")
    add("daemon RSS idle (before the first ask), MB", m["idle"]["daemon_rss_mb"], ".1f")
    add("daemon RSS after the run, MB", m["after"]["daemon_rss_mb"], ".1f", "daemon_rss_mb")
    add("daemon peak RSS (VmHWM), MB", m["daemon_hwm_mb"], ".1f")
    add("worker RSS idle (before the first ask), MB", m["idle"]["worker_rss_mb"], ".1f")
    add("worker RSS after the run, MB", m["after"]["worker_rss_mb"], ".1f")
    add("worker peak RSS (VmHWM), MB", m["worker_hwm_mb"], ".1f")
    return rows


def report(figures: dict[str, Any], out: Path, stamp: str, logs: Path) -> None:
    """Print the details and the summary table; write the JSON file."""
    s = figures["ask"]
    print("== ragvisor ask benchmark ==")
    mach = figures["machine"]
    print(
        f"machine: {mach['cpus']} CPUs, Python {mach['python']}, {mach['mem_total_mb']:.0f} MB RAM"
    )
    sync = figures["sync"]
    print(
        f"corpus: {figures['args']['corpus']} — {sync['documents']} documents, "
        f"{sync['embeddings_computed']} embeddings in {sync['seconds']:.1f}s"
    )
    gen = figures["generator"]
    print(
        f"generator: {gen['model']} at {gen['worker_url']} (worker pid {gen['worker_pid']}), "
        f"options {gen['options']}, keep_alive {gen['keep_alive']!r}"
    )
    print(
        f"rounds: {s['rounds']} timed ({s['rounds_ok']} without errors) after "
        f"{figures['args']['warmup']} warm-up; k={figures['args']['k']}"
    )
    for error in s["errors"][:5]:
        print(f"WARNING: failed round: {error}")
    if s["prompt_token_mismatches"]:
        print(
            f"WARNING: {s['prompt_token_mismatches']} rounds had different prompt token counts "
            "through /ask and direct — the in-process messages are not the daemon's"
        )
    o = s["overhead_paired_ms"]
    print(
        f"paired overhead (ms): p10 {o['p10']:.1f}, p90 {o['p90']:.1f}; median when /ask ran "
        f"first {o['median_when_daemon_first']:.1f}, when the worker ran first "
        f"{o['median_when_worker_first']:.1f}"
    )
    print(
        "daemon phases in the done event (median ms): "
        + ", ".join(f"{k} {v:.1f}" for k, v in s["server_timings_median_ms"].items())
    )
    print(
        "daemon http.request log for /ask (median ms): "
        + ", ".join(f"{k} {v:.1f}" for k, v in s["request_log_median_ms"].items())
    )
    pe, rest = s["prompt_eval_ms"], s["ttft_minus_prompt_eval_ms"]
    print(
        f"model side: prompt eval (the worker's stats, median ms) via /ask {pe['via_ask']:.1f}, "
        f"direct {pe['direct']:.1f}, paired difference {pe['paired_diff']:.1f}; "
        f"TTFT minus prompt eval: via /ask {rest['via_ask']:.1f}, direct {rest['direct']:.1f}; "
        f"/ask's citations event after {s['citations_event_ms']:.1f} ms"
    )
    cpu = s["cpu_ms_per_ask_median"]
    print(
        "CPU per ask (median ms): via /ask daemon "
        f"{cpu['daemon_during_daemon']:.0f}, worker {cpu['worker_during_daemon']:.0f}; "
        f"direct: daemon {cpu['daemon_during_worker']:.0f}, "
        f"worker {cpu['worker_during_worker']:.0f}"
    )
    if s["rounds_without_prompt_eval"]:
        print(
            f"WARNING: {s['rounds_without_prompt_eval']} /ask answers report no prompt eval "
            "(answered without the model?) — their TTFT is not comparable"
        )
    finish_report(
        figures,
        summary_rows(figures),
        out / f"ask_bench-{stamp}.json",
        logs,
        "the paired overhead is the figure to trust, the absolute times are pessimistic",
    )
