"""Which fault a request gets: the faults a failing Ollama shows, and the plan — a script consumed
in order, then seeded probabilities — with its JSON form for the control API."""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pydantic

from ragvisor.faultproxy.limits import DEFAULT_PATHS


class Fault(enum.StrEnum):
    """What the proxy does with one request; the values are the names on the CLI and in JSON."""

    PASS = "pass"  # noqa: S105 - a fault name, not a password; forward untouched, streaming chunk by chunk
    HANG = "hang"  # a wedged runner: the request is read, nothing ever comes back
    SLOW_FIRST_BYTE = "slow_first_byte"  # a model loading from a slow disk
    STALL = "stall"  # a runner that froze mid-answer: some lines, then silence
    HTTP_500 = "http_500"  # a crashed runner: "500 internal server error"
    BUSY_503 = "busy_503"  # Ollama's queue is full (OLLAMA_MAX_QUEUE)
    ERROR_LINE = "error_line"  # a runner that died mid-stream: an {"error"} line, then the end
    RESET = "reset"  # a process killed under the connection: TCP RST
    OOM = "oom"  # Ollama refusing to load a model that does not fit in memory


# Faults answered by the proxy itself; the backend never sees these requests.
CANNED: Mapping[Fault, tuple[int, str]] = MappingProxyType(
    {
        Fault.HTTP_500: (500, "injected fault: internal server error"),
        Fault.BUSY_503: (
            503,
            "server busy, please try again.  maximum pending requests exceeded",
        ),
        Fault.OOM: (
            500,
            "model requires more system memory (5.6 GiB) than is available (3.1 GiB)",
        ),
    }
)
ERROR_LINE_MESSAGE = "injected fault: an error mid-stream"


def parse_fault(name: str) -> Fault:
    """The fault called `name`; raises ValueError listing the valid names."""
    if isinstance(name, Fault):
        return name
    try:
        return Fault(name.strip())
    except ValueError:
        choices = ", ".join(f.value for f in Fault)
        raise ValueError(f"unknown fault {name!r}; choose from: {choices}") from None


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Which faults to inject, validated once; immutable so a running proxy can swap it whole.

    `script` is consumed in order first; after it, each faulted request draws from
    `probabilities` (the remainder passes), with `seed` making the sequence repeatable. Only
    requests whose path starts with one of `paths` are faulted.
    """

    probabilities: Mapping[Fault, float] = field(default_factory=dict)
    script: Sequence[Fault] = ()
    seed: int | None = None
    paths: tuple[str, ...] = DEFAULT_PATHS
    slow_s: float = 2.0
    stall_after_lines: int = 1

    def __post_init__(self) -> None:
        """Normalise to immutable values and validate; raises ValueError naming the field."""
        probabilities = {parse_fault(k): float(v) for k, v in self.probabilities.items()}
        for fault, probability in probabilities.items():
            if not 0.0 <= probability <= 1.0:
                raise ValueError(
                    f"probabilities.{fault.value} must be between 0 and 1, got {probability:g}"
                )
        total = math.fsum(probabilities.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"probabilities add up to {total:g}; at most 1 (the rest passes)")
        if any(not isinstance(p, str) or not p.startswith("/") for p in self.paths):
            raise ValueError(f"paths must be path prefixes starting with '/', got {self.paths!r}")
        if not (math.isfinite(self.slow_s) and self.slow_s >= 0):
            raise ValueError(f"slow_s must be a number of seconds >= 0, got {self.slow_s!r}")
        if self.stall_after_lines < 0:
            raise ValueError(f"stall_after_lines must be >= 0, got {self.stall_after_lines}")
        object.__setattr__(self, "probabilities", MappingProxyType(probabilities))
        object.__setattr__(self, "script", tuple(parse_fault(f) for f in self.script))
        object.__setattr__(self, "paths", tuple(self.paths))

    @classmethod
    def from_json(cls, data: Any) -> FaultPlan:
        """A plan from its JSON form (see :meth:`to_json`, missing keys take the defaults);
        raises ValueError naming each bad key."""
        try:
            document = PlanDocument.model_validate(data)
        except pydantic.ValidationError as exc:
            problems = (
                f"{'.'.join(map(str, e['loc'])) or 'plan'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError("; ".join(problems)) from None
        return cls(**document.model_dump())

    def to_json(self) -> dict[str, Any]:
        """The plan as the control API shows and accepts it."""
        return {
            "probabilities": {f.value: p for f, p in self.probabilities.items()},
            "script": [f.value for f in self.script],
            "seed": self.seed,
            "paths": list(self.paths),
            "slow_s": self.slow_s,
            "stall_after_lines": self.stall_after_lines,
        }


def _dotted(location: tuple[int | str, ...]) -> str:
    return ".".join(map(str, location)) or "plan"


class PlanDocument(pydantic.BaseModel):
    """The JSON shape of a plan: types are checked here, ranges by FaultPlan itself."""

    model_config = pydantic.ConfigDict(extra="forbid")

    probabilities: dict[Fault, float] = {}
    script: tuple[Fault, ...] = ()
    seed: pydantic.StrictInt | None = None
    paths: tuple[str, ...] = DEFAULT_PATHS
    slow_s: float = 2.0
    stall_after_lines: pydantic.StrictInt = 1


class Chooser:
    """A plan and where it stands: the script still to play and the seeded random sequence.

    Pure decisions: given a path it returns a fault; it never touches the network or the clock.
    """

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._script = deque(plan.script)
        self._random = random.Random(plan.seed)  # noqa: S311 - rehearsal draws, not secrets

    def choose(self, path: str) -> Fault:
        if not path.startswith(self.plan.paths):
            return Fault.PASS
        if self._script:
            return self._script.popleft()
        draw = self._random.random()
        for fault, probability in self.plan.probabilities.items():
            if draw < probability:
                return fault
            draw -= probability
        return Fault.PASS
