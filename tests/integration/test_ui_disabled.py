"""`[ui] enabled = false`: no pages, no API docs, no static files — the JSON API unchanged."""

from __future__ import annotations

import httpx

from tests.integration.conftest import stop_daemon, synced_daemon


def test_with_the_ui_off_the_pages_are_gone_and_search_still_answers(tmp_path, model_dir):
    """`[ui] enabled = false`: the pages, /docs, the static files and /redoc are JSON 404s; /search
    and /openapi.json still answer."""
    daemon = synced_daemon(
        tmp_path, model_dir, RAGVISOR_UI__ENABLED="false", RAGVISOR_GENERATOR__BACKEND="none"
    )
    try:
        for path in ("/", "/ui/status", "/docs", "/ui/static/search.js", "/redoc"):
            response = httpx.get(f"{daemon.url}{path}", timeout=10)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["code"] == "not_found"
        assert httpx.get(f"{daemon.url}/search", params={"q": "swap"}).status_code == 200
        assert httpx.get(f"{daemon.url}/openapi.json").status_code == 200
    finally:
        stop_daemon(daemon)
