"""The `ragvisor` command line: every subcommand, its flags, and the flags that set
configuration keys (highest precedence)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragvisor import __version__
from ragvisor.cli.options import add_config_argument


def _common(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--corpus",
        action="append",
        type=Path,
        metavar="DIR",
        help="a knowledge-base folder (repeatable; replaces corpus.paths)",
    )
    parser.add_argument("--data-dir", type=Path, help="where the store lives (store.data_dir)")


# Their flags come from modules that import an HTTP client, the fault proxy and the host
# probes: ~40 ms that `ragvisor serve` would otherwise pay before its first search.
OPS_COMMANDS = frozenset({"health", "doctor", "status", "faultproxy"})


def command_in(argv: Sequence[str]) -> str | None:
    """The subcommand `argv` names, as the top-level parser will read it: the first word that
    is neither an option nor the value of `--log-level` (or an abbreviation of it); None if
    there is no such word."""
    value_next = False
    for word in argv:
        if value_next:
            value_next = False
        elif word.startswith("-"):
            value_next = "=" not in word and len(word) > 2 and "--log-level".startswith(word)
        else:
            return word
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser for every subcommand.

    With `command` (the subcommand about to run, `command_in`), the on-call commands and the
    fault proxy get their flags only when it is one of them (`OPS_COMMANDS`); every command
    is still listed. `ragvisor.cli.main` parses again with every flag if the guess was wrong.
    """
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
    sync.add_argument(
        "--wait",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="wait this long for a sync already running (the daemon's schedule or folder "
        "watch) to end, then run; 0: fail at once (exit 75) (default 600)",
    )

    search = sub.add_parser("search", help="search the knowledge base")
    _common(search)
    search.add_argument("query", metavar="QUERY")
    search.add_argument("-k", type=int, default=None, help="number of results")
    search.add_argument("--mode", choices=["dense", "keyword", "hybrid"], default="dense")
    search.add_argument(
        "--group",
        choices=["page", "chunk"],
        default="page",
        help="one result per page (its other matching chunks below it) or per chunk",
    )
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
    store = sub.add_parser("store", help="work on the store itself (copy it into another)")
    store_sub = store.add_subparsers(dest="store_command", required=True, metavar="copy")
    copy = store_sub.add_parser(
        "copy",
        help="copy documents, chunks and vectors into the store another configuration names, "
        "without embedding again; run it again to resume; verified at the end",
    )
    _common(copy)
    copy.add_argument(
        "--to-config",
        type=Path,
        required=True,
        metavar="PATH",
        help="the TOML configuration whose [store] receives the copy (e.g. Neo4j)",
    )
    copy.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    _add_backup_commands(sub)
    _add_ops_commands(sub, with_flags=command is None or command in OPS_COMMANDS)
    for subparser in sub.choices.values():  # `ragvisor faultproxy --log-level debug` works too
        subparser.add_argument(
            "--log-level", default=argparse.SUPPRESS, help="debug, info, warning, error"
        )
    return parser


def _add_backup_commands(sub: Any) -> None:
    """`backup` and `restore` (flags in `ragvisor.cli.backup`)."""
    from ragvisor.cli import backup

    backup.add_backup_arguments(
        sub.add_parser(
            "backup",
            help="a consistent copy of the embedded store, its admin token and the "
            "configuration, while the daemon runs",
        )
    )
    backup.add_restore_arguments(
        sub.add_parser(
            "restore",
            help="put a backup back into the data directory: verified first, swapped in whole",
        )
    )


def _add_ops_commands(sub: Any, *, with_flags: bool) -> None:
    """The on-call commands (flags in `ragvisor.cli.oncall`) and the fault proxy; without
    `with_flags`, listed with their help only (see `OPS_COMMANDS`)."""
    check = sub.add_parser(
        "health", help="Nagios-style check: one line with perfdata, exit 0/1/2/3"
    )
    diagnose = sub.add_parser(
        "doctor", help="compare the host (swap, Neo4j, Ollama, model) with the configuration"
    )
    show = sub.add_parser("status", help="the whole picture of a running daemon, as a table")
    proxy = sub.add_parser(
        "faultproxy", help="a fault-injecting proxy in front of Ollama, to rehearse failures"
    )
    if not with_flags:
        return
    from ragvisor import faultproxy
    from ragvisor.cli import oncall

    oncall.add_health_arguments(check)
    oncall.add_doctor_arguments(diagnose)
    oncall.add_status_arguments(show)
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


def settings_from(args: argparse.Namespace) -> Any:
    from ragvisor.config import load_settings

    return load_settings(args.config, os.environ, cli_overrides(args))
