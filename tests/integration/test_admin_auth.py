"""`/admin/*` fails closed, over real HTTP: the daemon as a subprocess, its real token file."""

from __future__ import annotations

import http.client
import json
import stat
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.conftest import Daemon, run_cli, start_daemon, stop_daemon
from tests.integration.corpus import write_corpus

QUIET = {
    "RAGVISOR_SYNC__ON_START": "false",
    "RAGVISOR_SYNC__INTERVAL_S": "0",
    "RAGVISOR_GENERATOR__BACKEND": "none",
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_dir):
    """A daemon started on a data directory whose admin_token file is empty (a crash between
    creating and writing it), with no sync of its own."""
    base = tmp_path_factory.mktemp("auth")
    corpus = write_corpus(base / "notes")
    data = base / "data"
    data.mkdir(mode=0o700)
    (data / "admin_token").touch(mode=0o600)
    d = start_daemon(corpus, data, model_dir, base / "daemon.log", **QUIET)
    yield d
    stop_daemon(d)


def events(daemon: Daemon) -> list[dict]:
    return [json.loads(line) for line in daemon.logs().splitlines() if line.startswith("{")]


@dataclass
class Answer:
    """Status, headers (lower-case names) and JSON body of one response."""

    status: int
    headers: dict[str, str]
    body: dict


def send(url: str, method: str, path: str, authorization: bytes | None) -> Answer:
    """One request with the `Authorization` value sent byte for byte (trailing spaces, non-ASCII
    included), through http.client: httpx refuses to send such values at all."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        conn.putrequest(method, path)
        if authorization is not None:
            conn.putheader("Authorization", authorization)
        conn.putheader("Content-Length", "0")
        conn.endheaders()
        response = conn.getresponse()
        raw = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, headers, json.loads(raw) if raw else {})
    finally:
        conn.close()


def assert_unauthorized(answer: Answer) -> None:
    assert answer.status == 401, answer
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.headers["content-type"] == "application/json"
    assert answer.body["code"] == "unauthorized"


def test_an_empty_token_file_never_lets_a_blank_bearer_in(daemon):
    """The empty file got a fresh token at start; `Bearer` with nothing after it is 401 and
    runs no sync; only the new token does."""
    # 1. At start the empty file was replaced by a fit token, 0600, with a warning naming it.
    path = daemon.data_dir / "admin_token"
    assert len(daemon.token) >= 16
    assert daemon.token.isascii()
    assert daemon.token.split() == [daemon.token]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [warning] = [e for e in events(daemon) if e["event"] == "admin_token.regenerated"]
    assert warning["path"] == str(path)
    assert warning["level"] == "warning"
    # 2. Blank credentials, another scheme or no header: 401 JSON, for POST and GET alike.
    for header in (b"Bearer", b"Bearer ", b"Bearer    ", b"bearer", b"", b"Basic Og==", None):
        assert_unauthorized(send(daemon.url, "POST", "/admin/sync?wait=true", header))
        assert_unauthorized(send(daemon.url, "GET", "/admin/sync", header))
    # 3. None of them ran a sync: no report, nothing stored, no sync event in the log.
    status = httpx.get(f"{daemon.url}/status").json()
    assert status["sync"]["last_report"] is None
    assert status["sync"]["started_at"] is None
    assert status["store"]["documents"] == 0
    assert not [e for e in events(daemon) if e["event"].startswith("sync.")]
    # 4. The token now in the file runs one.
    ok = httpx.post(
        f"{daemon.url}/admin/sync",
        params={"wait": "true"},
        headers={"Authorization": f"Bearer {daemon.token}"},
        timeout=120,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["report"]["documents"]["new"] == 4


@pytest.mark.parametrize(
    "header",
    ["Bearer café".encode(), b"Bearer caf\xe9", "Bearer \u2603".encode()],
    ids=["utf8", "latin1", "snowman"],
)
def test_a_non_ascii_bearer_token_is_401_json_not_500(daemon, header):
    """Bytes beyond ASCII in the token are a wrong token: 401 with the usual JSON error."""
    assert_unauthorized(send(daemon.url, "GET", "/admin/sync", header))
    assert_unauthorized(send(daemon.url, "POST", "/admin/sync?wait=true", header))


def test_a_blank_configured_token_stops_the_daemon_before_it_serves(tmp_path, model_dir):
    """`server.admin_token` of only spaces: exit 2 with a message naming the key."""
    corpus = write_corpus(tmp_path / "notes")
    done = run_cli(
        ["serve", "--corpus", str(corpus), "--data-dir", str(tmp_path / "data"), "--port", "0"],
        model_dir,
        timeout=60,
        RAGVISOR_SERVER__ADMIN_TOKEN='"    "',
        **QUIET,
    )
    assert done.returncode == 2, done.stderr
    assert "server.admin_token" in done.stderr
    assert "empty or only whitespace" in done.stderr


def test_a_hand_written_short_token_file_stops_the_daemon_naming_the_file(tmp_path, model_dir):
    """An operator's 8-character token in the file: exit 2, the file named and left as it was."""
    corpus = write_corpus(tmp_path / "notes")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "admin_token").write_text("changeme\n")
    done = run_cli(
        ["serve", "--corpus", str(corpus), "--data-dir", str(data), "--port", "0"],
        model_dir,
        timeout=60,
        **QUIET,
    )
    assert done.returncode == 2, done.stderr
    assert str(data / "admin_token") in done.stderr
    assert "at least 16" in done.stderr
    assert (data / "admin_token").read_text() == "changeme\n"
