"""The settings' schema: one pydantic model per `[section]`, with every default, bound and
validation rule of the configuration (docs/configuration.md lists them for operators).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ragvisor.admin_token import token_problem
from ragvisor.core.durations import parse_keep_alive_setting
from ragvisor.errors import InputError


def _expand_user(path: Path) -> Path:
    return path.expanduser()


# A path setting: `~` is expanded; relative paths stay relative to the working directory.
UserPath = Annotated[Path, AfterValidator(_expand_user)]


def _keep_alive(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        try:
            parse_keep_alive_setting(value)
        except InputError:
            # Word for word as before: docs/configuration.md quotes this message.
            raise ValueError(
                'expected a duration like "5m", "1h30m", "30s", or seconds ("0", "-1")'
            ) from None
        return value.strip()
    return value


# Ollama's keep_alive: a Go duration ("5m"), whole seconds, 0 (unload at once), negative (never).
KeepAlive = Annotated[str, BeforeValidator(_keep_alive)]


def _admin_token(value: str) -> str:
    problem = token_problem(value) if value != "" else None
    if problem is not None:
        raise ValueError(f"the token {problem} (or leave it empty to use <data_dir>/admin_token)")
    return value


# `server.admin_token`: empty (use the token file), or a token fit to guard /admin/*.
AdminToken = Annotated[str, AfterValidator(_admin_token)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusSettings(_Section):
    """Which folders are the knowledge base and how their files become chunks."""

    paths: tuple[UserPath, ...] = (Path("docs"),)
    include: tuple[str, ...] = ("**/*.md", "**/*.markdown", "**/*.txt")
    exclude: tuple[str, ...] = ("**/.git/**", "**/node_modules/**", "**/.venv/**", "**/.*/**")
    max_file_bytes: int = Field(2_000_000, ge=1)
    chunk_size_chars: int = Field(800, ge=100, le=100_000)
    chunk_overlap_chars: int = Field(120, ge=0)
    # Every chunk opens with "Title > Section" (chunker md-title-v2); false keeps the first
    # release's chunks (md-heading-v1) and spares a store made by it the re-embed.
    chunk_title: bool = True
    # The folder `PUT`/`DELETE /documents/{path}` write in: one of `paths`; unset, the first.
    managed_path: UserPath | None = None

    @model_validator(mode="after")
    def _overlap_below_size(self) -> CorpusSettings:
        if self.chunk_overlap_chars >= self.chunk_size_chars:
            raise ValueError("chunk_overlap_chars must be smaller than chunk_size_chars")
        if not self.paths:
            raise ValueError("paths must name at least one folder")
        return self


NEO4J_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


def _neo4j_uri(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in NEO4J_SCHEMES or not rest:
        schemes = ", ".join(NEO4J_SCHEMES)
        raise ValueError(f"expected a Neo4j URI such as bolt://127.0.0.1:7687 (schemes: {schemes})")
    return value


class StoreSettings(_Section):
    """Where vectors, chunks and documents live.

    `sqlite` keeps them in `<data_dir>/ragvisor.sqlite3`; `neo4j` in the database at `uri`
    (docs/neo4j.md). `data_dir` holds the admin token, models and the sync lock either way.
    The Neo4j password comes from `password_file` or `RAGVISOR_STORE__PASSWORD`; it is never
    logged, shown in `/status` or handed to the worker.
    """

    backend: Literal["sqlite", "neo4j"] = "sqlite"
    data_dir: UserPath = Path(".ragvisor")
    busy_timeout_s: float = Field(10.0, gt=0)
    uri: Annotated[str, AfterValidator(_neo4j_uri)] = "bolt://127.0.0.1:7687"
    user: str = Field("neo4j", min_length=1)
    password_file: UserPath | None = None
    password: SecretStr | None = None
    database: str = Field("neo4j", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-]*$")
    # Opening a connection to Neo4j (and waiting for one from the pool).
    connect_timeout_s: float = Field(5.0, gt=0)
    # One transaction, enforced by the server; a request's own deadline shortens it further.
    query_timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _one_password_source(self) -> StoreSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password_file or RAGVISOR_STORE__PASSWORD, not both")
        return self


class DeadlineSettings(_Section):
    """Bounds on one backend call; a call that misses one is cancelled, never left hanging."""

    connect_s: float = Field(5.0, gt=0)
    # From sending the request to the first streamed chunk: includes a cold model load.
    first_token_s: float = Field(120.0, gt=0)
    # Longest silence between two streamed chunks once generation has started.
    stall_s: float = Field(30.0, gt=0)
    # One backend call from start to its last byte.
    total_s: float = Field(300.0, gt=0)
    # A whole `/ask` (generator) or `/search` (embedder) request: every backend call, retry and
    # the degraded fallback included.
    request_s: float = Field(330.0, gt=0)


class EmbedderDeadlineSettings(DeadlineSettings):
    """Embedding calls are short and not streamed; `request_s` bounds a whole `/search`."""

    connect_s: float = Field(2.0, gt=0)
    first_token_s: float = Field(60.0, gt=0)  # until the response starts: a cold load included
    stall_s: float = Field(10.0, gt=0)
    total_s: float = Field(120.0, gt=0)
    request_s: float = Field(15.0, gt=0)


class RetrySettings(_Section):
    """Bounded retries of one backend operation, with full-jitter exponential backoff.

    Retried: timeouts, refused or reset connections, 5xx, 503 "server busy" and `{"error"}`
    lines mid-stream. Never retried: a 4xx our own input caused, or "out of memory".
    """

    # Attempts in all, the first included: 3 means up to two retries.
    attempts: int = Field(3, ge=1, le=20)
    backoff_base_s: float = Field(0.25, ge=0)
    backoff_max_s: float = Field(4.0, ge=0)


class BreakerSettings(_Section):
    """The circuit breaker: after `failure_threshold` calls in a row failed for good (each after
    its own retries) the backend is left alone for `open_s` (answers degrade at once), then one
    trial call decides. Failures that a retry absorbs do not count.
    """

    failure_threshold: int = Field(5, ge=1)
    open_s: float = Field(15.0, gt=0)
    # Each failed trial doubles the pause, up to this.
    open_max_s: float = Field(120.0, gt=0)


class LadderSettings(_Section):
    """What to do when calls keep hanging: unload, confirm, restart, probe.

    The ladder starts when, among the last `hang_window` calls, at least `hang_threshold` hung
    and they are at least `hang_rate` of those calls: a wedged backend hangs on every call, a
    flaky one now and then, and only the first is cured by unloading (a run of three hangs is
    common when 40 % of calls hang). `restart_command` is run for the `ollama` backend (argv, no
    shell); the embedded worker is respawned instead.
    """

    hang_threshold: int = Field(3, ge=1)  # the fewest hangs in the window that start the ladder
    # The recent calls the hang rate is taken over (fewer right after start or a climb).
    hang_window: int = Field(10, ge=1, le=1000)
    # The share of those calls that must have hung; 0.9 tolerates one answer in ten.
    hang_rate: float = Field(0.9, gt=0, le=1)
    unload_timeout_s: float = Field(10.0, gt=0)
    confirm_timeout_s: float = Field(5.0, gt=0)
    restart_command: tuple[str, ...] = ("systemctl", "restart", "ollama")
    restart_timeout_s: float = Field(60.0, gt=0)
    restart_budget_per_hour: int = Field(4, ge=0)
    restart_backoff_s: float = Field(10.0, ge=0)  # doubled after each restart, up to 10 min
    probe_timeout_s: float = Field(60.0, gt=0)  # how long to wait for a healthy backend

    @model_validator(mode="after")
    def _threshold_fits_the_window(self) -> LadderSettings:
        if self.hang_threshold > self.hang_window:
            raise ValueError(
                "hang_threshold must not exceed hang_window (the window holds that many calls)"
            )
        return self


class EmbedderSettings(_Section):
    """The embedding model.

    `onnx` runs MiniLM in-process (an empty `model_dir` means the pinned, packaged MiniLM);
    `ollama` calls `/api/embed` on the server at `url` for `model`. Switching either, or changing
    a task prefix, changes the fingerprint, and the next sync re-embeds.
    """

    backend: Literal["onnx", "ollama"] = "onnx"
    model_dir: UserPath | None = None
    model_name: str = "all-MiniLM-L6-v2-int8"
    batch_size: int = Field(4, ge=1, le=512)
    threads: int = Field(2, ge=1, le=64)
    max_tokens: int = Field(256, ge=8, le=8192)
    url: str = "http://127.0.0.1:11434"
    model: str = "nomic-embed-text"
    keep_alive: KeepAlive = "5m"
    num_ctx: int = Field(2048, ge=16)
    # Task prefixes some models were trained with (nomic-embed-text: "search_query: " and
    # "search_document: "), put before each query and each chunk; part of the fingerprint.
    query_prefix: str = Field("", max_length=200)
    document_prefix: str = Field("", max_length=200)
    # Micro-batching of queries (`embed.batching`): the model embeds one batch of queries at a
    # time, at most `query_batch_max` (1 turns batching off); a query finding it idle lingers
    # `query_batch_wait_ms` for others (0: runs at once).
    query_batch_wait_ms: float = Field(0.0, ge=0, le=50)
    query_batch_max: int = Field(16, ge=1, le=256)
    deadlines: EmbedderDeadlineSettings = EmbedderDeadlineSettings()
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    ladder: LadderSettings = LadderSettings()


class GeneratorSettings(_Section):
    """The answer generator behind `/ask`, always reached through Ollama's HTTP API.

    `embedded` starts `ragvisor worker` (llama.cpp, see `[worker]`) as a child process and talks
    to it on loopback; `ollama` talks to the server at `url`; `none` turns `/ask` off.
    """

    backend: Literal["embedded", "ollama", "none"] = "embedded"
    url: str = "http://127.0.0.1:11434"
    model: str = "gemma3-270m"
    num_ctx: int = Field(2048, ge=256)
    num_predict: int = Field(256, ge=1)
    temperature: float = Field(0.2, ge=0, le=2)
    # How long the backend keeps the model loaded after a call (Ollama syntax: "5m", "30s",
    # "0" unloads at once, "-1" keeps it forever).
    keep_alive: KeepAlive = "5m"
    deadlines: DeadlineSettings = DeadlineSettings()
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    ladder: LadderSettings = LadderSettings()

    @model_validator(mode="after")
    def _answer_fits(self) -> GeneratorSettings:
        if self.num_predict >= self.num_ctx:
            raise ValueError("num_predict must be smaller than num_ctx (the prompt needs room)")
        return self


class WorkerSettings(_Section):
    """`ragvisor worker`: the embedded generator, llama.cpp behind Ollama's API.

    An empty `model_path` means the pinned Gemma 3 270M GGUF, assembled under
    `<data_dir>/models/` on first use.
    """

    model_path: UserPath | None = None
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)  # 0: a free loopback port chosen at start
    threads: int = Field(2, ge=1, le=64)
    batch_size: int = Field(256, ge=8, le=8192)  # prompt tokens evaluated per llama.cpp batch
    # Default keep-alive when a request names none (the role of OLLAMA_KEEP_ALIVE).
    keep_alive: KeepAlive = "5m"
    start_timeout_s: float = Field(60.0, gt=0)
    stop_timeout_s: float = Field(5.0, gt=0)
    restart_backoff_max_s: float = Field(30.0, gt=0)
    # Reach the worker through this URL instead of directly — a `ragvisor faultproxy` in front
    # of it, to rehearse failures. Empty: talk to the worker directly.
    proxy_url: str = ""


class RerankSettings(_Section):
    """`[rerank]`: a cross-encoder that rescores the best `candidates` chunks of a search.

    No package registry carries a cross-encoder model, so the operator supplies one: `model_dir`
    is a folder holding an ONNX export (`model.onnx` or `model_quantized.onnx`, at its top or in
    `onnx/`) and its `tokenizer.json`; `sha256`, when set, pins the model file, checked at load.
    """

    enabled: bool = False
    model_dir: UserPath | None = Field(None, validate_default=True)
    candidates: int = Field(20, ge=1, le=200)
    threads: int = Field(1, ge=1, le=64)
    max_tokens: int = Field(256, ge=8, le=8192)  # query and passage together, special tokens in
    sha256: str = Field("", pattern=r"^([0-9a-fA-F]{64})?$")

    @field_validator("model_dir")
    @classmethod
    def _required_when_enabled(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # A field validator, not a model one, so the error is reported at `rerank.model_dir`.
        if value is None and info.data.get("enabled"):
            raise ValueError(
                "required when rerank.enabled is true: the folder of an ONNX cross-encoder "
                "export (docs/http-api.md#reranking)"
            )
        return value


class AnswerCacheSettings(_Section):
    """`[ask.cache]`: answers kept for the same question (exact) or one that means the same
    (semantic), scoped by the knowledge base's version and both models (docs/ask.md)."""

    enabled: bool = True
    max_entries: int = Field(512, ge=1)
    # Least cosine similarity of two questions' embeddings for a semantic hit; above 1: off.
    # 0.90: the lowest with no false hit in bench/answer_cache_bench.py (MiniLM), docs/ask.md.
    semantic_threshold: float = Field(0.90, ge=0, le=1.01)
    # How many of the best retrieved passages must be the cached answer's, in order; 0: off.
    # 1 cuts false hits 2.8-5.3 times at equal thresholds for 5-18 % of the true hits.
    semantic_same_top_passages: int = Field(1, ge=0, le=200)
    # Oldest an answer may be served (a model re-pulled under the same name is not seen
    # otherwise); 0 = no age limit.
    ttl_s: float = Field(86_400.0, ge=0)


class AskSettings(_Section):
    """Limits of `POST /ask`."""

    default_k: int = Field(4, ge=1)
    max_k: int = Field(20, ge=1, le=200)
    max_question_chars: int = Field(1000, ge=1)
    # Tokens held back for the chat template and the instructions' framing.
    template_margin_tokens: int = Field(48, ge=0)
    # Count each chunk's prompt tokens once, after the sync that stores it, with the generator
    # model's tokenizer, so /ask packs by lookup instead of asking the worker per question.
    stored_token_counts: bool = True
    # The GGUF whose vocabulary counts them: empty means the embedded worker's model; with
    # `generator.backend = "ollama"` point it at the Ollama model's GGUF (its blob) to have
    # counts at all — Ollama has no tokenizer endpoint.
    token_count_model: UserPath | None = None
    cache: AnswerCacheSettings = AnswerCacheSettings()

    @model_validator(mode="after")
    def _k_within_max(self) -> AskSettings:
        if self.default_k > self.max_k:
            raise ValueError("default_k must not exceed max_k")
        return self


class ServerSettings(_Section):
    """The HTTP server and its request limits."""

    host: str = "127.0.0.1"
    port: int = Field(8321, ge=0, le=65535)
    admin_token: AdminToken = ""
    default_k: int = Field(5, ge=1)
    max_k: int = Field(50, ge=1, le=1000)
    max_query_chars: int = Field(1000, ge=1)
    snippet_chars: int = Field(240, ge=20)
    shutdown_grace_s: float = Field(10.0, ge=0)
    # A request body larger than this is refused with 413 before it is read. A question of
    # ask.max_question_chars (1000) is at most 12 KB even with every character \u-escaped.
    max_body_bytes: int = Field(65_536, ge=1024)
    # JSON bodies nested deeper are refused (400): the parser recurses once per level.
    max_json_depth: int = Field(32, ge=1, le=200)
    # From a connection's start, or a later request's first byte, until the request's whole
    # head (request line and headers) has arrived; a slower client is disconnected.
    header_timeout_s: float = Field(10.0, gt=0)
    # From the end of the head until the whole body has arrived; slower is answered 408.
    body_timeout_s: float = Field(30.0, gt=0)
    # An idle connection between two requests is closed after this (whole seconds, as uvicorn
    # takes them).
    keep_alive_s: int = Field(5, ge=1)
    # Open connections; past it the one idle longest is closed, or, when every connection has
    # a request in flight, the newcomer's request is answered 503.
    max_connections: int = Field(256, ge=1, le=100_000)

    @model_validator(mode="after")
    def _k_within_max(self) -> ServerSettings:
        if self.default_k > self.max_k:
            raise ValueError("default_k must not exceed max_k")
        return self


class SyncSettings(_Section):
    """When the daemon syncs on its own."""

    interval_s: float = Field(300.0, ge=0)
    on_start: bool = True
    # Skip reading a file whose size, mtime, ctime and inode are those of its stored version.
    quick_check: bool = True
    # At shutdown, how long to wait for a running sync to stop after its current batch.
    stop_timeout_s: float = Field(30.0, ge=0)
    # The store-wide sync lease (several daemons on one Neo4j): renewed every third of this
    # while syncing; a daemon that dies mid-sync loses it this long after its last renewal.
    lease_s: float = Field(30.0, ge=1.0, le=3600.0)
    # Watch the corpus folders (inotify, through watchfiles) and sync the changed files once
    # no change came for `watch_debounce_s`, or `watch_max_wait_s` after the first one.
    watch: bool = True
    watch_debounce_s: float = Field(0.3, ge=0.05, le=60.0)
    watch_max_wait_s: float = Field(5.0, ge=0.1, le=600.0)
    # How long `PUT`/`DELETE /documents/{path}` wait for a running sync before a 503.
    document_wait_s: float = Field(10.0, ge=0, le=600.0)

    @model_validator(mode="after")
    def _wait_covers_debounce(self) -> SyncSettings:
        if self.watch_max_wait_s < self.watch_debounce_s:
            raise ValueError("watch_max_wait_s must not be smaller than watch_debounce_s")
        return self


class LaneSettings(_Section):
    """One admission lane: requests running at once and requests allowed to wait."""

    max_concurrent: int = Field(1, ge=1, le=1024)
    max_queue: int = Field(8, ge=0, le=100_000)


class SearchLaneSettings(LaneSettings):
    """Searches are milliseconds each: several at once, a deep queue."""

    max_concurrent: int = Field(4, ge=1, le=1024)
    max_queue: int = Field(64, ge=0, le=100_000)


class AskLaneSettings(LaneSettings):
    """One answer at a time on a CPU box (Ollama's NUM_PARALLEL=1), a few waiting."""


class SyncLaneSettings(LaneSettings):
    """Syncs from the admin endpoint: one at a time, none waiting (409/503 instead)."""

    max_queue: int = Field(0, ge=0, le=100_000)


class AdmissionSettings(_Section):
    """Bounded admission per lane; a full lane answers 503 with a `Retry-After` estimated from
    the lane's measured service time.
    """

    search: SearchLaneSettings = SearchLaneSettings()
    ask: AskLaneSettings = AskLaneSettings()
    sync: SyncLaneSettings = SyncLaneSettings()


class MemorySettings(_Section):
    """The memory guard: what it measures, every `interval_s`, and where it acts.

    Below `low_available_mb` (or with swap-in or PSI above its mark) the box is under pressure:
    idle models are unloaded, generator first, and `/ask` answers extractively. Below
    `critical_available_mb` `/ask` is shed with 503. `/search` keeps answering throughout.
    """

    enabled: bool = True
    interval_s: float = Field(5.0, gt=0)
    # The whole stack (daemon, worker, Ollama, Neo4j) may use this much RSS; 0 = no budget.
    budget_mb: int = Field(0, ge=0)
    low_available_mb: int = Field(400, ge=0)
    critical_available_mb: int = Field(200, ge=0)
    swap_in_mb_s: float = Field(4.0, ge=0)  # sustained swap-in above this = pressure; 0 = off
    psi_some_avg10: float = Field(40.0, ge=0, le=100)  # /proc/pressure/memory; 0 = off
    # Room kept free beyond a model's size before the guard lets it load.
    model_headroom_mb: int = Field(256, ge=0)
    ollama_process: str = "ollama"
    neo4j_process: str = "neo4j"
    ollama_pid_file: UserPath | None = None
    neo4j_pid_file: UserPath | None = None

    @model_validator(mode="after")
    def _ordered(self) -> MemorySettings:
        if self.critical_available_mb > self.low_available_mb:
            raise ValueError("critical_available_mb must not exceed low_available_mb")
        return self


class DoctorSettings(_Section):
    """What `ragvisor doctor` compares the host with: where it reads and what the deploy set.

    Meant to be rendered by the deploy from the variables the other roles use
    (`swap_file_size_mb`, `swap_swappiness`, `neo4j_conf_path`, ...), so drift shows up here.
    """

    proc_dir: UserPath = Path("/proc")  # the host's /proc (e.g. /host/proc in a container)
    expected_swap_mb: int = Field(0, ge=0)  # active swap the deploy made; 0: no expectation
    max_swappiness: int = Field(10, ge=0, le=200)
    neo4j_conf_path: UserPath = Path("/etc/neo4j/neo4j.conf")
    # Heap + page cache the deploy allows Neo4j; 0: judged against RAM and memory.budget_mb.
    neo4j_budget_mb: int = Field(0, ge=0)
    ollama_dropin_path: UserPath = Path("/etc/systemd/system/ollama.service.d/override.conf")
    ollama_max_loaded_models: int = Field(1, ge=1)
    ollama_num_parallel: int = Field(1, ge=1)
    timeout_s: float = Field(3.0, gt=0)  # asking the generator backend for the model's context


class UiSettings(_Section):
    """The daemon's own web pages (`GET /`, `/ui/status`, `/docs`) and the status page's trend
    history (docs/web.md)."""

    # Off: no pages, no offline API docs and no history ring buffer; the JSON API is unchanged.
    enabled: bool = True
    # How far back the status page's plots reach: the ring buffer holds one sample per
    # memory.interval_s over this window (720 samples at the defaults).
    history_s: float = Field(3600.0, ge=60, le=86_400)


class Settings(_Section):
    """Every setting of ragvisor, one frozen value built once at start."""

    corpus: CorpusSettings = CorpusSettings()
    store: StoreSettings = StoreSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    generator: GeneratorSettings = GeneratorSettings()
    worker: WorkerSettings = WorkerSettings()
    ask: AskSettings = AskSettings()
    server: ServerSettings = ServerSettings()
    sync: SyncSettings = SyncSettings()
    admission: AdmissionSettings = AdmissionSettings()
    memory: MemorySettings = MemorySettings()
    doctor: DoctorSettings = DoctorSettings()
    rerank: RerankSettings = RerankSettings()
    ui: UiSettings = UiSettings()
