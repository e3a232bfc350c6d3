"""The background loop and restarts: timed ends, dependents, queues rebuilt from the database.

Each test but the first drives time with the manual clock and runs one loop tick itself
(`services.run_periodic_passes`, the body `main._scheduler_loop` runs every interval).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import ManualClock, make_settings
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update
from workloads import make_team

import services
from helpers import create_cluster, moment
from main import (
    FORECAST_BURST_SECONDS,
    FORECAST_SHARE,
    create_app,
    forecast_budget,
    next_wait,
)
from models import Deployment


def _status(engine: Engine, deployment_id: int) -> str:
    with engine.connect() as connection:
        return str(
            connection.scalar(select(Deployment.status).where(Deployment.id == deployment_id))
        )


def tick(app: FastAPI) -> int:
    """One tick of the background loop, run here and now; how many cluster passes ran."""
    return services.run_periodic_passes(app.state.session_factory)


def test_the_loop_task_of_the_app_completes_a_timed_deployment_and_starts_its_dependent(
    tmp_path: Path, engine: Engine
) -> None:
    """The one test on real time: it proves the lifespan starts the loop task at all, which
    no direct call can. It waits for a state in the database, never for an amount of time;
    the deadline only keeps a broken loop from hanging the suite."""
    app = create_app(make_settings(tmp_path, scheduler_interval_seconds=0.1), engine=engine)
    with TestClient(app) as client:
        team = make_team(client, gpu=4)
        train = team.deploy(gpu=4, duration_seconds=1)
        evaluate = team.deploy(gpu=4, depends_on=[train["id"]])
        assert evaluate["status"] == "pending"

        # Only the database is read from here on: no request may trigger the pass.
        deadline = time.monotonic() + 30
        while _status(engine, evaluate["id"]) != "running" and time.monotonic() < deadline:
            time.sleep(0.05)

        assert _status(engine, evaluate["id"]) == "running"
        assert _status(engine, train["id"]) == "completed"
        events = [e["type"] for e in team.get(train)["events"]]
        assert events == ["created", "started", "completed"]


def test_a_tick_completes_a_timed_deployment_exactly_when_its_duration_has_elapsed(
    client: TestClient, app: FastAPI, clock: ManualClock
) -> None:
    team = make_team(client, gpu=4)
    started = clock.now()
    train = team.deploy(gpu=4, duration_seconds=60)
    evaluate = team.deploy(gpu=4, depends_on=[train["id"]])

    clock.advance(59)
    assert tick(app) == 1
    assert (team.status(train), team.status(evaluate)) == ("running", "pending")

    clock.advance(1)
    assert tick(app) == 1

    done = team.get(train)
    assert done["status"] == "completed" and done["reason"] is None
    assert moment(done["finished_at"]) == started + timedelta(seconds=60)
    assert [e["type"] for e in done["events"]] == ["created", "started", "completed"]
    dependent = team.get(evaluate)
    assert dependent["status"] == "running"
    assert moment(dependent["started_at"]) == started + timedelta(seconds=60)


def test_a_dependent_in_another_cluster_starts_right_after_the_commit_without_a_tick(
    client: TestClient, app: FastAPI
) -> None:
    team = make_team(client, gpu=1)
    create_cluster(client, team.headers, team.org, "second", cpu=4, ram=4, gpu=1)
    first = team.deploy(gpu=1)
    team.cluster, home = "second", team.cluster
    dependent = team.deploy(gpu=1, depends_on=[first["id"]])
    team.cluster = home

    team.report(first, "completed")

    assert team.status(dependent) == "running"
    assert tick(app) == 0  # nothing was left for the loop: both clusters are idle


def test_a_preempted_timed_deployment_restarts_its_clock(
    client: TestClient, app: FastAPI, clock: ManualClock
) -> None:
    team = make_team(client, gpu=1)
    timed = team.deploy(gpu=1, priority=1, duration_seconds=60)
    clock.advance(30)
    urgent = team.deploy(gpu=1, priority=5)
    assert team.status(timed) == "pending"
    clock.advance(100)  # longer than its duration, but it was not running

    team.cancel(urgent)
    restarted_at = clock.now()

    restarted = team.get(timed)
    assert restarted["status"] == "running" and restarted["preemption_count"] == 1
    assert moment(restarted["started_at"]) == restarted_at
    clock.advance(59)  # 30 s before the preemption + 59 s since: not yet 60 s of one run
    assert tick(app) == 1
    assert team.status(timed) == "running"
    clock.advance(1)
    assert tick(app) == 1
    done = team.get(timed)
    assert done["status"] == "completed"
    assert moment(done["finished_at"]) == restarted_at + timedelta(seconds=60)


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


def test_a_tick_skips_a_cluster_whose_pass_fails_and_passes_the_others(
    client: TestClient,
    app: FastAPI,
    engine: Engine,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = make_team(client, gpu=1)  # the lower id: its pass comes first in a tick
    healthy = make_team(client, gpu=1)
    broken_cluster_id = broken.cluster_state()["id"]
    corrupt = broken.deploy(gpu=1, duration_seconds=600)  # timed: the loop visits it
    timed = healthy.deploy(gpu=1, duration_seconds=60)
    # A running deployment without a start, due (a pass reads only the running rows it can
    # touch): the scheduler refuses the broken cluster's state.
    with engine.begin() as connection:
        connection.execute(
            update(Deployment)
            .where(Deployment.id == corrupt["id"])
            .values(started_at=None, ends_at=Deployment.created_at)
        )
    clock.advance(60)

    with caplog.at_level(logging.ERROR, logger="services.scheduling"):
        passes = tick(app)

    assert passes == 1
    assert healthy.status(timed) == "completed"
    assert [r.getMessage() for r in caplog.records if r.name.startswith("services")] == [
        f"scheduling pass failed cluster_id={broken_cluster_id}"
    ]


def test_elapsed_deployments_found_by_a_request_are_finished_on_the_way(
    client: TestClient, clock: ManualClock
) -> None:
    team = make_team(client, gpu=1)  # the app's loop ticks once an hour: not in this test
    timed = team.deploy(gpu=1, duration_seconds=5)
    clock.advance(60)

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

    tick(app)
    assert team.status(waits_on_first) == "failed"
    with engine.begin() as connection:
        connection.execute(
            update(Deployment).where(Deployment.id == second["id"]).values(status="completed")
        )

    tick(app)

    failed = team.get(waits_on_first)
    assert (
        failed["status"] == "failed"
        and failed["reason"] == f"dependency {first['id']} was cancelled"
    )
    assert team.status(waits_on_second) == "running"


def test_the_loop_wakes_at_the_next_known_end_when_it_comes_before_its_interval(
    client: TestClient, app: FastAPI, clock: ManualClock
) -> None:
    team = make_team(client, gpu=2)
    team.deploy(gpu=1, duration_seconds=30)
    clock.advance(10)
    team.deploy(gpu=1, duration_seconds=5)  # ends first: 5 s from now
    factory = app.state.session_factory

    assert services.seconds_to_next_end(factory) == 5.0
    assert next_wait(1.0, services.seconds_to_next_end(factory)) == 1.0
    assert next_wait(60.0, services.seconds_to_next_end(factory)) == 5.0
    # What the forecasts took since it was read comes off; due during them: at once.
    assert next_wait(60.0, 5.0, spent=1.5) == 3.5
    assert next_wait(60.0, 5.0, spent=7.0) == 0.01
    clock.advance(5)  # due now: the interval rules again, so a stuck pass cannot spin
    assert services.seconds_to_next_end(factory) is None
    assert next_wait(60.0, None) == 60.0


def _forecasts_run(spent: float, tick: float, ticks: int) -> int:
    """How many of `ticks` loop ticks, `tick` seconds apart, forecast when each forecast
    takes `spent` seconds (the loop's own bookkeeping, as `main._scheduler_loop` does it)."""
    budget, runs = FORECAST_BURST_SECONDS, 0
    for _ in range(ticks):
        budget = forecast_budget(budget, tick)
        if budget > 0:
            runs += 1
            budget -= spent
    return runs


def test_cheap_forecasts_run_on_every_tick() -> None:
    assert _forecasts_run(spent=0.03, tick=0.25, ticks=1000) == 1000


def test_expensive_forecasts_take_at_most_their_share_of_the_time() -> None:
    # 0.4 s forecasts (10,000 pending), one-second ticks, for an hour: after the burst saved
    # up, forecasting takes a quarter of the time, not 40%.
    runs = _forecasts_run(spent=0.4, tick=1.0, ticks=3600)
    share = runs * 0.4 / 3600
    assert FORECAST_SHARE - 0.01 <= share <= FORECAST_SHARE + FORECAST_BURST_SECONDS / 3600
