"""Operations: liveness and readiness probes, Prometheus metrics."""

from __future__ import annotations

import asyncio
import threading
import time

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import State

import metrics
import services
from database import READ_ONLY, database_answers, read_only
from routes import RATE_LIMITED, UNAUTHORIZED, SettingsDep

router = APIRouter(tags=["operations"])

METRICS_EXAMPLE = """\
# TYPE hypervisor_cluster_queue_length gauge
hypervisor_cluster_queue_length{cluster="gpu-a",organization="acme-ml"} 1.0
# TYPE hypervisor_cluster_allocated gauge
hypervisor_cluster_allocated{cluster="gpu-a",organization="acme-ml",resource="gpu"} 4.0
"""


# How old the per-cluster part of a scrape may be: however many scrapers ask, the database
# is read for it at most once per this many seconds (per process).
CLUSTER_METRICS_SECONDS = 5.0
# How old a readiness answer may be: however many probes ask, one database check at a time.
READINESS_SECONDS = 1.0


@router.get(
    "/healthz",
    summary="Liveness probe",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def healthz() -> dict[str, str]:
    """Liveness: 200 while the process serves."""
    # async: answered on the event loop, so it needs no worker thread (nor a request slot).
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness probe: does the database answer?",
    responses={
        200: {"content": {"application/json": {"example": {"status": "ready"}}}},
        503: {
            "description": "The database does not answer",
            "content": {"application/json": {"example": {"status": "database unavailable"}}},
        },
    },
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when the database answers, else 503."""
    if await _readiness(request.app).ready(request.app.state):
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "database unavailable"}, status_code=503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"example": METRICS_EXAMPLE}}},
        401: UNAUTHORIZED,
        429: RATE_LIMITED,
    },
)
def prometheus_metrics(request: Request, settings: SettingsDep) -> Response:
    """Prometheus text: HTTP traffic, and per cluster queue, running, allocation, total,
    preemptions and pass latency (the per-cluster part up to 5 s old). Open unless
    `HYPERVISOR_METRICS_TOKEN` is set; wrong tokens count against the caller's address."""
    token = settings.metrics_token
    if token and not metrics.scrape_authorized(request.headers.get("authorization", ""), token):
        raise services.Unauthorized("metrics need the operator's bearer token")
    app = request.app
    clusters = _shared(app, "cluster_metrics", CLUSTER_METRICS_SECONDS).get(
        lambda: _read_cluster_metrics(app)
    )
    return Response(metrics.render_process() + clusters, media_type=CONTENT_TYPE_LATEST)


def _read_cluster_metrics(app: FastAPI) -> bytes:
    with services.transaction(app.state.session_factory) as session:
        read_only(session)
        return metrics.render_clusters(services.cluster_gauges(session))


_SETTING_UP = threading.Lock()


def _shared(app: FastAPI, name: str, max_age: float) -> metrics.SharedSnapshot[bytes]:
    """The app's snapshot of that name, made on first use (one per app, so per database)."""
    with _SETTING_UP:
        snapshot: metrics.SharedSnapshot[bytes] | None = getattr(app.state, name, None)
        if snapshot is None:
            snapshot = metrics.SharedSnapshot(max_age)
            setattr(app.state, name, snapshot)
        return snapshot


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
