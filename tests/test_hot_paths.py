"""What the hot paths promise beyond their answers (issue "Fast"): a token's user is read
once per process, a create that starts is written running by its one INSERT with both of
its events in one statement, and the users remembered are bounded."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select

import scheduler
import services
from helpers import create_cluster, create_org, new_user
from models import Deployment, User
from services.loading import JOB_COLUMNS, job_of, running_summary
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


def test_the_databases_summary_of_the_running_set_is_the_schedulers_own(
    client: TestClient, app: Any
) -> None:
    headers = new_user(client)
    org = create_org(client, headers)["name"]
    cluster = create_cluster(client, headers, org, cpu=1000, ram=1000, gpu=1000)
    rng = random.Random(7)
    for _ in range(60):
        cpu, ram, gpu = rng.choice([0, 1, 2]), rng.choice([0, 4]), rng.choice([0, 1])
        body = {
            "cluster_name": cluster["name"],
            "organization_name": org,
            "docker_image": "nginx",
            "required_cpu": cpu or (0 if ram or gpu else 1),
            "required_ram": ram,
            "required_gpu": gpu,
            "priority": rng.choice([0, 1, 3, 3, 5, 7]),
        }
        response = client.post("/deployment/create", json=body, headers=headers)
        assert response.status_code == 201 and response.json()["status"] == "running"

    with services.transaction(app.state.session_factory, read_only=True) as session:
        rows = session.execute(
            select(*JOB_COLUMNS)
            .where(Deployment.cluster_id == cluster["id"], Deployment.status == "running")
            .order_by(Deployment.id)
        ).all()
        jobs = [job_of(row) for row in rows]
        # Half of them still within a minute's grace period at `now`.
        now = datetime.fromtimestamp(rows[20].started_at.timestamp() + 60.0005, UTC)
        rules = scheduler.Policy(preemption_grace_seconds=60)
        summed = running_summary(session, cluster["id"], now, rules).levels

    expected = scheduler.running_levels(jobs, now.timestamp(), rules)
    assert summed == expected
    assert [level.priority for level in expected] == [0, 1, 3, 5, 7]
    # Holders are named only on the levels a reason can name: not on the lowest here.
    assert expected[0].named == ((), (), ()) and expected[0].count > 0
    assert 0 < sum(level.in_grace for level in expected) < len(jobs)
    # More holders than a reason names, on some level: the cap is exercised.
    assert any(len(ids) == scheduler.NAMED_PER_LEVEL for lv in expected for ids in lv.named)
    assert any(n > scheduler.NAMED_PER_LEVEL for lv in expected for n in lv.holding)
