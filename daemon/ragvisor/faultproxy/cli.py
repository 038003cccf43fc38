"""`ragvisor faultproxy`: flags, the plan they describe, and running until a signal."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import httpx

from ragvisor.faultproxy.limits import DEFAULT_PATHS
from ragvisor.faultproxy.plan import Fault, FaultPlan, parse_fault
from ragvisor.faultproxy.proxy import FaultProxy


def _listen_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:11435: {value!r}")
    return host.strip("[]"), int(port)


def _upstream_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise argparse.ArgumentTypeError(f"not a URL: {value!r} ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"expected http://HOST:PORT, got {value!r}")
    return value.rstrip("/")


def _fault_probability(value: str) -> tuple[Fault, float]:
    name, sep, probability = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=PROB such as hang=0.4, got {value!r}")
    try:
        return parse_fault(name), float(probability)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None


def _script_file(value: str) -> tuple[Fault, ...]:
    """Fault names, one per line; `#` starts a comment, blank lines are skipped."""
    try:
        text = Path(value).read_text(encoding="utf-8")
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {value}: {exc.strerror}") from None
    script: list[Fault] = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if name:
            try:
                script.append(parse_fault(name))
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"{value} line {number}: {exc}") from None
    return tuple(script)


def _path_list(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `ragvisor faultproxy` flags."""
    names = ", ".join(f.value for f in Fault)
    parser.add_argument(
        "--listen",
        type=_listen_address,
        required=True,
        metavar="HOST:PORT",
        help="where the proxy listens (port 0: any free port; the URL is printed first)",
    )
    parser.add_argument(
        "--upstream",
        type=_upstream_url,
        required=True,
        metavar="URL",
        help="the Ollama-protocol backend, e.g. http://127.0.0.1:11434",
    )
    parser.add_argument(
        "--fault",
        type=_fault_probability,
        action="append",
        default=[],
        metavar="NAME=PROB",
        help=f"inject NAME with probability PROB (repeatable; the rest passes). Names: {names}",
    )
    parser.add_argument(
        "--script",
        type=_script_file,
        default=(),
        metavar="FILE",
        help="faults for the first requests, one name per line, played before the probabilities",
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N", help="seed for repeatable draws"
    )
    parser.add_argument(
        "--paths",
        type=_path_list,
        default=DEFAULT_PATHS,
        metavar="/a,/b",
        help=f"path prefixes subject to faults (default: {','.join(DEFAULT_PATHS)})",
    )
    parser.add_argument(
        "--slow-s",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="delay of slow_first_byte (2)",
    )
    parser.add_argument(
        "--stall-after-lines",
        type=int,
        default=1,
        metavar="N",
        help="NDJSON lines forwarded before a stall or an error line (1)",
    )


def plan_from_args(args: argparse.Namespace) -> FaultPlan:
    """The plan the flags describe; raises ValueError for a fault given twice or bad values."""
    probabilities: dict[Fault, float] = {}
    for fault, probability in args.fault:
        if fault in probabilities:
            raise ValueError(f"--fault {fault.value} given twice")
        probabilities[fault] = probability
    return FaultPlan(
        probabilities=probabilities,
        script=args.script,
        seed=args.seed,
        paths=args.paths,
        slow_s=args.slow_s,
        stall_after_lines=args.stall_after_lines,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 then, 2 for a bad plan, 1 when it cannot listen."""
    try:
        plan = plan_from_args(args)
    except ValueError as exc:
        print(f"ragvisor faultproxy: {exc}", file=sys.stderr)
        return 2
    host, port = args.listen
    proxy = FaultProxy(args.upstream, host=host, port=port, plan=plan)
    try:
        asyncio.run(_serve_until_signalled(proxy))
    except OSError as exc:
        print(f"ragvisor faultproxy: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_until_signalled(proxy: FaultProxy) -> None:
    # The handlers only set an event; stopping (bounded by STOP_GRACE_S) happens here.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await proxy.start()
        print(proxy.url, flush=True)  # first line of stdout: scripts and tests read it
        await stop.wait()
    finally:
        await proxy.stop()
        for signum in signals:
            loop.remove_signal_handler(signum)
