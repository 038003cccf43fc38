"""The daemon's pages in a real browser (Debian's Chromium, headless, via Playwright): search,
a streamed answer with its citations, the stop button, hostile documents, the status page and
the API docs — against a real daemon, its llama.cpp worker, the real model and SQLite.

The search page is driven the way a person does: typing, Enter, buttons, and the keyboard
alone. What the tests check is what the browser shows and does (the DOM after scripts ran,
dialogs, script errors, CSP violations, requests to other hosts), never the HTML as sent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.browser import Tab, chromium, tab_factory
from tests.integration.conftest import Daemon, stop_daemon, synced_daemon
from tests.integration.test_ask import wait_for_log

__all__ = ["chromium", "tab_factory"]  # fixtures, used by name

pytestmark = pytest.mark.slow

# Each payload would set window.__pwned and open a dialog if it ran.
HOSTILE_NAME = "<img src=x onerror=alert(1)>tomatoes.md"
HOSTILE_DOCUMENT = """---
title: "<script>window.__pwned='title'; alert('title')</script> Tomato pruning"
---
# <img src=x onerror="window.__pwned='heading'; alert('heading')"> Suckers

Prune the tomato suckers every week so the plant puts its strength into the fruit.
<script>window.__pwned='body'; alert('body')</script>
<img src=x onerror="window.__pwned='img'; alert('img')">
Read the [tomato pruning guide](javascript:window.__pwned='link';alert('link')) first.
"""

# A file name the sync skips (not UTF-8) that is also markup, for the status page's skip list.
SKIPPED_NAME = b"<img src=x onerror=window.__pwned='skip'>\xff.md"

# Answers as a user gets them (the default temperature), kept short for the module's pace.
ANSWERS = {"RAGVISOR_GENERATOR__NUM_PREDICT": "120", "RAGVISOR_ASK__DEFAULT_K": "2"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_dir) -> Iterator[Daemon]:
    d = synced_daemon(
        tmp_path_factory.mktemp("pages"),
        model_dir,
        extra_files={HOSTILE_NAME: HOSTILE_DOCUMENT},
        **ANSWERS,
    )
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def long_daemon(tmp_path_factory, model_dir) -> Iterator[Daemon]:
    """Answers of up to 1500 tokens at temperature 1 (as tests/integration/test_ask.py's):
    a generation that is still running when Stop is pressed."""
    d = synced_daemon(
        tmp_path_factory.mktemp("pages-long"),
        model_dir,
        RAGVISOR_GENERATOR__NUM_PREDICT="1500",
        RAGVISOR_GENERATOR__TEMPERATURE="1.0",
        RAGVISOR_ASK__DEFAULT_K="1",
    )
    yield d
    stop_daemon(d)


def search(tab: Tab, query: str, mode: str = "dense") -> None:
    """Type a query and press Enter, as a person would; wait for the results to render."""
    tab.page.select_option("#mode", mode)
    tab.page.fill("#q", query)
    tab.page.press("#q", "Enter")
    tab.page.wait_for_selector("#results li.result", timeout=30_000)


# Records, at every change of the page, how much answer text there is, the answer's state and
# how many citation cards show: the sequence proves streaming, not the final DOM.
RECORD_STEPS = """() => {
  window.__steps = [];
  const record = () => {
    const answer = document.querySelector('#answer');
    window.__steps.push({
      length: answer ? answer.textContent.length : 0,
      state: answer ? answer.dataset.state || '' : '',
      cards: document.querySelectorAll('#citations .citation').length,
    });
  };
  new MutationObserver(record).observe(document.body,
    {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def test_a_search_shows_results_with_the_query_words_marked(daemon, tab_factory, tmp_path):
    """Typing a question and pressing Enter shows results: title, path, heading, a snippet with the
    query's words marked, and the score."""
    tab = tab_factory(daemon.url)
    tab.goto("/")
    search(tab, "swappiness on a small droplet")
    first = tab.page.locator("#results li.result").first
    assert "Swap on a small droplet" in first.locator(":scope > .result-head .title").inner_text()
    assert "ops/swap.md" in first.locator(":scope > .path").inner_text()
    assert "Swappiness" in first.locator(":scope > .heading").inner_text()
    marked = [m.lower() for m in first.locator(":scope > .snippet mark").all_inner_texts()]
    assert "swappiness" in marked, marked
    float(first.locator(":scope > .result-head .score").inner_text())  # a number, as sent
    assert not tab.page.locator("#search-degraded").is_visible()
    assert not tab.problems(), tab.problems()


def test_an_answer_streams_in_steps_then_shows_its_citations(daemon, tab_factory, tmp_path):
    """Ask shows the answer growing in several steps while it streams, the citation cards only after
    it ends, and a card opens its passage. Also the README's screenshot."""
    tab = tab_factory(daemon.url)
    tab.goto("/")
    tab.page.fill("#k", "3")
    search(tab, "what should vm.swappiness be on a small droplet?")
    tab.page.evaluate(RECORD_STEPS)
    tab.page.click("#ask-btn")
    tab.page.wait_for_selector("#answer[data-state=done]", timeout=120_000)
    steps: list[dict[str, Any]] = tab.page.evaluate("window.__steps")
    streaming = [s for s in steps if s["state"] == "streaming" and s["length"] > 0]
    lengths = sorted({s["length"] for s in streaming})
    assert len(lengths) >= 3, f"the answer arrived in {len(lengths)} step(s): {steps[:20]}"
    assert all(s["cards"] == 0 for s in streaming), "citation cards showed before the answer ended"
    cards = tab.page.locator("#citations .citation")
    assert cards.count() >= 1
    assert tab.page.locator("#answer").inner_text().strip()
    # A card opens the passage it cites, fetched whole from /passages/{chunk_id}.
    first = cards.first
    first.locator("button.citation-open").click()
    passage = first.locator(".passage")
    passage.wait_for(timeout=10_000)
    assert passage.inner_text().strip()
    assert first.locator("button.citation-open").get_attribute("aria-expanded") == "true"
    assert not tab.problems(), tab.problems()
    tab.screenshot("search-page.png", tmp_path)


def test_the_stop_button_ends_the_generation_at_the_backend(long_daemon, tab_factory):
    """Stop mid-answer: the page stops, no more text arrives, and the daemon cancels the worker's
    generation (`worker.cancelled`, the request logged as the client gone)."""
    tab = tab_factory(long_daemon.url)
    tab.goto("/")
    tab.page.fill("#q", "tell me everything about sourdough bread")
    tab.page.click("#ask-btn")
    tab.wait_until("() => document.querySelector('#answer').textContent.length > 5", timeout_s=60)
    assert tab.page.locator("#stop-btn").is_enabled()
    tab.page.click("#stop-btn")
    tab.page.wait_for_selector("#answer[data-state=stopped]", timeout=10_000)
    # The daemon saw the client leave and cancelled the worker's generation.
    assert wait_for_log(long_daemon, "worker.cancelled"), long_daemon.logs()[-3000:]
    assert wait_for_log(long_daemon, '"client_gone": true')
    length = len(tab.page.locator("#answer").inner_text())
    tab.page.wait_for_timeout(1000)
    assert len(tab.page.locator("#answer").inner_text()) == length, "text kept arriving"
    assert not tab.page.locator("#stop-btn").is_enabled()
    assert not tab.problems(), tab.problems()


def test_hostile_documents_render_as_text_and_run_nothing(daemon, tab_factory):
    """A document whose title, path, heading and body hold <script>, <img onerror> and a javascript:
    link shows that markup as text in results, citations and opened passages; in the browser no
    script ran, no dialog opened, and no image or javascript: link exists."""
    tab = tab_factory(daemon.url)
    tab.goto("/")
    search(tab, "prune the tomato suckers every week")
    results = tab.page.locator("#results")
    text = results.inner_text()
    assert "<script>" in text, "the hostile title should show as text"
    assert "<img src=x onerror=" in text, "the hostile path or heading should show as text"
    # Ask about it too: citation cards and the opened passage carry the same user content.
    tab.page.fill("#q", "how often should tomato suckers be pruned?")
    tab.page.click("#ask-btn")
    tab.page.wait_for_selector("#answer[data-state=done]", timeout=120_000)
    for button in tab.page.locator("#citations button.citation-open").all():
        button.click()
    tab.page.wait_for_timeout(1000)
    state = tab.page.evaluate(
        """() => ({
          pwned: window.__pwned === undefined ? null : String(window.__pwned),
          scripts: [...document.scripts].filter(s => !s.src).length,
          images: document.querySelectorAll('img').length,
          jsLinks: document.querySelectorAll('a[href^="javascript:" i]').length,
        })"""
    )
    assert state == {"pwned": None, "scripts": 0, "images": 0, "jsLinks": 0}, state
    assert not tab.dialogs, tab.dialogs
    assert not tab.problems(), tab.problems()


def test_the_search_page_works_from_the_keyboard_and_at_phone_width(daemon, tab_factory):
    """Every input has a label; Tab reaches the query box and Enter searches; at 360 px the page
    needs no sideways scrolling."""
    tab = tab_factory(daemon.url, width=360, height=740)
    tab.goto("/")
    unlabelled = tab.page.evaluate(
        "[...document.querySelectorAll('input, select, textarea')]"
        ".filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length)).map(e => e.id)"
    )
    assert unlabelled == []
    # Keyboard only: Tab to the query box, type, Enter.
    for _ in range(10):
        tab.page.keyboard.press("Tab")
        if tab.page.evaluate("document.activeElement && document.activeElement.id") == "q":
            break
    assert tab.page.evaluate("document.activeElement.id") == "q"
    tab.page.keyboard.type("swap file")
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_selector("#results li.result", timeout=30_000)
    overflow = tab.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a 360px screen"
    assert not tab.problems(), tab.problems()


def test_a_refused_request_is_shown_in_plain_words(daemon, tab_factory):
    """A query over server.max_query_chars is refused by the daemon (400) and the page shows its
    message in the alert region."""
    tab = tab_factory(daemon.url)
    tab.goto("/")
    tab.page.fill("#q", "x" * 1200)  # longer than server.max_query_chars
    tab.page.press("#q", "Enter")
    error = tab.page.locator("#error")
    error.wait_for(state="visible", timeout=10_000)
    assert "1000" in error.inner_text() or "long" in error.inner_text().lower()
    assert not tab.errors, tab.errors


def test_the_status_page_shows_the_daemon_and_its_history(daemon, tab_factory, tmp_path):
    """/ui/status shows readiness, lanes, the generator's breaker, each process's RSS, and plots
    from /status/history. Also docs/web.md's screenshot."""
    for _ in range(3):  # something for the latency plot
        httpx.get(f"{daemon.url}/search", params={"q": "swap"}, timeout=30)
    tab = tab_factory(daemon.url)
    tab.goto("/ui/status")
    tab.page.wait_for_selector("[data-backend=generator] .breaker", timeout=15_000)
    assert tab.page.locator("[data-backend=generator] .breaker").inner_text().strip() == "closed"
    assert "Ready" in tab.page.locator("#readiness").inner_text()
    assert "search" in tab.page.locator("#lanes").inner_text()
    memory = tab.page.locator("#memory").inner_text()
    assert "daemon" in memory
    assert "worker" in memory
    tab.page.wait_for_selector("#plots figure.plot[data-series=available_mb] svg", timeout=30_000)
    assert not tab.problems(), tab.problems()
    tab.screenshot("status-page.png", tmp_path)


def test_sync_now_asks_for_the_token_once_per_session_and_never_puts_it_in_url_or_cookie(
    daemon, tab_factory
):
    """Sync now refuses a wrong token and forgets it, starts a sync with the right one, and keeps
    the token in sessionStorage only (not the URL, a cookie or localStorage); a reload needs no
    token. The sync's report then shows in words, its skipped file (whose name is markup and not
    UTF-8) as text."""
    # A file the sync must skip, its name hostile: the skip list is user content too.
    notes = daemon.data_dir.parent / "notes"
    (notes / os.fsdecode(SKIPPED_NAME)).write_bytes(b"# Skipped\n\nNot indexed under this name.")
    tab = tab_factory(daemon.url)
    tab.goto("/ui/status")
    tab.page.wait_for_selector("#sync-now-btn", timeout=15_000)
    tab.page.fill("#admin-token", "not-the-token")
    tab.page.click("#sync-now-btn")
    outcome = """() => {
      const text = document.querySelector('#sync-now-result').textContent;
      return text && !text.startsWith('Starting') ? text : null;
    }"""
    assert "refused" in tab.wait_until(outcome).lower()
    tab.page.fill("#admin-token", daemon.token)
    tab.page.click("#sync-now-btn")
    assert re.search("started|already running", tab.wait_until(outcome), re.I)
    assert wait_for_log(daemon, '"trigger": "admin"')
    # The page refreshes itself into the new report: outcomes in words, the skip listed as text.
    report = """() => {
      const text = document.querySelector('#sync').innerText;
      return /skipped 1;/.test(text) && document.querySelector('#sync ul.skipped') ? text : null;
    }"""
    text = tab.wait_until(report)
    assert re.search(r"documents \d+ new, \d+ changed, \d+ unchanged, \d+ deleted", text), text
    assert "embedded" in text
    skipped = tab.page.locator("#sync ul.skipped li").all_inner_texts()
    assert any("<img src=x onerror=" in item and "not valid UTF-8" in item for item in skipped)
    assert tab.page.locator("#sync img").count() == 0
    assert tab.page.evaluate("window.__pwned === undefined")
    storage = tab.page.evaluate("JSON.stringify(sessionStorage)")
    assert daemon.token in storage
    assert daemon.token not in tab.page.url
    assert daemon.token not in tab.page.evaluate("document.cookie")
    assert tab.page.context.cookies() == []
    assert daemon.token not in tab.page.evaluate("JSON.stringify(localStorage)")
    # Typed once: a reload in the same tab needs no token to sync again.
    tab.page.reload()
    tab.page.wait_for_selector("#sync-now-btn", timeout=15_000)
    assert not tab.page.locator("#admin-token").is_visible()
    assert not tab.errors, tab.errors


def test_the_api_docs_render_with_no_network_but_the_daemon(daemon, tab_factory):
    """/docs renders every operation with Swagger UI from the package while every other origin is
    blocked, with no script error or CSP violation."""
    tab = tab_factory(daemon.url)
    tab.goto("/docs")
    tab.page.wait_for_selector(".opblock", timeout=30_000)
    paths = tab.page.locator(".opblock-summary-path").all_inner_texts()
    joined = " ".join(paths)
    for path in ("/search", "/ask", "/status", "/passages/{chunk_id}"):
        assert path in joined, paths
    assert tab.blocked == [], tab.blocked
    assert not tab.errors, tab.errors
    assert not tab.csp_violations(), tab.csp_violations()


def test_every_page_carries_the_security_headers(daemon):
    """The pages, a static file and the API answer with a CSP whose script-src is 'self' alone,
    default-src 'self', and nosniff."""
    for path in ("/", "/ui/status", "/docs", "/search?q=swap", "/ui/static/search.js"):
        response = httpx.get(f"{daemon.url}{path}", timeout=30)
        assert response.status_code == 200, (path, response.text[:200])
        policy = response.headers["content-security-policy"]
        script_src = policy.split("script-src")[1].split(";")[0]
        assert script_src.strip() == "'self'", policy
        assert "default-src 'self'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
