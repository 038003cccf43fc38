"""The fault proxy's former home, kept so `python -m ragvisor.ops.faultproxy` and
`from ragvisor.ops.faultproxy import …` (both documented before the proxy became its own
package, `ragvisor.faultproxy`) go on working."""

import sys

from ragvisor.faultproxy import (
    CONTROL_PREFIX,
    DEFAULT_PATHS,
    Fault,
    FaultPlan,
    FaultProxy,
    add_arguments,
    cut_after_lines,
    parse_fault,
    plan_from_args,
    run,
    running_proxy,
)

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_PATHS",
    "Fault",
    "FaultPlan",
    "FaultProxy",
    "add_arguments",
    "cut_after_lines",
    "parse_fault",
    "plan_from_args",
    "run",
    "running_proxy",
]

if __name__ == "__main__":
    from ragvisor.cli import main

    sys.exit(main(["faultproxy", *sys.argv[1:]]))
