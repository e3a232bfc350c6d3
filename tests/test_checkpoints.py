"""Checkpoints over the API (SPEC §4 `POST /deployment/{id}/checkpoint`, §5 "Checkpoints"):
saved work, what a preemption loses, when a timed deployment completes, and the metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from conftest import ManualClock
from fastapi.testclient import TestClient
from test_metrics_and_middleware import _sample
from workloads import Team, make_team

import services
from helpers import member_with_role


def _checkpoint(team: Team, deployment: dict[str, Any], **body: Any) -> Any:
    return team.client.post(
        f"/deployment/{deployment['id']}/checkpoint",
        json=body or None,
        headers=team.headers,
    )


def _events(team: Team, deployment: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["type"], e["message"]) for e in team.get(deployment)["events"]]


def test_a_checkpoint_saves_the_work_done_so_far(client: TestClient, clock: ManualClock) -> None:
    team = make_team(client, gpu=1)
    job = team.deploy(gpu=1, duration_seconds=600)
    clock.advance(90)

    answer = _checkpoint(team, job)

    assert answer.status_code == 200, answer.text
    assert answer.json()["saved_seconds"] == 90.0
    assert datetime.fromisoformat(answer.json()["checkpointed_at"]) == clock.now()
    assert _events(team, job)[-1] == ("checkpointed", "90 s of work saved")


def test_a_preemption_after_a_checkpoint_loses_only_the_work_since_and_the_rest_is_kept(
    client: TestClient, clock: ManualClock, app: Any
) -> None:
    team = make_team(client, gpu=1)
    job = team.deploy(gpu=1, duration_seconds=600)
    clock.advance(100)
    _checkpoint(team, job, message="epoch 3 written")
    clock.advance(30)

    urgent = team.deploy(gpu=1, priority=9)
    preempted = team.get(job)

    assert preempted["status"] == "pending"
    assert preempted["saved_seconds"] == 100.0
    assert ("preempted", f"preempted by deployment {urgent['id']}; 30 s of unsaved work lost") in (
        _events(team, job)
    )
    # Back after the urgent one: 500 s of its 600 remain.
    clock.advance(10)
    team.cancel(urgent)
    assert team.status(job) == "running"
    restarted_at = clock.now()
    clock.advance(499)
    services.run_periodic_passes(app.state.session_factory)
    assert team.status(job) == "running"
    clock.advance(5)
    services.run_periodic_passes(app.state.session_factory)
    done = team.get(job)
    assert done["status"] == "completed"
    assert (datetime.fromisoformat(done["finished_at"]) - restarted_at).total_seconds() == 500


def test_within_a_priority_the_victim_is_the_one_that_loses_least(
    client: TestClient, clock: ManualClock
) -> None:
    team = make_team(client, gpu=2)
    older = team.deploy(gpu=1)
    clock.advance(60)
    newer = team.deploy(gpu=1)
    clock.advance(600)
    _checkpoint(team, older)  # older lost nothing yet; newer has 600 s unsaved
    clock.advance(5)

    team.deploy(gpu=1, priority=5)

    assert team.status(older) == "pending"
    assert team.status(newer) == "running"


def test_a_checkpoint_needs_a_running_deployment_and_a_developer(
    client: TestClient, clock: ManualClock
) -> None:
    team = make_team(client, gpu=1)
    running = team.deploy(gpu=1, duration_seconds=60)
    waiting = team.deploy(gpu=1)
    viewer = member_with_role(client, team.headers, team.org, "viewer")

    assert _checkpoint(team, waiting).status_code == 409
    forbidden = client.post(f"/deployment/{running['id']}/checkpoint", headers=viewer)
    assert forbidden.status_code == 403
    too_long = _checkpoint(team, running, message="x" * 1001)
    assert too_long.status_code == 422
    clock.advance(61)  # its time is up: the checkpoint finds it completed
    late = _checkpoint(team, running)
    assert late.status_code == 409
    assert "completed" in late.json()["detail"]


def test_metrics_count_the_work_preemptions_lost_per_resource(
    client: TestClient, clock: ManualClock
) -> None:
    team = make_team(client, cpu=8, gpu=2)
    victim = team.deploy(cpu=4, ram=16, gpu=2)
    clock.advance(50)
    team.deploy(gpu=2, priority=9)

    text = client.get("/metrics").text

    labels = {"organization": team.org, "cluster": team.cluster}
    name = "hypervisor_cluster_preempted_work_resource_seconds_total"
    assert _sample(text, name, resource="gpu", **labels) == 100.0
    assert _sample(text, name, resource="cpu", **labels) == 200.0
    assert _sample(text, name, resource="ram", **labels) == 800.0
    assert team.get(victim)["preemption_count"] == 1
