"""The fault proxy's fixed numbers: its control path, the paths it faults, and its bounds."""

from __future__ import annotations

CONTROL_PREFIX = "/_faultproxy/"
DEFAULT_PATHS = ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings")
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # a large /api/embed batch fits; a runaway upload does not
REQUEST_READ_S = 30.0  # a client that never finishes its request is dropped
# The proxy is transparent: the caller's own deadlines bound a call, and a caller that gives up
# closes its connection, which cancels the upstream call. This bound only stops a forgotten
# upstream stream from living forever.
UPSTREAM_READ_S = 600.0
STOP_GRACE_S = 5.0
READ_SIZE = 65536

# Headers about one connection, not the message; ours always say `Connection: close`.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te"}
    | {b"trailer", b"upgrade"}
)
