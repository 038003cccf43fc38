"""The doctor's verdicts on a Neo4j store (`store.backend = "neo4j"`): pure functions of the
facts `ragvisor.oncall.store_facts` gathered.

Two questions. Do the daemon's credentials reach the database (`store.neo4j`)? Does each
recorded generation — the active one, whose vectors every search uses, and one being built
during a model change — have its vector index, ONLINE, with the model's dimension count
(`store.vector_index`, `store.vector_index.building`)? An index that does not exist while no
vector has been stored is the state before the first sync: a warning that says to run one. The
password is never in a finding: the facts do not hold it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragvisor.oncall.doctor_checks import Finding, Severity
from ragvisor.oncall.store_facts import GenerationIndex, StoreFacts

if TYPE_CHECKING:
    from ragvisor.config import Settings

ONLINE = "ONLINE"
RUN_A_SYNC = "run a sync: `ragvisor sync --config <file>` or POST /sync to the daemon"
CREDENTIALS_HINT = (
    "is Neo4j running (systemctl status neo4j)? store.uri, store.user and the password "
    "(store.password_file or RAGVISOR_STORE__PASSWORD) must be those of the database "
    "(ragvisor role: ragvisor_neo4j_uri, ragvisor_neo4j_user, ragvisor_neo4j_password)"
)


def check_store(facts: StoreFacts | None, settings: Settings) -> list[Finding]:
    """Reachability of the database, then one finding per recorded generation's index; empty
    for the SQLite store."""
    if facts is None:
        return []
    where = f"database {facts.database!r} at {facts.uri} as user {facts.user!r}"
    if not facts.checked:
        message = f"{where}: not checked (no store was opened)"
        return [Finding("store.neo4j", Severity.INFO, message)]
    if facts.error is not None:
        message = f"cannot read {where}: {facts.error}"
        return [Finding("store.neo4j", Severity.CRITICAL, message, hint=CREDENTIALS_HINT)]
    findings = [Finding("store.neo4j", Severity.OK, f"reached {where}")]
    if not facts.indexes:
        message = (
            f"no embedding model is recorded in {facts.database!r} yet: nothing was synced into "
            f"it ({settings.embedder.backend} embedder configured)"
        )
        findings.append(Finding("store.vector_index", Severity.WARNING, message, hint=RUN_A_SYNC))
    findings.extend(_index_finding(found) for found in facts.indexes)
    return findings


def _index_finding(found: GenerationIndex) -> Finding:
    """One generation's index: missing, not ONLINE, of another dimension count, or fine."""
    check = "store.vector_index" + ("" if found.role == "active" else f".{found.role}")
    g, index = found.generation, found.index
    what = f"vector index {index.name} of the {found.role} model {g.model} ({g.fingerprint})"
    observed = {"state": index.state, "dimensions": index.dimensions, "vectors": index.vectors}
    expected = {"state": ONLINE, "dimensions": g.dimensions}
    if not index.exists:
        if index.vectors == 0:
            message = f"{what} does not exist yet and no vector is stored under it"
            return Finding(check, Severity.WARNING, message, observed, expected, RUN_A_SYNC)
        message = (
            f"{what} does not exist, yet {index.vectors} vectors are stored under it: searches "
            "by meaning fail"
        )
        hint = "restart ragvisor (it creates the index at start), or " + RUN_A_SYNC
        return Finding(check, Severity.CRITICAL, message, observed, expected, hint)
    if index.state != ONLINE:
        failed = index.state == "FAILED"
        effect = "searches by meaning fail" if failed else "searches by meaning miss vectors"
        message = f"{what} is {index.state}, not {ONLINE}: {effect}"
        hint = (
            f"drop it (DROP INDEX {index.name}) and restart ragvisor, which creates it again"
            if failed
            else "wait for Neo4j to populate it (SHOW VECTOR INDEXES)"
        )
        severity = Severity.CRITICAL if failed else Severity.WARNING
        return Finding(check, severity, message, observed, expected, hint)
    if index.dimensions != g.dimensions:
        message = (
            f"{what} holds {index.dimensions} dimensions, the model makes {g.dimensions}: "
            "searches by meaning fail"
        )
        hint = f"DROP INDEX {index.name}, then restart ragvisor, which creates it again"
        return Finding(check, Severity.CRITICAL, message, observed, expected, hint)
    message = f"{what} is {ONLINE} with {g.dimensions} dimensions, {index.vectors} vectors"
    return Finding(check, Severity.OK, message, observed, expected)
