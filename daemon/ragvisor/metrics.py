"""Every Prometheus metric of the daemon, declared in one place.

Each daemon owns one :class:`Metrics` with its own registry (tests run several daemons in one
process, and a global registry would mix them). Components receive the `Metrics` object and
update the collectors named here; nothing else defines a metric. `GET /metrics` renders
:meth:`Metrics.render`. Names follow Prometheus conventions: base units (seconds, bytes),
`_total` for counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Latency buckets from a 2 ms search to a 5-minute answer on a slow CPU.
LATENCY_BUCKETS = (
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300,
)  # fmt: skip
TOKENS_PER_S_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 200)

BREAKER_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}
MEMORY_LEVEL_VALUE = {"ok": 0, "pressure": 1, "critical": 2}

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The daemon's collectors, registered in a private registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        # HTTP
        self.request_seconds = Histogram(
            "ragvisor_http_request_duration_seconds",
            "Time from request to the last byte of the response, per endpoint.",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "ragvisor_ask_time_to_first_token_seconds",
            "Time from an /ask request to the first answer token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "ragvisor_ask_tokens_per_second",
            "Generation speed of answers, as the backend measured it.",
            buckets=TOKENS_PER_S_BUCKETS,
            registry=r,
        )
        self.degraded_total = Counter(
            "ragvisor_degraded_responses_total",
            "Responses served without a backend (keyword search, extractive answer), by reason.",
            ["endpoint", "reason"],
            registry=r,
        )
        self.answer_cache_hits_total = Counter(
            "ragvisor_answer_cache_hits_total",
            "/ask answers served from the answer cache, by kind: exact, semantic.",
            ["kind"],
            registry=r,
        )
        self.answer_cache_misses_total = Counter(
            "ragvisor_answer_cache_misses_total",
            "/ask requests the answer cache could not answer.",
            registry=r,
        )
        self.answer_cache_evictions_total = Counter(
            "ragvisor_answer_cache_evictions_total",
            "Answers dropped from the cache, by reason: lru (full), expired (ttl_s), "
            "invalidated (the knowledge base or a model changed).",
            ["reason"],
            registry=r,
        )
        self.answer_cache_entries = Gauge(
            "ragvisor_answer_cache_entries",
            "Answers in the answer cache now.",
            registry=r,
        )
        self.truncated_total = Counter(
            "ragvisor_truncated_prompts_total",
            "Answers whose prompt the backend cut (prompt_eval_count shows it).",
            registry=r,
        )
        # Connections (ragvisor.web.connections)
        self.http_connections = Gauge(
            "ragvisor_http_connections",
            "Open HTTP connections: active (a request in flight) or idle (waiting for one).",
            ["state"],
            registry=r,
        )
        self.http_connections_closed_total = Counter(
            "ragvisor_http_connections_closed_total",
            "Connections the daemon closed on its own, by reason: header_timeout, keep_alive, "
            "evicted (idle, to make room past server.max_connections), over_capacity (answered "
            "503), unread_body.",
            ["reason"],
            registry=r,
        )
        # Admission lanes
        self.migration_chunks = Gauge(
            "ragvisor_migration_chunks",
            "A model change in progress: distinct chunk texts with a vector of the new model "
            "(done) and in all (total); both 0 when no generation is being built.",
            ["state"],
            registry=r,
        )
        self.lane_waiting = Gauge(
            "ragvisor_lane_queue_depth", "Requests waiting in an admission lane.", ["lane"],
            registry=r,
        )  # fmt: skip
        self.lane_active = Gauge(
            "ragvisor_lane_active", "Requests running in an admission lane.", ["lane"], registry=r
        )
        self.lane_rejected_total = Counter(
            "ragvisor_lane_rejected_total",
            "Requests answered 503 because their lane was full.",
            ["lane"],
            registry=r,
        )
        self.lane_wait_seconds = Histogram(
            "ragvisor_lane_wait_seconds",
            "Time requests spent queued before running.",
            ["lane"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Backend supervision
        self.backend_calls_total = Counter(
            "ragvisor_backend_calls_total",
            "Backend call attempts by outcome (ok, timeout, unavailable, error, rejected, oom).",
            ["backend", "outcome"],
            registry=r,
        )
        self.backend_timeouts_total = Counter(
            "ragvisor_backend_timeouts_total",
            "Backend calls cancelled at a deadline, by phase (connect, first_token, stall, total).",
            ["backend", "phase"],
            registry=r,
        )
        self.backend_retries_total = Counter(
            "ragvisor_backend_retries_total", "Backend calls retried.", ["backend"], registry=r
        )
        self.backend_restarts_total = Counter(
            "ragvisor_backend_restarts_total",
            "Backend restarts by the escalation ladder.",
            ["backend"],
            registry=r,
        )
        self.ladder_steps_total = Counter(
            "ragvisor_ladder_steps_total",
            "Escalation ladder steps (unload, confirm, restart, probe) by outcome.",
            ["backend", "step", "outcome"],
            registry=r,
        )
        self.ladder_step_seconds = Histogram(
            "ragvisor_ladder_step_duration_seconds",
            "Duration of escalation ladder steps.",
            ["backend", "step"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.breaker_state = Gauge(
            "ragvisor_breaker_state",
            "Circuit breaker per backend: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            registry=r,
        )
        self.breaker_transitions_total = Counter(
            "ragvisor_breaker_transitions_total",
            "Circuit breaker state changes, by the state entered.",
            ["backend", "state"],
            registry=r,
        )
        # Memory
        self.memory_available_bytes = Gauge(
            "ragvisor_memory_available_bytes", "MemAvailable at the last guard check.", registry=r
        )
        self.memory_total_bytes = Gauge(
            "ragvisor_memory_total_bytes", "Physical memory of the host.", registry=r
        )
        self.swap_used_bytes = Gauge("ragvisor_swap_used_bytes", "Swap in use.", registry=r)
        self.swap_in_bytes_per_second = Gauge(
            "ragvisor_swap_in_bytes_per_second", "Swap-in rate between guard checks.", registry=r
        )
        self.swap_out_bytes_per_second = Gauge(
            "ragvisor_swap_out_bytes_per_second", "Swap-out rate between guard checks.", registry=r
        )
        self.memory_psi_some_avg10 = Gauge(
            "ragvisor_memory_pressure_some_avg10",
            "/proc/pressure/memory 'some' avg10 (percent of time stalled), when the kernel has it.",
            registry=r,
        )
        self.process_rss_bytes = Gauge(
            "ragvisor_process_rss_bytes",
            "Resident memory of the processes the guard watches (daemon, worker, ollama, neo4j).",
            ["process"],
            registry=r,
        )
        self.memory_level = Gauge(
            "ragvisor_memory_level", "Memory guard level: 0 ok, 1 pressure, 2 critical.", registry=r
        )
        self.memory_actions_total = Counter(
            "ragvisor_memory_actions_total",
            "Memory guard actions (unload_generator, unload_embedder, shed_ask) by result.",
            ["action", "result"],
            registry=r,
        )
        # Sync
        self.sync_runs_total = Counter(
            "ragvisor_sync_runs_total", "Syncs by trigger and outcome.", ["trigger", "outcome"],
            registry=r,
        )  # fmt: skip
        self.sync_documents_total = Counter(
            "ragvisor_sync_documents_total",
            "Documents handled by syncs, by kind (new, changed, deleted, unchanged).",
            ["kind"],
            registry=r,
        )
        self.sync_embeddings_total = Counter(
            "ragvisor_sync_embeddings_total", "Chunks embedded by syncs.", registry=r
        )
        self.last_sync_timestamp = Gauge(
            "ragvisor_last_sync_success_timestamp_seconds",
            "Unix time the last successful sync finished.",
            registry=r,
        )
        self.last_sync_duration_seconds = Gauge(
            "ragvisor_last_sync_duration_seconds", "Duration of the last finished sync.", registry=r
        )

    def render(self) -> bytes:
        """The text exposition format of every collector."""
        return generate_latest(self.registry)
