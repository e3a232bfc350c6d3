"""SPEC §2: whatever a body holds, a bad one is a 422 with `{"detail": ...}` — never a 500,
never more than a short prefix of the input, never the input in the log."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from workloads import make_team

from helpers import new_user
from main import MAX_ECHOED_CHARACTERS, MAX_ERRORS_SHOWN

# Raw JSON text: Python's parser takes all four; a response can carry none of them back.
UNENCODABLE = ["NaN", "Infinity", "-Infinity", '"\\ud800"']


def strict_json(response: Any) -> Any:
    """The body parsed as a strict JSON parser would: UTF-8, no NaN or infinities."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a response body")

    return json.loads(response.content.decode("utf-8"), parse_constant=refuse)


def send_json(client: TestClient, path: str, text: str, headers: dict[str, str]) -> Any:
    return client.post(
        path, content=text.encode(), headers={**headers, "Content-Type": "application/json"}
    )


def bodies(team: Any, value: str) -> list[tuple[str, str, bool]]:
    """(path, raw JSON body, needs the token) with `value` in one field."""
    deployment = json.dumps(team.body(gpu=1))
    return [
        ("/user/register", f'{{"username": {value}, "password": "long enough pw"}}', False),
        ("/user/register", f'{{"username": "someone", "password": {value}}}', False),
        ("/user/login", f'{{"username": {value}, "password": "long enough pw"}}', False),
        ("/organization/create", f'{{"name": {value}}}', True),
        (
            "/deployment/create",
            deployment.replace('"required_gpu": 1', f'"required_gpu": {value}'),
            True,
        ),
        ("/deployment/create", deployment.replace('"ghcr.io/acme/model:1.0"', value), True),
        ("/deployment/create", deployment[:-1] + f', "depends_on": [{value}]}}', True),
        ("/deployment/create", deployment[:-1] + f', "priority": {value}}}', True),
        ("/deployment/create", deployment[:-1] + f', "extra_field": {value}}}', True),
    ]


@pytest.mark.parametrize("value", UNENCODABLE)
def test_unencodable_values_in_any_field_are_a_clean_422(
    client: TestClient, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    team = make_team(client, gpu=4)
    caplog.set_level(logging.DEBUG)

    for path, body, needs_token in bodies(team, value):
        response = send_json(client, path, body, team.headers if needs_token else {})

        assert response.status_code == 422, (path, body, response.text)
        assert isinstance(strict_json(response)["detail"], list)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_rejected_password_never_reaches_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Hunter2-my-real-password-" + "x" * 200  # too long: rejected
    caplog.set_level(logging.DEBUG)

    responses = [
        send_json(client, "/user/register", f'{{"username": NaN, "password": "{secret}"}}', {}),
        client.post("/user/register", json={"username": "ok-name", "password": secret}),
        client.post("/user/login", data={"password": secret}),  # no username
    ]

    assert [r.status_code for r in responses] == [422, 422, 422]
    assert secret[:20] not in caplog.text
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_422_echoes_only_a_short_prefix_of_a_huge_value(client: TestClient) -> None:
    response = client.post("/user/register", json={"username": "u" * 500_000, "password": "x"})

    assert response.status_code == 422
    assert len(response.content) < 3_000
    echoed = [error["input"] for error in response.json()["detail"] if "input" in error]
    assert echoed and all(len(str(value)) <= MAX_ECHOED_CHARACTERS + 3 for value in echoed)


def test_a_422_for_a_huge_object_shows_a_prefix_of_it(client: TestClient) -> None:
    response = client.post("/user/register", json={"password": "p" * 100_000})  # no username

    assert response.status_code == 422
    missing = response.json()["detail"][0]
    assert missing["type"] == "missing"
    assert isinstance(missing["input"], str)
    assert missing["input"].startswith('{"password": "ppp')
    assert len(missing["input"]) <= MAX_ECHOED_CHARACTERS + 3


def test_a_422_lists_a_bounded_number_of_errors(client: TestClient) -> None:
    headers = new_user(client)
    body = {"name": "many-extras", **{f"extra{i}": i for i in range(10_000)}}

    response = client.post("/organization/create", json=body, headers=headers)

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) == MAX_ERRORS_SHOWN + 1
    assert detail[-1]["msg"] == f"and {10_000 - MAX_ERRORS_SHOWN} more errors"
    assert len(response.content) < 10_000


# --- parse errors are 422 (SPEC §2), the invite code's 400 stays -----------------------------


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"name": "\xff\xfe"}', "application/json"),  # not UTF-8
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),  # nested beyond the parser
    ],
)
def test_a_json_body_that_cannot_be_parsed_is_a_422(
    client: TestClient, content: bytes, content_type: str
) -> None:
    headers = new_user(client)

    response = client.post(
        "/organization/create", content=content, headers={**headers, "Content-Type": content_type}
    )

    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "multipart/form-data; boundary=xyz"]
)
def test_a_broken_login_form_is_a_422(client: TestClient, content_type: str) -> None:
    response = client.post(
        "/user/login", content=b"garbage", headers={"Content-Type": content_type}
    )

    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)


def test_a_login_that_is_not_a_form_is_a_422(client: TestClient) -> None:
    response = client.post("/user/login", json={"username": "someone", "password": "secret-pw"})

    assert response.status_code == 422


def test_a_bad_invite_code_is_still_a_400(client: TestClient) -> None:
    headers = new_user(client)

    response = client.post("/user/join", json={"invite_code": "no-such-code"}, headers=headers)

    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
