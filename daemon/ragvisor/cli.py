"""The `ragvisor` command: thin wrappers that build settings and call the composition root.

This is the only module that exits the process. Exit codes: 0 success, 1 failure,
2 bad configuration or arguments, 75 busy (another sync is running; try again later).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ragvisor import __version__
from ragvisor.errors import BusyError, ConfigError, InputError, RagvisorError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 75
# `search --url`: how long the daemon may take to answer (`ask --url` streams: only connecting is
# bounded there, and the daemon bounds the answer itself).
SEARCH_TIMEOUT_S = 30.0
EXIT_BY_ERROR: tuple[tuple[type[RagvisorError], int], ...] = (
    (ConfigError, EXIT_USAGE),
    (InputError, EXIT_USAGE),
    (BusyError, EXIT_BUSY),
    (RagvisorError, EXIT_FAILURE),
)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("RAGVISOR_CONFIG") or None,
        help="TOML configuration file (default: $RAGVISOR_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--corpus",
        action="append",
        type=Path,
        metavar="DIR",
        help="a knowledge-base folder (repeatable; replaces corpus.paths)",
    )
    parser.add_argument("--data-dir", type=Path, help="where the store lives (store.data_dir)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="ragvisor",
        description="Semantic search and cited answers over your notes, supervised.",
    )
    parser.add_argument("--version", action="version", version=f"ragvisor {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        help="debug, info, warning, error (default: info; warning for search and ask, whose "
        "results are the output)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the daemon (HTTP API + scheduled sync)")
    _common(serve)
    serve.add_argument("--host", help="listen address (server.host)")
    serve.add_argument("--port", type=int, help="listen port (server.port)")

    sync = sub.add_parser("sync", help="sync the knowledge base into the store now")
    _common(sync)
    sync.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    sync.add_argument(
        "--full-check",
        action="store_true",
        help="read and hash every file, even those whose size and times are unchanged",
    )

    search = sub.add_parser("search", help="search the knowledge base")
    _common(search)
    search.add_argument("query", metavar="QUERY")
    search.add_argument("-k", type=int, default=None, help="number of results")
    search.add_argument("--mode", choices=["dense", "keyword", "hybrid"], default="dense")
    search.add_argument("--json", action="store_true", help="print the response as JSON")
    search.add_argument("--url", help="ask a running daemon (e.g. http://127.0.0.1:8321)")

    ask = sub.add_parser("ask", help="answer a question from the knowledge base, with citations")
    _common(ask)
    ask.add_argument("question", metavar="QUESTION")
    ask.add_argument("-k", type=int, default=None, help="number of passages to retrieve")
    ask.add_argument("--json", action="store_true", help="print the whole response as JSON")
    ask.add_argument("--url", help="ask a running daemon (e.g. http://127.0.0.1:8321)")

    worker = sub.add_parser(
        "worker", help="run the embedded generator: llama.cpp behind Ollama's HTTP API"
    )
    _common(worker)
    worker.add_argument("--host", help="listen address (worker.host; default 127.0.0.1)")
    worker.add_argument(
        "--port", type=int, help="listen port (worker.port; 0 or unset: 11434 when run alone)"
    )
    worker.add_argument("--model-path", type=Path, help="GGUF file (worker.model_path)")
    worker.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="exit when this process goes away (set by the daemon that starts the worker)",
    )
    _add_ops_commands(sub)
    for command in sub.choices.values():  # `ragvisor faultproxy --log-level debug` works too
        command.add_argument(
            "--log-level", default=argparse.SUPPRESS, help="debug, info, warning, error"
        )
    return parser


def _add_ops_commands(sub: Any) -> None:
    """The on-call commands; their flags live beside their code in `ragvisor.ops`."""
    from ragvisor import faultproxy
    from ragvisor.oncall import health, status
    from ragvisor.ops import doctor

    check = sub.add_parser(
        "health", help="Nagios-style check: one line with perfdata, exit 0/1/2/3"
    )
    health.add_health_arguments(check)
    diagnose = sub.add_parser(
        "doctor", help="compare the host (swap, Neo4j, Ollama, model) with the configuration"
    )
    doctor.add_doctor_arguments(diagnose)
    show = sub.add_parser("status", help="the whole picture of a running daemon, as a table")
    status.add_status_arguments(show)
    proxy = sub.add_parser(
        "faultproxy", help="a fault-injecting proxy in front of Ollama, to rehearse failures"
    )
    faultproxy.add_arguments(proxy)


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags that set configuration keys, as a nested mapping (highest precedence)."""
    overrides: dict[str, dict[str, Any]] = {}
    if getattr(args, "corpus", None):
        overrides.setdefault("corpus", {})["paths"] = [str(p) for p in args.corpus]
    if getattr(args, "data_dir", None):
        overrides.setdefault("store", {})["data_dir"] = str(args.data_dir)
    listener = "worker" if args.command == "worker" else "server"
    if getattr(args, "host", None):
        overrides.setdefault(listener, {})["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides.setdefault(listener, {})["port"] = args.port
    if getattr(args, "model_path", None):
        overrides.setdefault("worker", {})["model_path"] = str(args.model_path)
    return overrides


def _settings(args: argparse.Namespace) -> Any:
    from ragvisor.config import load_settings

    return load_settings(args.config, os.environ, cli_overrides(args))


def cmd_serve(args: argparse.Namespace) -> int:
    """`ragvisor serve`."""
    from ragvisor.app import serve

    serve(_settings(args))
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    """`ragvisor sync`: progress bar on a terminal, then a summary (or JSON)."""
    from tqdm import tqdm

    from ragvisor.app import build_services, install_sigterm_as_interrupt
    from ragvisor.core.model import SKIPPED_LISTED_MAX

    install_sigterm_as_interrupt()
    services = build_services(_settings(args))
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(
                total=total,
                unit="chunk",
                desc="embedding",
                file=sys.stderr,
                disable=not sys.stderr.isatty(),
                dynamic_ncols=True,
            )
        bar.update(done - bar.n)

    try:
        report = services.sync_runner.run(
            trigger="cli", on_progress=progress, full_check=args.full_check
        )
    finally:
        if bar is not None:
            bar.close()
        services.close()
    if args.json:
        print(json.dumps(report.as_dict()))
        return EXIT_OK
    d, c = report.documents, report.chunks
    print(
        f"documents: {d.new} new, {d.changed} changed, {d.unchanged} unchanged, "
        f"{d.deleted} deleted; skipped {len(report.skipped)}"
    )
    print(
        f"chunks:    {c.new} new, {c.changed} changed, {c.unchanged} unchanged, {c.deleted} deleted"
    )
    print(
        f"embeddings computed: {report.embeddings_computed} "
        f"(reused {report.embeddings_reused}) in {report.seconds:.2f}s"
    )
    for skip in report.skipped[:SKIPPED_LISTED_MAX]:
        print(f"skipped {skip['path']}: {skip['reason']}")
    if len(report.skipped) > SKIPPED_LISTED_MAX:
        more = len(report.skipped) - SKIPPED_LISTED_MAX
        print(f"skipped {more} more, each logged as sync.file_skipped")
    return EXIT_OK  # skips are reported, not failures: the rest of the corpus is indexed


def cmd_search(args: argparse.Namespace) -> int:
    """`ragvisor search`: over HTTP with --url, else in-process on the local store."""
    if args.url:
        response = _search_http(args)
    else:
        from ragvisor.app import build_services
        from ragvisor.core.retrieval import SearchMode

        settings = _settings(args)
        services = build_services(settings)
        try:
            k = args.k if args.k is not None else settings.server.default_k
            result = services.retriever.search(args.query, k, SearchMode(args.mode))
        finally:
            services.close()
        response = {
            "query": args.query.strip(),
            "mode": result.mode.value,
            "results": [hit.as_dict() for hit in result.hits],
            "timings_ms": result.timings_ms,
        }
    if args.json:
        print(json.dumps(response))
        return EXIT_OK
    results = response.get("results", [])
    if not results:
        print("no results")
    for rank, hit in enumerate(results, 1):
        print(f"{rank:2d}. {hit['score']:.3f}  {hit['path']} — {hit['title']}")
        print(f"    {hit['snippet']}")
    return EXIT_OK


def _search_http(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from ragvisor.oncall.daemon_client import DaemonClient

    daemon = DaemonClient(args.url, SEARCH_TIMEOUT_S)
    return asyncio.run(daemon.search(args.query, mode=args.mode, k=args.k))


def cmd_ask(args: argparse.Namespace) -> int:
    """`ragvisor ask`: the answer streams to stdout as it is generated, then its sources."""
    import asyncio

    events = _ask_http(args) if args.url else _ask_local(args)
    final: dict[str, Any] = {}
    printed = False

    async def consume() -> None:
        nonlocal final, printed
        async for event in events:
            kind = event.get("type")
            if kind == "delta" and not args.json:
                text = event["text"].lstrip() if not printed else event["text"]
                sys.stdout.write(text)
                sys.stdout.flush()
                printed = printed or bool(text)
            elif kind == "retry" and not args.json:
                # The backend failed mid-answer; what was printed is void.
                print(
                    f"\n[the generator failed; starting over: {event.get('reason')}]\n",
                    file=sys.stderr,
                )
                printed = False
            elif kind == "done":
                final = event
            elif kind == "error":
                raise _error_from_event(event)

    asyncio.run(consume())
    if not final:
        raise RagvisorError("the answer ended before its final event; see the daemon log")
    if args.json:
        body = {"question": args.question.strip()}
        body.update((k, v) for k, v in final.items() if k != "type")
        print(json.dumps(body))
        return EXIT_OK
    degraded = final.get("degraded") or {}
    if degraded.get("answer") == "extractive":
        # No generated text streamed: the answer is the passages themselves.
        sys.stdout.write(str(final.get("answer", "")))
    print()
    print()
    print("Sources:")
    for citation in final.get("citations", []):
        mark = "cited" if citation.get("cited") else "not cited"
        print(f"  [{citation['n']}] {citation['path']} — {citation['title']} ({mark})")
    tokens = final.get("tokens", {})
    timings = final.get("timings_ms", {})
    if degraded:
        print(f"(degraded: {degraded.get('reason')})", file=sys.stderr)
    if tokens.get("completion") is not None:
        print(
            f"({tokens.get('completion')} tokens at {tokens.get('per_second')} tokens/s; "
            f"first token after {timings.get('first_token', 0) / 1000:.2f} s, "
            f"total {timings.get('total', 0) / 1000:.2f} s)",
            file=sys.stderr,
        )
    return EXIT_OK


def _error_from_event(event: dict[str, Any]) -> RagvisorError:
    message = f"{event.get('error')} ({event.get('code')})"
    return InputError(message) if int(event.get("status", 500)) < 500 else RagvisorError(message)


async def _ask_local(args: argparse.Namespace) -> Any:
    """Answer in this process: the local store, and a worker started for this one question."""
    from ragvisor.app import build_daemon
    from ragvisor.runtime.oneshot import ask_once

    async for event in ask_once(build_daemon(_settings(args)), args.question, args.k):
        yield event


async def _ask_http(args: argparse.Namespace) -> Any:
    """Stream the answer from a running daemon's `/ask`."""
    from ragvisor.oncall.daemon_client import DaemonClient

    async for event in DaemonClient(args.url, SEARCH_TIMEOUT_S).ask_stream(args.question, k=args.k):
        yield event


def cmd_worker(args: argparse.Namespace) -> int:
    """`ragvisor worker`: serve the embedded generator until SIGTERM."""
    from ragvisor.llm.worker.serve import run_worker

    run_worker(_settings(args), parent_pid=args.parent_pid)
    return EXIT_OK


def cmd_ops(args: argparse.Namespace) -> int:
    """`ragvisor health | doctor | status | faultproxy`: run by their modules in `ragvisor.ops`."""
    from ragvisor import faultproxy
    from ragvisor.oncall import health, status
    from ragvisor.ops import doctor

    runners: dict[str, Callable[[argparse.Namespace], int]] = {
        "health": health.run_health,
        "doctor": doctor.run_doctor,
        "status": status.run_status,
        "faultproxy": faultproxy.run,
    }
    return runners[args.command](args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "sync": cmd_sync,
    "search": cmd_search,
    "ask": cmd_ask,
    "worker": cmd_worker,
    "health": cmd_ops,
    "doctor": cmd_ops,
    "status": cmd_ops,
    "faultproxy": cmd_ops,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "health":  # Nagios: a usage error is UNKNOWN (3), never 2 (CRITICAL)
            from ragvisor.oncall.health import usage_error

            return usage_error("unrecognized arguments: " + " ".join(extra))
        parser.error("unrecognized arguments: " + " ".join(extra))
    from ragvisor.logs import configure_logging

    # Commands whose output is the result log only warnings (to stderr).
    quiet = ("search", "ask", "health", "status")
    default_level = "warning" if args.command in quiet else "info"
    configure_logging(level=args.log_level or default_level)
    try:
        return COMMANDS[args.command](args)
    except RagvisorError as exc:
        code = next(c for kind, c in EXIT_BY_ERROR if isinstance(exc, kind))
        print(f"ragvisor {args.command}: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"ragvisor {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
