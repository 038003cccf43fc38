"""The OpenAPI description holds for a real daemon: schemathesis fuzzes every operation it lists.

1. Sync the small notes corpus and start `ragvisor serve` on loopback with the real ONNX embedder
   and the real llama.cpp worker; the input bounds are set away from their defaults, so the
   document can only be right if it takes them from the settings.
2. Read the document: the bounds, the bearer scheme, the stream's media type; and OPTIONS.
3. Run `st run --checks all` — every check schemathesis 4.32.5 has: no server error, documented
   status codes, content types, response schemas and headers, schema-violating input rejected,
   schema-valid input accepted, unsupported methods answered 405 with `Allow`, `Allow` of
   OPTIONS, authentication enforced, … — once with the admin token and once without. Any
   failure or error fails the test; the figures (requests, statuses, time) are printed.

Answers are cut at 8 tokens (generator.num_predict) and ask.max_k is 3: the fuzzer checks the
shape of answers, not their quality, and so an `/ask` takes about a second on 2 CPU cores
instead of ten. Nothing is excluded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from ragvisor.core.retrieval import text_pattern
from tests.integration.conftest import Daemon, stop_daemon, synced_daemon

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MAX_QUERY_CHARS = 200
SEARCH_MAX_K = 7
MAX_QUESTION_CHARS = 300
ASK_MAX_K = 3
# Test cases per operation in the fuzzing phase (the coverage phase adds its own): about a
# minute per run on 2 cores, most of it in /ask's generation.
MAX_EXAMPLES = 100
# A generation slowed by whatever else the box runs must not read as a network error.
REQUEST_TIMEOUT_S = 90
RUN_TIMEOUT_S = 1200  # a bound on the whole run, far above its usual minutes: only a hang hits it


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_dir):
    """One synced daemon with non-default bounds, its scheduler quiet, answers of 8 tokens."""
    d = synced_daemon(
        tmp_path_factory.mktemp("fuzz"),
        model_dir,
        RAGVISOR_GENERATOR__NUM_PREDICT="8",
        RAGVISOR_SERVER__MAX_QUERY_CHARS=str(MAX_QUERY_CHARS),
        RAGVISOR_SERVER__MAX_K=str(SEARCH_MAX_K),
        RAGVISOR_ASK__MAX_QUESTION_CHARS=str(MAX_QUESTION_CHARS),
        RAGVISOR_ASK__MAX_K=str(ASK_MAX_K),
        RAGVISOR_ASK__DEFAULT_K="2",
    )
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def document(daemon) -> dict:
    """The daemon's /openapi.json."""
    return httpx.get(f"{daemon.url}/openapi.json", timeout=10).json()


def test_document_publishes_the_bounds_in_force(document):
    """Bounds come from the settings the daemon runs with, and the text rule is validate_query's."""
    params = {p["name"]: p for p in document["paths"]["/search"]["get"]["parameters"]}
    assert params["q"]["required"] is True
    assert params["q"]["schema"]["pattern"] == text_pattern(MAX_QUERY_CHARS)
    assert (params["k"]["schema"]["minimum"], params["k"]["schema"]["maximum"]) == (1, 7)
    assert params["mode"]["schema"] == {
        "$ref": "#/components/schemas/SearchMode",
        "description": "dense, keyword or hybrid",
        "default": "dense",
    }
    ask = document["paths"]["/ask"]["post"]["requestBody"]
    body = ask["content"]["application/json"]["schema"]
    assert ask["required"] is True
    assert body["required"] == ["question"]
    assert body["additionalProperties"] is False
    assert body["properties"]["question"]["pattern"] == text_pattern(MAX_QUESTION_CHARS)
    assert body["properties"]["k"]["anyOf"][0]["maximum"] == ASK_MAX_K


def test_admin_routes_declare_the_bearer_scheme(document):
    """/admin/* require the `bearer` scheme, document 401 with WWW-Authenticate, and list no
    `authorization` header parameter of their own."""
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, operation in document["paths"]["/admin/sync"].items():
        assert operation["security"] == [{"bearer": []}], method
        assert "authorization" not in {p["name"].lower() for p in operation.get("parameters", [])}
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    assert {"200", "202", "401", "409", "503"} <= set(
        document["paths"]["/admin/sync"]["post"]["responses"]
    )
    assert set(document["paths"]["/admin/sync"]["get"]["responses"]) == {"200", "401", "503"}
    for path in ("/search", "/ask", "/healthz", "/status"):
        assert "security" not in next(iter(document["paths"][path].values()))


def test_statuses_media_types_and_error_shape_are_documented(document):
    """/ask documents its NDJSON stream; every 503 error carries Retry-After; every error is
    `{"error", "code"}` (FastAPI's own 422 shape appears nowhere)."""
    ask = document["paths"]["/ask"]["post"]["responses"]
    assert set(ask["200"]["content"]) == {"application/json", "application/x-ndjson"}
    assert {"400", "413", "422", "503", "504"} <= set(ask)
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and path != "/readyz":
                    assert response["content"]["application/json"]["schema"] == error
                if status == "503" and path != "/readyz":  # /readyz's 503 is its own report
                    assert response["headers"]["Retry-After"]["required"] is True, (path, method)
    assert "HTTPValidationError" not in json.dumps(document)
    for path, operations in document["paths"].items():  # what the edge answers before a route
        for method, operation in operations.items():
            edge = {"503", "413", "408"} if "requestBody" in operation else {"503"}
            assert edge <= set(operation["responses"]), (path, method)
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]
    assert list(metrics["content"]) == ["text/plain"]


def test_options_and_405_name_every_method_of_the_path(daemon):
    """OPTIONS answers 204 with Allow; a 405 lists every method of the path, not one route's."""
    options = httpx.options(f"{daemon.url}/admin/sync")
    assert options.status_code == 204
    assert options.headers["allow"] == "GET, OPTIONS, POST"
    refused = httpx.delete(f"{daemon.url}/admin/sync")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, OPTIONS, POST"
    assert refused.json()["code"] == "method_not_allowed"
    assert httpx.options(f"{daemon.url}/search").headers["allow"] == "GET, OPTIONS"
    assert httpx.options(f"{daemon.url}/no-such-path").status_code == 404


def _requests(daemon: Daemon) -> list[dict]:
    """Every `http.request` event the daemon has logged so far: the requests, counted where
    they arrive."""
    events = (json.loads(line) for line in daemon.logs().splitlines() if line.startswith("{"))
    return [event for event in events if event.get("event") == "http.request"]


def _schemathesis(daemon: Daemon, workdir: Path, headers: list[str]) -> tuple[int, str, dict]:
    """Run `st run` against the daemon; return its exit code, its output and its JSON report.

    One worker: the sync lane admits one `?wait=true` sync and queues none, so two at once get
    the documented 503, which not_a_server_error would count as a server error. The working
    directory is a temporary one and the example database is off, so nothing lands in the repo.
    """
    report = workdir / "report.json"
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "run", f"{daemon.url}/openapi.json"),
        *("--checks", "all"),
        *("--max-examples", str(MAX_EXAMPLES)),
        *("--workers", "1"),
        *("--request-timeout", str(REQUEST_TIMEOUT_S)),
        # `--checks all` also bounds each response's time (10 s unless told): timing is not what
        # the fuzz pins, and an /ask on a loaded 2-core box may take longer. Only a hang fails.
        *("--max-response-time", str(REQUEST_TIMEOUT_S)),
        *("--generation-database", "none"),
        *("--report", "json", "--report-json-path", str(report)),
        "--continue-on-failure",
        "--no-color",
        *(arg for header in headers for arg in ("--header", header)),
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.integration.api_fuzz_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        command,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return done.returncode, done.stdout + done.stderr, data


@pytest.mark.parametrize("authenticated", [True, False], ids=["admin-token", "no-token"])
def test_fuzzing_finds_no_failure(daemon, tmp_path, capsys, authenticated):
    """Every check of schemathesis passes on every operation, with and without the token."""
    headers = [f"Authorization: Bearer {daemon.token}"] if authenticated else []
    before = len(_requests(daemon))
    started = time.monotonic()
    code, output, report = _schemathesis(daemon, tmp_path, headers)
    wall_s = time.monotonic() - started
    seen = _requests(daemon)[before:]
    statuses = Counter(event["status"] for event in seen)
    cases = report.get("test_cases", {})
    failures = report.get("failures", [])
    errors = report.get("errors", [])
    figures = (
        f"schemathesis ({'admin token' if authenticated else 'no token'}): {len(seen)} requests, "
        f"{cases.get('generated')} test cases, {sum(f['count'] for f in failures)} failures, "
        f"{sum(e['count'] for e in errors)} errors, {statuses.get(500, 0)} server errors (500), "
        f"{wall_s:.0f} s; statuses {dict(sorted(statuses.items()))}"
    )
    with capsys.disabled():
        print(f"\n{figures}")
    assert (code, failures, errors) == (0, [], []), f"{figures}\n\n{output}"
    admin = Counter(
        e["status"] for e in seen if e["path"] == "/admin/sync" and e["method"] != "OPTIONS"
    )
    if authenticated:  # the token worked: the admin routes were exercised, not only refused
        assert admin[200] > 0, admin
        assert admin[202] > 0, admin
    else:
        assert set(admin) <= {401, 405}, admin
