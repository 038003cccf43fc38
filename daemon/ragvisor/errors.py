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


class BackendUnavailable(RagvisorError):
    """A model backend cannot be reached or is restarting; try again shortly (HTTP 503)."""


class BackendError(RagvisorError):
    """A model backend answered with an error or broke off mid-answer (HTTP 502)."""


class BackendTimeout(BackendError):
    """A model backend missed a deadline; the call was cancelled (HTTP 504)."""
