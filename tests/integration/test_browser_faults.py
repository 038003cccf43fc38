"""The pages when the backends fail, in a real browser: the supervision rig of
tests/integration/test_supervision.py (a daemon whose generator and embedder each sit behind a
fault proxy), with the embedded llama.cpp worker as the generator.

What a person sees: an extractive answer that says why, keyword results that say they are
degraded, and — on the operator's page — an open breaker and a restarted worker while the
backend hangs.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from ragvisor.faultproxy import Fault, FaultPlan
from tests.integration.browser import chromium, tab_factory
from tests.integration.generators import Generator
from tests.integration.test_supervision import Rig, ask, calm, rig, wait_for_level

__all__ = ["calm", "chromium", "rig", "tab_factory"]  # fixtures, used by name

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generator() -> Generator:
    """The embedded worker only: Ollama's side of the same faults is test_supervision's."""
    return Generator("worker")


def test_a_failing_generator_gives_an_extractive_answer_that_says_why(rig: Rig, tab_factory):
    """Every generator call fails at the proxy: the page shows the passages as an extractive answer,
    says so and why (the generator), with its sources."""
    rig.chat_proxy.set_plan(FaultPlan(probabilities={Fault.HTTP_500: 1.0}))
    tab = tab_factory(rig.daemon.url)
    tab.goto("/")
    tab.page.fill("#q", "what should vm.swappiness be on a small droplet?")
    tab.page.click("#ask-btn")
    tab.page.wait_for_selector("#answer[data-state=done]", timeout=60_000)
    notice = tab.page.locator("#answer-degraded")
    assert notice.is_visible()
    words = notice.inner_text().lower()
    assert "extractive" in words, words
    assert "generator" in words, words
    assert "swappiness" in tab.page.locator("#answer").inner_text().lower()
    assert tab.page.locator("#citations .citation").count() >= 1
    assert not tab.errors, tab.errors


def test_a_failing_embedder_gives_keyword_results_that_say_so(rig: Rig, tab_factory):
    """Every embedder call fails at the proxy: the results are keyword results, and the page says so
    in words, naming the embedder."""
    rig.embed_proxy.set_plan(FaultPlan(probabilities={Fault.HTTP_500: 1.0}))
    tab = tab_factory(rig.daemon.url)
    tab.goto("/")
    tab.page.fill("#q", "swappiness")
    tab.page.press("#q", "Enter")
    tab.page.wait_for_selector("#results li.result", timeout=30_000)
    notice = tab.page.locator("#search-degraded")
    assert notice.is_visible()
    words = notice.inner_text().lower()
    assert "keyword" in words, words
    assert "embedder" in words, words
    assert "ops/swap.md" in tab.page.locator("#results li.result .path").first.inner_text()
    assert not tab.errors, tab.errors


def test_a_shed_question_says_to_come_back_and_when(rig: Rig, tab_factory):
    """Memory critical (the probe's file says 100 MB left): /ask is shed with 503 and
    Retry-After; the page says in plain words that the daemon is busy and when to try again,
    and the status page shows the memory level. Search keeps answering."""
    rig.memory_file.write_text(json.dumps({"available_mb": 100}))
    try:
        assert wait_for_level(rig, "critical")
        tab = tab_factory(rig.daemon.url)
        tab.goto("/")
        tab.page.fill("#q", "what should vm.swappiness be on a small droplet?")
        tab.page.click("#ask-btn")
        error = tab.page.locator("#error")
        error.wait_for(state="visible", timeout=30_000)
        words = error.inner_text()
        assert "busy" in words.lower(), words
        assert re.search(r"Try again in \d+ seconds?", words), words
        tab.page.wait_for_selector("#results li.result", timeout=30_000)
        tab.goto("/ui/status")
        tab.wait_until("() => /critical/.test(document.querySelector('#memory').textContent)")
        assert not tab.errors, tab.errors
    finally:
        rig.memory_file.write_text("{}")
        wait_for_level(rig, "ok", timeout=20)


def test_the_status_page_shows_an_open_breaker_and_a_restart_while_the_backend_hangs(
    rig: Rig, tab_factory
):
    """Every generator call hangs at the proxy: hung calls start the ladder, which restarts
    the worker; repeated failures open the breaker. The page, refreshing itself, shows both."""
    restarts_before = rig.status()["backends"]["generator"]["worker"]["restarts"]
    rig.chat_proxy.set_plan(FaultPlan(probabilities={Fault.HANG: 1.0}))
    tab = tab_factory(rig.daemon.url)
    tab.goto("/ui/status")
    tab.page.wait_for_selector("[data-backend=generator] .breaker", timeout=15_000)
    stop = threading.Event()

    def keep_asking() -> None:  # the load that meets the hang, as users would bring it
        while not stop.is_set():
            ask(rig.daemon.url)
            time.sleep(0.2)

    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    try:
        tab.wait_until(
            """(before) => {
              const card = document.querySelector('[data-backend=generator]');
              if (!card) return false;
              const breaker = card.querySelector('.breaker');
              const restarts = card.querySelector('.worker-restarts');
              return breaker && breaker.textContent.trim().startsWith('open')
                && restarts && Number(restarts.textContent.trim()) > before;
            }""",
            restarts_before,
            timeout_s=120,
        )
    finally:
        stop.set()
        rig.plan(rig.chat_proxy)
        asker.join(60)
    assert rig.status()["backends"]["generator"]["worker"]["restarts"] > restarts_before
    assert not tab.errors, tab.errors
