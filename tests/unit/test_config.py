"""Settings: defaults, file < environment < flags, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragvisor.config import env_overrides, load_settings, parse_settings, settings_env
from ragvisor.errors import ConfigError


def test_defaults_apply_without_a_file():
    """With no file and no environment the embedded defaults apply."""
    settings = load_settings(None, {})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8321
    assert settings.store.backend == "sqlite"
    assert settings.embedder.backend == "onnx"
    assert settings.corpus.paths == (Path("docs"),)


def test_environment_overrides_file_and_flags_override_environment(tmp_path):
    """Precedence is defaults < TOML file < RAGVISOR_<SECTION>__<KEY> < command-line flags."""
    config = tmp_path / "ragvisor.toml"
    config.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[sync]\ninterval_s = 10\n')
    env = {"RAGVISOR_SERVER__PORT": "9100", "RAGVISOR_CORPUS__PATHS": '["a", "b"]'}
    settings = load_settings(config, env, {"server": {"host": "127.0.0.2"}})
    assert settings.server.port == 9100
    assert settings.server.host == "127.0.0.2"
    assert settings.sync.interval_s == 10
    assert settings.corpus.paths == (Path("a"), Path("b"))


def test_environment_values_are_read_as_toml_when_they_parse():
    """Numbers and lists in the environment become numbers and lists; other text stays text."""
    nested = env_overrides(
        {"RAGVISOR_SYNC__ON_START": "false", "RAGVISOR_SERVER__HOST": "0.0.0.0", "HOME": "/x"}
    )
    assert nested == {"sync": {"on_start": False}, "server": {"host": "0.0.0.0"}}


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"sync": {"interval_s": -1}}, "sync.interval_s"),
        ({"server": {"port": "eighty"}}, "server.port"),
        ({"server": {"colour": "blue"}}, "server.colour: unknown key"),
        ({"widgets": {}}, "widgets: unknown key"),
        ({"corpus": {"chunk_size_chars": 200, "chunk_overlap_chars": 300}}, "corpus"),
        ({"server": {"default_k": 60, "max_k": 50}}, "server"),
        ({"server": {"max_body_bytes": 100}}, "server.max_body_bytes"),
        ({"server": {"max_json_depth": 5000}}, "server.max_json_depth"),
        ({"server": {"header_timeout_s": 0}}, "server.header_timeout_s"),
        ({"server": {"keep_alive_s": 0.5}}, "server.keep_alive_s"),
        ({"server": {"max_connections": 0}}, "server.max_connections"),
        ({"generator": {"ladder": {"hang_rate": 0}}}, "generator.ladder.hang_rate"),
        ({"generator": {"ladder": {"hang_rate": 1.5}}}, "generator.ladder.hang_rate"),
        ({"embedder": {"ladder": {"hang_window": 0}}}, "embedder.ladder.hang_window"),
        (
            {"embedder": {"ladder": {"hang_threshold": 12}}},
            "embedder.ladder: Value error, hang_threshold must not exceed hang_window",
        ),
        ({"embedder": {"query_prefix": "x" * 201}}, "embedder.query_prefix"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_key(data, named):
    """A bad value is refused with a message that names its key, never clamped."""
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_settings(data)


def test_bad_environment_variable_names_the_key():
    """An environment override with an invalid value names the dotted key."""
    with pytest.raises(ConfigError, match=r"embedder\.batch_size"):
        load_settings(None, {"RAGVISOR_EMBEDDER__BATCH_SIZE": "0"})


def test_malformed_or_missing_file_is_a_config_error(tmp_path):
    """A missing or malformed TOML file is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, {})


def test_settings_are_frozen():
    """Settings cannot be changed after validation."""
    settings = load_settings(None, {})
    with pytest.raises(Exception, match="frozen"):
        settings.server.port = 1  # type: ignore[misc]


def test_nested_tables_from_the_environment():
    """`RAGVISOR_GENERATOR__DEADLINES__REQUEST_S` reaches `[generator.deadlines] request_s`."""
    settings = load_settings(None, {"RAGVISOR_GENERATOR__DEADLINES__REQUEST_S": "12.5"})
    assert settings.generator.deadlines.request_s == 12.5


def test_settings_env_round_trips_through_the_environment():
    """What the daemon hands the worker reads back as the very same settings."""
    source = load_settings(
        None,
        {
            "RAGVISOR_WORKER__KEEP_ALIVE": "-1",
            "RAGVISOR_GENERATOR__KEEP_ALIVE": "1h30m",
            "RAGVISOR_GENERATOR__MODEL": "qwen2.5:0.5b",
            "RAGVISOR_EMBEDDER__MODEL_DIR": '/models/with space/"quoted"',
            "RAGVISOR_GENERATOR__DEADLINES__STALL_S": "7",
        },
    )
    sections = ("store", "embedder", "generator", "worker")
    copy = load_settings(None, settings_env(source, sections))
    for section in sections:
        assert getattr(copy, section) == getattr(source, section)


@pytest.mark.parametrize("value", ["5m", "1h30m", "30s", "0", "-1", "250ms", 0, -1, 3600])
def test_keep_alive_accepts_ollama_syntax(value):
    """A keep-alive in Ollama's syntax, text or a whole number, is kept as its text."""
    settings = parse_settings({"generator": {"keep_alive": value}})
    assert settings.generator.keep_alive == str(value)


@pytest.mark.parametrize("value", ["5 minutes", "forever", "", "m5"])
def test_keep_alive_rejects_other_text(value):
    """Text that is no keep-alive is a ConfigError naming the key."""
    with pytest.raises(ConfigError, match=r"generator\.keep_alive"):
        parse_settings({"generator": {"keep_alive": value}})


def test_answer_budget_must_leave_room_for_the_prompt():
    """num_predict at or above num_ctx is refused: no room would be left for the prompt."""
    with pytest.raises(ConfigError, match="num_predict must be smaller than num_ctx"):
        parse_settings({"generator": {"num_ctx": 512, "num_predict": 512}})


def test_store_password_from_the_environment_is_verbatim_text_and_stays_secret():
    """RAGVISOR_STORE__PASSWORD is taken as typed (`123` stays text), repr never shows it, and
    it is left out of the environment handed to the worker."""
    settings = load_settings(
        None, {"RAGVISOR_STORE__BACKEND": "neo4j", "RAGVISOR_STORE__PASSWORD": "123"}
    )
    assert settings.store.password is not None
    assert settings.store.password.get_secret_value() == "123"
    assert "123" not in repr(settings)
    env = settings_env(settings, ("store",))
    assert "RAGVISOR_STORE__PASSWORD" not in env
    assert env["RAGVISOR_STORE__BACKEND"] == '"neo4j"'


@pytest.mark.parametrize(
    ("store", "named"),
    [
        ({"uri": "http://127.0.0.1:7474"}, "store.uri"),
        ({"uri": "bolt://"}, "store.uri"),
        ({"database": "two words"}, "store.database"),
        ({"query_timeout_s": 0}, "store.query_timeout_s"),
        ({"password": "x", "password_file": "/run/secret"}, "not both"),
    ],
)
def test_store_settings_refuse_what_neo4j_could_not_use(store, named):
    """A non-Bolt URI, a database name Neo4j refuses, a zero deadline, or two password sources
    are refused at start with the key named."""
    with pytest.raises(ConfigError, match=named):
        parse_settings({"store": {"backend": "neo4j", **store}})


def test_the_neo4j_password_comes_from_its_file_or_an_error_names_the_key(tmp_path):
    """store_password reads the file's first line; no source, or an empty file, is a
    ConfigError naming store.password_file."""
    from ragvisor.app import store_password  # noqa: PLC0415 - the composition root reads it

    secret = tmp_path / "neo4j.password"
    secret.write_text("s3cret word\n")
    settings = parse_settings({"store": {"backend": "neo4j", "password_file": str(secret)}})
    assert store_password(settings) == "s3cret word"
    with pytest.raises(ConfigError, match=r"store\.password_file or RAGVISOR_STORE__PASSWORD"):
        store_password(parse_settings({"store": {"backend": "neo4j"}}))
    secret.write_text("")
    with pytest.raises(ConfigError, match=r"store\.password_file: .* is empty"):
        store_password(settings)
