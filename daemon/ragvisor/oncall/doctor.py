"""`ragvisor doctor`: compare the host with the configuration and say what does not fit.

On a 4 GB box every setting the stack depends on — a swap file, `vm.swappiness`, the Neo4j heap
and page cache, Ollama's environment, the model's context — was made by hand at some point, and
the box died when the numbers stopped adding up. The doctor reads them all and prints one
finding per check, each with a severity: ok, info (nothing to compare with), warning (works,
but not as the deploy intended) or critical (the daemon or the box will fail).

Three layers, from I/O to pure: `read_host` gathers `HostFacts` (ragvisor.oncall.host_facts:
files under `doctor.proc_dir`, `neo4j.conf`, Ollama's systemd drop-in, the model's trained
context — a short timeout, never a model load — and, with the Neo4j store, the database as
ragvisor.oncall.store_facts reads it); the checks (ragvisor.oncall.doctor_checks, and
ragvisor.oncall.store_checks for the store) are pure functions of facts and settings;
`diagnose` here runs them all, worst first, and this module renders the findings as text or
JSON.

Exit codes: 0 nothing at or above `--fail-on` (default critical), 1 something is, 2 bad
configuration or arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ragvisor.oncall.doctor_checks import (
    Finding,
    Severity,
    check_data_dir,
    check_neo4j,
    check_num_ctx,
    check_ollama,
    check_swap,
    check_swappiness,
)
from ragvisor.oncall.host_facts import HostFacts
from ragvisor.oncall.store_checks import check_store

if TYPE_CHECKING:
    from ragvisor.config import Settings

EXIT_OK, EXIT_FINDINGS = 0, 1


def diagnose(facts: HostFacts, settings: Settings) -> list[Finding]:
    """Every finding, worst first (a stable sort keeps the checks' order within a severity)."""
    findings = [
        check_swap(facts, settings),
        check_swappiness(facts, settings),
        *check_neo4j(facts, settings),
        *check_ollama(facts, settings),
        check_num_ctx(facts, settings),
        *check_data_dir(facts),
        *check_store(facts.store, settings),
    ]
    return sorted(findings, key=lambda f: -f.severity)


# --------------------------------------------------------------------------- output and CLI


def exit_code(findings: Sequence[Finding], fail_on: Severity = Severity.CRITICAL) -> int:
    """1 when some finding is at least `fail_on`, else 0."""
    return EXIT_FINDINGS if any(f.severity >= fail_on for f in findings) else EXIT_OK


def render_text(findings: Sequence[Finding]) -> str:
    """One line per finding (severity, check, message), hints indented below."""
    counts = {s: sum(1 for f in findings if f.severity == s) for s in Severity}
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), reverse=True) if n)
    lines = [f"ragvisor doctor: {summary}"]
    width = max((len(f.check) for f in findings), default=0)
    for f in findings:
        lines.append(f"{str(f.severity).upper():<8}  {f.check:<{width}}  {f.message}")
        if f.hint and f.severity >= Severity.WARNING:
            lines.append(f"{'':<8}  {'':<{width}}  fix: {f.hint}")
    return "\n".join(lines) + "\n"


def report(findings: Sequence[Finding], code: int) -> dict[str, Any]:
    """The JSON document `--json` prints."""
    worst = max((f.severity for f in findings), default=Severity.OK)
    return {
        "worst": str(worst),
        "exit_code": code,
        "counts": {str(s): sum(1 for f in findings if f.severity == s) for s in Severity},
        "findings": [f.as_dict() for f in findings],
    }
