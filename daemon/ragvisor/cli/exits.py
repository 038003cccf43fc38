"""The `ragvisor` command's exit codes, and which error gives which: one table."""

from __future__ import annotations

from ragvisor.errors import BusyError, ConfigError, InputError, RagvisorError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 75
EXIT_BY_ERROR: tuple[tuple[type[RagvisorError], int], ...] = (
    (ConfigError, EXIT_USAGE),
    (InputError, EXIT_USAGE),
    (BusyError, EXIT_BUSY),
    (RagvisorError, EXIT_FAILURE),
)
