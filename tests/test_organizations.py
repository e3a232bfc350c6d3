"""SPEC §1–§4 "Organizations": creation, invite codes, members, roles, the last admin."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import ManualClock
from fastapi.testclient import TestClient

from helpers import (
    create_org,
    login,
    member_with_role,
    new_user,
    register,
    rotate_invite,
    unique,
)


def parse_utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0), value
    return parsed


def join(client: TestClient, headers: dict[str, str], code: str) -> Any:
    return client.post("/user/join", json={"invite_code": code}, headers=headers)


def members(client: TestClient, headers: dict[str, str], org: str) -> dict[str, str]:
    response = client.get(f"/organization/list-users/{org}", headers=headers)
    assert response.status_code == 200, response.text
    return {user["username"]: user["role"] for user in response.json()["users"]}


# --- create ----------------------------------------------------------------------------------


def test_create_answers_201_with_the_first_invite_code(
    client: TestClient, clock: ManualClock
) -> None:
    admin = new_user(client)
    clock.advance(90)  # away from the wall clock, so a time read from it would show

    response = client.post("/organization/create", json={"name": "Acme-Labs"}, headers=admin)

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {
        "id",
        "name",
        "invite_code",
        "invite_role",
        "invite_expires_at",
        "created_at",
    }
    assert body["name"] == "Acme-Labs"
    assert isinstance(body["id"], int)
    assert isinstance(body["invite_code"], str) and len(body["invite_code"]) >= 16
    assert body["invite_role"] == "developer"
    assert parse_utc(body["invite_expires_at"]) == clock.now() + timedelta(hours=168)
    assert parse_utc(body["created_at"]) == clock.now()


def test_the_creator_is_the_organizations_admin(client: TestClient) -> None:
    username = register(client)
    admin = login(client, username)
    org = create_org(client, admin)["name"]

    assert members(client, admin, org) == {username: "admin"}


def test_every_organization_gets_its_own_invite_code(client: TestClient) -> None:
    admin = new_user(client)

    codes = {create_org(client, admin)["invite_code"] for _ in range(3)}

    assert len(codes) == 3


def test_a_taken_organization_name_is_a_409(client: TestClient) -> None:
    create_org(client, new_user(client), "taken-org")

    response = client.post(
        "/organization/create", json={"name": "taken-org"}, headers=new_user(client)
    )

    assert response.status_code == 409
    assert isinstance(response.json()["detail"], str)


def test_organization_names_are_unique_ignoring_case_and_keep_their_spelling(
    client: TestClient,
) -> None:
    first = new_user(client)
    create_org(client, first, "DeepMind-Lab")

    clash = client.post(
        "/organization/create", json={"name": "deepmind-LAB"}, headers=new_user(client)
    )

    assert clash.status_code == 409
    assert client.get("/user/me", headers=first).json()["organizations"] == [
        {"name": "DeepMind-Lab", "role": "admin"}
    ]
    listed = client.get("/organization/list-users/DeepMind-Lab", headers=first).json()
    assert listed["organization"] == "DeepMind-Lab"


@pytest.mark.parametrize("name", ["abc", "a" * 63, "0rg", "Org.name_with-all"])
def test_organization_names_of_3_to_63_pattern_characters_are_accepted(
    client: TestClient, name: str
) -> None:
    response = client.post("/organization/create", json={"name": name}, headers=new_user(client))

    assert response.status_code == 201, response.text
    assert response.json()["name"] == name


def test_create_rejects_invalid_bodies_with_422(client: TestClient) -> None:
    admin = new_user(client)

    for body in [
        {"name": "ab"},
        {"name": "a" * 64},
        {"name": "-org"},
        {"name": "org name"},
        {"name": "org/name"},
        {"name": "orgé"},
        {"name": "org\n"},
        {"name": ""},
        {"name": None},
        {"name": 123},
        {},
        {"name": "fine-name", "owner": "someone"},
    ]:
        response = client.post("/organization/create", json=body, headers=admin)

        assert response.status_code == 422, (body, response.text)
        assert isinstance(response.json()["detail"], list)
    assert client.get("/user/me", headers=admin).json()["organizations"] == []


def test_create_without_a_token_is_a_401(client: TestClient) -> None:
    response = client.post("/organization/create", json={"name": "anonymous"})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


# --- invite codes ----------------------------------------------------------------------------


def test_the_admin_reads_the_active_invite_code(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)

    response = client.get(f"/organization/get-invite-code/{org['name']}", headers=admin)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"invite_code", "role", "expires_at"}
    assert body["invite_code"] == org["invite_code"]
    assert body["role"] == org["invite_role"] == "developer"
    assert parse_utc(body["expires_at"]) == parse_utc(org["invite_expires_at"])


def test_rotating_with_no_body_issues_a_developer_code_for_168_hours(
    client: TestClient, clock: ManualClock
) -> None:
    admin = new_user(client)
    org = create_org(client, admin)
    clock.advance(600)

    response = client.post(f"/organization/{org['name']}/invite-code/rotate", headers=admin)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"invite_code", "role", "expires_at"}
    assert body["invite_code"] != org["invite_code"]
    assert body["role"] == "developer"
    assert parse_utc(body["expires_at"]) == clock.now() + timedelta(hours=168)


@pytest.mark.parametrize("hours", [1, 24, 720])
def test_rotate_accepts_a_role_and_1_to_720_hours(
    client: TestClient, clock: ManualClock, hours: int
) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]

    body = rotate_invite(client, admin, org, role="viewer", expires_in_hours=hours)

    assert body["role"] == "viewer"
    assert parse_utc(body["expires_at"]) == clock.now() + timedelta(hours=hours)
    read = client.get(f"/organization/get-invite-code/{org}", headers=admin).json()
    assert read == body


def test_rotate_rejects_out_of_bound_bodies_with_422(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)

    for body in [
        {"expires_in_hours": 0},
        {"expires_in_hours": 721},
        {"expires_in_hours": -1},
        {"expires_in_hours": 1.5},
        {"expires_in_hours": "24"},
        {"expires_in_hours": None},
        {"role": "owner"},
        {"role": "ADMIN"},
        {"role": None},
        {"role": "viewer", "code": "my-own-code"},
    ]:
        response = client.post(
            f"/organization/{org['name']}/invite-code/rotate", json=body, headers=admin
        )

        assert response.status_code == 422, (body, response.text)
    # A refused rotation leaves the active code as it was.
    read = client.get(f"/organization/get-invite-code/{org['name']}", headers=admin).json()
    assert read["invite_code"] == org["invite_code"]


def test_rotation_stops_the_previous_code_at_once(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)
    new_code = rotate_invite(client, admin, org["name"])["invite_code"]

    old = join(client, new_user(client), org["invite_code"])
    new = join(client, new_user(client), new_code)

    assert old.status_code == 400
    assert new.status_code == 200


def test_a_code_rotated_with_a_role_admits_joiners_with_that_role(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]
    code = rotate_invite(client, admin, org, role="admin")["invite_code"]
    username = register(client)

    assert join(client, login(client, username), code).json()["role"] == "admin"
    assert members(client, admin, org)[username] == "admin"


def test_an_expired_code_admits_nobody_until_rotated(
    client: TestClient, clock: ManualClock
) -> None:
    admin_name = register(client)
    org = create_org(client, login(client, admin_name))["name"]
    code = rotate_invite(client, login(client, admin_name), org, role="viewer", expires_in_hours=1)[
        "invite_code"
    ]
    clock.advance(3599)
    assert join(client, new_user(client), code).status_code == 200  # a second before expiry
    clock.advance(2)
    # Tokens from after the jump: those of an hour ago would have run out themselves.
    admin, joiner = login(client, admin_name), new_user(client)

    expired = join(client, joiner, code)
    fresh = join(client, joiner, rotate_invite(client, admin, org)["invite_code"])

    assert expired.status_code == 400
    assert fresh.status_code == 200


def test_invite_code_endpoints_of_an_unknown_organization_are_404(client: TestClient) -> None:
    admin = new_user(client)

    read = client.get("/organization/get-invite-code/no-such-org", headers=admin)
    rotate = client.post("/organization/no-such-org/invite-code/rotate", headers=admin)

    assert read.status_code == 404
    assert rotate.status_code == 404


# --- members ---------------------------------------------------------------------------------


def test_list_users_names_every_member_with_role_and_join_time(
    client: TestClient, clock: ManualClock
) -> None:
    admin_name = register(client)
    admin = login(client, admin_name)
    org = create_org(client, admin)["name"]
    created_at = clock.now()
    clock.advance(5)
    viewer_name = register(client)
    join(
        client,
        login(client, viewer_name),
        rotate_invite(client, admin, org, role="viewer")["invite_code"],
    )

    response = client.get(f"/organization/list-users/{org}", headers=admin)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"organization", "users"}
    assert body["organization"] == org
    assert [(u["username"], u["role"]) for u in body["users"]] == [
        (admin_name, "admin"),
        (viewer_name, "viewer"),
    ]
    for user in body["users"]:
        assert set(user) == {"username", "role", "joined_at"}
    assert [parse_utc(u["joined_at"]) for u in body["users"]] == [
        created_at,
        created_at + timedelta(seconds=5),
    ]


def test_an_admin_changes_a_members_role(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]
    username = register(client)
    join(client, login(client, username), rotate_invite(client, admin, org)["invite_code"])

    response = client.put(
        f"/organization/{org}/members/{username}", json={"role": "viewer"}, headers=admin
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"username", "role", "joined_at"}
    assert body["username"] == username and body["role"] == "viewer"
    assert members(client, admin, org)[username] == "viewer"


def test_change_role_rejects_invalid_bodies_with_422(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]
    username = register(client)
    join(client, login(client, username), rotate_invite(client, admin, org)["invite_code"])

    for body in [{"role": "owner"}, {"role": ""}, {}, {"role": None}, {"role": "viewer", "x": 1}]:
        response = client.put(f"/organization/{org}/members/{username}", json=body, headers=admin)

        assert response.status_code == 422, body
    assert members(client, admin, org)[username] == "developer"


def test_member_paths_with_invalid_usernames_are_422(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]

    for username in ["ab", "a" * 33, "-bad", "bad name"]:
        put = client.put(
            f"/organization/{org}/members/{username}", json={"role": "viewer"}, headers=admin
        )
        delete = client.delete(f"/organization/{org}/members/{username}", headers=admin)

        assert put.status_code == delete.status_code == 422, username


def test_changing_or_removing_a_non_member_is_404(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]
    outsider = register(client)

    put = client.put(
        f"/organization/{org}/members/{outsider}", json={"role": "viewer"}, headers=admin
    )
    delete = client.delete(f"/organization/{org}/members/{outsider}", headers=admin)
    ghost = client.delete(f"/organization/{org}/members/never-registered", headers=admin)

    assert put.status_code == delete.status_code == ghost.status_code == 404


def test_an_admin_removes_a_member_who_then_loses_access(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]
    username = register(client)
    member = login(client, username)
    join(client, member, rotate_invite(client, admin, org)["invite_code"])

    response = client.delete(f"/organization/{org}/members/{username}", headers=admin)

    assert response.status_code == 204
    assert response.content == b""
    assert username not in members(client, admin, org)
    assert client.get(f"/organization/list-users/{org}", headers=member).status_code == 404
    assert client.get("/user/me", headers=member).json()["organizations"] == []


@pytest.mark.parametrize("role", ["developer", "viewer"])
def test_a_member_can_leave(client: TestClient, role: str) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]
    username = register(client)
    member = login(client, username)
    join(client, member, rotate_invite(client, admin, org, role=role)["invite_code"])

    response = client.delete(f"/organization/{org}/members/{username}", headers=member)

    assert response.status_code == 204
    assert username not in members(client, admin, org)


def test_a_viewer_cannot_remove_others(client: TestClient) -> None:
    admin_name = register(client)
    admin = login(client, admin_name)
    org = create_org(client, admin)["name"]
    viewer = member_with_role(client, admin, org, "viewer")
    developer_name = register(client)
    join(client, login(client, developer_name), rotate_invite(client, admin, org)["invite_code"])

    on_admin = client.delete(f"/organization/{org}/members/{admin_name}", headers=viewer)
    on_developer = client.delete(f"/organization/{org}/members/{developer_name}", headers=viewer)

    assert on_admin.status_code == on_developer.status_code == 403
    assert {admin_name, developer_name} <= set(members(client, admin, org))


# --- the last admin --------------------------------------------------------------------------


def test_the_last_admin_cannot_demote_themselves(client: TestClient) -> None:
    username = register(client)
    admin = login(client, username)
    org = create_org(client, admin)["name"]

    response = client.put(
        f"/organization/{org}/members/{username}", json={"role": "developer"}, headers=admin
    )

    assert response.status_code == 409
    assert members(client, admin, org) == {username: "admin"}


def test_the_last_admin_cannot_leave(client: TestClient) -> None:
    username = register(client)
    admin = login(client, username)
    org = create_org(client, admin)["name"]
    member_with_role(client, admin, org, "developer")

    response = client.delete(f"/organization/{org}/members/{username}", headers=admin)

    assert response.status_code == 409
    assert members(client, admin, org)[username] == "admin"


def test_the_last_admin_can_reassign_itself_as_admin(client: TestClient) -> None:
    username = register(client)
    admin = login(client, username)
    org = create_org(client, admin)["name"]

    response = client.put(
        f"/organization/{org}/members/{username}", json={"role": "admin"}, headers=admin
    )

    assert response.status_code == 200
    assert response.json()["role"] == "admin"


def test_after_promoting_another_admin_the_first_may_step_down_or_leave(
    client: TestClient,
) -> None:
    first_name = register(client)
    first = login(client, first_name)
    org = create_org(client, first)["name"]
    second_name = register(client)
    second = login(client, second_name)
    join(client, second, rotate_invite(client, first, org)["invite_code"])
    promoted = client.put(
        f"/organization/{org}/members/{second_name}", json={"role": "admin"}, headers=first
    )
    assert promoted.status_code == 200

    demoted = client.put(
        f"/organization/{org}/members/{first_name}", json={"role": "viewer"}, headers=first
    )
    assert demoted.status_code == 200
    assert members(client, second, org) == {first_name: "viewer", second_name: "admin"}

    # Now `second` is the last admin again: neither a demotion nor leaving is allowed.
    assert (
        client.put(
            f"/organization/{org}/members/{second_name}", json={"role": "viewer"}, headers=second
        ).status_code
        == 409
    )
    leaving = client.delete(f"/organization/{org}/members/{second_name}", headers=second)
    assert leaving.status_code == 409
    assert members(client, second, org)[second_name] == "admin"

    # The demoted first admin may leave on its own.
    assert (
        client.delete(f"/organization/{org}/members/{first_name}", headers=first).status_code == 204
    )
    assert members(client, second, org) == {second_name: "admin"}


def test_one_admin_may_remove_another_while_one_remains(client: TestClient) -> None:
    first = new_user(client)
    org = create_org(client, first)["name"]
    second_name = register(client)
    join(
        client,
        login(client, second_name),
        rotate_invite(client, first, org, role="admin")["invite_code"],
    )

    response = client.delete(f"/organization/{org}/members/{second_name}", headers=first)

    assert response.status_code == 204
    assert second_name not in members(client, first, org)


def test_member_names_in_paths_match_ignoring_case(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]
    username = register(client, unique("CamelUser"))
    join(client, login(client, username), rotate_invite(client, admin, org)["invite_code"])

    response = client.put(
        f"/organization/{org}/members/{username.lower()}", json={"role": "viewer"}, headers=admin
    )

    assert response.status_code == 200
    assert response.json()["username"] == username  # the original spelling
