"""Deployments through the API: SPEC §4 "Deployments" and the §5 rules end to end."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ManualClock
from fastapi.testclient import TestClient
from workloads import Team, make_team

from helpers import create_cluster, create_org, member_with_role, moment, new_user

# SPEC §7: HYPERVISOR_STARVATION_SECONDS defaults to 300; the guard holds once a deployment
# has waited longer than that.
STARVED = 301


@pytest.fixture
def team(client: TestClient) -> Team:
    return make_team(client, gpu=4)


def test_a_deployment_that_fits_starts_at_once(clock: ManualClock, team: Team) -> None:
    me = team.client.get("/user/me", headers=team.headers).json()["username"]

    created = team.deploy(gpu=2, priority=3, name="trainer", duration_seconds=60)

    assert created["status"] == "running"
    assert created["reason"] is None and created["queue_position"] is None
    assert moment(created["created_at"]) == moment(created["started_at"]) == clock.now()
    assert created["finished_at"] is None
    assert created["cluster_name"] == team.cluster and created["organization_name"] == team.org
    assert created["name"] == "trainer" and created["duration_seconds"] == 60
    assert created["created_by"] == me and created["depends_on"] == []
    assert [e["type"] for e in team.get(created)["events"]] == ["created", "started"]
    assert team.cluster_state()["allocated_gpu"] == 2


def test_a_deployment_that_does_not_fit_waits_with_a_reason_and_a_position(team: Team) -> None:
    holder = team.deploy(gpu=3)

    waiting = team.deploy(gpu=2)

    assert waiting["status"] == "pending"
    assert waiting["queue_position"] == 1
    assert waiting["started_at"] is None
    assert waiting["reason"] == (
        "needs 2 gpu, 1 available (3 used by 1 deployment of priority >= 0, 0 reserved); "
        f"the room it needs is held by deployment {holder['id']} (priority 0)"
    )
    assert team.cluster_state()["pending"] == 1


def test_a_higher_priority_deployment_preempts_the_newest_lowest_one(team: Team) -> None:
    old = team.deploy(gpu=2, priority=1)
    new = team.deploy(gpu=2, priority=1)

    urgent = team.deploy(gpu=2, priority=9)

    assert urgent["status"] == "running"
    assert team.status(old) == "running"
    victim = team.get(new)
    assert victim["status"] == "pending" and victim["preemption_count"] == 1
    assert f"preempted by deployment {urgent['id']}" in victim["reason"]
    assert [e["type"] for e in victim["events"]][-2:] == ["preempted", "requeued"]
    assert str(urgent["id"]) in victim["events"][-2]["message"]


def test_equal_priority_never_preempts(team: Team) -> None:
    running = team.deploy(gpu=4, priority=5)

    same = team.deploy(gpu=1, priority=5)

    assert same["status"] == "pending"
    assert team.status(running) == "running"


def test_no_preemption_when_all_lower_work_together_would_not_make_room(team: Team) -> None:
    high = team.deploy(gpu=2, priority=8)
    low = team.deploy(gpu=2, priority=1)

    big = team.deploy(gpu=4, priority=5)  # only `low` is lower: 2 gpu, not enough

    assert big["status"] == "pending"
    assert team.status(low) == "running" and team.status(high) == "running"
    assert team.get(low)["preemption_count"] == 0


def test_a_small_deployment_backfills_past_a_blocked_bigger_one(team: Team) -> None:
    team.deploy(gpu=3, priority=5)
    blocked = team.deploy(gpu=2, priority=4)

    small = team.deploy(gpu=1, priority=0)

    assert blocked["status"] == "pending"
    assert small["status"] == "running"


def test_a_starving_deployment_holds_back_lower_priority_backfill(
    clock: ManualClock, team: Team
) -> None:
    team.deploy(gpu=3, priority=5)
    starving = team.deploy(gpu=2, priority=4)
    clock.advance(STARVED)

    small = team.deploy(gpu=1, priority=0)

    assert small["status"] == "pending"
    assert small["reason"] == (
        f"held back behind deployment {starving['id']}, which has waited longer than the "
        "starvation limit (300 s) and starts first"
    )
    assert team.status(starving) == "pending"


def test_a_deployment_larger_than_a_shrunken_cluster_waits_without_holding_the_guard(
    clock: ManualClock, client: TestClient
) -> None:
    team = make_team(client, cpu=64, gpu=4)
    team.deploy(cpu=10, priority=9)
    big = team.deploy(cpu=60, priority=5)  # waits: cannot preempt higher priority
    shrink = {
        "cluster_name": team.cluster,
        "organization_name": team.org,
        "total_cpu": 50,
        "total_ram": 256,
        "total_gpu": 4,
    }
    assert client.patch("/cluster/resize", json=shrink, headers=team.headers).status_code == 200
    clock.advance(STARVED)  # it has starved, but it could never start: it holds nothing back

    small = team.deploy(cpu=1, priority=0)

    assert small["status"] == "running"
    waiting = team.get(big)
    assert waiting["status"] == "pending"
    assert waiting["reason"] == (
        "needs 60 cpu but the cluster has only 50 in total; it cannot run unless the cluster grows"
    )


def test_fifo_within_a_priority_and_a_preempted_deployment_keeps_its_place(team: Team) -> None:
    first = team.deploy(gpu=2, priority=1)
    second = team.deploy(gpu=2, priority=1)
    third = team.deploy(gpu=2, priority=1)  # waits
    urgent = team.deploy(gpu=2, priority=9)  # preempts `second`, the later started

    queue = [entry["deployment_id"] for entry in team.queue()]
    assert queue == [second["id"], third["id"]]
    assert [entry["position"] for entry in team.queue()] == [1, 2]

    team.cancel(urgent)

    assert team.status(second) == "running"
    assert team.status(third) == "pending"
    assert team.status(first) == "running"


def test_cancelling_frees_capacity_and_starts_the_next_in_line(
    clock: ManualClock, team: Team
) -> None:
    running = team.deploy(gpu=4)
    waiting = team.deploy(gpu=4)
    clock.advance(10)

    cancelled = team.cancel(running)

    assert cancelled["status"] == "cancelled"
    assert moment(cancelled["finished_at"]) == clock.now()
    started = team.get(waiting)
    assert started["status"] == "running" and moment(started["started_at"]) == clock.now()
    assert [e["type"] for e in team.get(running)["events"]] == ["created", "started", "cancelled"]


def test_cancelling_a_pending_deployment_and_then_again_is_a_conflict(team: Team) -> None:
    team.deploy(gpu=4)
    waiting = team.deploy(gpu=4)

    assert team.cancel(waiting)["status"] == "cancelled"

    again = team.client.delete(f"/deployment/delete/{waiting['id']}", headers=team.headers)
    assert again.status_code == 409
    assert "cancelled" in again.json()["detail"]


def test_a_reported_completion_frees_capacity_and_starts_dependents(team: Team) -> None:
    train = team.deploy(gpu=4)
    evaluate = team.deploy(gpu=2, depends_on=[train["id"]])
    assert evaluate["status"] == "pending"
    assert evaluate["reason"] == f"waiting for dependency {train['id']}"

    done = team.report(train, "completed", "exit 0")

    assert done["status"] == "completed"
    assert team.status(evaluate) == "running"


def test_a_failed_dependency_fails_the_whole_chain_with_reasons(team: Team) -> None:
    train = team.deploy(gpu=1)
    evaluate = team.deploy(gpu=1, depends_on=[train["id"]])
    publish = team.deploy(gpu=1, depends_on=[evaluate["id"]])

    failed = team.report(train, "failed", "out of memory")

    assert failed["status"] == "failed" and failed["reason"] == "out of memory"
    evaluated = team.get(evaluate)
    assert evaluated["status"] == "failed"
    assert evaluated["reason"] == f"dependency {train['id']} failed"
    published = team.get(publish)
    assert published["status"] == "failed"
    assert published["reason"] == f"dependency {evaluate['id']} failed"


def test_status_can_only_be_reported_for_a_running_deployment(team: Team) -> None:
    team.deploy(gpu=4)
    waiting = team.deploy(gpu=4)

    response = team.client.post(
        f"/deployment/{waiting['id']}/status", json={"status": "completed"}, headers=team.headers
    )

    assert response.status_code == 409
    bad = team.client.post(
        f"/deployment/{waiting['id']}/status", json={"status": "running"}, headers=team.headers
    )
    assert bad.status_code == 422


def test_release_and_growth_schedule_the_queue(team: Team) -> None:
    reserve = {"cluster_name": team.cluster, "organization_name": team.org, "cpu": 0, "ram": 0}
    assert (
        team.client.post(
            "/cluster/allocate", json={**reserve, "gpu": 4}, headers=team.headers
        ).status_code
        == 200
    )
    waiting = team.deploy(gpu=2)
    assert waiting["status"] == "pending"
    assert waiting["reason"] == (
        "needs 2 gpu but 4 of the cluster's 4 are reserved; "
        "it cannot run until reserved capacity is released"
    )

    released = team.client.post(
        "/cluster/release", json={**reserve, "gpu": 2}, headers=team.headers
    )

    assert released.status_code == 200
    assert team.status(waiting) == "running"
    grown_waiting = team.deploy(gpu=2)
    assert grown_waiting["status"] == "pending"
    grow = {
        "cluster_name": team.cluster,
        "organization_name": team.org,
        "total_cpu": 64,
        "total_ram": 256,
        "total_gpu": 6,
    }
    assert team.client.patch("/cluster/resize", json=grow, headers=team.headers).status_code == 200
    assert team.status(grown_waiting) == "running"
    state = team.cluster_state()
    assert state["allocated_gpu"] == 6 and state["available_gpu"] == 0


def test_resize_below_what_running_deployments_hold_is_a_conflict(team: Team) -> None:
    team.deploy(gpu=3)
    shrink = {
        "cluster_name": team.cluster,
        "organization_name": team.org,
        "total_cpu": 64,
        "total_ram": 256,
        "total_gpu": 2,
    }

    response = team.client.patch("/cluster/resize", json=shrink, headers=team.headers)

    assert response.status_code == 409 and "gpu" in response.json()["detail"]


def test_the_queue_lists_every_pending_deployment_in_scheduling_order(
    clock: ManualClock, team: Team
) -> None:
    blocker = team.deploy(gpu=4, priority=10)
    low = team.deploy(gpu=1, priority=1)
    clock.advance(10)
    high = team.deploy(gpu=1, priority=7)
    clock.advance(5)
    dependent = team.deploy(gpu=1, priority=9, depends_on=[blocker["id"]])
    clock.advance(2.5)

    queue = team.queue()

    assert [e["deployment_id"] for e in queue] == [dependent["id"], high["id"], low["id"]]
    assert [e["position"] for e in queue] == [1, 2, 3]
    assert [e["eligible"] for e in queue] == [False, True, True]
    assert [e["waiting_seconds"] for e in queue] == [2.5, 7.5, 17.5]
    assert [e["reason"] for e in queue] == [
        f"waiting for dependency {blocker['id']}",
        "needs 1 gpu, 0 available (4 used by 1 deployment of priority >= 7, 0 reserved); "
        f"the room it needs is held by deployment {blocker['id']} (priority 10)",
        "needs 1 gpu, 0 available (4 used by 1 deployment of priority >= 1, 0 reserved); "
        f"the room it needs is held by deployment {blocker['id']} (priority 10)",
    ]
    assert team.get(high)["queue_position"] == 2


def test_list_filters_by_status_and_orders_by_id(team: Team) -> None:
    a = team.deploy(gpu=4)
    b = team.deploy(gpu=4)
    team.cancel(a)  # b starts

    everything = team.client.get(f"/deployment/list/{team.cluster}", headers=team.headers).json()
    running = team.client.get(
        f"/deployment/list/{team.cluster}", params={"status": "running"}, headers=team.headers
    ).json()

    assert [d["id"] for d in everything["deployments"]] == [a["id"], b["id"]]
    assert [d["id"] for d in running["deployments"]] == [b["id"]]
    bad = team.client.get(
        f"/deployment/list/{team.cluster}", params={"status": "sleeping"}, headers=team.headers
    )
    assert bad.status_code == 422


def test_a_cluster_name_shared_by_two_of_my_organizations_needs_organization_name(
    client: TestClient,
) -> None:
    headers = new_user(client)
    first, second = create_org(client, headers)["name"], create_org(client, headers)["name"]
    create_cluster(client, headers, first, name="gpu-a")
    create_cluster(client, headers, second, name="gpu-a")

    ambiguous = client.get("/deployment/list/gpu-a", headers=headers)
    chosen = client.get(
        "/deployment/list/gpu-a", params={"organization_name": second}, headers=headers
    )

    assert ambiguous.status_code == 422 and "organization_name" in ambiguous.json()["detail"]
    assert chosen.status_code == 200 and chosen.json()["cluster_name"] == "gpu-a"


VALID_IMAGES = [
    "nginx",
    "nginx:1.27",
    "ghcr.io/acme/model:1.0",
    "registry:5000/team/img@sha256:" + "a" * 64,
    "localhost:5000/a/b_c__d-e.f:latest",
]
INVALID_IMAGES = [
    "",
    "Nginx",
    "nginx:",
    "nginx:-bad",
    ":tag",
    "a//b",
    "img@sha256:xyz",
    "a b",
    "-a",
]


@pytest.mark.parametrize("image", VALID_IMAGES)
def test_valid_image_references_are_accepted(team: Team, image: str) -> None:
    assert team.deploy(gpu=1, docker_image=image)["docker_image"] == image


@pytest.mark.parametrize("image", INVALID_IMAGES)
def test_invalid_image_references_are_rejected(team: Team, image: str) -> None:
    response = team.client.post(
        "/deployment/create", json=team.body(gpu=1, docker_image=image), headers=team.headers
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    "change",
    [
        {"required_gpu": 0, "required_cpu": 0, "required_ram": 0},
        {"required_gpu": -1},
        {"required_gpu": 1_000_001},
        {"priority": 1001},
        {"priority": -1},
        {"duration_seconds": 0},
        {"name": ""},
        {"name": "-bad"},
        {"depends_on": [0]},
        {"depends_on": [2**63]},
        {"depends_on": list(range(1, 102))},
        {"surprise": True},
        {"required_gpu": "2"},
    ],
)
def test_invalid_deployment_bodies_are_422(team: Team, change: dict[str, Any]) -> None:
    response = team.client.post(
        "/deployment/create", json={**team.body(gpu=1), **change}, headers=team.headers
    )
    assert response.status_code == 422, response.text


def test_a_request_beyond_the_cluster_total_is_422_because_it_could_never_run(team: Team) -> None:
    response = team.client.post("/deployment/create", json=team.body(gpu=5), headers=team.headers)
    assert response.status_code == 422
    assert "total" in response.json()["detail"]


def test_dependencies_must_exist_in_the_organization_and_be_alive(
    team: Team, client: TestClient
) -> None:
    other = make_team(client)
    foreign = other.deploy(gpu=1)
    dead = team.deploy(gpu=1)
    team.cancel(dead)

    for depends_on, word in (
        ([999_999], "unknown"),
        ([foreign["id"]], "unknown"),
        ([dead["id"]], "cancelled"),
    ):
        response = team.client.post(
            "/deployment/create", json=team.body(gpu=1, depends_on=depends_on), headers=team.headers
        )
        assert response.status_code == 422
        assert word in response.json()["detail"]


def test_a_dependency_may_live_in_another_cluster_of_the_organization(team: Team) -> None:
    other_cluster = create_cluster(team.client, team.headers, team.org, gpu=2)["name"]
    elsewhere = Team(team.client, team.headers, team.org, other_cluster).deploy(gpu=1)

    dependent = team.deploy(gpu=1, depends_on=[elsewhere["id"]])
    assert dependent["status"] == "pending" and dependent["depends_on"] == [elsewhere["id"]]


def test_ids_out_of_range_are_422(team: Team) -> None:
    for bad in ("0", str(2**63), "-1", "abc"):
        assert team.client.get(f"/deployment/{bad}", headers=team.headers).status_code == 422


def test_viewers_read_but_cannot_change_deployments(team: Team) -> None:
    viewer = member_with_role(team.client, team.headers, team.org, "viewer")
    developer = member_with_role(team.client, team.headers, team.org, "developer")
    running = team.deploy(gpu=1)

    assert team.client.get(f"/deployment/{running['id']}", headers=viewer).status_code == 200
    assert team.client.get(f"/deployment/queue/{team.cluster}", headers=viewer).status_code == 200
    assert (
        team.client.post("/deployment/create", json=team.body(gpu=1), headers=viewer).status_code
        == 403
    )
    assert (
        team.client.delete(f"/deployment/delete/{running['id']}", headers=viewer).status_code == 403
    )
    status = team.client.post(
        f"/deployment/{running['id']}/status", json={"status": "completed"}, headers=viewer
    )
    assert status.status_code == 403
    assert (
        team.client.post("/deployment/create", json=team.body(gpu=1), headers=developer).status_code
        == 201
    )
    assert (
        team.client.delete(f"/deployment/delete/{running['id']}", headers=developer).status_code
        == 200
    )


def test_other_tenants_see_nothing(team: Team, client: TestClient) -> None:
    outsider = new_user(client)
    secret = team.deploy(gpu=1, name="secret-model")

    responses = [
        client.get(f"/deployment/{secret['id']}", headers=outsider),
        client.delete(f"/deployment/delete/{secret['id']}", headers=outsider),
        client.post(
            f"/deployment/{secret['id']}/status", json={"status": "failed"}, headers=outsider
        ),
        client.get(f"/deployment/list/{team.cluster}", headers=outsider),
        client.get(f"/deployment/queue/{team.cluster}", headers=outsider),
        client.post("/deployment/create", json=team.body(gpu=1), headers=outsider),
    ]

    assert [r.status_code for r in responses] == [404] * 6
    assert all("secret-model" not in r.text for r in responses)
    assert team.status(secret) == "running"


def test_deployment_endpoints_need_a_token(team: Team) -> None:
    response = team.client.get("/deployment/1")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_the_readme_worked_example(team: Team) -> None:
    a = team.deploy(gpu=2, priority=1)
    b = team.deploy(gpu=2, priority=1)
    c = team.deploy(gpu=3, priority=1)
    assert (a["status"], b["status"], c["status"]) == ("running", "running", "pending")
    assert c["reason"].startswith("needs 3 gpu, 0 available (4 used by 2 deployments")

    d = team.deploy(gpu=2, priority=9)
    assert d["status"] == "running"
    assert team.status(a) == "running"
    assert f"preempted by deployment {d['id']}" in team.get(b)["reason"]

    e = team.deploy(gpu=1, priority=0)
    assert e["status"] == "pending"
    assert [entry["deployment_id"] for entry in team.queue()] == [b["id"], c["id"], e["id"]]

    team.cancel(a)
    assert team.status(b) == "running"
    assert (team.status(c), team.status(e)) == ("pending", "pending")

    team.cancel(d)
    assert team.status(c) == "pending"
    assert team.status(e) == "running"


def test_cancelling_the_starving_deployment_lets_held_back_work_start(
    clock: ManualClock, team: Team
) -> None:
    team.deploy(gpu=3, priority=5)
    starving = team.deploy(gpu=2, priority=4)
    clock.advance(STARVED)
    small = team.deploy(gpu=1, priority=0)
    assert small["status"] == "pending"

    team.cancel(starving)

    assert team.status(small) == "running"


def test_the_list_comes_in_pages_by_id_with_a_cursor(client: TestClient) -> None:
    team = make_team(client, gpu=1)
    made = [team.deploy(gpu=1)["id"] for _ in range(5)]

    def page(**query: object) -> dict[str, object]:
        response = client.get(
            f"/deployment/list/{team.cluster}", params=query, headers=team.headers
        )
        assert response.status_code == 200, response.text
        result: dict[str, object] = response.json()
        return result

    first = page(limit=2)
    second = page(limit=2, after=first["next_after"])
    last = page(limit=2, after=second["next_after"])
    pending_only = page(status="pending", after=made[1])

    ids = lambda body: [d["id"] for d in body["deployments"]]  # noqa: E731
    assert (ids(first), first["next_after"]) == (made[:2], made[1])
    assert (ids(second), second["next_after"]) == (made[2:4], made[3])
    assert (ids(last), last["next_after"]) == (made[4:], None)
    assert (ids(pending_only), pending_only["next_after"]) == (made[2:], None)


def test_a_queue_page_keeps_positions_in_the_whole_queue_and_the_total(
    client: TestClient,
) -> None:
    team = make_team(client, gpu=1)
    team.deploy(gpu=1, priority=9)  # nothing below preempts it
    waiting = [team.deploy(gpu=1, priority=p)["id"] for p in (0, 3, 1, 2)]

    response = client.get(
        f"/deployment/queue/{team.cluster}",
        params={"offset": 1, "limit": 2},
        headers=team.headers,
    )

    body = response.json()
    assert body["total"] == 4
    # Scheduling order is priority 3, 2, 1, 0: the page is the 2nd and 3rd of them.
    assert [(e["deployment_id"], e["position"]) for e in body["queue"]] == [
        (waiting[3], 2),
        (waiting[2], 3),
    ]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "after=-1", f"after={2**63}", "offset=-1", "limit=x"]
)
def test_paging_parameters_out_of_range_are_a_422(client: TestClient, query: str) -> None:
    team = make_team(client, gpu=1)
    endpoint = "queue" if query.startswith("offset") else "list"

    response = client.get(f"/deployment/{endpoint}/{team.cluster}?{query}", headers=team.headers)

    assert response.status_code == 422
