"""`Allow` names every method of a path: on OPTIONS (204) and on every 405."""

from __future__ import annotations

import asyncio

import httpx
import structlog
from fastapi import FastAPI

from ragvisor.web.errors import install_error_handlers
from ragvisor.web.methods import OptionsMiddleware


def two_route_app() -> FastAPI:
    """A path answered by two routes (as /admin/sync is), and one by a single route."""
    app = FastAPI()
    install_error_handlers(app, structlog.get_logger())
    app.add_middleware(OptionsMiddleware, routes=app.router.routes)

    @app.get("/thing")
    def read() -> dict[str, str]:
        return {"read": "ok"}

    @app.post("/thing")
    def write() -> dict[str, str]:
        return {"write": "ok"}

    @app.get("/only-get")
    def only() -> dict[str, str]:
        return {"only": "ok"}

    return app


def call(method: str, path: str) -> httpx.Response:
    """One request to the app in-process."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=two_route_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.request(method, path)

    return asyncio.run(send())


def test_options_answers_204_with_every_method():
    """OPTIONS on a known path is a 204 whose Allow lists both routes' methods and OPTIONS."""
    response = call("OPTIONS", "/thing")
    assert response.status_code == 204
    assert response.headers["allow"] == "GET, OPTIONS, POST"
    assert response.content == b""


def test_405_lists_the_methods_of_every_route_of_the_path():
    """Starlette would name only the first route's methods (`Allow: GET`); the path has POST too."""
    response = call("DELETE", "/thing")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, OPTIONS, POST"
    assert response.json() == {
        "error": "DELETE is not allowed on /thing; it answers GET, OPTIONS, POST",
        "code": "method_not_allowed",
    }


def test_a_single_route_path_and_an_unknown_path():
    """One route: its methods and OPTIONS; no route at all: OPTIONS is the router's 404."""
    assert call("PUT", "/only-get").headers["allow"] == "GET, OPTIONS"
    missing = call("OPTIONS", "/nowhere")
    assert missing.status_code == 404
    assert "allow" not in missing.headers
