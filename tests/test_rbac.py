"""SPEC §3: what each role may do in its organization, and what non-members see (404)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpers import (
    create_cluster,
    create_org,
    login,
    member_with_role,
    new_user,
    register,
    reservation,
    resize_body,
    rotate_invite,
)


@dataclass
class World:
    """One organization with a cluster holding a reservation, and a viewer to act upon."""

    owner: dict[str, str]
    org: str
    cluster: str
    target: str


@pytest.fixture
def world(client: TestClient) -> World:
    owner = new_user(client)
    org = create_org(client, owner)["name"]
    cluster = create_cluster(client, owner, org, cpu=16, ram=64, gpu=4)["name"]
    reserved = client.post(
        "/cluster/allocate", json=reservation(org, cluster, cpu=2, gpu=1), headers=owner
    )
    assert reserved.status_code == 200
    target = register(client)
    code = rotate_invite(client, owner, org, role="viewer")["invite_code"]
    joined = client.post("/user/join", json={"invite_code": code}, headers=login(client, target))
    assert joined.status_code == 200
    return World(owner, org, cluster, target)


Action = Callable[[TestClient, dict[str, str], World], Any]

ACTIONS: dict[str, tuple[Action, int]] = {
    "read members": (
        lambda c, h, w: c.get(f"/organization/list-users/{w.org}", headers=h),
        200,
    ),
    "list clusters": (lambda c, h, w: c.get(f"/cluster/list/{w.org}", headers=h), 200),
    "create cluster": (
        lambda c, h, w: c.post(
            "/cluster/create",
            json={
                "name": "new-cluster",
                "organization_name": w.org,
                "total_cpu": 1,
                "total_ram": 1,
                "total_gpu": 0,
            },
            headers=h,
        ),
        201,
    ),
    "resize cluster": (
        lambda c, h, w: c.patch(
            "/cluster/resize", json=resize_body(w.org, w.cluster, 32, 64, 8), headers=h
        ),
        200,
    ),
    "allocate": (
        lambda c, h, w: c.post(
            "/cluster/allocate", json=reservation(w.org, w.cluster, cpu=1), headers=h
        ),
        200,
    ),
    "release": (
        lambda c, h, w: c.post(
            "/cluster/release", json=reservation(w.org, w.cluster, cpu=1), headers=h
        ),
        200,
    ),
    "read invite code": (
        lambda c, h, w: c.get(f"/organization/get-invite-code/{w.org}", headers=h),
        200,
    ),
    "rotate invite code": (
        lambda c, h, w: c.post(
            f"/organization/{w.org}/invite-code/rotate", json={"role": "admin"}, headers=h
        ),
        200,
    ),
    "change roles": (
        lambda c, h, w: c.put(
            f"/organization/{w.org}/members/{w.target}", json={"role": "admin"}, headers=h
        ),
        200,
    ),
    "remove members": (
        lambda c, h, w: c.delete(f"/organization/{w.org}/members/{w.target}", headers=h),
        204,
    ),
}

READ = {"read members", "list clusters"}
ALLOWED = {"admin": set(ACTIONS), "developer": READ, "viewer": READ}

MATRIX = [
    pytest.param(role, action, action in ALLOWED[role], id=f"{role}-{action.replace(' ', '_')}")
    for role in ("admin", "developer", "viewer")
    for action in ACTIONS
]


def snapshot(client: TestClient, world: World) -> dict[str, Any]:
    """Everything the actions could change, as the owner sees it."""
    return {
        "clusters": client.get(f"/cluster/list/{world.org}", headers=world.owner).json(),
        "members": client.get(f"/organization/list-users/{world.org}", headers=world.owner).json(),
        "invite": client.get(
            f"/organization/get-invite-code/{world.org}", headers=world.owner
        ).json(),
    }


@pytest.mark.parametrize(("role", "action", "allowed"), MATRIX)
def test_each_role_may_do_exactly_what_spec_section_3_allows(
    client: TestClient, world: World, role: str, action: str, allowed: bool
) -> None:
    caller = member_with_role(client, world.owner, world.org, role)
    before = snapshot(client, world)
    perform, success = ACTIONS[action]

    response = perform(client, caller, world)

    if allowed:
        assert response.status_code == success, response.text
    else:
        assert response.status_code == 403, response.text
        assert isinstance(response.json()["detail"], str)
        assert snapshot(client, world) == before


def test_a_non_member_gets_404_for_every_action_and_changes_nothing(
    client: TestClient, world: World
) -> None:
    outsider = new_user(client)
    create_org(client, outsider)  # an admin elsewhere is still nobody here
    before = snapshot(client, world)

    for action, (perform, _) in ACTIONS.items():
        response = perform(client, outsider, world)

        assert response.status_code == 404, (action, response.text)
        assert world.cluster not in response.text
        assert world.target not in response.text
    assert snapshot(client, world) == before


def test_a_removed_member_is_a_non_member_again(client: TestClient, world: World) -> None:
    username = register(client)
    former = login(client, username)
    code = rotate_invite(client, world.owner, world.org, role="admin")["invite_code"]
    client.post("/user/join", json={"invite_code": code}, headers=former)
    removed = client.delete(f"/organization/{world.org}/members/{username}", headers=world.owner)
    assert removed.status_code == 204

    for action, (perform, _) in ACTIONS.items():
        assert perform(client, former, world).status_code == 404, action


def test_a_role_is_per_organization(client: TestClient) -> None:
    user = new_user(client)
    own = create_org(client, user)["name"]
    other_admin = new_user(client)
    other = create_org(client, other_admin)["name"]
    code = rotate_invite(client, other_admin, other, role="viewer")["invite_code"]
    client.post("/user/join", json={"invite_code": code}, headers=user)

    in_own = create_cluster(client, user, own)
    in_other = client.post(
        "/cluster/create",
        json={
            "name": "not-mine",
            "organization_name": other,
            "total_cpu": 1,
            "total_ram": 1,
            "total_gpu": 1,
        },
        headers=user,
    )

    assert in_own["organization_name"] == own
    assert in_other.status_code == 403
    assert client.get(f"/cluster/list/{other}", headers=user).status_code == 200


def test_a_promoted_developer_gains_admin_rights_and_a_demoted_admin_loses_them(
    client: TestClient, world: World
) -> None:
    username = register(client)
    member = login(client, username)
    code = rotate_invite(client, world.owner, world.org, role="developer")["invite_code"]
    client.post("/user/join", json={"invite_code": code}, headers=member)
    invite_path = f"/organization/get-invite-code/{world.org}"
    assert client.get(invite_path, headers=member).status_code == 403

    client.put(
        f"/organization/{world.org}/members/{username}", json={"role": "admin"}, headers=world.owner
    )
    assert client.get(invite_path, headers=member).status_code == 200

    client.put(
        f"/organization/{world.org}/members/{username}",
        json={"role": "viewer"},
        headers=world.owner,
    )
    assert client.get(invite_path, headers=member).status_code == 403
