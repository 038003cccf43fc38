"""The daemon in front of a real Ollama: what it adds to the time to first token, how long a
frozen runner keeps generated answers away, and the memory of each, in one run.

One run, on this machine:

1. syncs a corpus (default: the repo's ``docs/``) into a temp store and starts a bench-owned
   ``ollama serve`` (tests/infra/ollama_engine.py: the build the tests use, inventory/prod's
   OLLAMA_* environment, models ``gemma3-270m`` and ``all-minilm``);
2. records the prompts: a daemon whose generator is reached through a recording pass-through
   proxy answers each question once, and the ``/api/chat`` body it sent is kept as it was;
3. time to first token, warm: a daemon talking to Ollama directly; per round one question both
   ways — streamed ``/ask`` (first ``delta`` event) and the recorded body sent to Ollama alone
   (first content chunk) — each after a cache flush, alternating which goes first (ABBA);
   medians, the daemon's overhead and the ratio;
4. memory: RSS of the daemon and of Ollama's server plus runner (psutil, summed over each
   process tree) with nothing loaded, right after an answer, and after the timed rounds;
5. a frozen runner, ``--repeats`` times with a fresh daemon each: SIGSTOP of the loaded runner
   with another client's request stuck on it (tests/integration/test_ollama_wedge.py's wedge),
   then ``/ask`` until an answer is generated again — seconds from the freeze to it, and what
   the ladder did (its ``restart_command`` restarts this very server from its pid file).

The daemons run with tests/integration/test_supervision.py's short supervision deadlines
(``SUPERVISED``, imported so the two stay in step) and ``keep_alive`` "5m"; the settings in
effect are printed. Figures go to stdout and ``<out>/ollama_bench-<timestamp>.json``; progress
to stderr. Timings are printed, never asserted. Run: ``make bench-ollama``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    QUESTIONS,
    REPO,
    SERVE_ENV,
    TreeLoadMeter,
    clean_env,
    output_folders,
    progress,
    run_header,
    run_sync,
)
from ollama_figures import report
from ollama_runs import (
    daemon,
    frozen_runner,
    memory,
    record_prompts,
    ttft_rounds,
    wait_unloaded,
)
from ollamalib import (
    OLLAMA_VERSION,
    bench_ollama,
    generator_settings,
    preload,
    prod_environment,
    settings_lines,
    tree_processes,
    unload,
)
from ragvisor.logs import configure_logging

sys.path.insert(0, str(REPO))  # the supervision tests' settings live in tests/integration
from tests.integration.test_supervision import SUPERVISED

SYNC_TIMEOUT_S = 1800.0
KEEP_ALIVE = "5m"  # warm: the model stays loaded between calls (prod's Ollama default is 0)
PATIENT = {
    "RAGVISOR_GENERATOR__DEADLINES__FIRST_TOKEN_S": "30",
    "RAGVISOR_GENERATOR__DEADLINES__STALL_S": "10",
    "RAGVISOR_GENERATOR__DEADLINES__TOTAL_S": "60",
    "RAGVISOR_GENERATOR__DEADLINES__REQUEST_S": "70",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30, help="timed TTFT rounds (both ways each)")
    p.add_argument("--warmup", type=int, default=4, help="untimed rounds first")
    p.add_argument("--repeats", type=int, default=3, help="frozen-runner repeats")
    p.add_argument("--corpus", type=Path, default=REPO / "docs", help="folder to sync and ask")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="output folder")
    args = p.parse_args(argv)
    if not 1 <= args.rounds <= 1000 or not 0 <= args.warmup <= 100:
        p.error("--rounds must be 1..1000 and --warmup 0..100")
    if not 0 <= args.repeats <= 20:
        p.error("--repeats must be 0..20")
    return args


def main(argv: list[str] | None = None) -> int:
    """Sync, start Ollama, record the prompts, time both ways, freeze the runner; report."""
    args = parse_args(argv)
    configure_logging(json=False, level="warning")
    # SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop Ollama and the daemons.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    out, stamp, logs = output_folders(args.out, "ollama")
    work = Path(tempfile.mkdtemp(prefix="ragvisor-ollama-bench-"))
    corpus, data_dir = args.corpus.resolve(), work / "data"
    meter = TreeLoadMeter()
    figures: dict[str, Any] = run_header(stamp, args)
    begun = time.monotonic()
    try:
        meter.mark("sync")
        progress(f"sync {corpus} into {data_dir}")
        figures["sync"] = run_sync(corpus, data_dir, logs / "sync.log", timeout_s=SYNC_TIMEOUT_S)
        with bench_ollama(logs / "ollama") as server:
            env = clean_env(
                **SERVE_ENV,
                **SUPERVISED,
                **server.daemon_env(),
                RAGVISOR_GENERATOR__KEEP_ALIVE=KEEP_ALIVE,
            )
            # Time to first token and memory are measured, not supervised: a prompt read slowed
            # by a busy box must not turn into a retry (or a climb) mid-measurement. These are
            # tests/integration/test_ollama_wedge.py's PATIENT deadlines, for the same reason.
            measure_env = {**env, **PATIENT}
            figures["settings"] = {
                "ttft_and_memory": generator_settings(measure_env),
                "frozen_runner": generator_settings(env),
                "ollama": {"version": OLLAMA_VERSION, "environment": prod_environment()},
                "supervised_env": SUPERVISED,
            }
            print(
                "settings: tests/integration/test_supervision.py's SUPERVISED, keep_alive 5m; "
                "for TTFT and memory the deadlines are relaxed to "
                + ", ".join(f"{k.rsplit('__', 1)[1].lower()} {v}" for k, v in PATIENT.items())
            )
            print("frozen runner (SUPERVISED as is):")
            print("\n".join(settings_lines(figures["settings"]["frozen_runner"])))
            print(f"ollama {OLLAMA_VERSION} serve, environment {prod_environment()}")

            preload(server, KEEP_ALIVE)
            # Ollama is not this script's child (nor, after a restart, anyone's here): its
            # CPU is counted as the bench's own by watching it, not as other processes'.
            meter.watched = tree_processes(server.pid)
            meter.mark("record")
            progress("recording the daemon's prompts through a pass-through proxy")
            prompts, calls = record_prompts(
                server, measure_env, corpus, data_dir, logs / "serve-record.log", QUESTIONS
            )
            figures["prompts"] = prompts
            figures["calls_per_ask"] = calls

            with daemon(measure_env, corpus, data_dir, logs / "serve-ttft.log") as (url, pid):
                unload(server)
                if not wait_unloaded(server):
                    progress("WARNING: the model did not unload; 'idle' memory has it loaded")
                time.sleep(1.0)  # let the runner's exit settle
                mem: dict[str, Any] = {"idle": memory(pid, server)}
                figures["model_load_s"] = preload(server, KEEP_ALIVE)
                meter.watched = tree_processes(pid, server.pid)  # the runner is back
                meter.mark("warmup")
                ttft_rounds(server, url, prompts, 1, "first answer")
                mem["after_first_answer"] = memory(pid, server)
                ttft_rounds(server, url, prompts, args.warmup, "warm-up")
                meter.mark("ttft")
                figures["rounds"] = ttft_rounds(server, url, prompts, args.rounds, "round")
                meter.mark("after")
                ttft_rounds(server, url, prompts, 1, "last answer")
                mem["after_all_answers"] = memory(pid, server)
                figures["memory"] = mem
            wedges = []
            for i in range(args.repeats):
                meter.watched = tree_processes(server.pid)
                meter.mark(f"frozen-{i + 1}")
                progress(f"frozen runner {i + 1}/{args.repeats}: a fresh daemon, then SIGSTOP")
                log = logs / f"serve-frozen-{i + 1}.log"
                wedges.append(frozen_runner(server, env, corpus, data_dir, log))
                recovered = wedges[-1]["recovered_s"]
                progress(f"frozen runner {i + 1}: generated again after {recovered or -1:.1f} s")
            figures["frozen"] = wedges
        meter.mark(None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["noise"] = meter.phases
    figures["bench_wall_s"] = time.monotonic() - begun
    report(figures, out / f"ollama_bench-{stamp}.json", logs)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM; the processes were stopped on the way out
        progress("interrupted")
        sys.exit(130)
