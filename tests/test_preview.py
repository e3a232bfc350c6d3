"""`POST /deployment/preview` (SPEC §4): what a create would do now, with nothing stored."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import ON_POSTGRES, ManualClock
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from workloads import make_team

import services
from helpers import create_cluster, member_with_role
from models import Cluster, Deployment, DeploymentEvent
from services.forecasting import StartQuestion


def _stored(app: Any) -> tuple[int, int, list[tuple[int, str]], int]:
    with app.state.session_factory() as session:
        return (
            session.scalar(select(func.count()).select_from(Deployment)) or 0,
            session.scalar(select(func.count()).select_from(DeploymentEvent)) or 0,
            [tuple(row) for row in session.execute(select(Deployment.id, Deployment.status))],
            sum(session.scalars(select(Cluster.preemptions))),
        )


def test_a_preview_names_its_victims_and_stores_nothing(
    client: TestClient, app: Any, clock: ManualClock
) -> None:
    team = make_team(client, gpu=4)
    keeps = team.deploy(gpu=2, priority=1)
    clock.advance(10)
    goes = team.deploy(gpu=2, priority=1)
    before = _stored(app)

    answer = client.post(
        "/deployment/preview", json=team.body(gpu=2, priority=5), headers=team.headers
    )

    assert answer.status_code == 200, answer.text
    body = answer.json()
    # Equal unsaved cost per gpu would keep the earlier one: the newer, cheaper run goes.
    assert body["would_start"] is True
    assert body["would_preempt"] == [goes["id"]]
    assert (body["queue_position"], body["reason"], body["estimate_basis"]) == (
        None,
        None,
        "declared",
    )
    assert datetime.fromisoformat(body["estimated_start_at"]) == clock.now()
    assert _stored(app) == before
    assert team.status(keeps) == team.status(goes) == "running"


def test_a_preview_of_a_waiting_deployment_gives_its_place_and_reason(
    client: TestClient, app: Any
) -> None:
    team = make_team(client, gpu=1)
    team.deploy(gpu=1, priority=5)
    team.deploy(gpu=1, priority=5)
    before = _stored(app)

    body = client.post(
        "/deployment/preview", json=team.body(gpu=1, priority=5), headers=team.headers
    ).json()

    assert (body["would_start"], body["would_preempt"], body["queue_position"]) == (False, [], 2)
    assert body["reason"].startswith("needs 1 gpu, 0 available")
    assert _stored(app) == before


def test_a_preview_has_the_validation_and_roles_of_a_create(client: TestClient) -> None:
    team = make_team(client, gpu=1)
    viewer = member_with_role(client, team.headers, team.org, "viewer")

    too_big = client.post("/deployment/preview", json=team.body(gpu=2), headers=team.headers)
    as_viewer = client.post("/deployment/preview", json=team.body(gpu=1), headers=viewer)
    unknown_dependency = client.post(
        "/deployment/preview", json=team.body(gpu=1, depends_on=[999]), headers=team.headers
    )

    assert too_big.status_code == 422
    assert as_viewer.status_code == 403
    assert unknown_dependency.status_code == 422


def _tick(app: Any) -> None:
    """One loop tick: the passes, then the forecasts of clusters whose state moved."""
    services.run_periodic_passes(app.state.session_factory)
    services.refresh_forecasts(app.state.session_factory)


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def test_a_preview_of_a_waiting_deployment_gives_the_start_the_forecast_and_the_run_give(
    client: TestClient, app: Any, clock: ManualClock
) -> None:
    team = make_team(client, gpu=1)
    team.deploy(gpu=1, duration_seconds=100)
    team.deploy(gpu=1, duration_seconds=50)
    started = clock.now()
    clock.advance(10)
    before = _stored(app)

    body = client.post(
        "/deployment/preview", json=team.body(gpu=1, duration_seconds=30), headers=team.headers
    ).json()

    expected = started + timedelta(seconds=150)
    assert (body["would_start"], body["queue_position"]) == (False, 2)
    assert (_at(body["estimated_start_at"]), body["estimate_basis"]) == (expected, "declared")
    assert _stored(app) == before
    # The same create, forecast by the loop, then run: the same start.
    created = team.deploy(gpu=1, duration_seconds=30)
    _tick(app)
    assert _at(team.get(created)["estimated_start_at"]) == expected
    clock.advance(90)
    _tick(app)
    clock.advance(50)
    _tick(app)
    assert _at(team.get(created)["started_at"]) == expected


def test_a_preview_behind_a_deployment_of_unknown_duration_has_no_start(
    client: TestClient, app: Any
) -> None:
    team = make_team(client, gpu=1)
    team.deploy(gpu=1)  # no duration, no history
    before = _stored(app)

    body = client.post(
        "/deployment/preview", json=team.body(gpu=1, duration_seconds=30), headers=team.headers
    ).json()

    assert (body["would_start"], body["estimated_start_at"], body["estimate_basis"]) == (
        False,
        None,
        "unknown",
    )
    assert _stored(app) == before


def test_a_preview_behind_a_run_known_from_history_says_history(
    client: TestClient, app: Any, clock: ManualClock
) -> None:
    team = make_team(client, gpu=1)
    for seconds in (50, 60, 300):
        job = team.deploy(gpu=1, docker_image="ghcr.io/acme/train:1.0")
        clock.advance(seconds)
        team.report(job, "completed")
    team.deploy(gpu=1, docker_image="ghcr.io/acme/train:2.0")  # 60 s by its history
    started = clock.now()
    clock.advance(20)

    body = client.post(
        "/deployment/preview", json=team.body(gpu=1, duration_seconds=30), headers=team.headers
    ).json()

    assert (_at(body["estimated_start_at"]), body["estimate_basis"]) == (
        started + timedelta(seconds=60),
        "history",
    )


def test_a_preview_simulates_after_its_transaction_let_go_of_the_cluster(
    client: TestClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the preview simulates, another writer can take the cluster at once: its row
    lock on PostgreSQL, the write turn on SQLite (which would otherwise wait for it)."""
    team = make_team(client, gpu=1)
    team.deploy(gpu=1, duration_seconds=100)
    answer = StartQuestion.answer
    free_while_simulating: list[bool] = []
    take_the_cluster = (
        "SELECT id FROM clusters WHERE name = :name FOR UPDATE NOWAIT"
        if ON_POSTGRES
        else "UPDATE clusters SET name = name WHERE name = :name"
    )

    def try_the_lock(question: StartQuestion) -> Any:
        with app.state.engine.connect() as other:
            try:
                other.execute(text(take_the_cluster), {"name": team.cluster})
                free_while_simulating.append(True)
            except OperationalError:
                free_while_simulating.append(False)
            other.rollback()
        return answer(question)

    monkeypatch.setattr(StartQuestion, "answer", try_the_lock)
    body = client.post(
        "/deployment/preview", json=team.body(gpu=1, duration_seconds=30), headers=team.headers
    ).json()

    assert body["estimate_basis"] == "declared"
    assert free_while_simulating == [True]


def test_a_preview_finding_every_simulation_slot_busy_answers_unknown_at_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Previews that would wait simulate at most PREVIEW_SIMULATIONS at a time: one more
    answers "unknown" (never a made-up time) instead of queueing CPU-heavy work."""
    team = make_team(client, gpu=1)
    team.deploy(gpu=1, duration_seconds=100)
    busy = threading.BoundedSemaphore(1)
    busy.acquire()
    monkeypatch.setattr(services.deployments, "PREVIEW_SIMULATIONS", busy)
    monkeypatch.setattr(services.deployments, "PREVIEW_WAIT_SECONDS", 0)

    crowded = client.post(
        "/deployment/preview", json=team.body(gpu=1, duration_seconds=30), headers=team.headers
    ).json()
    busy.release()
    free = client.post(
        "/deployment/preview", json=team.body(gpu=1, duration_seconds=30), headers=team.headers
    ).json()

    assert (crowded["would_start"], crowded["queue_position"]) == (False, 1)
    assert (crowded["estimated_start_at"], crowded["estimate_basis"]) == (None, "unknown")
    assert free["estimate_basis"] == "declared" and free["estimated_start_at"] is not None


def test_a_preview_leaves_no_passes_due_in_other_clusters(
    client: TestClient, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A would-be create that ends a due dependency makes its dependents' cluster due; the
    rollback undoes that end, so the pass it would have caused after the commit is not run."""
    team = make_team(client, gpu=2)
    team.deploy(gpu=1)  # holds one GPU throughout
    dependency = team.deploy(gpu=1, duration_seconds=10)
    other = replace(team, cluster=create_cluster(client, team.headers, team.org, gpu=1)["name"])
    other.deploy(gpu=1, depends_on=[dependency["id"]])
    clock.advance(11)  # the dependency's time is up; no loop has run
    passes_after_commit: list[set[int]] = []
    run_after = services.scheduling.run_passes_after_commit

    def spy(factory: Any, due: set[int]) -> None:
        passes_after_commit.append(set(due))
        run_after(factory, due)

    monkeypatch.setattr(services.scheduling, "run_passes_after_commit", spy)

    previews = [
        client.post("/deployment/preview", json=team.body(gpu=gpu), headers=team.headers).json()
        for gpu in (1, 2)  # would start in the room the dependency frees; would wait
    ]
    team.deploy(gpu=1)

    assert [preview["would_start"] for preview in previews] == [True, False]
    assert len(passes_after_commit) == 1  # the real create's, none of the previews'
