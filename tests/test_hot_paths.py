"""What the hot paths promise beyond their answers (issue "Fast"): a token's user is read
once per process, a create that starts is written running by its one INSERT with both of
its events in one statement, and the users remembered are bounded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

import services
from helpers import create_cluster, create_org, new_user
from models import User
from utils import create_access_token, get_settings


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the app's engine runs while the test lasts, whitespace folded."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def _reads_users(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith("SELECT") and " FROM users" in s]


def test_a_tokens_user_is_read_once_per_process(client: TestClient, statements: list[str]) -> None:
    headers = new_user(client)
    statements.clear()

    first = client.get("/user/me", headers=headers)
    read_by_first = _reads_users(statements)
    statements.clear()
    second = client.get("/user/me", headers=headers)

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert len(read_by_first) == 1, read_by_first
    assert _reads_users(statements) == []


def test_a_token_whose_user_was_never_read_and_does_not_exist_is_refused(
    client: TestClient,
) -> None:
    token, _ = create_access_token(987_654, get_settings())

    response = client.get("/user/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert response.json() == {"detail": "the token's user no longer exists"}


def test_a_create_that_starts_is_inserted_running_with_its_events_in_one_statement(
    client: TestClient, statements: list[str]
) -> None:
    headers = new_user(client)
    org = create_org(client, headers)["name"]
    cluster = create_cluster(client, headers, org)["name"]
    body = {
        "cluster_name": cluster,
        "organization_name": org,
        "docker_image": "ghcr.io/acme/train:1.0",
        "required_cpu": 1,
        "required_ram": 1,
        "required_gpu": 0,
        "priority": 3,
    }
    statements.clear()

    response = client.post("/deployment/create", json=body, headers=headers)

    assert response.status_code == 201, response.text
    assert response.json()["status"] == "running"
    on_deployments = [s for s in statements if " deployments " in f"{s} " and "INSERT" in s]
    assert len(on_deployments) == 1 and "INTO deployments " in on_deployments[0]
    assert not [s for s in statements if s.startswith("UPDATE deployments")], statements
    events = [s for s in statements if s.startswith("INSERT INTO deployment_events")]
    assert len(events) == 1, events
    detail = client.get(f"/deployment/{response.json()['id']}", headers=headers)
    assert [e["type"] for e in detail.json()["events"]] == ["created", "started"]


def test_known_users_start_again_from_empty_past_their_limit() -> None:
    known = services.KnownUsers(limit=2)
    users = [User(id=i, username=f"user{i}", password_hash="x") for i in (1, 2, 3)]

    for user in users:
        known.remember(user)

    assert known.get(3) is users[2]
    assert known.get(1) is None and known.get(2) is None
