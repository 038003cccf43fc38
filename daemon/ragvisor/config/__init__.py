"""Settings: one TOML file, overridden by `RAGVISOR_<SECTION>__<KEY>` variables, validated once.

Reading the file (`read_toml`) is kept apart from turning a mapping into `Settings`
(`parse_settings`), which is pure and unit-tested. Every error names the offending key, e.g.
``sync.interval_s: Input should be greater than or equal to 0``. Values are never clamped
silently. With no file at all, the defaults of `ragvisor.config.sections` apply.
"""

from ragvisor.config.loading import (
    ENV_PREFIX,
    NOT_SETTINGS,
    env_overrides,
    load_settings,
    merge,
    parse_settings,
    read_toml,
    settings_env,
)
from ragvisor.config.sections import (
    AdmissionSettings,
    AskLaneSettings,
    AskSettings,
    BreakerSettings,
    CorpusSettings,
    DeadlineSettings,
    DoctorSettings,
    EmbedderDeadlineSettings,
    EmbedderSettings,
    GeneratorSettings,
    LadderSettings,
    LaneSettings,
    MemorySettings,
    RerankSettings,
    RetrySettings,
    SearchLaneSettings,
    ServerSettings,
    Settings,
    StoreSettings,
    SyncLaneSettings,
    SyncSettings,
    WorkerSettings,
)

__all__ = [
    "ENV_PREFIX",
    "NOT_SETTINGS",
    "AdmissionSettings",
    "AskLaneSettings",
    "AskSettings",
    "BreakerSettings",
    "CorpusSettings",
    "DeadlineSettings",
    "DoctorSettings",
    "EmbedderDeadlineSettings",
    "EmbedderSettings",
    "GeneratorSettings",
    "LadderSettings",
    "LaneSettings",
    "MemorySettings",
    "RerankSettings",
    "RetrySettings",
    "SearchLaneSettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "SyncLaneSettings",
    "SyncSettings",
    "WorkerSettings",
    "env_overrides",
    "load_settings",
    "merge",
    "parse_settings",
    "read_toml",
    "settings_env",
]
