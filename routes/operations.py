"""Operations: liveness and readiness probes, Prometheus metrics."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

import metrics
import services
from database import database_answers
from routes import UNAUTHORIZED, SessionDep, SettingsDep

router = APIRouter(tags=["operations"])

METRICS_EXAMPLE = """\
# TYPE hypervisor_cluster_queue_length gauge
hypervisor_cluster_queue_length{cluster="gpu-a",organization="acme-ml"} 1.0
# TYPE hypervisor_cluster_allocated gauge
hypervisor_cluster_allocated{cluster="gpu-a",organization="acme-ml",resource="gpu"} 4.0
"""


@router.get(
    "/healthz",
    summary="Liveness probe",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
def healthz() -> dict[str, str]:
    """Liveness: 200 while the process serves."""
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
def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when the database answers, else 503."""
    if database_answers(request.app.state.engine):
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "database unavailable"}, status_code=503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"example": METRICS_EXAMPLE}}},
        401: UNAUTHORIZED,
    },
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
