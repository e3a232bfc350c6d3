"""The background loop and restarts: timed ends, dependents, queues rebuilt from the database."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update
from workloads import make_team

import services
from main import create_app
from models import Deployment


def _status(engine: Engine, deployment_id: int) -> str:
    with engine.connect() as connection:
        return str(
            connection.scalar(select(Deployment.status).where(Deployment.id == deployment_id))
        )


def _wait_for(engine: Engine, deployment_id: int, status: str, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    current = _status(engine, deployment_id)
    while current != status and time.monotonic() < deadline:
        time.sleep(0.05)
        current = _status(engine, deployment_id)
    return current


def test_a_timed_deployment_completes_and_its_dependent_starts_without_any_request(
    tmp_path: Path, engine: Engine
) -> None:
    app = create_app(make_settings(tmp_path, scheduler_interval_seconds=0.1), engine=engine)
    with TestClient(app) as client:
        team = make_team(client, gpu=4)
        train = team.deploy(gpu=4, duration_seconds=1)
        evaluate = team.deploy(gpu=4, depends_on=[train["id"]])
        assert evaluate["status"] == "pending"

        # Only the database is read from here on: no request may trigger the pass.
        assert _wait_for(engine, evaluate["id"], "running") == "running"
        assert _status(engine, train["id"]) == "completed"
        events = [e["type"] for e in team.get(train)["events"]]
        assert events == ["created", "started", "completed"]


def test_a_dependent_in_another_cluster_starts_from_the_loop(
    tmp_path: Path, engine: Engine
) -> None:
    app = create_app(make_settings(tmp_path, scheduler_interval_seconds=0.1), engine=engine)
    with TestClient(app) as client:
        team = make_team(client, gpu=1)
        other = client.post(
            "/cluster/create",
            json={
                "name": "second",
                "organization_name": team.org,
                "total_cpu": 4,
                "total_ram": 4,
                "total_gpu": 1,
            },
            headers=team.headers,
        )
        assert other.status_code == 201
        first = team.deploy(gpu=1)
        team.cluster, home = "second", team.cluster
        dependent = team.deploy(gpu=1, depends_on=[first["id"]])
        team.cluster = home

        team.report(first, "completed")

        assert _wait_for(engine, dependent["id"], "running") == "running"


def test_a_preempted_timed_deployment_restarts_its_clock(tmp_path: Path, engine: Engine) -> None:
    app = create_app(make_settings(tmp_path, scheduler_interval_seconds=0.1), engine=engine)
    with TestClient(app) as client:
        team = make_team(client, gpu=1)
        timed = team.deploy(gpu=1, priority=1, duration_seconds=1)
        urgent = team.deploy(gpu=1, priority=5)
        time.sleep(1.2)  # longer than its duration, but it was not running
        team.cancel(urgent)

        restarted = team.get(timed)
        assert restarted["status"] == "running" and restarted["preemption_count"] == 1
        assert _wait_for(engine, timed["id"], "completed", seconds=5) == "completed"


def test_queues_survive_a_restart_because_they_live_in_the_database(
    tmp_path: Path, engine: Engine
) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings, engine=engine)) as client:
        team = make_team(client, gpu=2)
        running = team.deploy(gpu=2, priority=1)
        first = team.deploy(gpu=2, priority=5)  # preempts `running`
        second = team.deploy(gpu=1, priority=3)
        before = team.queue()

    with TestClient(create_app(settings, engine=engine)) as client:
        team.client = client
        assert [e["deployment_id"] for e in team.queue()] == [e["deployment_id"] for e in before]
        team.cancel(first)
        assert team.status(second) == "running"
        assert team.status(running) == "pending"  # 2 gpu needed, 1 free


def test_one_failing_cluster_does_not_stop_the_loop(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(make_settings(tmp_path, scheduler_interval_seconds=0.1), engine=engine)
    with TestClient(app) as client:
        broken = make_team(client, gpu=1)
        healthy = make_team(client, gpu=1)
        broken_cluster_id = broken.cluster_state()["id"]
        timed = healthy.deploy(gpu=1, duration_seconds=1)
        original = services.scheduling.schedule_locked_cluster

        def failing(session, cluster, now=None):  # type: ignore[no-untyped-def]
            if cluster.id == broken_cluster_id:
                raise RuntimeError("simulated failure")
            return original(session, cluster, now)

        monkeypatch.setattr(services.scheduling, "schedule_locked_cluster", failing)

        assert _wait_for(engine, timed["id"], "completed") == "completed"


def test_elapsed_deployments_found_by_a_request_are_finished_on_the_way(
    tmp_path: Path, engine: Engine
) -> None:
    with TestClient(create_app(make_settings(tmp_path), engine=engine)) as client:  # idle loop
        team = make_team(client, gpu=1)
        timed = team.deploy(gpu=1, duration_seconds=5)
        with engine.begin() as connection:  # pretend it started a minute ago
            connection.execute(
                update(Deployment)
                .where(Deployment.id == timed["id"])
                .values(started_at=datetime.now(UTC) - timedelta(minutes=1))
            )

        newcomer = team.deploy(gpu=1)

        assert newcomer["status"] == "running"
        assert team.status(timed) == "completed"


def test_the_loop_settles_a_dependent_whose_dependency_ended_unnoticed(
    client: TestClient, app: FastAPI, engine: Engine
) -> None:
    team = make_team(client, gpu=2)
    first = team.deploy(gpu=1)
    second = team.deploy(gpu=1)
    # Still waiting on `second` too: a dead dependency must fail it all the same.
    waits_on_first = team.deploy(gpu=1, depends_on=[first["id"], second["id"]])
    waits_on_second = team.deploy(gpu=1, depends_on=[second["id"]])
    # As when a dependency ends while its dependent's create is still uncommitted.
    with engine.begin() as connection:
        connection.execute(
            update(Deployment).where(Deployment.id == first["id"]).values(status="cancelled")
        )

    services.run_periodic_passes(app.state.session_factory)
    assert team.status(waits_on_first) == "failed"
    with engine.begin() as connection:
        connection.execute(
            update(Deployment).where(Deployment.id == second["id"]).values(status="completed")
        )

    services.run_periodic_passes(app.state.session_factory)

    failed = team.get(waits_on_first)
    assert failed["status"] == "failed" and str(first["id"]) in failed["reason"]
    assert team.status(waits_on_second) == "running"
