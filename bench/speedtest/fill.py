"""Deployments written straight into Hypervisor's tables (SQLAlchemy Core on `models`):
creating 100,000 through the API would only measure the filling. Each row is what the
service itself would have stored for a deployment in that state (see `services.scheduling`:
`_start` sets started_at/ends_at and clears checkpointed_at, `finish` sets finished_at and
the reason); events are not written, since no measured read looks at history."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, insert, select, text

from models import Cluster, Deployment, Organization, User

IMAGE = "ghcr.io/acme/train:1.0"
BATCH = 5000


def engine_for(database_url: str) -> Engine:
    if database_url.startswith("sqlite"):
        return create_engine(database_url, connect_args={"timeout": 60})
    return create_engine(database_url)


def owners(engine: Engine, organization: str, cluster: str) -> dict[str, int]:
    """The ids a deployment row refers to: its cluster, organization and creator."""
    with engine.connect() as connection:
        org_id = connection.scalar(select(Organization.id).where(Organization.name == organization))
        cluster_id = connection.scalar(
            select(Cluster.id).where(Cluster.organization_id == org_id, Cluster.name == cluster)
        )
        user_id = connection.scalar(select(User.id).where(User.username == "bench"))
    return {"cluster_id": cluster_id, "organization_id": org_id, "created_by_id": user_id}


def _base(ids: dict[str, int], request: tuple[int, int, int], priority: int) -> dict[str, Any]:
    cpu, ram, gpu = request
    return {
        **ids,
        "name": None,
        "docker_image": IMAGE,
        "required_cpu": cpu,
        "required_ram": ram,
        "required_gpu": gpu,
        "priority": priority,
        "eligible": True,
        "reason": None,
        "preempted_by_id": None,
        "preemption_count": 0,
        "saved_seconds": 0.0,
        "checkpointed_at": None,
    }


def running_rows(
    ids: dict[str, int], count: int, request: tuple[int, int, int], priorities: tuple[int, int]
) -> list[dict[str, Any]]:
    """Running for up to an hour; every other one timed, with an end days away (never due
    during a run, so no pass completes them)."""
    rng, now = random.Random(count), datetime.now(UTC)
    rows = []
    for index in range(count):
        started = now - timedelta(seconds=rng.uniform(60, 3600))
        created = started - timedelta(seconds=rng.uniform(0, 600))
        duration = rng.randint(2 * 86400, 7 * 86400) if index % 2 == 0 else None
        rows.append(
            {
                **_base(ids, request, rng.randint(*priorities)),
                "status": "running",
                "duration_seconds": duration,
                "created_at": created,
                "waiting_since": created,
                "started_at": started,
                "ends_at": started + timedelta(seconds=duration) if duration else None,
                "finished_at": None,
            }
        )
    return rows


def pending_rows(
    ids: dict[str, int], count: int, request: tuple[int, int, int]
) -> list[dict[str, Any]]:
    """Waiting since submission, one a second up to now, priorities 0-4 in turn."""
    now = datetime.now(UTC)
    rows = []
    for index in range(count):
        created = now - timedelta(seconds=count - index)
        rows.append(
            {
                **_base(ids, request, index % 5),
                "status": "pending",
                "duration_seconds": 3600 if index % 2 == 0 else None,
                "created_at": created,
                "waiting_since": created,
                "started_at": None,
                "ends_at": None,
                "finished_at": None,
            }
        )
    return rows


def finished_rows(ids: dict[str, int], count: int) -> list[dict[str, Any]]:
    """History: 80% completed after their duration, 10% failed while running, 10% cancelled
    while waiting; all ended days ago."""
    rng, now = random.Random(count), datetime.now(UTC)
    rows = []
    for index in range(count):
        created = now - timedelta(days=30, seconds=-index)
        started = created + timedelta(seconds=rng.uniform(1, 600))
        duration = rng.randint(60, 86400)
        ends = started + timedelta(seconds=duration)
        row = {
            **_base(ids, (rng.randint(1, 8), rng.randint(1, 64), rng.randint(0, 2)), index % 10),
            "duration_seconds": duration,
            "created_at": created,
            "waiting_since": created,
            "started_at": started,
            "ends_at": ends,
        }
        kind = index % 10
        if kind == 8:
            row |= {"status": "failed", "finished_at": started + (ends - started) / 2}
            row["reason"] = "exited with code 1"
        elif kind == 9:
            row |= {"status": "cancelled", "started_at": None, "ends_at": None}
            row |= {"finished_at": created + timedelta(seconds=30), "reason": "cancelled"}
        else:
            row |= {"status": "completed", "finished_at": ends}
        rows.append(row)
    return rows


def insert_rows(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Insert in batches, then let PostgreSQL's planner see the new sizes (autovacuum would
    within a minute; SQLite keeps no statistics unless asked, and the service never asks)."""
    with engine.begin() as connection:
        for start in range(0, len(rows), BATCH):
            connection.execute(insert(Deployment.__table__), rows[start : start + BATCH])
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))


def count_status(engine: Engine, cluster_id: int) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Deployment.status, text("count(*)"))
            .where(Deployment.cluster_id == cluster_id)
            .group_by(Deployment.status)
        ).all()
    return {status: int(n) for status, n in rows}
