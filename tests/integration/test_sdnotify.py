"""The daemon's side of systemd without systemd: a real `ragvisor serve` sends its sd_notify
messages to a unix datagram socket the test binds, as systemd's would be.

The main scenario narrates one daemon's life: STATUS lines while it warms up, READY=1 only
once `/readyz` answers 200, WATCHDOG=1 at about twice the rate `WATCHDOG_USEC` asks for, pings
withheld while a self-check fails (the store probe hangs, through the documented rehearsal
file) and resumed after, and STOPPING=1 on SIGTERM with no ping after it. The frozen-process
restart by a real systemd is tested in a systemd-nspawn container (tests/infra).
"""

from __future__ import annotations

import itertools
import signal
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ragvisor.runtime.sdnotify import SystemdNotifier, notify_address, watchdog_interval_s
from tests.integration.conftest import RAGVISOR, cli_env, free_port
from tests.integration.corpus import write_corpus

WATCHDOG_USEC = 2_000_000  # pings expected every second
PING_S = WATCHDOG_USEC / 2 / 1_000_000


@dataclass
class Message:
    """One datagram: when it arrived and its KEY=value fields."""

    at: float
    fields: dict[str, str]


@dataclass
class NotifyListener:
    """A bound unix datagram socket standing in for systemd's notification socket."""

    sock: socket.socket
    env_value: str  # what NOTIFY_SOCKET is set to
    messages: list[Message] = field(default_factory=list)

    def receive(self, timeout_s: float) -> Message | None:
        """The next datagram, or None after `timeout_s`."""
        self.sock.settimeout(max(timeout_s, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        message = Message(time.monotonic(), fields)
        self.messages.append(message)
        return message

    def wait_for(self, predicate: Callable[[Message], bool], timeout_s: float) -> Message:
        """Read until a message matches; fails the test after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and predicate(message):
                return message
        pytest.fail(f"no matching message within {timeout_s} s; got {self.fields()}")

    def collect(self, seconds: float) -> list[Message]:
        """Every message that arrives in the next `seconds`."""
        deadline = time.monotonic() + seconds
        got = []
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None:
                got.append(message)
        return got

    def fields(self) -> list[dict[str, str]]:
        return [m.fields for m in self.messages]


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    """An abstract-namespace socket (`@name`), as systemd's is in containers."""
    name = f"ragvisor-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        yield NotifyListener(sock, "@" + name)
    finally:
        sock.close()


def pings(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.fields.get("WATCHDOG") == "1"]


def start_serve(tmp_path: Path, model_dir: Path, **env: str) -> tuple[subprocess.Popen[str], str]:
    """`ragvisor serve` without the generator (the watchdog does not need it), logging to a file."""
    port = free_port()
    corpus = write_corpus(tmp_path / "notes")
    env = {
        "RAGVISOR_GENERATOR__BACKEND": "none",
        "RAGVISOR_SYNC__ON_START": "false",
        "RAGVISOR_SYNC__INTERVAL_S": "0",
        **env,
    }
    args = ["serve", "--corpus", str(corpus), "--data-dir", str(tmp_path / "data")]
    with (tmp_path / "daemon.log").open("w") as log:
        process = subprocess.Popen(
            [*RAGVISOR, *args, "--port", str(port)],
            env=cli_env(model_dir, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return process, f"http://127.0.0.1:{port}"


def logged(log: Path, event: str, timeout_s: float = 5.0) -> bool:
    """Whether `event` appears in the daemon's log within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if event in log.read_text():
            return True
        time.sleep(0.05)
    return False


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


@pytest.mark.slow
def test_ready_status_watchdog_and_stopping_follow_the_daemons_life(tmp_path, model_dir, listener):
    """READY after /readyz is 200, pings at the expected rate, withheld on a failed self-check,
    resumed after it, and STOPPING=1 on SIGTERM."""
    hang = tmp_path / "store-hangs"
    process, url = start_serve(
        tmp_path,
        model_dir,
        NOTIFY_SOCKET=listener.env_value,
        WATCHDOG_USEC=str(WATCHDOG_USEC),
        RAGVISOR_TEST_WATCHDOG_FILE=str(hang),
    )
    log = tmp_path / "daemon.log"
    try:
        # 1. While it warms up, STATUS lines say what it is doing; READY=1 comes with a status.
        ready = listener.wait_for(lambda m: m.fields.get("READY") == "1", timeout_s=90)
        # 2. The moment READY=1 arrives, the daemon answers /readyz with 200 (no retry).
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        before = [m.fields for m in listener.messages[:-1]]
        assert any(f.get("STATUS", "").startswith("starting") for f in before), before
        assert not pings(listener.messages[:-1]), "no ping before READY=1"
        assert ready.fields["STATUS"] == "ready: 0 chunks, generator off"

        # 3. Pings arrive repeatedly, about every WATCHDOG_USEC / 2.
        window = listener.collect(6 * PING_S)
        times = [m.at for m in pings(window)]
        assert 3 <= len(times) <= 9, window
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert 0.5 * PING_S <= statistics.median(gaps) <= 2 * PING_S, gaps

        # 4. The store probe hangs: the self-check fails, pings stop, STATUS says why — while
        #    the event loop itself still serves (it is the check, not the loop, that fails).
        hang.touch()
        failing = listener.wait_for(
            lambda m: "self-check failing" in m.fields.get("STATUS", ""), timeout_s=4 * PING_S
        )
        assert "store" in failing.fields["STATUS"]
        silent = listener.collect(4 * PING_S)
        assert not pings(silent), "no ping while the self-check fails"
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert "watchdog.self_check_failed" in log.read_text()

        # 5. The store answers again: pings resume and the status line is the ready one again.
        hang.unlink()
        listener.wait_for(lambda m: m.fields.get("WATCHDOG") == "1", timeout_s=6 * PING_S)
        assert logged(log, "watchdog.recovered")  # written just after the ping it reports

        # 6. SIGTERM: STOPPING=1, the process exits cleanly, and nothing pings after STOPPING.
        process.send_signal(signal.SIGTERM)
        stopping = listener.wait_for(lambda m: m.fields.get("STOPPING") == "1", timeout_s=15)
        assert process.wait(30) == 0
        after = listener.collect(0.5)
        assert not pings([m for m in listener.messages if m.at > stopping.at]), after
    finally:
        stop(process)


@pytest.mark.slow
def test_watchdog_of_another_process_sends_ready_but_no_pings(tmp_path, model_dir, listener):
    """WATCHDOG_PID naming another process (a parent's watchdog inherited): READY, no pings."""
    process, url = start_serve(
        tmp_path,
        model_dir,
        NOTIFY_SOCKET=listener.env_value,
        WATCHDOG_USEC=str(WATCHDOG_USEC),
        WATCHDOG_PID="1",
    )
    try:
        listener.wait_for(lambda m: m.fields.get("READY") == "1", timeout_s=90)
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        assert not pings(listener.collect(3 * PING_S))
        process.send_signal(signal.SIGTERM)
        listener.wait_for(lambda m: m.fields.get("STOPPING") == "1", timeout_s=15)
        assert process.wait(30) == 0
    finally:
        stop(process)


def test_notifier_sends_to_a_socket_path_and_is_silent_without_one(tmp_path):
    """A filesystem socket works like an abstract one; no NOTIFY_SOCKET means no-op."""
    address = str(tmp_path / "n.sock")  # pytest keeps tmp_path well under the 108-byte limit
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(5)
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": address})
        assert notifier.ready("ready: 3 chunks\nsecond line")
        assert sock.recv(4096) == b"READY=1\nSTATUS=ready: 3 chunks second line"
    assert not SystemdNotifier.from_environ({}).status("nobody listens")


def test_a_vanished_socket_is_reported_not_raised(tmp_path):
    """Sending to a socket nobody binds returns False and logs once instead of raising."""
    notifier = SystemdNotifier("/nonexistent/ragvisor-notify.sock")
    assert notifier.enabled
    assert not notifier.watchdog()
    assert not notifier.watchdog()


@pytest.mark.parametrize(
    ("environ", "pid", "expected"),
    [
        ({"WATCHDOG_USEC": "2000000"}, 42, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "42"}, 42, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, 42, None),
        ({"WATCHDOG_USEC": "0"}, 42, None),
        ({"WATCHDOG_USEC": "soon"}, 42, None),
        ({}, 42, None),
    ],
)
def test_watchdog_interval_follows_sd_watchdog_enabled(environ, pid, expected):
    """Half of WATCHDOG_USEC, and off for another WATCHDOG_PID or a missing/invalid value."""
    assert watchdog_interval_s(environ, pid) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@x", "\0x"),
        ("", None),
        ("vsock:2:9", None),
    ],
)
def test_notify_address_accepts_paths_and_abstract_names(value, expected):
    """A path is used as is, `@name` is the abstract namespace, anything else turns it off."""
    assert notify_address(value) == expected
