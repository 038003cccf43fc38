"""The doctor's checks: pure functions of the host's facts and the settings, one finding each
(ok, info, warning or critical) with what was seen, what was expected and how to fix it — so
every verdict is unit-tested without touching the host.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ragvisor.oncall.host_facts import (
    HostFacts,
    ModelContext,
    keep_alive_s,
    parse_size_mb,
)

if TYPE_CHECKING:
    from ragvisor.config import Settings

# Variables Ollama reads (envconfig/config.go, recent and still-accepted older names). Any other
# OLLAMA_* name in the drop-in is silently ignored by Ollama — OLLAMA_NUM_THREADS, for one.
KNOWN_OLLAMA_VARIABLES = frozenset(
    {
        "OLLAMA_HOST", "OLLAMA_KEEP_ALIVE", "OLLAMA_MAX_LOADED_MODELS", "OLLAMA_NUM_PARALLEL",
        "OLLAMA_MAX_QUEUE", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_FLASH_ATTENTION",
        "OLLAMA_KV_CACHE_TYPE", "OLLAMA_LOAD_TIMEOUT", "OLLAMA_MODELS", "OLLAMA_ORIGINS",
        "OLLAMA_DEBUG", "OLLAMA_NOPRUNE", "OLLAMA_GPU_OVERHEAD", "OLLAMA_SCHED_SPREAD",
        "OLLAMA_LLM_LIBRARY", "OLLAMA_NOHISTORY", "OLLAMA_MULTIUSER_CACHE", "OLLAMA_NEW_ENGINE",
        "OLLAMA_INTEL_GPU", "OLLAMA_TMPDIR",
    }
)  # fmt: skip
OLLAMA_DEFAULT_KEEP_ALIVE = "5m"


class Severity(enum.IntEnum):
    """How much a finding matters; ordered, so the worst is `max()`."""

    OK = 0
    INFO = 1
    WARNING = 2
    CRITICAL = 3

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's verdict: what was seen, what was expected, and what to do."""

    check: str
    severity: Severity
    message: str
    observed: Any = None
    expected: Any = None
    hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (`--json`)."""
        return {**asdict(self), "severity": str(self.severity)}


# --------------------------------------------------------------------------- the checks (pure)

SWAP_TOLERANCE_MB = 4.0  # mkswap keeps a page for its header; sizes are never exact
ROLE_HINT = 'Environment="{name}={value}" in the drop-in (ollama role)'


def _unreadable(check: str, facts: HostFacts, source: str) -> Finding:
    return Finding(check, Severity.WARNING, facts.errors.get(source, f"{source} is unreadable"))


def check_swap(facts: HostFacts, settings: Settings) -> Finding:
    """Active swap against `doctor.expected_swap_mb` (the deploy's `swap_file_size_mb`)."""
    if facts.swaps is None:
        return _unreadable("swap", facts, "swaps")
    expected = settings.doctor.expected_swap_mb
    total_mb = round(sum(a.size_kib for a in facts.swaps) / 1024)
    areas = ", ".join(f"{a.path} ({round(a.size_kib / 1024)} MB)" for a in facts.swaps)
    seen = f"{total_mb} MB of swap active: {areas}" if facts.swaps else "no swap is active"
    observed = {"total_mb": total_mb, "areas": [a.path for a in facts.swaps]}
    if expected == 0:
        message = f"{seen}; no expectation set (doctor.expected_swap_mb = 0)"
        return Finding("swap", Severity.INFO, message, observed)
    wanted = f"the deploy made {expected} MB (doctor.expected_swap_mb)"
    hint = "apply the swap role (swap_file_size_mb), or `swapon -a` if the fstab line is there"
    if not facts.swaps:
        return Finding("swap", Severity.CRITICAL, f"{seen}; {wanted}", observed, expected, hint)
    if total_mb < expected - max(SWAP_TOLERANCE_MB, expected * 0.01):
        return Finding("swap", Severity.WARNING, f"{seen}; {wanted}", observed, expected, hint)
    return Finding("swap", Severity.OK, f"{seen} (expected {expected} MB)", observed, expected)


def check_swappiness(facts: HostFacts, settings: Settings) -> Finding:
    """`vm.swappiness` at most `doctor.max_swappiness`: keep the working set, drop page cache."""
    if facts.swappiness is None:
        return _unreadable("swappiness", facts, "swappiness")
    value, limit = facts.swappiness, settings.doctor.max_swappiness
    if value <= limit:
        return Finding("swappiness", Severity.OK, f"vm.swappiness is {value}", value, limit)
    message = (
        f"vm.swappiness is {value}, above {limit} (doctor.max_swappiness): the kernel swaps the "
        "models' and the daemon's memory out before it drops page cache"
    )
    hint = f"sysctl -w vm.swappiness={limit}, kept in /etc/sysctl.d/ (swap role: swap_swappiness)"
    return Finding("swappiness", Severity.WARNING, message, value, limit, hint)


NEO4J_KEYS = {  # Neo4j 5 names first, 4.x names after
    "initial": ("server.memory.heap.initial_size", "dbms.memory.heap.initial_size"),
    "heap": ("server.memory.heap.max_size", "dbms.memory.heap.max_size"),
    "pagecache": ("server.memory.pagecache.size", "dbms.memory.pagecache.size"),
}


def _neo4j_sizes(conf: Mapping[str, str]) -> dict[str, tuple[str | None, float | None]]:
    """Each memory setting's raw text and its size in MB (None: unset or unreadable)."""
    sizes: dict[str, tuple[str | None, float | None]] = {}
    for name, keys in NEO4J_KEYS.items():
        raw = next((conf[key] for key in keys if key in conf), None)
        sizes[name] = (raw, parse_size_mb(raw) if raw is not None else None)
    return sizes


def check_neo4j(facts: HostFacts, settings: Settings) -> list[Finding]:
    """Heap initial = max, page cache set, heap + page cache within the budget and the RAM."""
    if facts.neo4j_conf is None:
        if "neo4j_conf" in facts.errors:
            return [_unreadable("neo4j", facts, "neo4j_conf")]
        path = settings.doctor.neo4j_conf_path
        message = f"no {path}: Neo4j is not installed here (doctor.neo4j_conf_path)"
        return [Finding("neo4j", Severity.INFO, message)]
    sizes = _neo4j_sizes(facts.neo4j_conf)
    findings = [_neo4j_heap(sizes)]
    cache_raw, cache = sizes["pagecache"]
    if cache is None:
        why = "is not set: Neo4j takes half the RAM left beside the heap"
        if cache_raw is not None:
            why = f"= {cache_raw!r} is not a size"
        message = f"server.memory.pagecache.size {why}"
        findings.append(Finding("neo4j.pagecache", Severity.WARNING, message, cache_raw))
    heap = sizes["heap"][1]
    if heap is not None and cache is not None:
        findings.append(_neo4j_budget(heap, cache, facts.memtotal_mb, settings))
    return findings


def _neo4j_heap(sizes: Mapping[str, tuple[str | None, float | None]]) -> Finding:
    (initial_raw, initial), (heap_raw, heap) = sizes["initial"], sizes["heap"]
    hint = "set server.memory.heap.initial_size and .max_size to one value (neo4j role)"
    if heap is None:
        why = "is not set: Neo4j sizes it from the RAM"
        if heap_raw is not None:
            why = f"= {heap_raw!r} is not a size"
        message = f"server.memory.heap.max_size {why}"
        return Finding("neo4j.heap", Severity.WARNING, message, heap_raw, hint=hint)
    if initial is None or abs(initial - heap) > 0.5:
        seen = "unset" if initial is None else f"{initial:g} MB"
        message = f"heap initial size {seen} differs from the max {heap:g} MB: it grows in pauses"
        observed = {"initial": initial_raw, "max": heap_raw}
        return Finding("neo4j.heap", Severity.WARNING, message, observed, heap_raw, hint)
    return Finding("neo4j.heap", Severity.OK, f"heap initial = max = {heap:g} MB", heap_raw)


def _neo4j_budget(
    heap: float, cache: float, memtotal_mb: int | None, settings: Settings
) -> Finding:
    """Heap + page cache against Neo4j's budget, the whole stack's budget and the RAM."""
    total = heap + cache
    observed = {"heap_mb": heap, "pagecache_mb": cache, "total_mb": total}
    sums = f"heap {heap:g} MB + page cache {cache:g} MB = {total:g} MB"
    limits = (
        (settings.doctor.neo4j_budget_mb, "Neo4j's budget (doctor.neo4j_budget_mb)"),
        (settings.memory.budget_mb, "the whole stack's budget (memory.budget_mb)"),
        (memtotal_mb or 0, "the machine's RAM"),
    )
    for limit, what in limits:
        if limit and total > limit:
            message = f"{sums}, over {what} of {limit} MB"
            hint = "lower the heap or the page cache (neo4j role)"
            return Finding("neo4j.memory", Severity.CRITICAL, message, observed, limit, hint)
    budget = settings.doctor.neo4j_budget_mb
    if budget:
        return Finding("neo4j.memory", Severity.OK, f"{sums}, within {budget} MB", observed, budget)
    share = f" ({100 * total / memtotal_mb:.0f} % of the RAM)" if memtotal_mb else ""
    message = f"{sums}{share}; no budget set (doctor.neo4j_budget_mb = 0)"
    return Finding("neo4j.memory", Severity.INFO, message, observed)


def check_ollama(facts: HostFacts, settings: Settings) -> list[Finding]:
    """The drop-in's OLLAMA_* values against what the daemon expects of Ollama."""
    g, e, d = settings.generator, settings.embedder, settings.doctor
    uses_ollama = g.backend == "ollama" or e.backend == "ollama"
    if facts.dropin is None:
        if "ollama_dropin" in facts.errors:
            return [_unreadable("ollama.dropin", facts, "ollama_dropin")]
        if not uses_ollama:
            message = f"no {d.ollama_dropin_path}; the daemon does not use Ollama"
            return [Finding("ollama.dropin", Severity.INFO, message)]
        message = (
            f"no {d.ollama_dropin_path}: Ollama runs with its defaults (keep-alive 5m; loaded "
            "models and parallel requests of its own choosing)"
        )
        return [Finding("ollama.dropin", Severity.WARNING, message, hint="apply the ollama role")]
    env = facts.dropin.environment
    findings = [
        _unknown_names(env),
        _count("OLLAMA_MAX_LOADED_MODELS", env, d.ollama_max_loaded_models, "several models"),
        _count("OLLAMA_NUM_PARALLEL", env, d.ollama_num_parallel, "a KV cache per request"),
    ]
    if facts.dropin.environment_files:
        message = f"EnvironmentFile={', '.join(facts.dropin.environment_files)} is not checked"
        findings.append(Finding("ollama.environment_file", Severity.INFO, message))
    if g.backend == "ollama":
        findings.append(_keep_alive(env.get("OLLAMA_KEEP_ALIVE"), g.keep_alive, "generator"))
        findings.append(_context_length(env.get("OLLAMA_CONTEXT_LENGTH"), g.num_ctx))
    elif e.backend == "ollama":
        findings.append(_keep_alive(env.get("OLLAMA_KEEP_ALIVE"), e.keep_alive, "embedder"))
    return findings


def _unknown_names(env: Mapping[str, str]) -> Finding:
    unknown = sorted(n for n in env if n.startswith("OLLAMA_") and n not in KNOWN_OLLAMA_VARIABLES)
    if not unknown:
        return Finding("ollama.variables", Severity.OK, "every OLLAMA_* name is one Ollama reads")
    message = f"Ollama has no variable {', '.join(unknown)} and ignores it"
    hint = "remove it; the ollama role accepts only real OLLAMA_* names"
    return Finding("ollama.variables", Severity.WARNING, message, unknown, hint=hint)


def _count(name: str, env: Mapping[str, str], expected: int, cost: str) -> Finding:
    """A count Ollama should hold at `expected` or below: more costs memory on a small box."""
    key = name.removeprefix("OLLAMA_").lower()
    raw = env.get(name)
    value = int(raw) if raw is not None and raw.strip().isdigit() else None
    if value is not None and 0 < value <= expected:
        return Finding("ollama." + key, Severity.OK, f"{name}={value}", value, expected)
    seen = (
        "is unset" if raw is None else f"={raw}" if value is not None else f"={raw!r} is no number"
    )
    message = (
        f"{name} {seen}; expected {expected} (doctor.ollama_{key}): more, or Ollama's own choice, "
        f"means {cost} in memory at once"
    )
    hint = ROLE_HINT.format(name=name, value=expected)
    return Finding("ollama." + key, Severity.WARNING, message, raw, expected, hint)


def _keep_alive(raw: str | None, daemon_value: str, section: str) -> Finding:
    value = raw if raw is not None else OLLAMA_DEFAULT_KEEP_ALIVE
    seen = f"OLLAMA_KEEP_ALIVE={value}" + (" (Ollama's default)" if raw is None else "")
    ollama_s = keep_alive_s(value)
    if ollama_s is not None and ollama_s == keep_alive_s(daemon_value):
        message = f"{seen}, as {section}.keep_alive"
        return Finding("ollama.keep_alive", Severity.OK, message, value, daemon_value)
    why = "is not a duration: Ollama ignores it (5m)" if ollama_s is None else "differs from"
    message = (
        f"{seen} {why} {section}.keep_alive = {daemon_value!r}: the daemon's calls carry their "
        "own, but a model another client loads stays for Ollama's value"
    )
    hint = ROLE_HINT.format(name="OLLAMA_KEEP_ALIVE", value=daemon_value)
    return Finding("ollama.keep_alive", Severity.WARNING, message, value, daemon_value, hint)


def _context_length(raw: str | None, num_ctx: int) -> Finding:
    if raw is None:
        message = (
            "OLLAMA_CONTEXT_LENGTH is unset: only calls without num_ctx use Ollama's default; "
            f"the daemon always sends {num_ctx}"
        )
        return Finding("ollama.context_length", Severity.INFO, message, None, num_ctx)
    if raw.strip() == str(num_ctx):
        message = f"OLLAMA_CONTEXT_LENGTH={raw}, as generator.num_ctx"
        return Finding("ollama.context_length", Severity.OK, message, raw, num_ctx)
    message = (
        f"OLLAMA_CONTEXT_LENGTH={raw} but generator.num_ctx = {num_ctx}: a model another client "
        "loaded is reloaded (seconds, and a memory spike) at the daemon's next call"
    )
    hint = ROLE_HINT.format(name="OLLAMA_CONTEXT_LENGTH", value=num_ctx)
    return Finding("ollama.context_length", Severity.WARNING, message, raw, num_ctx, hint)


def check_num_ctx(facts: HostFacts, settings: Settings) -> Finding:
    """`generator.num_ctx` within the context the model was trained for."""
    model, num_ctx = facts.model, settings.generator.num_ctx
    if model is None:
        return Finding("generator.num_ctx", Severity.INFO, 'generator.backend is "none"')
    if model.missing or model.error is not None or model.context_length is None:
        return _model_unknown(model)
    trained = model.context_length
    if num_ctx > trained:
        message = (
            f"generator.num_ctx = {num_ctx} exceeds the {trained} tokens {model.model} was "
            "trained for: the backend clamps it and the prompts the daemon packs get cut"
        )
        hint = f"generator.num_ctx = {trained} or less"
        return Finding("generator.num_ctx", Severity.CRITICAL, message, num_ctx, trained, hint)
    message = f"generator.num_ctx = {num_ctx}, within the {trained} tokens of {model.model}"
    return Finding("generator.num_ctx", Severity.OK, message, num_ctx, trained)


def _model_unknown(model: ModelContext) -> Finding:
    """Why the model's context could not be compared, and how much that matters."""
    where = f"{model.model} at {model.source}"
    if model.missing and not model.missing_is_fatal:
        message = f"{model.source} is not there yet: the daemon puts it there at first start"
        return Finding("generator.num_ctx", Severity.INFO, message)
    if model.missing:
        hint = "pull the model (ollama pull), or fix worker.model_path"
        message = f"{where}: {model.error}; /ask cannot answer"
        return Finding("generator.num_ctx", Severity.CRITICAL, message, hint=hint)
    if model.error is not None:
        return Finding("generator.num_ctx", Severity.WARNING, f"cannot read {where}: {model.error}")
    message = f"{where}: no {model.architecture}.context_length in the metadata"
    return Finding("generator.num_ctx", Severity.WARNING, message)


# At most this many paths are named in the data directory's finding (`observed` has them all).
DATA_DIR_PATHS_NAMED = 5


def check_data_dir(facts: HostFacts) -> list[Finding]:
    """Only the daemon's user may get into `store.data_dir`: it holds the corpus as text, its
    vectors and the admin token. Empty when the facts hold no data directory."""
    modes = facts.data_dir
    if modes is None:
        return []
    where = modes.path
    if not modes.exists:
        message = f"{where} does not exist yet; the daemon creates it 0700 at first start"
        return [Finding("store.data_dir", Severity.INFO, message)]
    if modes.open_paths:
        wide = modes.open_paths
        named = ", ".join(f"{p.path} ({p.mode:04o})" for p in wide[:DATA_DIR_PATHS_NAMED])
        more = (
            f" and {len(wide) - DATA_DIR_PATHS_NAMED} more"
            if len(wide) > DATA_DIR_PATHS_NAMED
            else ""
        )
        message = (
            f"other local users can get into the data directory: {named}{more}; it holds the "
            "corpus as text and the admin token"
        )
        observed = {str(p.path): f"{p.mode:04o}" for p in wide}
        expected = "folders 0700, files 0600"
        hint = f"chmod 700 {where} && chmod -R go= {where} (or restart ragvisor: it does so)"
        return [Finding("store.data_dir", Severity.WARNING, message, observed, expected, hint)]
    if modes.error is not None:
        message = f"{where}: {modes.error} (run ragvisor doctor as the daemon's user)"
        return [Finding("store.data_dir", Severity.INFO, message)]
    message = f"{where} and everything in it are private to their owner"
    return [Finding("store.data_dir", Severity.OK, message)]
