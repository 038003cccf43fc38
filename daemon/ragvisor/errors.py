"""The one exception tree of ragvisor, grouped by what a caller does about an error.

Adapters translate third-party exceptions into these (chaining the original) so the web layer
and the CLI each need exactly one table that maps an error to an HTTP status or an exit code.
"""

from __future__ import annotations


class RagvisorError(Exception):
    """Root of every error ragvisor raises on purpose."""


class ConfigError(RagvisorError):
    """The configuration is invalid; the message names the offending key."""


class InputError(RagvisorError):
    """A request or argument is malformed; the caller must change it (HTTP 400/422)."""


class PathRefused(InputError):
    """A document path the daemon will not write or delete (HTTP 403): excluded by the corpus
    globs, through a symlink, a folder, or a name too long for the file system."""


class DocumentNotFound(InputError):
    """No document at the path a request names (HTTP 404)."""


class PassageNotFound(DocumentNotFound):
    """No stored passage has the chunk id a request names (HTTP 404): the document changed or
    left since the id was given out."""


class BodyTooLarge(InputError):
    """A request body is larger than its route accepts (HTTP 413); the rest is not read."""


class BodyTimeout(InputError):
    """A request body did not arrive within `server.body_timeout_s` (HTTP 408)."""


class BusyError(RagvisorError):
    """The work cannot start now because the same work is running (HTTP 409)."""


class NotReadyError(RagvisorError):
    """A component is not loaded or not open yet (HTTP 503)."""


class ModelFileError(RagvisorError):
    """A model directory is missing a file or a file does not match its pinned hash."""


class StoreError(RagvisorError):
    """The store cannot be opened or is in a state ragvisor does not understand."""


class SyncCancelled(RagvisorError):
    """A sync stopped on request (shutdown); what it committed stays, the next sync resumes."""


class Overloaded(RagvisorError):
    """An admission lane is full; the client should come back after `retry_after_s` (HTTP 503)."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BackendUnavailable(RagvisorError):
    """A model backend cannot be reached or is restarting; try again shortly (HTTP 503).

    Retried by the supervisor. `retry_after_s`, when known (an open circuit breaker), says when
    the backend will be tried again.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BackendError(RagvisorError):
    """A model backend answered with an error or broke off mid-answer (HTTP 502).

    `retryable` says whether trying again can help: true for 5xx, resets and `{"error"}` lines
    mid-stream; false when the backend refused our own request (a 4xx) or ran out of memory.
    """

    retryable = True


class BackendTimeout(BackendError):
    """A model backend missed a deadline; the call was cancelled (HTTP 504).

    `phase` names the deadline: connect, first_token, stall or total.
    """

    def __init__(self, message: str, *, phase: str = "total") -> None:
        super().__init__(message)
        self.phase = phase


class BackendRejected(BackendError):
    """The backend refused the request itself (a 4xx): retrying the same request cannot help."""

    retryable = False


class InputRefused(BackendRejected):
    """The backend refused an input itself, not the request as a whole: a text longer than the
    embedding model's context. That text cannot be embedded, the others can — a sync skips the
    document that holds it instead of failing."""


class BackendOutOfMemory(BackendError):
    """The backend could not load a model for lack of memory ("model requires more system
    memory … than is available"): retrying makes it worse; the memory guard must act first.
    """

    retryable = False
