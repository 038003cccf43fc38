"""A real browser for the page tests: Debian's Chromium, headless, driven by Playwright.

Why this way: the pages are proven where people use them — scripts running in a browser, the
Content-Security-Policy enforced, streams read by `fetch` — not by reading HTML. Playwright comes
from PyPI and drives `/usr/bin/chromium` (installed by `make browser`); it never downloads a
browser. Every tab is fenced to the daemon: any request to another origin is aborted and
recorded, so a page that needed the internet fails its test here as it would on a closed host.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# As root, and quiet: no sandbox (root), no GPU, and none of Chromium's own calls home, which a
# closed network refuses many at a time.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# Where `make screenshots` asks the tests to leave their pictures (README, docs/web.md).
SCREENSHOT_DIR = os.environ.get("RAGVISOR_SCREENSHOTS")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium per test module (a tab per test gets its own context).

    Per module, not per session: Playwright's sync API runs an event loop in the main thread
    for as long as it is open, and every later test that calls `asyncio.run` would meet it."""
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: `make browser` installs Debian's chromium (needs root)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: `make install` installs it"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Tab:
    """One page in a fresh browser context, and what it did that a test may want to check."""

    page: Any
    origin: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def goto(self, path: str) -> None:
        self.page.goto(f"{self.origin}{path}", wait_until="load")

    def csp_violations(self) -> list[str]:
        return [line for line in self.console if "Content Security Policy" in line]

    def problems(self) -> list[str]:
        """Script errors, CSP violations, dialogs and off-host requests: none on a good page."""
        return [*self.errors, *self.csp_violations(), *self.dialogs, *self.blocked]

    def wait_until(self, predicate: str, arg: Any = None, timeout_s: float = 30.0) -> Any:
        """Poll `predicate` (a JavaScript function of `arg`) until it returns something truthy,
        and return that. Playwright's own `wait_for_function` compiles its predicate inside the
        page, which the pages' Content-Security-Policy (rightly) forbids."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.page.evaluate(predicate, arg)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {timeout_s:g} s: {predicate}")
            self.page.wait_for_timeout(200)

    def screenshot(self, name: str, tmp_path: Path) -> Path:
        """A full-page PNG in the test's folder, copied to $RAGVISOR_SCREENSHOTS if set."""
        target = tmp_path / name
        self.page.screenshot(path=str(target), full_page=True)
        if SCREENSHOT_DIR:
            Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
            (Path(SCREENSHOT_DIR) / name).write_bytes(target.read_bytes())
        return target


def open_tab(chromium: Any, daemon_url: str, *, width: int = 1200, height: int = 900) -> Tab:
    """A new context (fresh storage) and page, fenced to `daemon_url`'s origin."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(daemon_url))
    context = chromium.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    tab = Tab(page, origin)

    def fence(route: Any) -> None:
        url = route.request.url
        if url.startswith(origin + "/") or url == origin:
            route.continue_()
        else:
            tab.blocked.append(url)
            route.abort("blockedbyclient")

    context.route("**/*", fence)
    page.on("console", lambda message: tab.console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: tab.errors.append(f"pageerror: {error}"))

    def on_dialog(dialog: Any) -> None:
        tab.dialogs.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return tab


@pytest.fixture
def tab_factory(chromium: Any) -> Iterator[Any]:
    """Open tabs on demand; their contexts are closed at the end of the test."""
    tabs: list[Tab] = []

    def make(daemon_url: str, **size: int) -> Tab:
        tab = open_tab(chromium, daemon_url, **size)
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        tab.page.context.close()
