"""llama.cpp's C log, as structlog events (`worker.llama_log`): errors as errors, warnings at
info, the rest at debug."""

from __future__ import annotations

import contextlib
import ctypes
from typing import Any

import llama_cpp

# `enum ggml_log_level` of the bundled llama.cpp: 1 debug, 2 info, 3 warn, 4 error, 5 continued.
# Warnings go out at info: every load of the pinned model warns about its SWA cache and one
# token's type, which is nothing an operator acts on.
_GGML_LOG_WARN = 3
_GGML_LOG_ERROR = 4


class LlamaLogRouter:
    """Sends llama.cpp's C log into structlog; one per process (llama.cpp's callback is global).

    The ctypes callback object is kept here: if it were garbage-collected, llama.cpp would call
    freed memory.
    """

    _installed: LlamaLogRouter | None = None

    def __init__(self, log: Any) -> None:
        self._log = log
        self._callback = llama_cpp.llama_log_callback(self._on_log)

    @classmethod
    def install(cls, log: Any) -> None:
        """Route the log to `log` (the first caller's; later calls change nothing)."""
        if cls._installed is None:
            router = cls(log)
            llama_cpp.llama_log_set(router._callback, ctypes.c_void_p(0))
            cls._installed = router

    def _on_log(self, level: int, text: bytes | None, _user_data: object) -> None:
        message = (text or b"").decode("utf-8", errors="replace").strip()
        if not message:
            return
        with contextlib.suppress(Exception):  # never raise into C
            if level == _GGML_LOG_ERROR:
                self._log.error("worker.llama_log", llama_level="error", message=message)
            elif level == _GGML_LOG_WARN:
                self._log.info("worker.llama_log", llama_level="warn", message=message)
            else:
                self._log.debug("worker.llama_log", llama_level=level, message=message)
