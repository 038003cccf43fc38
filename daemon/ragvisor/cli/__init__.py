"""The `ragvisor` command: thin wrappers that build settings and call the composition root.

This package is the only place that exits the process (`parser`: the flags; `commands`: what
each does; `exits`: the exit codes). Exit codes: 0 success, 1 failure,
2 bad configuration or arguments, 75 busy (another sync is running, or — for `restore` — a
process has the store open; try again later).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ragvisor.cli.commands import COMMANDS
from ragvisor.cli.exits import EXIT_BY_ERROR
from ragvisor.cli.parser import build_parser, command_in
from ragvisor.errors import RagvisorError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    # One BLAS thread, read by OpenBLAS when numpy loads (not yet: nothing above imports it).
    # A search's product over the dense index is memory-bound; OpenBLAS's threads only fight
    # the embedder's and the other searches' for 2 cores: measured under load, 10k chunks p90
    # 20 ms with them, 0.6 ms without (bench/serving_bench.py). The operator's value stays.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    words = sys.argv[1:] if argv is None else list(argv)
    command = command_in(words)
    parser = build_parser(command)
    args, extra = parser.parse_known_args(words)
    if args.command != command:  # the guess took an option's value for the command
        parser = build_parser()
        args, extra = parser.parse_known_args(words)
    if extra:
        if args.command == "health":  # Nagios: a usage error is UNKNOWN (3), never 2 (CRITICAL)
            from ragvisor.cli.oncall import usage_error

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


__all__ = ["build_parser", "main"]
