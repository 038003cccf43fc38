"""What the cross-encoder reranker costs per search: median milliseconds to score 20 and 50
passages of ~800 characters (one query), and the resident memory that loading it adds.

No package registry carries a cross-encoder, so the model is the operator's:

    make bench-rerank RERANK_MODEL_DIR=/srv/models/ms-marco-MiniLM-L-6-v2-onnx
    python bench/rerank_bench.py --model-dir DIR [--threads 1] [--max-tokens 256]

Without a model it measures one of two stand-ins and says so in its output:

- ``--proxy-minilm``: the pinned all-MiniLM-L6-v2 int8 encoder with a random one-logit head on
  its [CLS] vector. ms-marco-MiniLM-L-6-v2 is the same network (6 layers, 384 wide, BERT's
  vocabulary), so the time and memory are what an int8 export of it costs; the scores mean
  nothing.
- neither flag: the tiny test model of tests/cross_encoder_model.py, which only shows the
  overhead of tokenizing pairs and of the runtime, not any real model's cost.

Passages are ~800-character windows of this repository's docs, as the chunker cuts them by
default; each figure is a median of ``--rounds`` calls after two warm-up calls, in wall and in CPU
time (on a busy box, a one-thread run's CPU time is the better guide to what the call costs on
an idle one). Nothing is asserted: the bench prints figures (a table, then one JSON line).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import psutil
from onnx import TensorProto, helper, numpy_helper

from benchlib import REPO, hwm_mb, jsonable, print_table, progress
from ragvisor.embed.model_files import assemble_default_model
from ragvisor.rerank import OnnxCrossEncoder
from ragvisor.rerank.cross_encoder import BATCH_PAIRS

sys.path.insert(0, str(REPO))  # the tiny test model lives in tests/
from tests.cross_encoder_model import write_cross_encoder

QUERY = "how do I restore the store from a backup after a failed upgrade"
PASSAGE_CHARS = 800
SIZES = (20, 50)


def passages(count: int) -> list[str]:
    """``count`` windows of ~800 characters from the repository's docs, cut at spaces."""
    text = " ".join(
        " ".join(path.read_text(encoding="utf-8").split())
        for path in sorted((REPO / "docs").glob("*.md"))
    )
    out: list[str] = []
    start = 0
    while len(out) < count and start < len(text):
        end = text.rfind(" ", start, start + PASSAGE_CHARS)
        end = end if end > start else start + PASSAGE_CHARS
        out.append(text[start:end])
        start = end + 1
    if len(out) < count:
        sys.exit(f"the docs hold only {len(out)} passages of {PASSAGE_CHARS} characters")
    return out


def proxy_minilm(dest: Path) -> Path:
    """The pinned MiniLM int8 encoder with a random [CLS] -> one-logit head, in ``dest``."""
    source = assemble_default_model(dest / "minilm")
    model = onnx.load(source / "model.onnx")
    hidden = 384
    head = np.random.default_rng(0).standard_normal((hidden, 1)).astype(np.float32)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(0, dtype=np.int64), "bench_cls_index"),
            numpy_helper.from_array(head, "bench_head"),
        ]
    )
    model.graph.node.extend(
        [
            helper.make_node(
                "Gather", ["last_hidden_state", "bench_cls_index"], ["bench_cls"], axis=1
            ),
            helper.make_node("MatMul", ["bench_cls", "bench_head"], ["logits"]),
        ]
    )
    del model.graph.output[:]
    model.graph.output.append(
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    )
    out = dest / "minilm-l6-int8-proxy"
    out.mkdir()
    onnx.save(model, out / "model.onnx")
    (out / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    return out


def tiny_model(dest: Path) -> Path:
    """The test suite's tiny cross-encoder over the query's words."""
    return write_cross_encoder(dest / "tiny-cross-encoder", sorted(set(QUERY.split())))


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux ≥ 4.0); False when refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def medians_ms(reranker: OnnxCrossEncoder, texts: list[str], rounds: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of one ``score`` call. On a box busy with other work the
    wall time grows while the CPU time of a one-thread run stays near what the call costs on an
    idle box, so the two together say how far the wall figure can be trusted."""
    for _ in range(2):
        reranker.score(QUERY, texts)
    wall, cpu = [], []
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        reranker.score(QUERY, texts)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="an ONNX cross-encoder export's folder")
    parser.add_argument(
        "--proxy-minilm",
        action="store_true",
        help="without --model-dir: MiniLM-L6 int8 with a random head (real cost, no meaning)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--batch-pairs", type=int, default=BATCH_PAIRS, help="pairs per run")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    texts = passages(max(SIZES))
    with tempfile.TemporaryDirectory(prefix="ragvisor-rerank-bench-") as tmp:
        if args.model_dir is not None:
            model_dir, kind = args.model_dir, "operator-supplied model"
        elif args.proxy_minilm:
            progress("building the MiniLM-L6 int8 proxy (random head)")
            model_dir = proxy_minilm(Path(tmp))
            kind = "PROXY: MiniLM-L6 int8 with a random head; real cost, meaningless scores"
        else:
            model_dir = tiny_model(Path(tmp))
            kind = (
                "TINY TEST MODEL: only tokenization and runtime overhead, not a real model's "
                "cost (pass --model-dir, or --proxy-minilm)"
            )
        progress(f"loading {model_dir}")
        rss_before = rss_mb()
        reranker = OnnxCrossEncoder(
            model_dir,
            threads=args.threads,
            max_tokens=args.max_tokens,
            batch_pairs=args.batch_pairs,
        )
        rss_loaded = rss_mb()
        figures: dict[str, float] = {"load_rss_added_mb": rss_loaded - rss_before}
        peak_known = reset_peak()
        for size in SIZES:
            progress(f"scoring {size} passages, {args.rounds} rounds")
            wall_ms, cpu_ms = medians_ms(reranker, texts[:size], args.rounds)
            figures[f"score_{size}_median_ms"] = wall_ms
            figures[f"score_{size}_median_cpu_ms"] = cpu_ms
        figures["scoring_peak_rss_added_mb"] = (
            hwm_mb(os.getpid()) - rss_loaded if peak_known else float("nan")
        )
        figures["rss_after_scoring_added_mb"] = rss_mb() - rss_before
        truncated = reranker.truncated_pairs / max(reranker.scored_pairs_total, 1)

    print(f"model: {model_dir.name} ({kind})")
    print(
        f"threads={args.threads} max_tokens={args.max_tokens} batch_pairs={args.batch_pairs} "
        f"passages≈{PASSAGE_CHARS} chars, "
        f"{truncated:.0%} of pairs cut at max_tokens; cpu={os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f} (CPU ms: all threads, this process only)"
    )
    rows = [
        ("score 20 passages, median ms", figures["score_20_median_ms"]),
        ("score 50 passages, median ms", figures["score_50_median_ms"]),
        ("score 20 passages, median CPU ms", figures["score_20_median_cpu_ms"]),
        ("score 50 passages, median CPU ms", figures["score_50_median_cpu_ms"]),
        ("RSS added by loading, MB", figures["load_rss_added_mb"]),
        ("peak RSS while scoring, MB over loaded", figures["scoring_peak_rss_added_mb"]),
        ("RSS after scoring, MB over before loading", figures["rss_after_scoring_added_mb"]),
    ]
    print_table([(name, f"{value:.1f}", "", "") for name, value in rows])
    print(json.dumps(jsonable({"model": model_dir.name, "kind": kind, **figures})))


if __name__ == "__main__":
    main()
