"""The forecast as requests see it (SPEC §4 estimate fields, §5 "Forecast"): made by the
loop, stored, read by every request; never simulated on a request."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import ManualClock
from fastapi.testclient import TestClient
from workloads import Team, make_team

import forecast
import services
from services.forecasting import recheck_at


def _tick(app: Any) -> None:
    """One loop tick: the passes, then the forecasts of clusters whose state moved."""
    services.run_periodic_passes(app.state.session_factory)
    services.refresh_forecasts(app.state.session_factory)


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def test_a_chain_of_timed_deployments_is_forecast_end_to_start(
    client: TestClient, app: Any, clock: ManualClock
) -> None:
    team = make_team(client, gpu=1)
    first = team.deploy(gpu=1, duration_seconds=100)
    second = team.deploy(gpu=1, duration_seconds=50)
    third = team.deploy(gpu=1, duration_seconds=30)
    now = clock.now()

    _tick(app)

    a, b, c = team.get(first), team.get(second), team.get(third)
    assert (a["estimate_basis"], _at(a["estimated_end_at"])) == (
        "declared",
        now + timedelta(seconds=100),
    )
    assert a["estimated_start_at"] is None  # running: only its end is an estimate
    assert _at(b["estimated_start_at"]) == now + timedelta(seconds=100)
    assert _at(b["estimated_end_at"]) == now + timedelta(seconds=150)
    assert _at(c["estimated_start_at"]) == now + timedelta(seconds=150)
    queue = team.queue()
    assert [(e["deployment_id"], _at(e["estimated_start_at"])) for e in queue] == [
        (second["id"], now + timedelta(seconds=100)),
        (third["id"], now + timedelta(seconds=150)),
    ]


def test_an_unknown_duration_makes_what_waits_for_its_room_unknown(
    client: TestClient, app: Any
) -> None:
    team = make_team(client, gpu=1)
    holder = team.deploy(gpu=1)  # no duration, no history
    waiting = team.deploy(gpu=1, duration_seconds=10)

    _tick(app)

    read = team.get(waiting)
    assert (read["estimate_basis"], read["estimated_start_at"]) == ("unknown", None)
    assert f"deployment {holder['id']}" in read["reason"]
    assert "start unknown" in read["reason"]
    assert team.get(holder)["estimate_basis"] == "unknown"


def _run_to_completion(team: Team, clock: ManualClock, seconds: float, image: str) -> None:
    job = team.deploy(gpu=1, docker_image=image)
    clock.advance(seconds)
    team.report(job, "completed")


def test_without_a_duration_the_median_of_three_past_runs_of_the_image_stands_in(
    client: TestClient, app: Any, clock: ManualClock
) -> None:
    team = make_team(client, gpu=1)
    for seconds in (50, 60, 300):
        _run_to_completion(team, clock, seconds, "ghcr.io/acme/train:1.0")
    started = clock.now()
    job = team.deploy(gpu=1, docker_image="GHCR.io/acme/train:2.0")  # same repository

    _tick(app)

    read = team.get(job)
    assert read["estimate_basis"] == "history"
    assert _at(read["estimated_end_at"]) == started + timedelta(seconds=60)


def test_requests_read_the_stored_forecast_and_never_simulate(
    client: TestClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = make_team(client, gpu=1)
    team.deploy(gpu=1, duration_seconds=100)

    def forbidden(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a request ran the forecast")

    monkeypatch.setattr(forecast, "forecast", forbidden)
    waiting = team.deploy(gpu=1, duration_seconds=10)
    team.queue()
    team.get(waiting)
    listed = client.get(f"/deployment/list/{team.cluster}", headers=team.headers)

    assert listed.status_code == 200
    assert team.get(waiting)["estimate_basis"] is None  # no forecast yet: nothing made up


def test_a_waiting_reason_names_who_holds_its_room_and_when_the_forecast_expects_it(
    client: TestClient, app: Any, clock: ManualClock
) -> None:
    team = make_team(client, gpu=4)
    high = team.deploy(gpu=2, priority=5, duration_seconds=100)
    other = team.deploy(gpu=1, priority=5, duration_seconds=300)
    low = team.deploy(gpu=1, priority=1, duration_seconds=300)
    waiting = team.deploy(gpu=3, priority=3, duration_seconds=10)
    before = team.get(waiting)["reason"]
    _tick(app)

    reason = team.get(waiting)["reason"]

    # The priority-1 gpu can be preempted for it; the priority-5 ones hold the rest.
    assert f"held by deployments {high['id']}, {other['id']} (priority 5)" in before
    assert str(low["id"]) not in before.split("held by")[1]
    start = (clock.now() + timedelta(seconds=100)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert reason.endswith(f"the forecast expects it to start at {start}")


def test_a_preempted_deployment_shows_no_estimate_of_its_ended_run_until_the_next_forecast(
    client: TestClient, app: Any, clock: ManualClock
) -> None:
    team = make_team(client, gpu=1)
    low = team.deploy(gpu=1, duration_seconds=100)
    _tick(app)
    clock.advance(2)

    urgent = team.deploy(gpu=1, priority=9, duration_seconds=100)
    right_after = team.get(low)
    _tick(app)
    forecast_after = team.get(low)

    assert (right_after["estimated_start_at"], right_after["estimate_basis"]) == (None, None)
    assert _at(forecast_after["estimated_start_at"]) == _at(team.get(urgent)["started_at"]) + (
        timedelta(seconds=100)
    )


def test_a_history_estimate_that_passed_is_forecast_again_once_and_not_every_tick(
    client: TestClient, app: Any, clock: ManualClock
) -> None:
    team = make_team(client, gpu=1)
    for seconds in (50, 60, 300):
        _run_to_completion(team, clock, seconds, "ghcr.io/acme/train:1.0")
    started = clock.now()
    job = team.deploy(gpu=1, docker_image="ghcr.io/acme/train:1.0")  # 60 s by its history
    behind = team.deploy(gpu=1, duration_seconds=10)
    factory = app.state.session_factory
    _tick(app)
    assert _at(team.get(job)["estimated_end_at"]) == started + timedelta(seconds=60)

    clock.advance(30)
    nothing_passed = services.refresh_forecasts(factory)
    clock.advance(40)  # it overruns its median by 10 s
    passed = services.refresh_forecasts(factory)

    assert (nothing_passed, passed) == (0, 1)
    now = clock.now()
    assert _at(team.get(job)["estimated_end_at"]) == now  # not in the past: it ends any moment
    assert _at(team.get(behind)["estimated_start_at"]) == now
    assert team.get(behind)["estimate_basis"] == "history"
    # Looked at again a loop interval later at the soonest (here an hour), not every tick.
    clock.advance(5)
    assert services.refresh_forecasts(factory) == 0


@pytest.mark.parametrize(
    ("end", "start", "floor", "expected"),
    [
        (150.0, 40.0, 1.0, 150.0),  # ahead: when it comes
        (100.0, 40.0, 1.0, 106.0),  # overrun after 60 s of run: a tenth of that later
        (100.0, 95.0, 1.0, 101.0),  # a short run: the floor
        (100.0, 40.0, 30.0, 130.0),  # never sooner than the floor
    ],
)
def test_an_overrun_is_rechecked_after_a_tenth_of_its_run_so_far(
    end: float, start: float, floor: float, expected: float
) -> None:
    running = forecast.Estimate(start, end, "history", None)
    pending_later = forecast.Estimate(200.0, 210.0, "history", None)
    pending_now = forecast.Estimate(100.0, 110.0, "history", None)  # rides on the overrun
    declared = forecast.Estimate(120.0, 130.0, "declared", None)
    estimates = {1: running, 2: pending_later, 3: pending_now, 4: declared}

    assert recheck_at(estimates, {1}, 100.0, floor) == expected
    assert recheck_at({4: declared}, set(), 100.0, floor) is None
    assert recheck_at({2: pending_later, 4: declared}, set(), 100.0, floor) == 200.0
