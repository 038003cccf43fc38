"""The on-call commands' command lines — `ragvisor health`, `status` and `doctor`: their
flags, and the printing of what the on-call logic (ragvisor.oncall) decided.

`health` is a Nagios plugin: every outcome, even a usage mistake or its own failure, is one
status line on stdout and an exit code 0-3; never a traceback, never argparse's exit 2 (which a
monitoring system would read as CRITICAL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from typing import TYPE_CHECKING, NoReturn

import structlog

from ragvisor.cli.options import add_config_argument
from ragvisor.errors import ConfigError, RagvisorError
from ragvisor.oncall.doctor import diagnose, exit_code, render_text, report
from ragvisor.oncall.doctor_checks import Severity
from ragvisor.oncall.health import GRACE_S, SERVICE, THRESHOLD_NAMES, default_thresholds, verdict
from ragvisor.oncall.health_probe import observe
from ragvisor.oncall.host_facts import read_host
from ragvisor.oncall.nagios import State, merge_thresholds, parse_threshold_option
from ragvisor.oncall.status import (
    DEFAULT_TIMEOUT_S,
    EXIT_OK,
    EXIT_UNREACHABLE,
    default_url,
    fetch_daemon,
    render_status,
    url_from_config,
)

if TYPE_CHECKING:
    from ragvisor.config import Settings
    from ragvisor.store.neo4j_store import Neo4jStore

# --- health ---------------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def usage_error(message: str) -> int:
    """Report a usage mistake the Nagios way: a status line on stdout, exit code 3 (UNKNOWN).

    For callers that parse the command line themselves (cli.py's unrecognized arguments).
    """
    print(f"{SERVICE} UNKNOWN - bad arguments: {message}")
    return int(State.UNKNOWN)


def usage_errors_are_unknown(parser: argparse.ArgumentParser) -> None:
    """Make the parser's usage errors exit 3 (UNKNOWN) with a status line, not argparse's 2:
    a monitoring system would read 2 as CRITICAL and page someone for a typo."""

    def error(message: str) -> NoReturn:
        parser.print_usage(sys.stderr)
        raise SystemExit(usage_error(message))

    # Replacing the bound method of this one parser object (argparse offers no hook for the
    # exit status) rather than subclassing, so it also works on cli.py's subparser.
    parser.error = error  # type: ignore[method-assign]


def add_health_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ragvisor health` (`--config` only if the parser lacks it)."""
    names = ", ".join(THRESHOLD_NAMES)
    parser.add_argument(
        "--url", help="the daemon (default: http://<server.host>:<server.port> from the config)"
    )
    add_config_argument(parser)
    for flag, long, what in (("-w", "--warning", "WARNING"), ("-c", "--critical", "CRITICAL")):
        parser.add_argument(
            flag,
            long,
            action="append",
            default=[],
            metavar="NAME=RANGE",
            help=f"{what} threshold (repeatable); NAME is one of {names}; RANGE is a Nagios "
            "range (10, 10:, ~:10, 10:20, @10:20); NAME= removes the default",
        )
    parser.add_argument(
        "-t",
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds for the whole check (default {DEFAULT_TIMEOUT_S:g}); a daemon or backend "
        "that does not answer in time is CRITICAL",
    )
    parser.add_argument(
        "--deep",
        action="store_true",
        help="also run a real search and a one-token generation (may load the model)",
    )
    usage_errors_are_unknown(parser)


def _print(state: State, line: str) -> int:
    print(line)
    return int(state)


def run_health(args: argparse.Namespace) -> int:
    """`ragvisor health`: print one status line and return the Nagios exit code. Never raises:
    the plugin's own failures (bad thresholds, bad config, a bug) are UNKNOWN."""
    from ragvisor.config import load_settings

    log = structlog.get_logger(component="ops")
    try:
        warn = [parse_threshold_option(text, THRESHOLD_NAMES) for text in args.warning]
        crit = [parse_threshold_option(text, THRESHOLD_NAMES) for text in args.critical]
        settings = load_settings(args.config, os.environ)
    except RagvisorError as exc:
        return _print(State.UNKNOWN, f"{SERVICE} UNKNOWN - {exc}")
    url = args.url or default_url(settings.server.host, settings.server.port)
    try:
        obs = asyncio.run(
            asyncio.wait_for(
                observe(url, settings, args.timeout, deep=args.deep), args.timeout + GRACE_S
            )
        )
    except TimeoutError:
        return _print(
            State.UNKNOWN, f"{SERVICE} UNKNOWN - plugin timed out after {args.timeout:g} s"
        )
    except Exception as exc:  # noqa: BLE001 - a plugin's own failure is UNKNOWN, not a traceback
        return _print(
            State.UNKNOWN, f"{SERVICE} UNKNOWN - plugin error: {type(exc).__name__}: {exc}"
        )
    thresholds = merge_thresholds(default_thresholds(settings, obs.daemon.status), warn, crit)
    explicit = {name for name, value in (*warn, *crit) if value is not None}
    state, line = verdict(obs, thresholds, explicit)
    log.debug(
        "health.checked", url=url, state=state.name, deep=args.deep,
        duration_ms=round(obs.elapsed_s * 1000, 1),
    )  # fmt: skip
    return _print(state, line)


# --- status ---------------------------------------------------------------------------------


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ragvisor status` (`--config` only if the parser lacks it)."""
    parser.add_argument(
        "--url", help="the daemon (default: http://<server.host>:<server.port> from the config)"
    )
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the combined JSON")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for the daemon (default {DEFAULT_TIMEOUT_S:g})",
    )


def run_status(args: argparse.Namespace) -> int:
    """`ragvisor status`: 0 when the daemon answered, 1 when it could not be reached.

    Raises ConfigError when no `--url` is given and the configuration is invalid.
    """
    url = args.url or url_from_config(args.config)
    reply = asyncio.run(fetch_daemon(url, args.timeout))
    if args.json:
        print(json.dumps(reply.as_dict(), indent=2))
    elif reply.error is None:
        sys.stdout.write(render_status(reply))
    if reply.error is not None:
        print(f"ragvisor status: {reply.error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_OK


# --- doctor ---------------------------------------------------------------------------------


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ragvisor doctor`."""
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument(
        "--fail-on",
        choices=["warning", "critical"],
        default="critical",
        help="exit 1 when a finding is at least this severe (default: critical)",
    )


def open_neo4j(settings: Settings) -> Neo4jStore:
    """The configured Neo4j store, for the doctor's read-only questions (`read_host` asks only
    when `store.backend = "neo4j"`): do the daemon's credentials reach it, are the vector indexes
    there. Raises ConfigError (no password) or StoreError."""
    from ragvisor.app import build_store
    from ragvisor.store.neo4j_store import Neo4jStore

    store = build_store(settings)
    if not isinstance(store, Neo4jStore):  # read_host asks only for store.backend = "neo4j"
        store.close()
        raise ConfigError(f"store.backend = {settings.store.backend!r}: not a Neo4j store")
    return store


def run_doctor(args: argparse.Namespace) -> int:
    """`ragvisor doctor`: 0 when nothing reaches --fail-on, 1 when something does.

    Raises ConfigError (exit 2 from the CLI) when the configuration is invalid.
    """
    from ragvisor.config import load_settings

    settings = load_settings(args.config, os.environ)
    findings = diagnose(read_host(settings, open_neo4j), settings)
    code = exit_code(findings, Severity[args.fail_on.upper()])
    if args.json:
        print(json.dumps(report(findings, code), indent=2))
    else:
        sys.stdout.write(render_text(findings))
    return code
