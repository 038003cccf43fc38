"""SIGTERM for the command line's in-process work (sync, backup, restore, serve).

A light module of its own: `ragvisor backup` runs from a timer at 3 a.m. and should not import
the whole daemon (answering, backends, numpy — about 0.2 s and 30 MB) to install one handler.
"""

from __future__ import annotations

import signal
import threading


def install_sigterm_as_interrupt() -> None:
    """Let SIGTERM (systemd stopping a timer's job, `kill`) unwind the work the way Ctrl-C does:
    the `finally` blocks remove half-written folders and release the store."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
