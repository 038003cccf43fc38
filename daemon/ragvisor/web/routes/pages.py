"""The daemon's own pages: search and ask (`GET /`), the operator's status page
(`GET /ui/status`), the API docs (`GET /docs`), and their files under `/ui/static/`.

Why here, and static: the pages are plain HTML, CSS and JavaScript shipped inside the package
(`web/static/`), so they need no build step at install time, and nothing they load comes from
another host — Swagger UI included (`static/vendor/swagger-ui`, vendored from a pinned npm
release by tools/vendor_swagger_ui.py). They talk to the same JSON API as everyone else; the
daemon renders nothing per request. `[ui] enabled = false` leaves them out (docs/web.md).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ragvisor.runtime.services import Services

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

# Page path -> its file. No-cache: a browser revalidates (ETag) so an upgraded daemon's page
# is never mixed with the old one's scripts; the files are small.
PAGES = {"/": "index.html", "/ui/status": "status.html", "/docs": "docs.html"}
PAGE_HEADERS = {"Cache-Control": "no-cache"}


def add_page_routes(app: FastAPI, services: Services) -> None:
    """The pages and `/ui/static/`, unless `[ui] enabled` is false."""
    if not services.settings.ui.enabled:
        return
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    for path, name in PAGES.items():
        _add_page(app, path, STATIC_DIR / name)


def _add_page(app: FastAPI, path: str, file: Path) -> None:
    def page() -> FileResponse:
        return FileResponse(file, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    app.add_api_route(path, page, methods=["GET"], include_in_schema=False, name=file.stem)
