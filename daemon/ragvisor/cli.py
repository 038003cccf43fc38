"""The `ragvisor` command: thin wrappers that build settings and call the composition root.

This is the only module that exits the process. Exit codes: 0 success, 1 failure,
2 bad configuration or arguments, 75 busy (another sync is running; try again later).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragvisor import __version__
from ragvisor.errors import BusyError, ConfigError, InputError, RagvisorError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 75
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
        prog="ragvisor", description="Semantic search over your notes, supervised."
    )
    parser.add_argument("--version", action="version", version=f"ragvisor {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        help="debug, info, warning, error (default: info; warning for search, whose answer "
        "is the output)",
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
    return parser


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags that set configuration keys, as a nested mapping (highest precedence)."""
    overrides: dict[str, dict[str, Any]] = {}
    if getattr(args, "corpus", None):
        overrides.setdefault("corpus", {})["paths"] = [str(p) for p in args.corpus]
    if getattr(args, "data_dir", None):
        overrides.setdefault("store", {})["data_dir"] = str(args.data_dir)
    if getattr(args, "host", None):
        overrides.setdefault("server", {})["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides.setdefault("server", {})["port"] = args.port
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
    for skip in report.skipped:
        print(f"skipped {skip['path']}: {skip['reason']}")
    return EXIT_OK


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
    import httpx

    params: dict[str, Any] = {"q": args.query, "mode": args.mode}
    if args.k is not None:
        params["k"] = args.k
    try:
        response = httpx.get(args.url.rstrip("/") + "/search", params=params, timeout=30.0)
    except httpx.HTTPError as exc:
        raise RagvisorError(f"cannot reach the daemon at {args.url}: {exc}") from exc
    try:
        body: dict[str, Any] = response.json()
    except ValueError as exc:
        raise RagvisorError(
            f"{args.url} answered {response.status_code} with something that is not JSON; "
            "is it a ragvisor daemon?"
        ) from exc
    if response.status_code >= 400:
        error = body.get("error", response.text)
        if response.status_code < 500:
            raise InputError(error)
        raise RagvisorError(f"daemon answered {response.status_code}: {error}")
    return body


COMMANDS = {"serve": cmd_serve, "sync": cmd_sync, "search": cmd_search}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    from ragvisor.logs import configure_logging

    default_level = "warning" if args.command == "search" else "info"
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
