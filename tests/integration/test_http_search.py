"""Search over real HTTP: the daemon as a subprocess, the real model, the real store."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from tests.integration.conftest import stop_daemon, synced_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_dir, store_backend):
    """One synced daemon over the small notes corpus, shared by this module's tests: on SQLite,
    then on the real Neo4j."""
    d = synced_daemon(tmp_path_factory.mktemp("search"), model_dir, store_env=store_backend)
    yield d
    stop_daemon(d)


def test_search_finds_the_right_note_with_relative_path(daemon):
    """A question about swappiness returns the swap note first, its path relative to the root."""
    response = httpx.get(
        f"{daemon.url}/search", params={"q": "what should vm.swappiness be", "k": 3}
    )
    assert response.status_code == 200
    body = response.json()
    top = body["results"][0]
    assert top["path"] == "ops/swap.md"
    assert top["title"] == "Swap on a small droplet"
    assert "swappiness" in top["snippet"].lower()
    assert set(top) >= {"path", "title", "chunk_id", "score", "snippet"}
    assert len(body["results"]) == 3
    assert set(body["timings_ms"]) >= {"embed", "retrieve"}
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("baking bread in a dutch oven", "recipes/bread.md"),
        ("where does the cat sleep", "notes.txt"),
        ("neo4j heap size", "ops/neo4j.md"),
    ],
)
def test_dense_search_ranks_by_meaning(daemon, query, expected):
    """Different questions land on their own notes."""
    body = httpx.get(f"{daemon.url}/search", params={"q": query, "k": 1}).json()
    assert body["results"][0]["path"] == expected


def test_keyword_and_hybrid_modes_answer(daemon):
    """Keyword (FTS5) and hybrid (rank fusion) modes find the note containing the word."""
    for mode in ("keyword", "hybrid"):
        body = httpx.get(
            f"{daemon.url}/search", params={"q": "mkswap", "k": 2, "mode": mode}
        ).json()
        assert body["mode"] == mode
        assert body["results"][0]["path"] == "ops/swap.md"


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("server.memory.heap.max_size", "ops/neo4j.md"),
        ("max_size", "ops/neo4j.md"),
        ("vm.swappiness", "ops/swap.md"),
        ("kill -9 vm.swappiness", "ops/swap.md"),
    ],
)
def test_dotted_and_snake_case_names_are_found_first(daemon, query, expected, mode):
    """A name as the notes write it (or a piece of one) ranks the note that writes it first."""
    body = httpx.get(f"{daemon.url}/search", params={"q": query, "k": 3, "mode": mode}).json()
    assert body["mode"] == mode
    assert body["results"][0]["path"] == expected


def test_request_id_is_propagated_and_logged(daemon):
    """A caller's X-Request-ID comes back and appears in the http.request log event."""
    response = httpx.get(
        f"{daemon.url}/search", params={"q": "swap"}, headers={"X-Request-ID": "trace-me-123"}
    )
    assert response.headers["x-request-id"] == "trace-me-123"
    logged: list[dict] = []
    deadline = time.monotonic() + 5  # the event is written just after the response is sent
    while not logged and time.monotonic() < deadline:
        events = [json.loads(line) for line in daemon.logs().splitlines() if line.startswith("{")]
        logged = [e for e in events if e.get("request_id") == "trace-me-123"]
        time.sleep(0.02)
    assert logged, "no http.request event for the request id"
    assert logged[0]["event"] == "http.request"
    assert logged[0]["status"] == 200
    assert {"duration_ms", "embed_ms", "retrieve_ms"} <= set(logged[0])


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({}, 422, "q: Field required"),
        ({"q": ""}, 400, "must not be empty"),
        ({"q": "  \t "}, 400, "must not be empty"),
        ({"q": "x" * 1001}, 400, "limit is 1000"),
        ({"q": "x" * 60_000}, 400, "limit is 1000"),
        ({"q": "swap", "k": 0}, 400, "k must be between 1 and 50"),
        ({"q": "swap", "k": 51}, 400, "k must be between 1 and 50"),
        ({"q": "swap", "k": -3}, 400, "k must be between"),
        ({"q": "swap", "k": "ten"}, 422, "k:"),
        ({"q": "swap", "mode": "magic"}, 422, "mode:"),
        ({"q": "a\x00b"}, 400, "NUL"),
    ],
)
def test_bad_search_input_is_a_clear_4xx(daemon, params, status, message):
    """Malformed searches get a 4xx JSON error with a message, never a 500."""
    response = httpx.get(f"{daemon.url}/search", params=params)
    assert response.status_code == status
    body = response.json()
    assert message in body["error"]
    assert body["code"]


def test_an_over_long_query_sent_in_pieces_gets_the_apps_own_400(daemon):
    """A 60 KB query string that reaches the server in pieces (as on a busy box) is read whole
    and refused by the app in words, not cut off mid-head (h11's 16 KiB buffer once reset the
    connection under the client)."""
    url = httpx.URL(daemon.url)
    head = (
        f"GET /search?q={'x' * 60_000} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((url.host, url.port), timeout=30) as conn:
        for start in range(0, len(head), 4096):
            conn.sendall(head[start : start + 4096])
            time.sleep(0.005)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request", answer[:300]
    assert "limit is 1000" in json.loads(rest.partition(b"\r\n\r\n")[2])["error"]


QUERY_SYNTAX = [
    *('"', "~", "AND", "OR NOT", "*", "sw*p~2", "(", "[swap TO", "\\", "title:swap"),
    *("+swap -file", "a && b || c", "/regex/", "^2", 'he said "swap', "NEAR(a b)"),
]


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
@pytest.mark.parametrize("query", QUERY_SYNTAX)
def test_query_syntax_typed_by_a_user_is_searched_as_text(daemon, query, mode):
    """Lucene's and FTS5's syntax — quotes, fuzzy and wildcard marks, operators, brackets, a
    lone backslash, fields — is answered 200, never a 500, in both modes that read it."""
    response = httpx.get(f"{daemon.url}/search", params={"q": query, "k": 3, "mode": mode})
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["results"], list)


def test_non_utf8_query_string_is_refused(daemon):
    """Percent-escapes that are not UTF-8 are a 400, not a search for replacement characters."""
    response = httpx.get(f"{daemon.url}/search?q=%ff%fe")
    assert response.status_code == 400
    assert "UTF-8" in response.json()["error"]


def test_health_readiness_and_openapi(daemon):
    """healthz says alive, readyz reports model and store, openapi.json lists /search."""
    assert httpx.get(f"{daemon.url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{daemon.url}/readyz").json()
    assert ready["ready"] is True
    assert ready["checks"]["store"]["chunks"] > 0
    assert ready["checks"]["embedder"]["model"] == "all-MiniLM-L6-v2-int8"
    assert ready["checks"]["embedder"]["fingerprint"].startswith("sha256:8199be6f699a395f/384")
    spec = httpx.get(f"{daemon.url}/openapi.json").json()
    assert "/search" in spec["paths"]
    assert "/admin/sync" in spec["paths"]


def test_unknown_route_and_wrong_method_are_json(daemon):
    """404 and 405 answer in the same JSON error shape."""
    missing = httpx.get(f"{daemon.url}/nope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    wrong = httpx.post(f"{daemon.url}/search", params={"q": "x"})
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"


def test_admin_sync_requires_the_bearer_token(daemon):
    """POST /admin/sync is 401 without or with a wrong token, and runs with the right one."""
    assert httpx.post(f"{daemon.url}/admin/sync").status_code == 401
    wrong = httpx.post(f"{daemon.url}/admin/sync", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    ok = httpx.post(
        f"{daemon.url}/admin/sync",
        params={"wait": "true"},
        headers={"Authorization": f"Bearer {daemon.token}"},
        timeout=60,
    )
    assert ok.status_code == 200
    report = ok.json()["report"]
    assert report["embeddings_computed"] == 0
    assert report["documents"]["unchanged"] == 4


def test_concurrent_searches_all_answer(daemon):
    """Searches from several threads at once all succeed with the same top result."""
    results: list[str] = []

    def worker():
        with httpx.Client() as client:
            for _ in range(10):
                body = client.get(f"{daemon.url}/search", params={"q": "sourdough", "k": 1}).json()
                results.append(body["results"][0]["path"])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == ["recipes/bread.md"] * 40


def test_a_passage_opens_whole_by_the_chunk_id_search_gave(daemon):
    """`GET /passages/{chunk_id}`: what a citation card opens — the stored text, whole."""
    hit = httpx.get(f"{daemon.url}/search", params={"q": "swappiness", "k": 1}).json()
    top = hit["results"][0]
    response = httpx.get(f"{daemon.url}/passages/{top['chunk_id']}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["chunk_id"] == top["chunk_id"]
    assert (body["path"], body["title"], body["heading"]) == (
        top["path"],
        top["title"],
        top["heading"],
    )
    assert "vm.swappiness to 10" in body["text"]
    assert len(body["text"]) > len(top["snippet"].strip("…")) - 2


@pytest.mark.parametrize(
    ("chunk_id", "status"),
    [
        ("0123abcd:00001:89abcdef", 404),  # well-formed, not stored (the document changed)
        ("not-a-chunk-id", 422),
        ("..%2F..%2Fetc%2Fpasswd", 404),  # never a path: the router sees /passages/../..
    ],
)
def test_an_unknown_or_malformed_passage_id_is_a_clear_4xx(daemon, chunk_id, status):
    """A well-formed id that is not stored is a 404, a malformed one a 422, a path-like one never
    reaches the store; each a JSON error with the security headers."""
    response = httpx.get(f"{daemon.url}/passages/{chunk_id}")
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert "content-security-policy" in response.headers
