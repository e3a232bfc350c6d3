"""Reproductions of defects that once wedged a cluster or let a create jump the queue,
replayed over HTTP on the test database (SQLite or PostgreSQL) with the manual clock."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from workloads import make_team

import services


def _errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_victim_that_preempts_in_turn_leaves_the_cluster_schedulable(
    client: TestClient, clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    # SPEC §5 step 5 on this state: P1 (3 cpu) takes B's room (A stays: it fits the spare),
    # P2 (2 cpu, 3 ram, 1 gpu) then takes A's; the victim B (3 cpu, priority 2) rejoins the
    # sweep and preempts C (priority 0), which frees the cpu it is short of. A and C wait.
    team = make_team(client, cpu=8, ram=6, gpu=4)
    a = team.deploy(priority=2, cpu=4, ram=3, gpu=0)
    b = team.deploy(priority=2, cpu=3, ram=2, gpu=0)
    c = team.deploy(priority=0, cpu=1, ram=0, gpu=2)
    d = team.deploy(priority=2, cpu=0, ram=0, gpu=1)
    # The dependency lives in a cluster of the same organization.
    response = client.post(
        "/cluster/create",
        json={
            "name": "elsewhere",
            "organization_name": team.org,
            "total_cpu": 1,
            "total_ram": 1,
            "total_gpu": 0,
        },
        headers=team.headers,
    )
    assert response.status_code == 201, response.text
    dependency = client.post(
        "/deployment/create",
        json={**team.body(cpu=1, ram=1), "cluster_name": "elsewhere"},
        headers=team.headers,
    ).json()
    p1 = team.deploy(priority=5, cpu=3, ram=0, gpu=0, depends_on=[dependency["id"]])
    p2 = team.deploy(priority=5, cpu=2, ram=3, gpu=1, depends_on=[dependency["id"]])
    assert [p1["status"], p2["status"]] == ["pending", "pending"]

    with caplog.at_level(logging.WARNING):
        team.report(dependency, "completed")
        services.run_periodic_passes(client.app.state.session_factory)  # type: ignore[attr-defined]

    assert _errors_logged(caplog) == []
    statuses = {
        name: team.status(job)
        for name, job in {"a": a, "b": b, "c": c, "d": d, "p1": p1, "p2": p2}.items()
    }
    assert statuses == {
        "a": "pending",
        "b": "running",
        "c": "pending",
        "d": "running",
        "p1": "running",
        "p2": "running",
    }
    assert [entry["deployment_id"] for entry in team.queue()] == [a["id"], c["id"]]


def test_room_freed_by_an_elapsed_deployment_goes_to_older_work_before_a_new_create(
    client: TestClient, clock: object
) -> None:
    team = make_team(client, cpu=2, ram=4, gpu=0)
    timed = team.deploy(cpu=2, duration_seconds=1)
    older = team.deploy(cpu=2)
    assert older["status"] == "pending"

    clock.advance(2)  # type: ignore[attr-defined]
    newer = team.deploy(cpu=2)

    assert team.status(timed) == "completed"
    assert team.status(older) == "running"
    assert newer["status"] == "pending"
    assert newer["queue_position"] == 1


def test_a_cancel_preempts_from_lower_work_while_higher_work_only_holds_room(
    client: TestClient, clock: object
) -> None:
    # The cancel's pass reads as rows only the running work below the top pending priority
    # (5 here, M): H stays out of it as held room, and the victim must come from below M.
    team = make_team(client, cpu=8, ram=8, gpu=4)
    high = team.deploy(priority=9, gpu=2)
    low = team.deploy(priority=1, gpu=1)
    other_high = team.deploy(priority=9, gpu=1)
    middle = team.deploy(priority=5, gpu=2)
    assert team.status(middle) == "pending"  # 0 free, and 1 gpu below it: not enough

    team.cancel(other_high)

    assert team.status(middle) == "running"  # 1 free + low's 1
    assert team.status(low) == "pending"
    assert team.get(low)["reason"].startswith(f"preempted by deployment {middle['id']}")
    assert team.status(high) == "running"
