"""SPEC §1, §2 and §4 "Users": register, log in, who am I, join an organization."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import ManualClock
from fastapi.testclient import TestClient

from helpers import (
    PASSWORD,
    create_org,
    login,
    new_user,
    register,
    rotate_invite,
    unique,
)


def parse_utc(value: str) -> datetime:
    """An ISO-8601 timestamp that must carry the UTC offset."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0), value
    return parsed


def assert_validation_error(response: Any) -> None:
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


# --- register --------------------------------------------------------------------------------


def test_register_answers_201_with_id_username_and_utc_creation_time(
    client: TestClient, clock: ManualClock
) -> None:
    clock.advance(90)  # away from the wall clock, so a time read from it would show

    response = client.post("/user/register", json={"username": "Ada_1.x-y", "password": PASSWORD})

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "username", "created_at"}
    assert isinstance(body["id"], int) and body["id"] >= 1
    assert body["username"] == "Ada_1.x-y"
    assert parse_utc(body["created_at"]) == clock.now()


def test_register_never_returns_the_password_or_its_hash(client: TestClient) -> None:
    response = client.post("/user/register", json={"username": "secretive", "password": PASSWORD})

    assert PASSWORD not in response.text
    assert "hash" not in response.text


def test_a_taken_username_is_a_409(client: TestClient) -> None:
    register(client, "grace")

    response = client.post("/user/register", json={"username": "grace", "password": PASSWORD})

    assert response.status_code == 409
    assert isinstance(response.json()["detail"], str)


def test_usernames_are_unique_ignoring_case_and_keep_their_spelling(client: TestClient) -> None:
    register(client, "MixedCase")

    for other_spelling in ("mixedcase", "MIXEDCASE", "mixedCASE"):
        response = client.post(
            "/user/register", json={"username": other_spelling, "password": PASSWORD}
        )
        assert response.status_code == 409, other_spelling

    me = client.get("/user/me", headers=login(client, "MixedCase")).json()
    assert me["username"] == "MixedCase"


@pytest.mark.parametrize("username", ["abc", "a" * 32, "9lives", "A.b_c-d", "x-_."])
def test_usernames_of_3_to_32_pattern_characters_are_accepted(
    client: TestClient, username: str
) -> None:
    response = client.post("/user/register", json={"username": username, "password": PASSWORD})

    assert response.status_code == 201, response.text
    assert response.json()["username"] == username


def test_usernames_outside_the_bounds_are_a_422(client: TestClient) -> None:
    for username in [
        "",
        "ab",
        "a" * 33,
        "-abc",
        "_abc",
        ".abc",
        "has space",
        "at@sign",
        "slash/name",
        "ünïcode",
        "abc\n",
        "tab\tname",
        "emoji😀",
    ]:
        response = client.post("/user/register", json={"username": username, "password": PASSWORD})

        assert response.status_code == 422, (username, response.text)
        assert isinstance(response.json()["detail"], list)


@pytest.mark.parametrize("length", [8, 72, 128])
def test_passwords_of_8_to_128_characters_are_accepted(client: TestClient, length: int) -> None:
    password = "p" * length
    username = register(client, password=password)

    assert client.post("/user/login", data={"username": username, "password": password}).is_success


@pytest.mark.parametrize("password", ["", "short", "7chars!", "p" * 129, "é" * 129])
def test_passwords_outside_8_to_128_characters_are_a_422(client: TestClient, password: str) -> None:
    response = client.post("/user/register", json={"username": unique("u"), "password": password})

    assert_validation_error(response)


def test_every_character_of_a_long_password_counts_beyond_72_bytes(client: TestClient) -> None:
    prefix = "a" * 72
    username = register(client, password=prefix + "-right-ending")

    wrong = client.post("/user/login", data={"username": username, "password": prefix + "-wrong"})
    right = client.post(
        "/user/login", data={"username": username, "password": prefix + "-right-ending"}
    )
    only_prefix = client.post("/user/login", data={"username": username, "password": prefix})

    assert wrong.status_code == 401
    assert only_prefix.status_code == 401
    assert right.status_code == 200


def test_multibyte_passwords_past_72_bytes_still_differ_in_their_last_character(
    client: TestClient,
) -> None:
    # 40 characters of 2 bytes each = 80 bytes before the distinguishing character.
    prefix = "é" * 40
    username = register(client, password=prefix + "1")

    wrong = client.post("/user/login", data={"username": username, "password": prefix + "2"})
    right = client.post("/user/login", data={"username": username, "password": prefix + "1"})

    assert wrong.status_code == 401
    assert right.status_code == 200


def test_register_rejects_extra_missing_or_mistyped_fields(client: TestClient) -> None:
    for body in [
        {"username": "extrafield", "password": PASSWORD, "is_admin": True},
        {"username": "nopassword"},
        {"password": PASSWORD},
        {},
        {"username": 12345, "password": PASSWORD},
        {"username": "numericpw", "password": 12345678},
        {"username": None, "password": PASSWORD},
    ]:
        response = client.post("/user/register", json=body)

        assert response.status_code == 422, (body, response.text)
        assert isinstance(response.json()["detail"], list)


@pytest.mark.parametrize("payload", ["not json", "[]", "null", '"string"', "{"])
def test_register_rejects_bodies_that_are_not_a_json_object(
    client: TestClient, payload: str
) -> None:
    response = client.post(
        "/user/register", content=payload, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text


# --- login -----------------------------------------------------------------------------------


def test_login_with_the_oauth2_form_returns_a_bearer_token_and_its_lifetime(
    client: TestClient,
) -> None:
    username = register(client)

    response = client.post("/user/login", data={"username": username, "password": PASSWORD})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 60 * 60  # HYPERVISOR_TOKEN_TTL_MINUTES defaults to 60
    assert isinstance(body["access_token"], str) and body["access_token"].count(".") == 2
    me = client.get("/user/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["username"] == username


def test_a_wrong_password_is_a_401_with_www_authenticate_bearer(client: TestClient) -> None:
    username = register(client)

    response = client.post("/user/login", data={"username": username, "password": "wrong-pass"})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "access_token" not in response.json()


def test_an_unknown_username_is_the_same_401_as_a_wrong_password(client: TestClient) -> None:
    username = register(client)

    unknown = client.post("/user/login", data={"username": "nobody-here", "password": PASSWORD})
    wrong = client.post("/user/login", data={"username": username, "password": "wrong-pass"})

    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()
    assert unknown.headers["WWW-Authenticate"] == "Bearer"


def test_login_needs_the_form_encoding_not_json(client: TestClient) -> None:
    username = register(client)

    response = client.post("/user/login", json={"username": username, "password": PASSWORD})

    assert response.status_code == 422


@pytest.mark.parametrize("form", [{}, {"username": "someone"}, {"password": PASSWORD}])
def test_login_with_missing_form_fields_is_a_422(client: TestClient, form: dict[str, str]) -> None:
    response = client.post("/user/login", data=form)

    assert response.status_code == 422


# --- me --------------------------------------------------------------------------------------


def test_me_describes_the_caller_and_every_organization_with_its_role(client: TestClient) -> None:
    owner = new_user(client)
    username = register(client)
    user = login(client, username)
    own = create_org(client, user)["name"]
    other = create_org(client, owner)["name"]
    code = rotate_invite(client, owner, other, role="viewer")["invite_code"]
    assert client.post("/user/join", json={"invite_code": code}, headers=user).status_code == 200

    response = client.get("/user/me", headers=user)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "username", "organizations"}
    assert body["username"] == username
    assert isinstance(body["id"], int)
    assert sorted(body["organizations"], key=lambda o: o["name"]) == sorted(
        [{"name": own, "role": "admin"}, {"name": other, "role": "viewer"}],
        key=lambda o: o["name"],
    )


def test_a_new_user_belongs_to_no_organization(client: TestClient) -> None:
    assert client.get("/user/me", headers=new_user(client)).json()["organizations"] == []


def test_me_without_a_token_is_a_401_with_www_authenticate_bearer(client: TestClient) -> None:
    response = client.get("/user/me")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str)


# --- join ------------------------------------------------------------------------------------


def test_joining_with_the_invite_code_grants_the_codes_role(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)
    joiner = new_user(client)

    response = client.post("/user/join", json={"invite_code": org["invite_code"]}, headers=joiner)

    assert response.status_code == 200, response.text
    assert response.json() == {"organization": org["name"], "role": "developer"}
    assert client.get("/user/me", headers=joiner).json()["organizations"] == [
        {"name": org["name"], "role": "developer"}
    ]


@pytest.mark.parametrize("role", ["admin", "developer", "viewer"])
def test_joiners_get_the_role_the_code_was_rotated_with(client: TestClient, role: str) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]
    code = rotate_invite(client, admin, org, role=role)["invite_code"]
    joiner = new_user(client)

    response = client.post("/user/join", json={"invite_code": code}, headers=joiner)

    assert response.status_code == 200
    assert response.json() == {"organization": org, "role": role}


def test_an_unknown_invite_code_is_a_400(client: TestClient) -> None:
    admin = new_user(client)
    create_org(client, admin)

    response = client.post(
        "/user/join", json={"invite_code": "no-such-code"}, headers=new_user(client)
    )

    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)


def test_an_expired_invite_code_is_a_400(client: TestClient, clock: ManualClock) -> None:
    org = create_org(client, new_user(client))
    clock.advance(timedelta(hours=168, seconds=1).total_seconds())  # the first code's lifetime
    joiner = new_user(client)  # a token from after the jump, alive then

    response = client.post("/user/join", json={"invite_code": org["invite_code"]}, headers=joiner)

    assert response.status_code == 400
    assert client.get("/user/me", headers=joiner).json()["organizations"] == []


def test_joining_an_organization_you_belong_to_is_a_409(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)
    joiner = new_user(client)
    client.post("/user/join", json={"invite_code": org["invite_code"]}, headers=joiner)

    again = client.post("/user/join", json={"invite_code": org["invite_code"]}, headers=joiner)
    creator = client.post("/user/join", json={"invite_code": org["invite_code"]}, headers=admin)

    assert again.status_code == 409
    assert creator.status_code == 409
    # A 409 never downgrades the creator's admin role to the code's role.
    assert client.get("/user/me", headers=admin).json()["organizations"][0]["role"] == "admin"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"invite_code": ""},
        {"invite_code": "x" * 129},
        {"invite_code": 123},
        {"invite_code": None},
        {"invite_code": "abc", "role": "admin"},
    ],
)
def test_join_rejects_malformed_bodies(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/user/join", json=body, headers=new_user(client))

    assert_validation_error(response)


def test_join_without_a_token_is_a_401(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)

    response = client.post("/user/join", json={"invite_code": org["invite_code"]})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
