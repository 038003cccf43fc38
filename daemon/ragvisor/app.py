"""The composition root: one `Settings` value in, every object of the daemon out.

Nothing else in the package constructs a store, an embedder, a scheduler or a web app; the CLI
calls the functions here. Importing this module has no side effects.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from ragvisor.admin_token import load_admin_token
from ragvisor.allocator import tune_allocator
from ragvisor.application.answerer import Answerer
from ragvisor.application.ask_cache import AskCache
from ragvisor.application.document_writer import DocumentWriter
from ragvisor.application.generations import EmbedderLoader, ModelGenerations
from ragvisor.application.sync_lease import SyncLease
from ragvisor.application.sync_runner import SyncRunner
from ragvisor.application.token_counts import TokenCountJob
from ragvisor.config import (
    ENV_PREFIX,
    NOT_SETTINGS,
    BreakerSettings,
    DeadlineSettings,
    EmbedderSettings,
    LadderSettings,
    RetrySettings,
    Settings,
    settings_env,
)
from ragvisor.core.answer_cache import AnswerCache, generator_identity
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.documents import CorpusSpec
from ragvisor.core.protocols import Embedder, Store
from ragvisor.core.retrieval import QueryLimits, Retriever
from ragvisor.datadir import tighten_data_dir
from ragvisor.embed.batching import batched
from ragvisor.embed.ollama import OllamaEmbedder
from ragvisor.embed.onnx import build_onnx_embedder
from ragvisor.embed.prefixes import TaskPrefixes, for_documents, for_queries
from ragvisor.errors import ConfigError, StoreError
from ragvisor.llm.gguf import resolve_gguf
from ragvisor.llm.token_counter import GgufTokenCounter
from ragvisor.metrics import Metrics
from ragvisor.ollama.client import OllamaClient
from ragvisor.ollama.wire import Deadlines
from ragvisor.rerank import build_reranker
from ragvisor.runtime.corpus_watch import CorpusWatch
from ragvisor.runtime.history import History
from ragvisor.runtime.services import Services
from ragvisor.store.sqlite import SqliteStore
from ragvisor.supervise.admission import Lane
from ragvisor.supervise.breaker import CircuitBreaker
from ragvisor.supervise.calls import SupervisedEmbedder, SupervisedGenerator, Supervisor
from ragvisor.supervise.controls import EmbedderControl, OllamaControl, WorkerControl
from ragvisor.supervise.ladder import BackendControl, EscalationLadder
from ragvisor.supervise.memory import MemoryGuard, probe_from_env
from ragvisor.supervise.memory.preload import GeneratorMemory, IdleModelUnloader
from ragvisor.supervise.retry import RetryPolicy
from ragvisor.supervise.worker_process import WorkerProcess, free_loopback_port


def corpus_spec(settings: Settings) -> CorpusSpec:
    """Corpus settings as the core's scan specification (roots made absolute)."""
    c = settings.corpus
    return CorpusSpec(
        roots=tuple(Path(p).expanduser().absolute() for p in c.paths),
        include=c.include,
        exclude=c.exclude,
        max_file_bytes=c.max_file_bytes,
    )


def check_corpus_roots(settings: Settings) -> None:
    """Refuse to start on a corpus folder that does not exist (a typo, usually).

    Raises ConfigError naming the key and the path. A folder that disappears later (an
    unmounted disk) is handled by the sync, which keeps its stored documents.
    """
    for index, path in enumerate(settings.corpus.paths):
        full = Path(path).expanduser().absolute()
        if not full.is_dir():
            raise ConfigError(f"corpus.paths[{index}]: {full} does not exist or is not a folder")


def deadlines(d: DeadlineSettings) -> Deadlines:
    """One backend call's deadlines from `[<backend>.deadlines]`."""
    return Deadlines(
        connect_s=d.connect_s, first_token_s=d.first_token_s, stall_s=d.stall_s, total_s=d.total_s
    )


def build_supervisor(
    backend: str,
    control: BackendControl,
    *,
    retry: RetrySettings,
    breaker_settings: BreakerSettings,
    ladder_settings: LadderSettings,
    metrics: Metrics,
) -> Supervisor:
    """Retries, breaker and ladder of one backend, all logging under `component=supervise`."""
    log = structlog.get_logger(component="supervise")
    breaker = CircuitBreaker(backend, breaker_settings, metrics=metrics, log=log)
    ladder = EscalationLadder(backend, control, ladder_settings, breaker, metrics=metrics, log=log)
    return Supervisor(
        backend, RetryPolicy.from_settings(retry), breaker, ladder, metrics=metrics, log=log
    )


def build_remote_embedder(e: EmbedderSettings) -> OllamaEmbedder:
    """`[embedder] backend = "ollama"`: the client, connected (its fingerprint resolved).

    Raises BackendUnavailable when Ollama does not answer, ConfigError when the model is not
    pulled: the daemon cannot know which vectors to serve without the model's identity.
    """
    embedder = OllamaEmbedder(
        e.url,
        model=e.model,
        batch_size=e.batch_size,
        num_ctx=e.num_ctx,
        keep_alive=e.keep_alive,
        deadlines=deadlines(e.deadlines),
    )
    try:
        embedder.connect()
    except BaseException:
        embedder.close()
        raise
    return embedder


def store_password(settings: Settings) -> str:
    """The Neo4j password: `store.password_file`'s first line, or `RAGVISOR_STORE__PASSWORD`.

    Raises ConfigError naming the key when neither is set or the file cannot be read. The value
    goes to the driver and nowhere else.
    """
    s = settings.store
    if s.password is not None:
        return s.password.get_secret_value()
    if s.password_file is None:
        raise ConfigError(
            "store.backend = neo4j needs store.password_file or RAGVISOR_STORE__PASSWORD"
        )
    try:
        lines = Path(s.password_file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"store.password_file: cannot read {s.password_file}: {exc}") from exc
    if not lines or not lines[0]:
        raise ConfigError(f"store.password_file: {s.password_file} is empty")
    return lines[0]


def build_store(settings: Settings) -> Store:
    """`[store]` as a store: SQLite under `data_dir`, or the Neo4j database at `uri`.

    Neo4j is not contacted here (see `Neo4jStore`): a daemon whose database is away starts and
    says so on `/readyz`. Raises ConfigError or StoreError.
    """
    s = settings.store
    if s.backend == "neo4j":
        from ragvisor.store.neo4j_store import Neo4jStore  # the driver only when it is used

        return Neo4jStore(
            s.uri,
            user=s.user,
            password=store_password(settings),
            database=s.database,
            connect_timeout_s=s.connect_timeout_s,
            query_timeout_s=s.query_timeout_s,
        )
    return SqliteStore(Path(s.data_dir), busy_timeout_s=s.busy_timeout_s)


def query_embedder(model: Embedder, e: EmbedderSettings) -> Embedder:
    """What searches embed queries with: the model behind its query prefix, concurrent queries
    batched into one call (`embed.batching`; `embedder.query_batch_max = 1` turns it off)."""
    return batched(
        for_queries(model, TaskPrefixes.from_settings(e)),
        wait_ms=e.query_batch_wait_ms,
        max_texts=e.query_batch_max,
    )


def embedder_loader(data_dir: Path) -> EmbedderLoader:
    """Loads the model of a generation from the `[embedder]` settings the store recorded for it
    (`application.generations`): the previous model, for queries during a model change, with
    the query prefix it was used with."""

    def load(recorded: Mapping[str, Any]) -> Embedder:
        try:
            e = EmbedderSettings.model_validate(dict(recorded))
        except ValidationError as exc:
            raise ConfigError(f"the recorded embedder settings are not valid now: {exc}") from exc
        model: Embedder = (
            build_remote_embedder(e) if e.backend == "ollama" else build_onnx_embedder(e, data_dir)
        )
        return query_embedder(model, e)

    return load


def build_services(settings: Settings) -> Services:
    """Open the store, load the model and wire the retriever and the sync runner.

    Raises ConfigError, ModelFileError or StoreError with a message an operator can act on.
    """
    log = structlog.get_logger(component="app")
    tuned = tune_allocator()  # before the model's and the server's threads exist
    if tuned:
        log.debug("memory.allocator_tuned", **tuned)
    check_corpus_roots(settings)
    started = time.perf_counter()
    metrics = Metrics()
    data_dir = Path(settings.store.data_dir)
    tighten_data_dir(data_dir, structlog.get_logger(component="store"))
    admin_token = load_admin_token(settings.server.admin_token, data_dir, log)
    store = build_store(settings)
    supervisors: dict[str, Supervisor] = {}
    remote: OllamaEmbedder | None = None
    model: Embedder
    try:
        if settings.embedder.backend == "ollama":
            remote = build_remote_embedder(settings.embedder)
            e = settings.embedder
            supervisors["embedder"] = build_supervisor(
                "embedder",
                EmbedderControl(remote, e.ladder.restart_command),
                retry=e.retry,
                breaker_settings=e.breaker,
                ladder_settings=e.ladder,
                metrics=metrics,
            )
            model = SupervisedEmbedder(remote, supervisors["embedder"])
            where = remote.base_url
        else:
            onnx = build_onnx_embedder(settings.embedder, data_dir)
            model, where = onnx, str(onnx.model_dir)
        reranker = build_reranker(settings.rerank)  # None unless [rerank] is enabled
    except BaseException:
        store.close()
        raise
    # The one place that tells documents from queries: the sync embeds chunks through the
    # first, every search its query through the second (each with its task prefix, if any).
    prefixes = TaskPrefixes.from_settings(settings.embedder)
    embedder = for_documents(model, prefixes)
    queries = query_embedder(model, settings.embedder)
    log.info(
        "app.embedder_loaded",
        backend=settings.embedder.backend,
        model=embedder.fingerprint.name,
        fingerprint=embedder.fingerprint.key,
        model_dir=where,
        query_prefix=prefixes.query,
        document_prefix=prefixes.document,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    generations = ModelGenerations(
        store,
        embedder,
        settings.embedder.model_dump(mode="json"),
        queries=queries,
        load_embedder=embedder_loader(data_dir),
        log=structlog.get_logger(component="store"),
        metrics=metrics,
    )
    try:
        generations.reconcile()
    except StoreError as exc:  # Neo4j away: the first sync (or the store watch) reconciles
        log.warning("store.generations_unknown", error=str(exc))
    s = settings.server
    retriever = Retriever(
        store,
        queries,
        QueryLimits(
            max_query_chars=s.max_query_chars, max_k=s.max_k, snippet_chars=s.snippet_chars
        ),
        serving=lambda: generations.serving,
        reranker=reranker,
        rerank_candidates=settings.rerank.candidates,
    )
    runner = SyncRunner(
        corpus=corpus_spec(settings),
        chunking=ChunkingSpec(
            size_chars=settings.corpus.chunk_size_chars,
            overlap_chars=settings.corpus.chunk_overlap_chars,
            title_context=settings.corpus.chunk_title,
        ),
        store=store,
        embedder=embedder,
        lock_path=data_dir / "sync.lock",
        quick_check=settings.sync.quick_check,
        log=structlog.get_logger(component="sync"),
        metrics=metrics,
        before_sync=remote.connect if remote is not None else None,
        lease=SyncLease(store, settings.sync.lease_s, structlog.get_logger(component="sync")),
        generations=generations,
        may_sync=settings.sync.interval_s > 0 or settings.sync.on_start,
    )
    a = settings.admission
    services = Services(
        settings=settings,
        store=store,
        embedder=embedder,
        retriever=retriever,
        sync_runner=runner,
        admin_token=admin_token,
        metrics=metrics,
        lanes={
            "search": Lane("search", a.search, initial_service_s=0.05, metrics=metrics),
            "ask": Lane("ask", a.ask, initial_service_s=10.0, metrics=metrics),
            "sync": Lane("sync", a.sync, initial_service_s=30.0, metrics=metrics),
        },
        supervisors=supervisors,
        remote_embedder=remote,
        generations=generations,
    )
    attach_freshness(services)
    if settings.ui.enabled:
        services.history = History.for_window(settings.ui.history_s, settings.memory.interval_s)
    if settings.memory.enabled:
        services.memory_guard = build_memory_guard(services)
    return services


def managed_folder(settings: Settings) -> Path:
    """The corpus folder `PUT`/`DELETE /documents/{path}` write in: `corpus.managed_path`,
    which must be one of `corpus.paths`, or else the first of them. Raises ConfigError."""
    paths = [Path(p).expanduser().absolute() for p in settings.corpus.paths]
    chosen = settings.corpus.managed_path
    if chosen is None:
        return paths[0]
    full = Path(chosen).expanduser().absolute()
    if full.resolve() not in {p.resolve() for p in paths}:
        raise ConfigError(f"corpus.managed_path: {full} is not one of corpus.paths")
    return full


def attach_freshness(services: Services) -> None:
    """The folder watch (`[sync] watch`; the lifespan starts it) and the document writer."""
    settings = services.settings
    runner = services.sync_runner
    spec = corpus_spec(settings)
    s = settings.sync
    if s.watch:
        services.corpus_watch = CorpusWatch(
            runner,
            spec,
            debounce_s=s.watch_debounce_s,
            max_wait_s=s.watch_max_wait_s,
            log=structlog.get_logger(component="watch"),
        )
    services.documents = DocumentWriter(
        managed_folder(settings),
        spec,
        runner,
        wait_s=s.document_wait_s,
        on_settled=services.corpus_watch.note_settled if services.corpus_watch else None,
    )


def build_memory_guard(services: Services) -> MemoryGuard:
    """The memory guard, watching the daemon, its worker, Ollama and Neo4j."""

    def extra_pids() -> dict[str, int | None]:
        worker = services.worker
        return {"worker": worker.pid if worker is not None else None}

    settings = services.settings.memory
    return MemoryGuard(
        probe_from_env(settings, extra_pids=extra_pids),
        settings,
        actions=IdleModelUnloader(
            services.lanes,
            generator=lambda: services.generator,
            remote_embedder=services.remote_embedder,
            sync_running=lambda: services.sync_runner.running,
        ),
        metrics=services.metrics,
        log=structlog.get_logger(component="memory"),
    )


def worker_env(settings: Settings) -> dict[str, str]:
    """The worker's environment: ours minus any RAGVISOR_ setting, plus our effective settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(ENV_PREFIX) or name[len(ENV_PREFIX) :] in NOT_SETTINGS
    }
    env.pop(ENV_PREFIX + "CONFIG", None)
    env.update(settings_env(settings, ("store", "embedder", "generator", "worker")))
    return env


def build_worker(settings: Settings) -> WorkerProcess:
    """The embedded generator's child process, configured but not started."""
    w = settings.worker
    return WorkerProcess(
        host=w.host,
        port=w.port or free_loopback_port(w.host),
        model_path=resolve_gguf(w.model_path, Path(settings.store.data_dir)),
        env=worker_env(settings),
        data_dir=Path(settings.store.data_dir),
        start_timeout_s=w.start_timeout_s,
        stop_timeout_s=w.stop_timeout_s,
        backoff_max_s=w.restart_backoff_max_s,
        log=structlog.get_logger(component="worker-process"),
    )


def build_token_counts(
    settings: Settings, store: Store, worker: WorkerProcess | None, guard: MemoryGuard | None
) -> TokenCountJob | None:
    """`ask.stored_token_counts`: the job that counts each stored chunk's prompt tokens after a
    sync, with `ask.token_count_model` or else the embedded worker's GGUF; None without one
    (Ollama without `token_count_model`: /ask estimates, as Ollama cannot count)."""
    a = settings.ask
    model = a.token_count_model or (worker.model_path if worker is not None else None)
    if not a.stored_token_counts or model is None:
        return None
    return TokenCountJob(
        store,
        GgufTokenCounter(Path(model)),
        log=structlog.get_logger(component="token_counts"),
        memory_short=guard.memory_short if guard is not None else None,
    )


def attach_generator(services: Services, *, start_worker: bool = True) -> None:
    """Wire `/ask`: start the embedded worker (or point at Ollama) and build the answerer.

    With `generator.backend = "none"` nothing is attached and `/ask` answers 503.
    Raises BackendUnavailable when the worker does not come up within its start timeout.
    """
    settings = services.settings
    g = settings.generator
    if g.backend == "none":
        return
    url = g.url
    worker: WorkerProcess | None = None
    if g.backend == "embedded":
        worker = build_worker(settings)
        services.worker = worker
        if start_worker:
            worker.spawn()  # comes up while the caller loads the index;
            # the caller then calls services.worker.wait_ready()
        # A fault proxy in front of the worker (rehearsals, tests) when `worker.proxy_url` is set.
        url = settings.worker.proxy_url or worker.url
    client = OllamaClient(
        url,
        model=g.model,
        num_ctx=g.num_ctx,
        num_predict=g.num_predict,
        temperature=g.temperature,
        keep_alive=g.keep_alive,
        deadlines=deadlines(g.deadlines),
    )
    control: BackendControl = (
        WorkerControl(client, worker)
        if worker is not None
        else OllamaControl(client, g.ladder.restart_command)
    )
    supervisor = build_supervisor(
        "generator",
        control,
        retry=g.retry,
        breaker_settings=g.breaker,
        ladder_settings=g.ladder,
        metrics=services.metrics,
    )
    services.supervisors["generator"] = supervisor
    services.generator = SupervisedGenerator(client, supervisor)
    memory = None
    if services.memory_guard is not None:
        memory = GeneratorMemory(
            services.memory_guard,
            client,
            gguf_path=worker.model_path if worker is not None else None,
            remote_embedder=services.remote_embedder,
        )
    a = settings.ask
    cache = None
    if a.cache.enabled:
        options = {"num_ctx": g.num_ctx, "num_predict": g.num_predict, "temperature": g.temperature}
        cache = AskCache(
            AnswerCache(
                max_entries=a.cache.max_entries,
                semantic_threshold=a.cache.semantic_threshold,
                same_top_passages=a.cache.semantic_same_top_passages,
                ttl_s=a.cache.ttl_s,
            ),
            store=services.store,
            serving_embedder=services.serving_embedder,
            generator_id=generator_identity(g.model, options),
            metrics=services.metrics,
        )
    services.token_counts = build_token_counts(
        settings, services.store, worker, services.memory_guard
    )
    services.answerer = Answerer(
        services.retriever,
        services.generator,
        limits=QueryLimits(max_query_chars=a.max_question_chars, max_k=a.max_k),
        margin_tokens=a.template_margin_tokens,
        is_available=worker.check_alive if worker is not None else None,
        memory_check=memory.check if memory is not None else None,
        metrics=services.metrics,
        cache=cache,
        stored_counts=services.token_counts,
    )
    if services.token_counts is not None:
        services.sync_runner.after_sync = services.token_counts.kick


def build_daemon(settings: Settings) -> Services:
    """The services with the generator attached; the embedded worker is spawned and comes up
    while the daemon loads its index (`runtime.lifecycle.run`)."""
    services = build_services(settings)
    try:
        attach_generator(services)
    except BaseException:
        services.close()
        raise
    return services


def serve(settings: Settings) -> None:
    """Run the daemon until SIGTERM/SIGINT (`runtime.lifecycle` holds the start and stop)."""
    # Imported here: the web stack, the scheduler and systemd are the daemon's alone, and the
    # CLI's other commands start faster without them.
    from ragvisor.runtime import lifecycle
    from ragvisor.runtime.sdnotify import SystemdNotifier
    from ragvisor.web.app import create_app, with_request_log
    from ragvisor.web.connections import ConnectionLimits
    from ragvisor.web.server import run_server

    started = time.perf_counter()
    notifier = SystemdNotifier.from_environ(os.environ)  # a no-op when not under systemd
    notifier.status("starting: opening the store, loading the embedder")
    services = build_daemon(settings)
    app = create_app(services, lifespan=lifecycle.lifespan(services, notifier))
    serve_http = functools.partial(
        run_server,
        with_request_log(app, services.metrics, services.history),
        host=settings.server.host,
        port=settings.server.port,
        graceful_s=settings.server.shutdown_grace_s,
        connections=ConnectionLimits.from_settings(settings.server),
        metrics=services.metrics,
    )
    lifecycle.run(services, serve_http, notifier, started=started)
