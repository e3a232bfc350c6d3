"""The event feed as pages: SPEC §4 "Events" (`GET /organization/{org}/events`)."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from conftest import ON_POSTGRES, TEST_DATABASE_URL
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from workloads import Team, make_team

from database import alembic_config, make_engine
from helpers import create_cluster, create_org, member_with_role, new_user
from services.events import EventFeed, _events_after


@pytest.fixture
def team(client: TestClient) -> Team:
    return make_team(client, gpu=4)


def events(client: TestClient, headers: dict[str, str], org: str, **query: Any) -> Any:
    response = client.get(f"/organization/{org}/events", params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_deployment_event_of_the_organization_in_id_order(
    team: Team, client: TestClient
) -> None:
    other = create_cluster(client, team.headers, team.org, gpu=1)["name"]
    first = team.deploy(gpu=2)
    second = team.deploy(gpu=1, cluster_name=other)
    team.cancel(first)

    feed = events(client, team.headers, team.org)

    listed = [(e["deployment_id"], e["cluster_name"], e["type"]) for e in feed["events"]]
    assert listed == [
        (first["id"], team.cluster, "created"),
        (first["id"], team.cluster, "started"),
        (second["id"], other, "created"),
        (second["id"], other, "started"),
        (first["id"], team.cluster, "cancelled"),
    ]
    ids = [e["id"] for e in feed["events"]]
    assert ids == sorted(ids) and feed["next_after"] == ids[-1]
    # The same events, message and time, as the deployment's own history.
    own = [e for e in feed["events"] if e["deployment_id"] == first["id"]]
    history = team.get(first)["events"]
    assert [(e["at"], e["type"], e["message"]) for e in own] == [
        (e["at"], e["type"], e["message"]) for e in history
    ]
    assert set(feed["events"][0]) == {
        "id",
        "at",
        "deployment_id",
        "cluster_name",
        "type",
        "message",
    }


def test_pages_follow_next_after_until_the_end(team: Team, client: TestClient) -> None:
    for _ in range(3):
        team.deploy(gpu=1)  # created + started each: six events
    everything = [e["id"] for e in events(client, team.headers, team.org)["events"]]

    seen: list[int] = []
    after = 0
    pages = 0
    while True:
        page = events(client, team.headers, team.org, after=after, limit=4)
        if not page["events"]:
            break
        assert len(page["events"]) <= 4
        seen += [e["id"] for e in page["events"]]
        assert page["next_after"] == page["events"][-1]["id"]
        after = page["next_after"]
        pages += 1

    assert seen == everything and len(seen) == 6 and pages == 2
    # At the end the cursor stays where it was, ready for the next poll.
    assert events(client, team.headers, team.org, after=after) == {
        "events": [],
        "next_after": after,
    }
    beyond = events(client, team.headers, team.org, after=after + 1000)
    assert beyond == {"events": [], "next_after": after + 1000}


def test_an_organization_without_events_answers_an_empty_page_with_cursor_0(
    client: TestClient,
) -> None:
    headers = new_user(client)
    org = create_org(client, headers)["name"]

    assert events(client, headers, org) == {"events": [], "next_after": 0}


def test_the_default_page_is_100_and_a_limit_up_to_1000_is_honoured(
    team: Team, client: TestClient, engine: Engine
) -> None:
    deployment = team.deploy(gpu=1)
    _insert_events(engine, deployment["id"], 1_100)

    assert len(events(client, team.headers, team.org)["events"]) == 100
    assert len(events(client, team.headers, team.org, limit=1000)["events"]) == 1000
    rest = events(
        client,
        team.headers,
        team.org,
        after=events(client, team.headers, team.org, limit=1000)["next_after"],
        limit=1000,
    )
    assert len(rest["events"]) == 1_102 - 1000


def test_another_organizations_events_never_appear(client: TestClient) -> None:
    ours = make_team(client)
    theirs = make_team(client)
    mine = ours.deploy(gpu=1)
    theirs.deploy(gpu=1)

    feed = events(client, ours.headers, ours.org)

    assert {e["deployment_id"] for e in feed["events"]} == {mine["id"]}


def test_filters_narrow_the_feed_to_a_cluster_or_a_deployment(
    team: Team, client: TestClient
) -> None:
    other = create_cluster(client, team.headers, team.org, gpu=1)["name"]
    here = team.deploy(gpu=1)
    there = team.deploy(gpu=1, cluster_name=other)
    also_here = team.deploy(gpu=1)

    by_cluster = events(client, team.headers, team.org, cluster_name=other.upper())
    by_deployment = events(client, team.headers, team.org, deployment_id=also_here["id"])
    both = events(
        client, team.headers, team.org, cluster_name=team.cluster, deployment_id=here["id"]
    )
    mismatched = events(
        client, team.headers, team.org, cluster_name=other, deployment_id=here["id"], after=3
    )

    assert {e["deployment_id"] for e in by_cluster["events"]} == {there["id"]}
    assert {e["cluster_name"] for e in by_cluster["events"]} == {other}
    assert [e["type"] for e in by_deployment["events"]] == ["created", "started"]
    assert {e["deployment_id"] for e in by_deployment["events"]} == {also_here["id"]}
    assert {e["deployment_id"] for e in both["events"]} == {here["id"]}
    assert mismatched == {"events": [], "next_after": 3}
    # Filters and the cursor combine: the page after the first event of the cluster.
    first_id = by_cluster["events"][0]["id"]
    later = events(client, team.headers, team.org, cluster_name=other, after=first_id)
    assert [e["id"] for e in later["events"]] == [e["id"] for e in by_cluster["events"][1:]]


def test_a_viewer_reads_the_events(team: Team, client: TestClient) -> None:
    team.deploy(gpu=1)
    viewer = member_with_role(client, team.headers, team.org, "viewer")

    assert len(events(client, viewer, team.org)["events"]) == 2


def test_what_the_caller_may_not_see_is_404(team: Team, client: TestClient) -> None:
    stranger = make_team(client)
    foreign = stranger.deploy(gpu=1)
    path = f"/organization/{team.org}/events"

    not_member = client.get(f"/organization/{stranger.org}/events", headers=team.headers)
    no_such_org = client.get("/organization/no-such-org/events", headers=team.headers)
    unknown_cluster = client.get(path, params={"cluster_name": "nope"}, headers=team.headers)
    their_cluster = client.get(
        path, params={"cluster_name": stranger.cluster}, headers=team.headers
    )
    their_deployment = client.get(
        path, params={"deployment_id": foreign["id"]}, headers=team.headers
    )
    no_such_deployment = client.get(path, params={"deployment_id": 10**12}, headers=team.headers)

    for response in (not_member, no_such_org):
        assert response.status_code == 404
        assert "not found" in response.json()["detail"]
    assert not_member.json()["detail"].replace(stranger.org, "X") == no_such_org.json()[
        "detail"
    ].replace("no-such-org", "X")
    for response in (unknown_cluster, their_cluster, their_deployment, no_such_deployment):
        assert response.status_code == 404, response.text
        assert stranger.org not in response.json()["detail"]
    assert client.get(path).status_code == 401


@pytest.mark.parametrize(
    "query",
    [
        {"after": -1},
        {"after": 2**63},
        {"after": "abc"},
        {"after": "1.5"},
        {"limit": 0},
        {"limit": 1001},
        {"limit": "many"},
        {"deployment_id": 0},
        {"deployment_id": 2**63},
        {"cluster_name": "x"},
        {"cluster_name": "bad name!"},
    ],
)
def test_bad_query_values_are_422(team: Team, client: TestClient, query: dict[str, Any]) -> None:
    response = client.get(f"/organization/{team.org}/events", params=query, headers=team.headers)

    assert response.status_code == 422, response.text


def test_the_largest_cursor_is_accepted(team: Team, client: TestClient) -> None:
    top = 2**63 - 1

    assert events(client, team.headers, team.org, after=top) == {"events": [], "next_after": top}


def test_every_kind_of_event_reaches_the_feed_with_its_cluster(
    team: Team, client: TestClient
) -> None:
    low = team.deploy(gpu=4, priority=1)
    checkpointed = client.post(f"/deployment/{low['id']}/checkpoint", headers=team.headers)
    assert checkpointed.status_code == 200
    urgent = team.deploy(gpu=4, priority=9)  # preempts `low`, which is requeued
    team.report(urgent, "completed")  # `low` starts again
    doomed = team.deploy(gpu=1, depends_on=[low["id"]])
    team.report(low, "failed", "out of memory")  # and `doomed` fails with it
    cancelled = team.deploy(gpu=4)
    team.cancel(cancelled)

    feed = events(client, team.headers, team.org)["events"]

    assert {e["cluster_name"] for e in feed} == {team.cluster}
    assert {e["type"] for e in feed} == {
        "created",
        "started",
        "checkpointed",
        "preempted",
        "requeued",
        "completed",
        "failed",
        "cancelled",
    }
    by_deployment: dict[int, list[str]] = {}
    for event in feed:
        by_deployment.setdefault(event["deployment_id"], []).append(event["type"])
    assert team.status(doomed) == "failed"
    for deployment in (low, urgent, doomed, cancelled):
        history = [e["type"] for e in team.get(deployment)["events"]]
        assert by_deployment[deployment["id"]] == history


@pytest.mark.parametrize("narrowed_by", ["organization", "cluster", "deployment"])
def test_a_page_is_read_by_index_in_id_order(engine: Engine, narrowed_by: str) -> None:
    """O(page): the feed's condition and the id come from one index, with no sort."""
    feed = {
        "organization": EventFeed(1, 1),
        "cluster": EventFeed(1, 1, cluster_id=1),
        "deployment": EventFeed(1, 1, deployment_id=1),
    }[narrowed_by]
    statement = _events_after(feed, 0, 100).compile(engine, compile_kwargs={"literal_binds": True})
    index = f"ix_deployment_events_{narrowed_by}_id_id"
    with engine.begin() as connection:
        if ON_POSTGRES:
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(row[0] for row in connection.execute(text(f"EXPLAIN {statement}")))
        else:
            plan = "\n".join(
                str(row[-1]) for row in connection.execute(text(f"EXPLAIN QUERY PLAN {statement}"))
            )
    assert index in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan


def _insert_events(engine: Engine, deployment_id: int, count: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO deployment_events "
                "(deployment_id, organization_id, cluster_id, at, type, message) "
                "SELECT id, organization_id, cluster_id, created_at, 'checkpointed', 'saved' "
                "FROM deployments WHERE id = :id"
            ),
            [{"id": deployment_id}] * count,
        )


# --- the migration ---------------------------------------------------------------------------


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """A database at no revision at all: a SQLite file, or a new PostgreSQL database."""
    if not ON_POSTGRES:
        yield f"sqlite:///{tmp_path}/migrate.db"
        return
    import psycopg

    url = make_url(TEST_DATABASE_URL)
    name = f"hv_events_migration_{os.getpid()}_{secrets.token_hex(3)}"

    def admin() -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname="postgres",
            autocommit=True,
        )

    with admin() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migration_0008_backfills_each_events_organization_and_cluster(
    empty_database_url: str,
) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0007")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            _seed_before_events_scope(connection)
        command.upgrade(config, "0008")
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT deployment_id, organization_id, cluster_id "
                    "FROM deployment_events ORDER BY id"
                )
            ).all()
        assert [tuple(row) for row in rows] == [(10, 1, 5), (20, 2, 6), (10, 1, 5)]
        command.downgrade(config, "0007")
        command.upgrade(config, "head")
    finally:
        engine.dispose()


def _seed_before_events_scope(connection: Any) -> None:
    at = "2025-01-01 00:00:00+00:00"
    connection.execute(
        text(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES (1, 'u', 'x', :at)"
        ),
        {"at": at},
    )
    for org, cluster, deployment in ((1, 5, 10), (2, 6, 20)):
        connection.execute(
            text(
                "INSERT INTO organizations (id, name, invite_code, invite_role, "
                "invite_expires_at, invite_issued_at, created_at) "
                "VALUES (:org, :name, :code, 'developer', :at, :at, :at)"
            ),
            {"org": org, "name": f"org-{org}", "code": f"code-{org}", "at": at},
        )
        connection.execute(
            text(
                "INSERT INTO clusters (id, organization_id, name, total_cpu, total_ram, "
                "total_gpu, reserved_cpu, reserved_ram, reserved_gpu, created_at, preemptions, "
                "lost_cpu_seconds, lost_ram_seconds, lost_gpu_seconds) "
                "VALUES (:cluster, :org, 'gpu', 1, 1, 1, 0, 0, 0, :at, 0, 0, 0, 0)"
            ),
            {"cluster": cluster, "org": org, "at": at},
        )
        connection.execute(
            text(
                "INSERT INTO deployments (id, cluster_id, organization_id, created_by_id, "
                "docker_image, required_cpu, required_ram, required_gpu, priority, status, "
                "eligible, preemption_count, created_at, waiting_since, saved_seconds) "
                "VALUES (:deployment, :cluster, :org, 1, 'nginx', 1, 0, 0, 0, 'pending', "
                "true, 0, :at, :at, 0)"
            ),
            {"deployment": deployment, "cluster": cluster, "org": org, "at": at},
        )
    for deployment in (10, 20, 10):
        connection.execute(
            text(
                "INSERT INTO deployment_events (deployment_id, at, type, message) "
                "VALUES (:deployment, :at, 'created', 'seeded')"
            ),
            {"deployment": deployment, "at": at},
        )


def test_sqlite_keeps_its_foreign_keys_after_the_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "fk.db"
    command.upgrade(alembic_config(f"sqlite:///{path}"), "head")

    with sqlite3.connect(path) as connection:
        keys = connection.execute("PRAGMA foreign_key_list(deployment_events)").fetchall()
        indexes = connection.execute("PRAGMA index_list(deployment_events)").fetchall()

    assert {(key[2], key[3], key[6]) for key in keys} == {
        ("deployments", "deployment_id", "CASCADE"),
        ("organizations", "organization_id", "CASCADE"),
        ("clusters", "cluster_id", "CASCADE"),
    }
    assert {index[1] for index in indexes} == {
        "ix_deployment_events_organization_id_id",
        "ix_deployment_events_cluster_id_id",
        "ix_deployment_events_deployment_id_id",
    }
