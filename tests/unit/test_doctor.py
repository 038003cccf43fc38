"""`ragvisor doctor`'s parsers and verdicts: pure functions of file text, facts and settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ragvisor.config import parse_settings
from ragvisor.core.model import Fingerprint, Generation, Generations
from ragvisor.datadir import OpenPath
from ragvisor.errors import ConfigError, StoreError
from ragvisor.oncall.doctor import diagnose, exit_code, render_text, report
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
from ragvisor.oncall.host_facts import (
    DataDirModes,
    DropIn,
    HostFacts,
    ModelContext,
    SwapArea,
    keep_alive_s,
    parse_dropin,
    parse_meminfo_total_mb,
    parse_properties,
    parse_size_mb,
    parse_swaps,
)
from ragvisor.oncall.store_checks import check_store
from ragvisor.oncall.store_facts import read_store

SWAPS = """Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/swapfile                               file\t\t2097148\t\t1024\t\t-2
/mnt/my\\040swap                          file\t\t1048572\t\t0\t\t-3
"""


def settings(**sections):
    return parse_settings(sections)


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


# --- parsers ---------------------------------------------------------------------------------


def test_parse_swaps_reads_every_active_area_in_kib():
    """Each /proc/swaps line becomes an area; `\\040` in a path is a space."""
    assert parse_swaps(SWAPS) == (
        SwapArea("/swapfile", "file", 2097148, 1024),
        SwapArea("/mnt/my swap", "file", 1048572, 0),
    )
    assert parse_swaps("Filename Type Size Used Priority\n") == ()


def test_parse_meminfo_total_in_mb():
    """MemTotal in kB becomes whole MB; a file without it gives None."""
    assert parse_meminfo_total_mb("MemTotal:        4028144 kB\nMemFree: 1 kB\n") == 3933
    assert parse_meminfo_total_mb("MemFree: 1 kB\n") is None


@pytest.mark.parametrize(
    ("text", "mb"),
    [("512m", 512), ("1g", 1024), ("1.5GiB", 1536), ("2048k", 2), ("1048576", 1), ("512MB", 512)],
)
def test_parse_size_mb_reads_neo4j_sizes(text, mb):
    """Neo4j's byte sizes, with or without a unit, in binary MB."""
    assert parse_size_mb(text) == mb


def test_parse_size_mb_refuses_text():
    """A value that is not a size gives None rather than a guess."""
    assert parse_size_mb("half the RAM") is None


def test_parse_properties_skips_comments_and_lets_the_last_line_win():
    """neo4j.conf: `#` comments, blank lines, spaces around `=`, a repeated key."""
    conf = "# heap\nserver.memory.heap.max_size=1g\n\n server.memory.heap.max_size = 512m \n"
    assert parse_properties(conf) == {"server.memory.heap.max_size": "512m"}


def test_parse_dropin_follows_systemd_quoting_resets_and_sections():
    """Quoted and unquoted assignments, continuations, an empty reset, other sections ignored."""
    text = """# managed by ansible
[Unit]
Environment=IGNORED=1
[Service]
Environment=OLLAMA_DEBUG=1
Environment=
Environment="OLLAMA_KEEP_ALIVE=0" "OLLAMA_ORIGINS=a b"
Environment=OLLAMA_NUM_PARALLEL=1 \\
  OLLAMA_MAX_LOADED_MODELS=1
EnvironmentFile=-/etc/default/ollama
"""
    assert parse_dropin(text) == DropIn(
        {
            "OLLAMA_KEEP_ALIVE": "0",
            "OLLAMA_ORIGINS": "a b",
            "OLLAMA_NUM_PARALLEL": "1",
            "OLLAMA_MAX_LOADED_MODELS": "1",
        },
        ("-/etc/default/ollama",),
    )


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300),
        ("300", 300),
        ("0", 0),
        ("0s", 0),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        ("-1", math.inf),
        ("-5m", math.inf),
        ('"10m"', 600),
    ],
)
def test_keep_alive_is_read_as_ollama_reads_it(value, seconds):
    """Whole seconds or a Go duration; negative is forever; quotes are trimmed as Ollama does."""
    assert keep_alive_s(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "", "5x"])
def test_keep_alive_ollama_would_ignore_is_none(value):
    """Text Ollama cannot parse gives None (it then keeps its 5m default)."""
    assert keep_alive_s(value) is None


# --- swap and swappiness ---------------------------------------------------------------------


def test_swap_without_expectation_is_info():
    """With doctor.expected_swap_mb = 0 the doctor reports what it sees and judges nothing."""
    finding = check_swap(HostFacts(swaps=parse_swaps(SWAPS)), settings())
    assert finding.severity is Severity.INFO
    assert finding.observed == {"total_mb": 3072, "areas": ["/swapfile", "/mnt/my swap"]}


@pytest.mark.parametrize(
    ("size_kib", "severity"),
    [(None, Severity.CRITICAL), (1048572, Severity.WARNING), (2097148, Severity.OK)],
)
def test_swap_against_the_deploys_size(size_kib, severity):
    """No swap when the deploy made some is critical; less is a warning; mkswap's page is ok."""
    swaps = () if size_kib is None else (SwapArea("/swapfile", "file", size_kib, 0),)
    finding = check_swap(HostFacts(swaps=swaps), settings(doctor={"expected_swap_mb": 2048}))
    assert finding.severity is severity
    assert finding.expected == 2048


def test_swappiness_above_the_limit_is_a_warning_with_a_fix():
    """60 on a box that wants 10 warns and says how to fix it; 10 is ok."""
    high = check_swappiness(HostFacts(swappiness=60), settings())
    assert (high.severity, high.observed, high.expected) == (Severity.WARNING, 60, 10)
    assert "sysctl -w vm.swappiness=10" in (high.hint or "")
    assert check_swappiness(HostFacts(swappiness=10), settings()).severity is Severity.OK


def test_unreadable_proc_files_are_warnings_naming_the_file():
    """A /proc file that cannot be read is reported, not guessed."""
    facts = HostFacts(errors={"swaps": "/x/swaps does not exist", "swappiness": "cannot read"})
    assert check_swap(facts, settings()).message == "/x/swaps does not exist"
    assert check_swappiness(facts, settings()).severity is Severity.WARNING


# --- Neo4j -----------------------------------------------------------------------------------

NEO4J_OK = {
    "server.memory.heap.initial_size": "512m",
    "server.memory.heap.max_size": "512m",
    "server.memory.pagecache.size": "256m",
}


def test_neo4j_not_installed_is_info():
    """No neo4j.conf at the configured path: nothing to judge."""
    (finding,) = check_neo4j(HostFacts(), settings())
    assert (finding.check, finding.severity) == ("neo4j", Severity.INFO)


def test_neo4j_within_its_budget_is_ok():
    """Heap initial = max and heap + page cache within doctor.neo4j_budget_mb."""
    found = by_check(
        check_neo4j(HostFacts(neo4j_conf=NEO4J_OK), settings(doctor={"neo4j_budget_mb": 1024}))
    )
    assert found["neo4j.heap"].severity is Severity.OK
    assert found["neo4j.memory"].severity is Severity.OK
    assert found["neo4j.memory"].observed == {"heap_mb": 512, "pagecache_mb": 256, "total_mb": 768}


def test_neo4j_heap_initial_below_max_is_a_warning():
    """A heap that starts small and grows pauses for GC: initial must equal max."""
    conf = {**NEO4J_OK, "server.memory.heap.initial_size": "128m"}
    found = by_check(check_neo4j(HostFacts(neo4j_conf=conf), settings()))
    assert found["neo4j.heap"].severity is Severity.WARNING


@pytest.mark.parametrize(
    ("sections", "memtotal_mb", "over"),
    [
        ({"doctor": {"neo4j_budget_mb": 600}}, 4000, "doctor.neo4j_budget_mb"),
        ({"memory": {"budget_mb": 700}}, 4000, "memory.budget_mb"),
        ({}, 700, "RAM"),
    ],
)
def test_neo4j_over_a_budget_or_the_ram_is_critical(sections, memtotal_mb, over):
    """Heap + page cache over Neo4j's budget, the stack's budget or the RAM: critical."""
    facts = HostFacts(neo4j_conf=NEO4J_OK, memtotal_mb=memtotal_mb)
    found = by_check(check_neo4j(facts, settings(**sections)))
    assert found["neo4j.memory"].severity is Severity.CRITICAL
    assert over in found["neo4j.memory"].message


def test_neo4j_without_budget_reports_its_share_of_the_ram():
    """No budget anywhere: info with the share of the RAM."""
    found = by_check(check_neo4j(HostFacts(neo4j_conf=NEO4J_OK, memtotal_mb=3840), settings()))
    assert found["neo4j.memory"].severity is Severity.INFO
    assert "20 % of the RAM" in found["neo4j.memory"].message


def test_neo4j_4x_names_and_missing_page_cache():
    """Neo4j 4.x `dbms.memory.*` names are read; an unset page cache is a warning."""
    conf = {"dbms.memory.heap.initial_size": "1g", "dbms.memory.heap.max_size": "1g"}
    found = by_check(check_neo4j(HostFacts(neo4j_conf=conf), settings()))
    assert found["neo4j.heap"].severity is Severity.OK
    assert found["neo4j.pagecache"].severity is Severity.WARNING
    assert "neo4j.memory" not in found


# --- Ollama's drop-in ------------------------------------------------------------------------

OLLAMA = {"generator": {"backend": "ollama", "keep_alive": "0", "num_ctx": 2048}}
DROPIN_OK = {
    "OLLAMA_KEEP_ALIVE": "0",
    "OLLAMA_MAX_LOADED_MODELS": "1",
    "OLLAMA_NUM_PARALLEL": "1",
    "OLLAMA_CONTEXT_LENGTH": "2048",
}


def test_dropin_as_the_daemon_expects_is_all_ok():
    """The prod drop-in for a generator with keep_alive 0 and num_ctx 2048."""
    found = check_ollama(HostFacts(dropin=DropIn(DROPIN_OK)), settings(**OLLAMA))
    assert {f.check for f in found} == {
        "ollama.variables",
        "ollama.max_loaded_models",
        "ollama.num_parallel",
        "ollama.keep_alive",
        "ollama.context_length",
    }
    assert all(f.severity is Severity.OK for f in found), found


def test_dropin_drift_is_reported_value_by_value():
    """A seed's drop-in: a made-up variable, 3 models, 4 parallel, 30m, another context."""
    env = {
        "OLLAMA_NUM_THREADS": "2",
        "OLLAMA_MAX_LOADED_MODELS": "3",
        "OLLAMA_NUM_PARALLEL": "4",
        "OLLAMA_KEEP_ALIVE": "30m",
        "OLLAMA_CONTEXT_LENGTH": "8192",
    }
    found = by_check(check_ollama(HostFacts(dropin=DropIn(env)), settings(**OLLAMA)))
    assert all(f.severity is Severity.WARNING for f in found.values()), found
    assert found["ollama.variables"].observed == ["OLLAMA_NUM_THREADS"]
    assert found["ollama.keep_alive"].expected == "0"
    assert 'OLLAMA_MAX_LOADED_MODELS=1"' in (found["ollama.max_loaded_models"].hint or "")


def test_equal_keep_alives_in_different_spellings_agree():
    """`300`, `5m` and `300s` are the same keep-alive."""
    found = by_check(
        check_ollama(
            HostFacts(dropin=DropIn({**DROPIN_OK, "OLLAMA_KEEP_ALIVE": "300"})),
            settings(generator={"backend": "ollama", "keep_alive": "5m"}),
        )
    )
    assert found["ollama.keep_alive"].severity is Severity.OK


def test_unset_counts_warn_and_unset_keep_alive_is_ollamas_default():
    """Unset MAX_LOADED_MODELS lets Ollama choose (warning); unset KEEP_ALIVE means 5m."""
    found = by_check(check_ollama(HostFacts(dropin=DropIn({})), settings(**OLLAMA)))
    assert found["ollama.max_loaded_models"].severity is Severity.WARNING
    assert found["ollama.keep_alive"].observed == "5m"
    assert found["ollama.keep_alive"].severity is Severity.WARNING
    assert found["ollama.context_length"].severity is Severity.INFO


def test_missing_dropin_matters_only_when_the_daemon_uses_ollama():
    """No drop-in: a warning for an Ollama generator, info for the embedded one."""
    (used,) = check_ollama(HostFacts(), settings(**OLLAMA))
    (unused,) = check_ollama(HostFacts(), settings())
    assert (used.severity, unused.severity) == (Severity.WARNING, Severity.INFO)


def test_embedder_on_ollama_compares_its_keep_alive():
    """With only the embedder on Ollama, embedder.keep_alive is the expectation."""
    found = by_check(
        check_ollama(
            HostFacts(dropin=DropIn({**DROPIN_OK, "OLLAMA_KEEP_ALIVE": "10m"})),
            settings(embedder={"backend": "ollama", "keep_alive": "10m"}),
        )
    )
    assert found["ollama.keep_alive"].severity is Severity.OK
    assert "ollama.context_length" not in found


# --- num_ctx against the model ---------------------------------------------------------------


def model(**fields) -> ModelContext:
    return ModelContext(**{"source": "http://ollama/api/show", "model": "gemma3", **fields})


@pytest.mark.parametrize(
    ("context", "severity"),
    [
        (model(context_length=32768, architecture="gemma3"), Severity.OK),
        (model(context_length=1024, architecture="gemma3"), Severity.CRITICAL),
        (model(missing=True, error="model not found"), Severity.CRITICAL),
        (model(missing=True, error="no such file", missing_is_fatal=False), Severity.INFO),
        (model(error="connection refused"), Severity.WARNING),
        (model(architecture="gemma3"), Severity.WARNING),
        (None, Severity.INFO),
    ],
    ids=[
        "within",
        "beyond",
        "not-pulled",
        "not-assembled-yet",
        "unreachable",
        "no-metadata",
        "off",
    ],
)
def test_num_ctx_against_the_models_trained_context(context, severity):
    """2048 within 32768 is ok, beyond the trained size or a missing model is critical."""
    finding = check_num_ctx(HostFacts(model=context), settings())
    assert finding.severity is severity


# --- the whole verdict -----------------------------------------------------------------------


def test_diagnose_puts_the_worst_first_and_the_exit_code_follows_fail_on():
    """Critical first; exit 1 only at or above --fail-on."""
    facts = HostFacts(
        swaps=(),
        swappiness=60,
        model=model(context_length=32768, architecture="gemma3"),
    )
    findings = diagnose(facts, settings(doctor={"expected_swap_mb": 1024}))
    assert [f.severity for f in findings] == sorted((f.severity for f in findings), reverse=True)
    assert findings[0].check == "swap"
    assert exit_code(findings) == 1
    calm = diagnose(HostFacts(swaps=(), swappiness=60), settings())
    assert exit_code(calm) == 0
    assert exit_code(calm, Severity.WARNING) == 1


def test_text_and_json_renderings_carry_every_finding():
    """The text has a summary line and one line per finding; the JSON counts severities."""
    findings = diagnose(HostFacts(swaps=(), swappiness=60), settings())
    text = render_text(findings)
    assert text.splitlines()[0] == "ragvisor doctor: 1 warning, 4 info"
    assert "WARNING   swappiness" in text
    assert "fix: sysctl -w vm.swappiness=10" in text
    body = report(findings, 0)
    assert body["worst"] == "warning"
    assert body["counts"] == {"ok": 0, "info": 4, "warning": 1, "critical": 0}
    assert len(body["findings"]) == len(findings)


# --- the data directory ----------------------------------------------------------------------


def test_data_dir_open_to_others_is_a_warning_with_the_chmod_fix():
    """A 0755 data directory and a 0644 store are named with their modes, and the fix given."""
    data = Path("/var/lib/ragvisor")
    modes = DataDirModes(
        str(data),
        open_paths=(
            OpenPath(data, 0o755, is_dir=True),
            OpenPath(data / "ragvisor.sqlite3", 0o644, is_dir=False),
        ),
    )
    [finding] = check_data_dir(HostFacts(data_dir=modes))
    assert finding.check == "store.data_dir"
    assert finding.severity is Severity.WARNING
    assert "/var/lib/ragvisor (0755)" in finding.message
    assert "/var/lib/ragvisor/ragvisor.sqlite3 (0644)" in finding.message
    assert finding.observed == {
        "/var/lib/ragvisor": "0755",
        "/var/lib/ragvisor/ragvisor.sqlite3": "0644",
    }
    assert finding.hint is not None
    assert finding.hint.startswith("chmod 700 /var/lib/ragvisor && chmod -R go= /var/lib/ragvisor")


def test_data_dir_finding_names_a_few_paths_and_counts_the_rest():
    """Eight open files: five named in the message, all eight in `observed`."""
    data = Path("/d")
    wide = tuple(OpenPath(data / f"f{i}", 0o644, is_dir=False) for i in range(8))
    [finding] = check_data_dir(HostFacts(data_dir=DataDirModes("/d", open_paths=wide)))
    assert "/d/f4 (0644)" in finding.message
    assert "/d/f5" not in finding.message
    assert "and 3 more" in finding.message
    assert len(finding.observed) == 8


@pytest.mark.parametrize(
    ("modes", "severity", "words"),
    [
        (DataDirModes("/d"), Severity.OK, "private to their owner"),
        (DataDirModes("/d", exists=False), Severity.INFO, "creates it 0700"),
        (DataDirModes("/d", error="cannot look inside: Permission denied"), Severity.INFO,
         "run ragvisor doctor as the daemon's user"),
    ],
)  # fmt: skip
def test_private_missing_or_unreadable_data_dir(modes, severity, words):
    """Private: ok; not created yet: info; someone else's closed folder: info saying why."""
    [finding] = check_data_dir(HostFacts(data_dir=modes))
    assert finding.severity is severity
    assert words in finding.message


def test_facts_without_a_data_dir_give_no_data_dir_finding():
    """Facts assembled by hand (no data directory examined) add no finding."""
    assert check_data_dir(HostFacts()) == []


# --- the Neo4j store (store.backend = "neo4j") -------------------------------------------------

NEO4J_STORE = {"backend": "neo4j", "uri": "bolt://db.internal:7687", "user": "ragvisor"}
GEN_384 = Generation("sha256:0123456789abcdef/384", "all-MiniLM-L6-v2", 384)
GEN_768 = Generation("sha256:fedcba9876543210/768", "nomic-embed-text", 768)


@dataclass(frozen=True)
class Index:
    """What the fake store reports of one vector index."""

    name: str = "ragvisor_vectors_0011223344556677"
    exists: bool = True
    state: str | None = "ONLINE"
    dimensions: int | None = 384
    vectors: int = 12


@dataclass
class FakeProbe:
    """A store answering the doctor's two questions from fixed values, or raising `error`."""

    generations: Generations = field(default_factory=Generations)
    indexes: dict[str, Index] = field(default_factory=dict)
    error: Exception | None = None
    asked: list[str] = field(default_factory=list)
    closed: bool = False

    def recorded_generations(self) -> Generations:
        if self.error is not None:
            raise self.error
        return self.generations

    def vector_index_info(self, fingerprint: Fingerprint) -> Index:
        self.asked.append(fingerprint.key)
        return self.indexes.get(fingerprint.key, Index(exists=False, state=None, vectors=0))

    def close(self) -> None:
        self.closed = True


def store_findings(probe: FakeProbe | None, **store: object) -> dict[str, Finding]:
    s = settings(store={**NEO4J_STORE, **store})
    opener = (lambda _settings: probe) if probe is not None else None
    return by_check(check_store(read_store(s, opener), s))


def test_sqlite_store_gives_no_store_finding():
    """With the SQLite store the doctor opens nothing and reports nothing about a database."""
    s = settings()
    assert read_store(s, lambda _settings: pytest.fail("opened a store")) is None
    assert check_store(None, s) == []


def test_store_without_an_opener_is_noted_as_not_checked():
    """A caller that passes no way to open the store gets an info finding, never a verdict."""
    found = store_findings(None)
    assert list(found) == ["store.neo4j"]
    assert found["store.neo4j"].severity == Severity.INFO
    assert "not checked" in found["store.neo4j"].message


def test_unreachable_database_is_critical_naming_uri_and_reason_not_the_password():
    """A refused login is critical; the finding names the uri, user and Neo4j's reason, and the
    password appears nowhere in the rendered report."""
    refused = StoreError(
        "recorded_generations on bolt://db.internal:7687 failed: The client is unauthorized "
        "due to authentication failure."
    )
    probe = FakeProbe(error=refused)
    s = settings(store={**NEO4J_STORE, "password": "s3cret-Pa55"})
    facts = read_store(s, lambda _settings: probe)
    found = check_store(facts, s)
    assert probe.closed
    [finding] = found
    assert (finding.check, finding.severity) == ("store.neo4j", Severity.CRITICAL)
    assert "bolt://db.internal:7687" in finding.message
    assert "'ragvisor'" in finding.message
    assert "authentication failure" in finding.message
    assert "store.password_file" in finding.hint
    rendered = render_text(found) + str(report(found, 1))
    assert "s3cret-Pa55" not in rendered


def test_a_store_that_cannot_be_opened_is_critical():
    """ConfigError from the opener (no password, an unreadable password file) is a critical
    finding with its message, not a crash of the doctor."""

    def opener(_settings):
        raise ConfigError("store.password_file: cannot read /etc/ragvisor/neo4j.password")

    s = settings(store=NEO4J_STORE)
    [finding] = check_store(read_store(s, opener), s)
    assert finding.severity == Severity.CRITICAL
    assert "/etc/ragvisor/neo4j.password" in finding.message


def test_no_generation_recorded_is_a_warning_to_run_a_sync():
    """A database nothing was synced into: reached (ok), and a warning that says run a sync."""
    found = store_findings(FakeProbe())
    assert found["store.neo4j"].severity == Severity.OK
    assert found["store.vector_index"].severity == Severity.WARNING
    assert "run a sync" in found["store.vector_index"].hint


def test_online_index_of_the_right_size_is_ok_and_asked_by_the_generations_key():
    """The active generation's index ONLINE with the model's dimensions: ok; the store is asked
    with the fingerprint key the generation recorded."""
    probe = FakeProbe(Generations(active=GEN_384), {GEN_384.fingerprint: Index()})
    found = store_findings(probe)
    assert probe.asked == [GEN_384.fingerprint]
    index = found["store.vector_index"]
    assert index.severity == Severity.OK
    assert index.expected == {"state": "ONLINE", "dimensions": 384}
    assert "12 vectors" in index.message


@pytest.mark.parametrize(
    ("index", "severity", "words"),
    [
        (Index(exists=False, state=None, vectors=0), Severity.WARNING, "does not exist yet"),
        (Index(exists=False, state=None, vectors=40), Severity.CRITICAL, "40 vectors"),
        (Index(state="POPULATING"), Severity.WARNING, "POPULATING, not ONLINE"),
        (Index(state="FAILED"), Severity.CRITICAL, "FAILED, not ONLINE"),
        (Index(dimensions=768), Severity.CRITICAL, "holds 768 dimensions, the model makes 384"),
    ],
)
def test_missing_unready_or_wrongly_sized_index(index, severity, words):
    """Missing before the first sync: warning; missing with vectors, FAILED or of another size:
    critical; still populating: warning."""
    found = store_findings(FakeProbe(Generations(active=GEN_384), {GEN_384.fingerprint: index}))
    assert found["store.vector_index"].severity == severity
    assert words in found["store.vector_index"].message


def test_a_model_change_checks_the_building_generations_index_too():
    """During a model change the building generation's index is judged under its own name."""
    probe = FakeProbe(
        Generations(active=GEN_384, building=GEN_768),
        {GEN_384.fingerprint: Index(), GEN_768.fingerprint: Index(dimensions=768, vectors=0)},
    )
    found = store_findings(probe)
    assert found["store.vector_index"].severity == Severity.OK
    assert found["store.vector_index.building"].severity == Severity.OK
    assert "nomic-embed-text" in found["store.vector_index.building"].message


def test_diagnose_includes_the_store_findings():
    """`diagnose` runs the store's checks with the others; an unreachable database is the worst
    finding and fails the run."""
    s = settings(store=NEO4J_STORE, generator={"backend": "none"})
    facts = HostFacts(store=read_store(s, lambda _s: FakeProbe(error=StoreError("down"))))
    findings = diagnose(facts, s)
    assert findings[0].check == "store.neo4j"
    assert exit_code(findings) == 1
