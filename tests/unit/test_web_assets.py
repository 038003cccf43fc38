"""The files the pages are served from: present in the package, the vendored Swagger UI exactly
the pinned release's (tools/vendor_swagger_ui.py), and nothing that loads from another host."""

from __future__ import annotations

import hashlib
import json
import re

from ragvisor.web.routes.pages import PAGES, STATIC_DIR

VENDOR = STATIC_DIR / "vendor" / "swagger-ui"


def test_the_vendored_swagger_ui_is_the_pinned_release_byte_for_byte():
    """Each vendored Swagger UI file has the sha256 its manifest records (tools/vendor_swagger_ui.py
    wrote both from the pinned release)."""
    manifest = json.loads((VENDOR / "MANIFEST.json").read_text())
    assert manifest["package"] == "swagger-ui-dist"
    for name, sha256 in manifest["files"].items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == sha256, name
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"} <= set(manifest["files"])


def test_every_page_exists_and_loads_only_from_the_daemon():
    """Every page file exists, and every src/href is a path on the daemon whose static file exists:
    nothing loads from another host."""
    for name in PAGES.values():
        html = (STATIC_DIR / name).read_text()
        for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert ref.startswith("/"), f"{name} loads {ref} from elsewhere"
            assert not ref.startswith("//"), f"{name} loads {ref} from another host"
            if ref.startswith("/ui/static/"):
                assert (STATIC_DIR / ref.removeprefix("/ui/static/")).is_file(), ref


def test_no_page_holds_an_inline_script_or_handler():
    """The Content-Security-Policy forbids them; a page that had one would break, not run."""
    for name in PAGES.values():
        html = (STATIC_DIR / name).read_text()
        for body in re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S):
            assert not body.strip(), f"{name} has an inline script"
        assert not re.search(r"\son[a-z]+\s*=", html), f"{name} has an inline event handler"
