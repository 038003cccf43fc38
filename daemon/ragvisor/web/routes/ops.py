"""The operator's routes: liveness, readiness, the whole picture, metrics, and the admin sync."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ragvisor import __version__
from ragvisor.errors import RagvisorError
from ragvisor.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ragvisor.runtime import reports
from ragvisor.runtime.services import Services
from ragvisor.web.auth import admin_guard
from ragvisor.web.openapi import (
    ADMIN_SECURITY,
    error_responses,
)
from ragvisor.web.schemas import (
    HealthResponse,
    HistoryResponse,
    ReadinessResponse,
    SyncFinished,
    SyncStarted,
)


def add_ops_routes(app: FastAPI, services: Services) -> None:
    """`/healthz`, `/readyz`, `/status`, `/metrics` and the admin sync routes."""
    require_admin = admin_guard(services.admin_token)

    @app.get("/healthz", summary="The process is alive", response_model=HealthResponse)
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get(
        "/readyz",
        summary="The embedder is loaded, the store is open, the generator answers",
        response_model=ReadinessResponse,
        responses={503: {"model": ReadinessResponse, "description": "A check is not ok"}},
    )
    async def readyz() -> JSONResponse:
        checks = await run_in_threadpool(reports.readiness, services)
        if services.generator is not None:
            checks["generator"] = await _generator_check(services)
        # `required: false` checks (the sync's) inform; they never take a replica out of rotation.
        ready = all(check["ok"] for check in checks.values() if check.get("required", True))
        return JSONResponse(
            {"ready": ready, "capabilities": reports.capabilities(checks), "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.post(
        "/admin/sync",
        summary="Start a sync now",
        dependencies=[Depends(require_admin)],
        response_model=SyncFinished,
        responses={
            200: {"description": "wait=true: the sync ran, here is its report"},
            202: {"model": SyncStarted, "description": "The sync started in the background"},
            **error_responses(401, 409, 422, 502, 503, 504),
        },
        openapi_extra=ADMIN_SECURITY,
    )
    async def admin_sync(
        wait: Annotated[bool, Query(description="run now and return the report")] = False,
    ) -> JSONResponse:
        if wait:
            async with services.lanes["sync"].slot():
                report = await run_in_threadpool(services.sync_runner.run, trigger="admin")
            return JSONResponse({"status": "finished", "report": report.as_dict()})
        services.sync_runner.start(trigger="admin")  # BusyError -> 409 before anything starts
        return JSONResponse(
            {"status": "started", "sync": services.sync_runner.state.as_dict()}, status_code=202
        )

    @app.get(
        "/admin/sync",
        summary="State of the last sync",
        dependencies=[Depends(require_admin)],
        responses=error_responses(401),
        openapi_extra=ADMIN_SECURITY,
    )
    def admin_sync_state() -> dict[str, Any]:
        return services.sync_runner.state.as_dict()

    @app.get("/status", summary="Lanes, backends, breakers, memory, sync: the whole picture")
    def status() -> dict[str, Any]:
        return reports.status(services)

    if services.history is not None:  # `[ui] enabled`; otherwise the path is a 404
        history = services.history

        @app.get(
            "/status/history",
            summary="The last hour of memory, RSS and latency samples (the status page's plots)",
            response_model=HistoryResponse,
        )
        def status_history() -> JSONResponse:
            return JSONResponse(history.as_dict())

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(services.metrics.render(), media_type=METRICS_CONTENT_TYPE)


async def _generator_check(services: Services) -> dict[str, Any]:
    """Does the generator answer `/api/version`? (Cheap: loads no model.)"""
    assert services.generator is not None
    generator = services.generator
    check: dict[str, Any] = {"model": generator.model, "url": generator.base_url}
    if services.worker is not None:
        check["worker"] = services.worker.describe()
        if check["worker"]["state"] != "running":
            # Until the worker's own start check has seen it answer, `/ask` is answered with
            # passages (the answerer asks the same state): ready must not say otherwise, even
            # if the worker's HTTP server already answers this probe.
            check.update(ok=False, error=f"the worker is {check['worker']['state']}")
            return check
    try:
        check["version"] = await generator.version(timeout=2.0)
        check["ok"] = True
    except RagvisorError as exc:
        check.update(ok=False, error=str(exc))
    return check
