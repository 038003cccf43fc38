"""A fault-injecting HTTP proxy for rehearsing backend failures (`ragvisor faultproxy`).

It sits between the daemon and an Ollama-protocol backend and, request by request, either
forwards the call or answers the way a failing Ollama does: silence before the first token, a
stream that stops mid-answer, a 500, a 503 "server busy", an `{"error"}` line mid-stream, a
reset connection, a refusal to load a model for lack of memory. Which fault a request gets comes
from a script (consumed in order) and then from seeded probabilities. Tests drive the client's
deadlines and error mapping through it over real HTTP; operators run it to watch retries, the
circuit breaker and the restart ladder react before a real outage pages them.

Only generation and embedding paths are faulted by default: the cheap probes (`/api/version`,
`/api/ps`, `/api/tags`, …) and the proxy's own control API under `/_faultproxy/` always pass, so
a rehearsal tests the supervision of inference calls, not the health checks.

Rooms: `plan` (the faults and which request gets one), `wire` (the client side on raw sockets),
`proxy` (forwarding, faulting, the control API), `limits` (its fixed numbers), `cli` (flags).
"""

from ragvisor.faultproxy.cli import add_arguments, plan_from_args, run
from ragvisor.faultproxy.limits import CONTROL_PREFIX, DEFAULT_PATHS
from ragvisor.faultproxy.plan import Fault, FaultPlan, parse_fault
from ragvisor.faultproxy.proxy import FaultProxy, cut_after_lines, running_proxy

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
