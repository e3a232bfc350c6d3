"""SPEC §1, §2 and §4 "Clusters": fixed capacity, reservations and resizing."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ManualClock
from fastapi.testclient import TestClient

from helpers import create_cluster, create_org, moment, new_user, reservation, resize_body, unique

CLUSTER_FIELDS = {
    "id",
    "name",
    "organization_name",
    "total_cpu",
    "total_ram",
    "total_gpu",
    "reserved_cpu",
    "reserved_ram",
    "reserved_gpu",
    "allocated_cpu",
    "allocated_ram",
    "allocated_gpu",
    "available_cpu",
    "available_ram",
    "available_gpu",
    "running",
    "pending",
    "created_at",
}
MAX_UNITS = 1_000_000


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    return new_user(client)


@pytest.fixture
def org(client: TestClient, admin: dict[str, str]) -> str:
    name: str = create_org(client, admin)["name"]
    return name


def cluster_body(org: str, name: str | None = None, **totals: Any) -> dict[str, Any]:
    body = {"name": name or unique("cluster"), "organization_name": org}
    body |= {"total_cpu": 8, "total_ram": 32, "total_gpu": 2}
    body |= {f"total_{key}": value for key, value in totals.items()}
    return body


def listed(client: TestClient, headers: dict[str, str], org: str) -> list[dict[str, Any]]:
    response = client.get(f"/cluster/list/{org}", headers=headers)
    assert response.status_code == 200, response.text
    clusters: list[dict[str, Any]] = response.json()["clusters"]
    return clusters


def assert_accounting(cluster: dict[str, Any]) -> None:
    """allocated = reserved + running requests (none yet); available = total - allocated."""
    for resource in ("cpu", "ram", "gpu"):
        assert cluster[f"allocated_{resource}"] == cluster[f"reserved_{resource}"]
        assert (
            cluster[f"available_{resource}"]
            == cluster[f"total_{resource}"] - cluster[f"allocated_{resource}"]
        )


# --- create ----------------------------------------------------------------------------------


def test_create_answers_201_with_the_flat_cluster_object(
    client: TestClient, admin: dict[str, str], org: str, clock: ManualClock
) -> None:
    clock.advance(90)  # away from the wall clock, so a time read from it would show

    response = client.post(
        "/cluster/create", json=cluster_body(org, "gpu-a", cpu=16, ram=64, gpu=4), headers=admin
    )

    assert response.status_code == 201, response.text
    cluster = response.json()
    assert set(cluster) == CLUSTER_FIELDS
    assert cluster["name"] == "gpu-a"
    assert cluster["organization_name"] == org
    assert (cluster["total_cpu"], cluster["total_ram"], cluster["total_gpu"]) == (16, 64, 4)
    assert (cluster["reserved_cpu"], cluster["reserved_ram"], cluster["reserved_gpu"]) == (0, 0, 0)
    assert (cluster["available_cpu"], cluster["available_ram"], cluster["available_gpu"]) == (
        16,
        64,
        4,
    )
    assert cluster["running"] == cluster["pending"] == 0
    assert_accounting(cluster)
    assert moment(cluster["created_at"]) == clock.now()


@pytest.mark.parametrize(
    ("cpu", "ram", "gpu"),
    [(1, 0, 0), (0, 1, 0), (0, 0, 1), (MAX_UNITS, MAX_UNITS, MAX_UNITS)],
)
def test_a_cluster_offers_at_least_one_unit_and_at_most_a_million_of_each(
    client: TestClient, admin: dict[str, str], org: str, cpu: int, ram: int, gpu: int
) -> None:
    response = client.post(
        "/cluster/create", json=cluster_body(org, cpu=cpu, ram=ram, gpu=gpu), headers=admin
    )

    assert response.status_code == 201, response.text
    assert (response.json()["total_cpu"], response.json()["total_gpu"]) == (cpu, gpu)


INVALID_TOTALS = [
    {"cpu": 0, "ram": 0, "gpu": 0},
    {"cpu": -1},
    {"ram": -5},
    {"gpu": MAX_UNITS + 1},
    {"cpu": 2**63},
    {"cpu": 2**64},
    {"cpu": 1.5},
    {"cpu": "4"},
    {"gpu": None},
    {"gpu": True},
    {"ram": [1]},
]


def test_create_rejects_capacity_outside_the_bounds_with_422(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    for totals in INVALID_TOTALS:
        response = client.post("/cluster/create", json=cluster_body(org, **totals), headers=admin)

        assert response.status_code == 422, (totals, response.text)
        assert isinstance(response.json()["detail"], list)
    assert listed(client, admin, org) == []


def test_create_rejects_invalid_names_and_extra_fields_with_422(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    for change in [
        {"name": "ab"},
        {"name": "c" * 64},
        {"name": "-gpu"},
        {"name": "gpu a"},
        {"name": "gpu/a"},
        {"name": "gpü"},
        {"name": "gpu\n"},
        {"organization_name": "ab"},
        {"total_tpu": 1},
        {"reserved_cpu": 1},
    ]:
        response = client.post("/cluster/create", json=cluster_body(org) | change, headers=admin)

        assert response.status_code == 422, (change, response.text)


def test_create_requires_every_field(client: TestClient, admin: dict[str, str], org: str) -> None:
    for missing in ["name", "organization_name", "total_cpu", "total_ram", "total_gpu"]:
        body = cluster_body(org)
        del body[missing]

        assert client.post("/cluster/create", json=body, headers=admin).status_code == 422, missing


@pytest.mark.parametrize("name", ["abc", "c" * 63, "gpu.a_b-c"])
def test_cluster_names_of_3_to_63_pattern_characters_are_accepted(
    client: TestClient, admin: dict[str, str], org: str, name: str
) -> None:
    assert create_cluster(client, admin, org, name)["name"] == name


def test_a_duplicate_cluster_name_in_one_organization_is_a_409(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    create_cluster(client, admin, org, "Gpu-A")

    same = client.post("/cluster/create", json=cluster_body(org, "Gpu-A"), headers=admin)
    other_case = client.post("/cluster/create", json=cluster_body(org, "gpu-a"), headers=admin)

    assert same.status_code == 409
    assert other_case.status_code == 409
    assert [cluster["name"] for cluster in listed(client, admin, org)] == ["Gpu-A"]


def test_two_organizations_may_both_own_a_cluster_of_the_same_name(client: TestClient) -> None:
    alice, bob = new_user(client), new_user(client)
    org_a, org_b = create_org(client, alice)["name"], create_org(client, bob)["name"]

    first = create_cluster(client, alice, org_a, "gpu-a", gpu=4)
    second = create_cluster(client, bob, org_b, "gpu-a", gpu=8)

    assert first["id"] != second["id"]
    assert listed(client, alice, org_a) == [first]
    assert listed(client, bob, org_b) == [second]


def test_create_in_an_unknown_organization_is_a_404(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post("/cluster/create", json=cluster_body("no-such-org"), headers=admin)

    assert response.status_code == 404


# --- list ------------------------------------------------------------------------------------


def test_an_organization_without_clusters_lists_an_empty_list(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    response = client.get(f"/cluster/list/{org}", headers=admin)

    assert response.status_code == 200
    assert response.json() == {"organization_name": org, "clusters": []}


def test_list_returns_every_cluster_of_the_organization(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    created = [create_cluster(client, admin, org) for _ in range(3)]

    response = client.get(f"/cluster/list/{org}", headers=admin)

    body = response.json()
    assert body["organization_name"] == org
    assert sorted(body["clusters"], key=lambda c: c["id"]) == sorted(created, key=lambda c: c["id"])
    for cluster in body["clusters"]:
        assert set(cluster) == CLUSTER_FIELDS


@pytest.mark.parametrize("org_name", ["ab", "o" * 64, "-org", "org%20name"])
def test_list_with_an_invalid_organization_name_is_a_422(
    client: TestClient, admin: dict[str, str], org_name: str
) -> None:
    assert client.get(f"/cluster/list/{org_name}", headers=admin).status_code == 422


def test_list_of_an_unknown_organization_is_a_404(
    client: TestClient, admin: dict[str, str]
) -> None:
    assert client.get("/cluster/list/no-such-org", headers=admin).status_code == 404


# --- allocate / release ----------------------------------------------------------------------


def test_allocate_reserves_capacity_and_reduces_what_is_available(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    cluster = create_cluster(client, admin, org, cpu=16, ram=64, gpu=4)["name"]

    response = client.post(
        "/cluster/allocate", json=reservation(org, cluster, cpu=4, ram=10, gpu=1), headers=admin
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == CLUSTER_FIELDS
    assert (body["reserved_cpu"], body["reserved_ram"], body["reserved_gpu"]) == (4, 10, 1)
    assert (body["allocated_cpu"], body["allocated_ram"], body["allocated_gpu"]) == (4, 10, 1)
    assert (body["available_cpu"], body["available_ram"], body["available_gpu"]) == (12, 54, 3)
    assert_accounting(body)
    assert listed(client, admin, org) == [body]


def test_reservations_add_up_to_exactly_the_total(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    cluster = create_cluster(client, admin, org, cpu=4, ram=8, gpu=2)["name"]
    client.post("/cluster/allocate", json=reservation(org, cluster, gpu=1), headers=admin)

    response = client.post(
        "/cluster/allocate", json=reservation(org, cluster, cpu=4, ram=8, gpu=1), headers=admin
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["available_cpu"], body["available_ram"], body["available_gpu"]) == (0, 0, 0)


def test_allocating_more_than_available_is_a_409_and_changes_nothing(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    cluster = create_cluster(client, admin, org, cpu=4, ram=8, gpu=2)["name"]
    client.post("/cluster/allocate", json=reservation(org, cluster, gpu=1), headers=admin)
    before = listed(client, admin, org)

    response = client.post(
        "/cluster/allocate", json=reservation(org, cluster, cpu=1, gpu=2), headers=admin
    )

    assert response.status_code == 409
    assert isinstance(response.json()["detail"], str)
    assert listed(client, admin, org) == before


@pytest.mark.parametrize("path", ["/cluster/allocate", "/cluster/release"])
def test_allocate_or_release_of_nothing_is_a_422(
    client: TestClient, admin: dict[str, str], org: str, path: str
) -> None:
    cluster = create_cluster(client, admin, org)["name"]

    response = client.post(path, json=reservation(org, cluster), headers=admin)

    assert response.status_code == 422


@pytest.mark.parametrize("path", ["/cluster/allocate", "/cluster/release"])
def test_allocate_and_release_reject_out_of_bound_bodies(
    client: TestClient, admin: dict[str, str], org: str, path: str
) -> None:
    cluster = create_cluster(client, admin, org)["name"]
    client.post("/cluster/allocate", json=reservation(org, cluster, cpu=2), headers=admin)

    for change in [
        {"cpu": -1},
        {"gpu": MAX_UNITS + 1},
        {"cpu": 2**63},
        {"ram": 2.5},
        {"cpu": "1"},
        {"gpu": None},
        {"cluster_name": "ab"},
        {"organization_name": "-x-"},
        {"priority": 1},
    ]:
        response = client.post(path, json=reservation(org, cluster, cpu=1) | change, headers=admin)

        assert response.status_code == 422, (change, response.text)
    assert listed(client, admin, org)[0]["reserved_cpu"] == 2


@pytest.mark.parametrize("path", ["/cluster/allocate", "/cluster/release"])
def test_allocate_and_release_require_every_field(
    client: TestClient, admin: dict[str, str], org: str, path: str
) -> None:
    cluster = create_cluster(client, admin, org)["name"]

    for missing in ["cluster_name", "organization_name", "cpu", "ram", "gpu"]:
        body = reservation(org, cluster, cpu=1)
        del body[missing]

        assert client.post(path, json=body, headers=admin).status_code == 422, missing


def test_release_frees_reserved_capacity(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    cluster = create_cluster(client, admin, org, cpu=16, ram=64, gpu=4)["name"]
    client.post(
        "/cluster/allocate", json=reservation(org, cluster, cpu=8, ram=32, gpu=4), headers=admin
    )

    response = client.post(
        "/cluster/release", json=reservation(org, cluster, cpu=3, ram=32, gpu=1), headers=admin
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == CLUSTER_FIELDS
    assert (body["reserved_cpu"], body["reserved_ram"], body["reserved_gpu"]) == (5, 0, 3)
    assert (body["available_cpu"], body["available_ram"], body["available_gpu"]) == (11, 64, 1)
    assert_accounting(body)


def test_releasing_more_than_reserved_is_a_409_and_changes_nothing(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    cluster = create_cluster(client, admin, org, cpu=16, ram=64, gpu=4)["name"]
    client.post("/cluster/allocate", json=reservation(org, cluster, cpu=2, gpu=1), headers=admin)
    before = listed(client, admin, org)

    too_much = client.post(
        "/cluster/release", json=reservation(org, cluster, cpu=1, gpu=2), headers=admin
    )
    nothing_reserved = client.post(
        "/cluster/release", json=reservation(org, cluster, ram=1), headers=admin
    )

    assert too_much.status_code == 409
    assert nothing_reserved.status_code == 409
    assert listed(client, admin, org) == before


@pytest.mark.parametrize("path", ["/cluster/allocate", "/cluster/release"])
def test_allocate_or_release_on_an_unknown_cluster_is_a_404(
    client: TestClient, admin: dict[str, str], org: str, path: str
) -> None:
    response = client.post(path, json=reservation(org, "no-such-cluster", cpu=1), headers=admin)

    assert response.status_code == 404


def test_cluster_names_in_bodies_match_ignoring_case(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    create_cluster(client, admin, org, "Gpu-Big", gpu=4)

    response = client.post(
        "/cluster/allocate", json=reservation(org, "gpu-big", gpu=1), headers=admin
    )

    assert response.status_code == 200
    assert response.json()["name"] == "Gpu-Big"


# --- resize ----------------------------------------------------------------------------------


def test_resize_grows_a_cluster(client: TestClient, admin: dict[str, str], org: str) -> None:
    cluster = create_cluster(client, admin, org, cpu=4, ram=8, gpu=1)["name"]
    client.post("/cluster/allocate", json=reservation(org, cluster, gpu=1), headers=admin)

    response = client.patch(
        "/cluster/resize", json=resize_body(org, cluster, 8, 16, 4), headers=admin
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == CLUSTER_FIELDS
    assert (body["total_cpu"], body["total_ram"], body["total_gpu"]) == (8, 16, 4)
    assert body["reserved_gpu"] == 1
    assert body["available_gpu"] == 3
    assert listed(client, admin, org) == [body]


def test_resize_may_shrink_down_to_exactly_what_is_allocated(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    cluster = create_cluster(client, admin, org, cpu=16, ram=64, gpu=4)["name"]
    client.post(
        "/cluster/allocate", json=reservation(org, cluster, cpu=4, ram=8, gpu=2), headers=admin
    )

    response = client.patch(
        "/cluster/resize", json=resize_body(org, cluster, 4, 8, 2), headers=admin
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["available_cpu"], body["available_ram"], body["available_gpu"]) == (0, 0, 0)


@pytest.mark.parametrize(("cpu", "ram", "gpu"), [(3, 8, 2), (4, 7, 2), (4, 8, 1), (0, 0, 1)])
def test_shrinking_below_what_is_allocated_is_a_409_and_changes_nothing(
    client: TestClient, admin: dict[str, str], org: str, cpu: int, ram: int, gpu: int
) -> None:
    cluster = create_cluster(client, admin, org, cpu=16, ram=64, gpu=4)["name"]
    client.post(
        "/cluster/allocate", json=reservation(org, cluster, cpu=4, ram=8, gpu=2), headers=admin
    )
    before = listed(client, admin, org)

    response = client.patch(
        "/cluster/resize", json=resize_body(org, cluster, cpu, ram, gpu), headers=admin
    )

    assert response.status_code == 409
    assert listed(client, admin, org) == before


def test_resize_rejects_capacity_outside_the_bounds_with_422(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    cluster = create_cluster(client, admin, org)["name"]

    for totals in [(0, 0, 0), (-1, 8, 1), (1, MAX_UNITS + 1, 1), (1.5, 1, 1), ("2", 1, 1)]:
        response = client.patch(
            "/cluster/resize", json=resize_body(org, cluster, *totals), headers=admin
        )

        assert response.status_code == 422, (totals, response.text)


def test_resize_rejects_extra_fields(client: TestClient, admin: dict[str, str], org: str) -> None:
    cluster = create_cluster(client, admin, org)["name"]

    response = client.patch(
        "/cluster/resize",
        json=resize_body(org, cluster, 8, 8, 8) | {"reserved_cpu": 0},
        headers=admin,
    )

    assert response.status_code == 422


def test_resize_of_an_unknown_cluster_is_a_404(
    client: TestClient, admin: dict[str, str], org: str
) -> None:
    response = client.patch(
        "/cluster/resize", json=resize_body(org, "no-such-cluster", 1, 1, 1), headers=admin
    )

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/cluster/create", {"name": "x"}),
        ("GET", "/cluster/list/some-org", None),
        ("POST", "/cluster/allocate", {}),
        ("POST", "/cluster/release", {}),
        ("PATCH", "/cluster/resize", {}),
    ],
)
def test_every_cluster_endpoint_needs_a_bearer_token(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = client.request(method, path, json=body)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
