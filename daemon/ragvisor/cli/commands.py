"""What each `ragvisor` subcommand does: build settings, call the composition root or the
on-call logic, and print."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from ragvisor.cli.exits import EXIT_OK
from ragvisor.cli.interrupts import install_sigterm_as_interrupt
from ragvisor.cli.parser import settings_from
from ragvisor.core.chunking import breadcrumb
from ragvisor.errors import InputError, RagvisorError

# `search --url`: how long the daemon may take to answer (`ask --url` streams: only connecting is
# bounded there, and the daemon bounds the answer itself).
SEARCH_TIMEOUT_S = 30.0


def cmd_serve(args: argparse.Namespace) -> int:
    """`ragvisor serve`."""
    from ragvisor.app import serve

    serve(settings_from(args))
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    """`ragvisor sync`: progress bar on a terminal, then a summary (or JSON)."""
    from tqdm import tqdm

    from ragvisor.app import build_services
    from ragvisor.core.model import SKIPPED_LISTED_MAX

    install_sigterm_as_interrupt()
    services = build_services(settings_from(args))
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
            trigger="cli", on_progress=progress, full_check=args.full_check, wait_s=args.wait
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

        settings = settings_from(args)
        services = build_services(settings)
        try:
            k = args.k if args.k is not None else settings.server.default_k
            result = services.retriever.search(
                args.query, k, SearchMode(args.mode), group=args.group
            )
        finally:
            services.close()
        response = {
            "query": args.query.strip(),
            "mode": result.mode.value,
            "group": args.group,
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
        where = breadcrumb(hit["title"], tuple(filter(None, hit["heading"].split(" > "))))
        print(f"{rank:2d}. {hit['score']:.3f}  {hit['path']} — {where}")
        print(f"    {hit['snippet']}")
        for passage in hit.get("passages", []):
            print(f"      · {passage['heading'] or '(top)'}: {passage['snippet']}")
    return EXIT_OK


def _search_http(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from ragvisor.oncall.daemon_client import DaemonClient

    daemon = DaemonClient(args.url, SEARCH_TIMEOUT_S)
    return asyncio.run(daemon.search(args.query, mode=args.mode, k=args.k, group=args.group))


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
    if final.get("cached"):
        # A stored answer: its token figures are those of the request that generated it.
        total_s = timings.get("total", 0) / 1000
        print(f"(from the answer cache: {final['cached']}; total {total_s:.2f} s)", file=sys.stderr)
    elif tokens.get("completion") is not None:
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

    async for event in ask_once(build_daemon(settings_from(args)), args.question, args.k):
        yield event


async def _ask_http(args: argparse.Namespace) -> Any:
    """Stream the answer from a running daemon's `/ask`."""
    from ragvisor.oncall.daemon_client import DaemonClient

    async for event in DaemonClient(args.url, SEARCH_TIMEOUT_S).ask_stream(args.question, k=args.k):
        yield event


def cmd_worker(args: argparse.Namespace) -> int:
    """`ragvisor worker`: serve the embedded generator until SIGTERM."""
    from ragvisor.llm.worker.serve import run_worker

    run_worker(settings_from(args), parent_pid=args.parent_pid)
    return EXIT_OK


def cmd_ops(args: argparse.Namespace) -> int:
    """`ragvisor health | doctor | status | faultproxy`: run by `ragvisor.cli.oncall` and the
    fault proxy's own command line."""
    from ragvisor import faultproxy
    from ragvisor.cli import oncall

    runners: dict[str, Callable[[argparse.Namespace], int]] = {
        "health": oncall.run_health,
        "doctor": oncall.run_doctor,
        "status": oncall.run_status,
        "faultproxy": faultproxy.run,
    }
    return runners[args.command](args)


def cmd_store(args: argparse.Namespace) -> int:
    """`ragvisor store copy --to-config PATH`: progress bar on a terminal, then a summary."""
    import os

    import structlog
    from tqdm import tqdm

    from ragvisor.app import build_store
    from ragvisor.application.store_copy import copy_store
    from ragvisor.config import load_settings

    install_sigterm_as_interrupt()
    source_settings = settings_from(args)
    target_settings = load_settings(args.to_config, os.environ)
    if _store_identity(source_settings) == _store_identity(target_settings):
        raise InputError(f"--to-config {args.to_config} names the store being copied")
    source = build_store(source_settings)
    try:
        target = build_store(target_settings)
    except BaseException:
        source.close()
        raise
    bar = tqdm(
        unit="doc", desc="copying", file=sys.stderr, disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
    )  # fmt: skip

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = copy_store(
            source, target, on_progress=progress, log=structlog.get_logger(component="store")
        )
    finally:
        bar.close()
        source.close()
        target.close()
    if args.json:
        print(json.dumps(report.as_dict()))
        return EXIT_OK
    v = report.verified
    print(
        f"documents: {report.documents_copied} copied, {report.documents_already_there} "
        f"already there; vectors copied: {report.vectors_copied} in {report.seconds:.2f}s"
    )
    print(
        f"verified: {v['documents']} documents, {v['chunks']} chunks, vectors "
        + ", ".join(f"{n} of {key}" for key, n in v["vectors"].items())
        + f"; {v['vectors_compared']} vectors compared value by value"
    )
    return EXIT_OK


def _store_identity(settings: Any) -> tuple[str, ...]:
    """Where a configuration's store is: the same tuple means the same store."""
    s = settings.store
    if s.backend == "neo4j":
        return ("neo4j", s.uri, s.database)
    return ("sqlite", str(s.data_dir.expanduser().resolve()))


def cmd_backup(args: argparse.Namespace) -> int:
    """`ragvisor backup | restore`: run by `ragvisor.cli.backup`."""
    from ragvisor.cli import backup

    return backup.run_backup(args) if args.command == "backup" else backup.run_restore(args)


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
    "store": cmd_store,
    "backup": cmd_backup,
    "restore": cmd_backup,
}
