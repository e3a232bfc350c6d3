"""Operations: liveness and readiness probes, Prometheus metrics."""

from __future__ import annotations

import asyncio
import secrets
import time

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import State

import metrics
import services
from database import READ_ONLY, database_answers
from routes import UNAUTHORIZED, SessionDep, SettingsDep

router = APIRouter(tags=["operations"])

# How old a readiness answer may be: however many probes ask, one database check at a time.
READINESS_SECONDS = 1.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: 200 while the process serves."""
    # async: answered on the event loop, so it needs no worker thread (nor a request slot).
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The database does not answer"}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when the database answers, else 503."""
    if await _readiness(request.app).ready(request.app.state):
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "database unavailable"}, status_code=503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: UNAUTHORIZED},
)
def prometheus_metrics(request: Request, settings: SettingsDep, session: SessionDep) -> Response:
    """Prometheus text: HTTP traffic, and per cluster queue, running, allocation, total,
    preemptions and pass latency. Open unless `HYPERVISOR_METRICS_TOKEN` is set."""
    if settings.metrics_token:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.encode(), settings.metrics_token.encode()
        ):
            raise services.Unauthorized("metrics need the operator's bearer token")
    return Response(
        metrics.render(services.cluster_gauges(session)), media_type=CONTENT_TYPE_LATEST
    )


class _Readiness:
    """One database check at a time, its answer shared by the probes that came meanwhile:
    probes take no request slot, so a flood of them must not take every thread or
    connection either. The check reads only, so on SQLite it never waits for the write turn."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = asyncio.Lock()
        self.answer = False
        self.checked_at = -float("inf")

    async def ready(self, state: State) -> bool:
        if self.loop is not asyncio.get_running_loop():  # an asyncio lock serves one loop
            self.loop, self.lock = asyncio.get_running_loop(), asyncio.Lock()
        async with self.lock:
            if time.monotonic() - self.checked_at >= READINESS_SECONDS:
                engine = state.engine.execution_options(**{READ_ONLY: True})
                self.answer = await asyncio.to_thread(database_answers, engine)
                self.checked_at = time.monotonic()
            return self.answer


def _readiness(app: FastAPI) -> _Readiness:
    # Only ever called on the event loop's thread: no lock needed to make it once.
    readiness: _Readiness | None = getattr(app.state, "readiness", None)
    if readiness is None:
        readiness = app.state.readiness = _Readiness()
    return readiness
