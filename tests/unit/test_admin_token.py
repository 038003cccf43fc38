"""The admin token fails closed: fit tokens only, the file written atomically and 0600."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import structlog
from structlog.testing import capture_logs

from ragvisor.admin_token import (
    ADMIN_TOKEN_FILE,
    MIN_TOKEN_CHARS,
    generate_token,
    load_admin_token,
    token_problem,
    write_new_token,
)
from ragvisor.config import parse_settings
from ragvisor.errors import ConfigError, StoreError

FIT = "s3cret-Token_0123456789"


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request):
    """Run the test under a given process umask, restored afterwards."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(data_dir, configured: str = ""):
    """load_admin_token with a real structlog logger; returns (token, captured events)."""
    with capture_logs() as events:
        token = load_admin_token(configured, data_dir, structlog.get_logger())
    return token, events


@pytest.mark.parametrize(
    "token",
    ["", " ", "   \t", "short", "x" * (MIN_TOKEN_CHARS - 1), "café" * 5, "two words " * 3,
     "tab\tseparated-token-1", "newline\nseparated-token", "nul\x00-padded-token-value"],
)  # fmt: skip
def test_unfit_tokens_are_named_as_such(token):
    """Blank, short, non-ASCII or split tokens each get a reason; none passes."""
    assert token_problem(token) is not None


@pytest.mark.parametrize("token", [FIT, "x" * MIN_TOKEN_CHARS, "!~#$%&()*+,-./:;<=>?@[]^_`{|}"])
def test_fit_tokens_pass(token):
    """Sixteen or more visible ASCII characters make a token."""
    assert token_problem(token) is None


def test_generated_tokens_are_fit_and_differ():
    """What the daemon generates passes its own rule, and never twice the same."""
    first, second = generate_token(), generate_token()
    assert token_problem(first) is None
    assert first != second


@pytest.mark.parametrize(
    ("value", "why"),
    [("   ", "empty or only whitespace"), ("short", "needs at least 16"),
     ("motdepassé-très-long", "non-ASCII"), ("correct horse battery staple", "whitespace")],
)  # fmt: skip
def test_unfit_configured_token_is_a_config_error_naming_the_key(value, why):
    """`server.admin_token` that is blank, short, non-ASCII or has spaces stops the config."""
    with pytest.raises(ConfigError) as caught:
        parse_settings({"server": {"admin_token": value}})
    message = str(caught.value)
    assert "server.admin_token" in message
    assert why in message
    assert not value.strip() or value not in message  # the secret is not echoed


def test_empty_configured_token_means_the_token_file(tmp_path):
    """`admin_token = ""` is valid: the token then comes from `<data_dir>/admin_token`."""
    assert parse_settings({"server": {"admin_token": ""}}).server.admin_token == ""
    token, _ = load(tmp_path)
    assert (tmp_path / ADMIN_TOKEN_FILE).read_text() == token + "\n"


def test_configured_token_is_used_and_no_file_is_written(tmp_path):
    """A configured token wins; nothing is written to the data directory."""
    assert load(tmp_path, FIT)[0] == FIT
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_generated_atomically_and_0600(tmp_path, umask):
    """First start: a fit token in a 0600 file, no temporary left, an event without the token."""
    token, events = load(tmp_path)
    path = tmp_path / ADMIN_TOKEN_FILE
    assert token_problem(token) is None
    assert path.read_text() == token + "\n"
    assert mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [ADMIN_TOKEN_FILE]
    assert [e["event"] for e in events] == ["admin_token.generated"]
    assert events[0]["path"] == str(path)
    assert token not in repr(events)
    assert load(tmp_path)[0] == token  # the next start reads the same one


@pytest.mark.parametrize("content", [b"", b"\n", b"   \n\t\n"], ids=["empty", "newline", "blank"])
def test_empty_or_blank_file_is_replaced_with_a_warning(tmp_path, content):
    """A token file holding nothing gets a fresh token (0600) and a warning naming the file."""
    path = tmp_path / ADMIN_TOKEN_FILE
    path.write_bytes(content)
    path.chmod(0o600)
    token, events = load(tmp_path)
    assert token_problem(token) is None
    assert path.read_text() == token + "\n"
    assert mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [ADMIN_TOKEN_FILE]
    assert [(e["event"], e["log_level"]) for e in events] == [
        ("admin_token.regenerated", "warning")
    ]
    assert events[0]["path"] == str(path)


@pytest.mark.parametrize(
    "content",
    [b"changeme\n", "pässwörd-pässwörd-pässwörd".encode(), b"two words and more words\n",
     b"\xff\xfe" * 10],
    ids=["short", "non-ascii", "spaces", "not-utf8"],
)  # fmt: skip
def test_unfit_token_in_the_file_refuses_to_start(tmp_path, content):
    """Someone wrote a token that cannot be fit: ConfigError naming the file, file untouched."""
    path = tmp_path / ADMIN_TOKEN_FILE
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path)
    assert str(path) in str(caught.value)
    assert "delete the file" in str(caught.value)
    assert path.read_bytes() == content


def test_a_failed_write_leaves_neither_token_nor_temporary_file(tmp_path, monkeypatch):
    """The disk fills up while the token is written: StoreError, and the folder stays empty."""

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StoreError, match="No space left"):
        load(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_token_file_made_meanwhile_by_another_process_wins(tmp_path):
    """Two starts race to create the file: the second keeps (and returns) the first's token."""
    path = tmp_path / ADMIN_TOKEN_FILE
    path.write_text(FIT + "\n")
    assert write_new_token(path) == FIT
    assert path.read_text() == FIT + "\n"
    assert [p.name for p in tmp_path.iterdir()] == [ADMIN_TOKEN_FILE]
