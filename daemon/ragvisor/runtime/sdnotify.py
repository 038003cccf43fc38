"""The sd_notify(3) protocol, the daemon's side: READY=1, STATUS=, WATCHDOG=1, STOPPING=1.

Under `Type=notify` systemd calls the unit started only when it receives `READY=1`, shows the
last `STATUS=` line in `systemctl status`, and with `WatchdogSec=` kills and restarts the daemon
when `WATCHDOG=1` stops arriving (when the pings are sent, and after which checks, is
`runtime.watchdog`'s job). On the way out the daemon sends `STOPPING=1`.

Messages go out one datagram each on a fresh socket, as libsystemd's `sd_notify` does, so a
restarted systemd (a new socket at the same path) is still reached. The `sdnotify` package was
not used: it connects once, drops every error silently, encodes as Latin-1 and is untyped.
Without `$NOTIFY_SOCKET` (not under systemd, tests) everything here is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

import structlog

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def notify_address(value: str) -> str | None:
    """The socket address `$NOTIFY_SOCKET` names: a path, or `@name` for an abstract socket.

    None when unset or of a kind we do not speak (`vsock:`): notifications are then off.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def watchdog_interval_s(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings — half of `$WATCHDOG_USEC` — or None when the watchdog is off.

    As sd_watchdog_enabled(3): off without a positive `WATCHDOG_USEC`, and off when
    `WATCHDOG_PID` is set to another process (a child that inherited our environment).
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    return usec / 2 / 1_000_000


class SystemdNotifier:
    """Sends sd_notify messages; every method is a no-op when notifications are off."""

    def __init__(
        self, address: str | None, *, watchdog_s: float | None = None, log: Any = None
    ) -> None:
        self.address = address
        self.watchdog_s = watchdog_s if address is not None else None
        self._log = log if log is not None else structlog.get_logger(component="systemd")
        self._failing = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> SystemdNotifier:
        """The notifier `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`/`$WATCHDOG_PID` describe."""
        address = notify_address(environ.get(NOTIFY_SOCKET_ENV, ""))
        interval = watchdog_interval_s(environ, os.getpid() if pid is None else pid)
        return cls(address, watchdog_s=interval)

    @property
    def enabled(self) -> bool:
        """Whether systemd (or a test) listens."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields as one message; False when off or the send failed.

        Never blocks (a full receive queue drops the message) and never raises: a lost STATUS
        line must not take the daemon down. A failure is logged once, and so is the recovery.
        """
        if self.address is None:
            return False
        payload = "\n".join(fields).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(payload, self.address)
        except OSError as exc:
            if not self._failing:
                self._log.warning("systemd.notify_failed", fields=list(fields), error=str(exc))
            self._failing = True
            return False
        if self._failing:
            self._log.info("systemd.notify_recovered")
            self._failing = False
        return True

    def status(self, text: str) -> bool:
        """`STATUS=` — the line `systemctl status` shows (one line: newlines become spaces)."""
        return self.send("STATUS=" + " ".join(text.split()))

    def ready(self, status: str) -> bool:
        """`READY=1` with a status line: systemd now calls the unit started."""
        return self.send("READY=1", "STATUS=" + " ".join(status.split()))

    def watchdog(self) -> bool:
        """`WATCHDOG=1`: one ping."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        """`STOPPING=1`: the shutdown has begun (systemd stops expecting pings)."""
        return self.send("STOPPING=1", "STATUS=" + " ".join(status.split()))
