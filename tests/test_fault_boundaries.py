"""What the service does when a part of it fails or races: the limiter's store, error
kinds, SQLite's write turn, a finish that another transaction got to first, and the one
cluster lock a transaction may hold (SPEC §5)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import ON_POSTGRES, make_settings
from fastapi.testclient import TestClient
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError
from workloads import make_team

import database
import main
import services
from helpers import create_cluster
from main import create_app
from models import Cluster, DeploymentEvent, DeploymentStatus
from services.scheduling import finish
from utils import utcnow


def test_a_limiter_store_that_fails_while_refusing_lets_the_request_through(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(make_settings(tmp_path, rate_limit="1/minute"), engine=engine)

    def broken(*_args: Any) -> Any:
        raise ConnectionError("limiter store unreachable")

    monkeypatch.setattr(MovingWindowRateLimiter, "get_window_stats", broken)
    with TestClient(app) as client:
        first = client.post("/user/login", data={"username": "nobody", "password": "x" * 8})
        second = client.post("/user/login", data={"username": "nobody", "password": "x" * 8})

    assert [first.status_code, second.status_code] == [401, 401]


def test_a_subclass_of_a_domain_error_keeps_its_parents_status() -> None:
    class NameTaken(services.Conflict):
        pass

    class NoSuchImage(services.NotFound):
        pass

    assert main.status_of(NameTaken("taken")) == 409
    assert main.status_of(NoSuchImage("gone")) == 404
    assert main.status_of(services.DomainError("plain")) == 400


@pytest.mark.skipif(ON_POSTGRES, reason="the write turn exists on SQLite only")
def test_a_sqlite_write_turn_that_never_comes_is_refused_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 50)
    engine = database.make_engine(f"sqlite:///{tmp_path}/turn.db")
    holding, release = threading.Event(), threading.Event()

    def hold_the_turn() -> None:
        with engine.begin():
            holding.set()
            release.wait(timeout=30)

    holder = threading.Thread(target=hold_the_turn)
    holder.start()
    try:
        holding.wait(timeout=30)
        with pytest.raises(OperationalError, match="write turn did not come"), engine.begin():
            pass
    finally:
        release.set()
        holder.join()
    with engine.begin() as connection:  # the refused one gave back no turn it did not hold
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    engine.dispose()


def test_a_finish_never_overwrites_a_deployment_that_already_ended(
    client: TestClient, app: Any
) -> None:
    team = make_team(client, gpu=1)
    deployment = team.deploy(gpu=1)
    team.report(deployment, "failed", "out of memory")

    with services.transaction(app.state.session_factory) as session:
        cluster = session.get(Cluster, team.cluster_state()["id"])
        assert cluster is not None
        ended = finish(
            session, cluster, [deployment["id"]], DeploymentStatus.cancelled, "late", utcnow()
        )
        terminal = session.scalar(
            select(func.count()).where(
                DeploymentEvent.deployment_id == deployment["id"],
                DeploymentEvent.type.in_(["failed", "cancelled"]),
            )
        )

    assert ended == []
    assert terminal == 1
    assert team.get(deployment)["status"] == "failed"
    assert team.get(deployment)["reason"] == "out of memory"


@pytest.mark.skipif(not ON_POSTGRES, reason="row locks are PostgreSQL's (SQLite locks the file)")
def test_a_failure_settles_dependents_in_other_clusters_one_lock_at_a_time(
    client: TestClient, engine: Engine
) -> None:
    team = make_team(client, gpu=1)
    second = create_cluster(client, team.headers, team.org, cpu=4, ram=4, gpu=0)["name"]
    third = create_cluster(client, team.headers, team.org, cpu=4, ram=4, gpu=0)["name"]
    root = team.deploy(gpu=1)
    middle = team.deploy(cpu=1, cluster_name=second, depends_on=[root["id"]])
    leaf = team.deploy(cpu=1, cluster_name=third, depends_on=[middle["id"]])
    sibling = team.deploy(cpu=1, depends_on=[root["id"]])

    locks_per_transaction: list[int] = []
    current: dict[int, int] = {}

    def on_execute(conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if "FOR UPDATE" in statement:
            current[id(conn)] = current.get(id(conn), 0) + 1

    def on_end(conn: Any) -> None:
        locks_per_transaction.append(current.pop(id(conn), 0))

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_end)
    event.listen(engine, "rollback", on_end)
    try:
        team.report(root, "failed")
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_end)
        event.remove(engine, "rollback", on_end)

    assert max(locks_per_transaction) == 1
    assert {
        name: team.get(d)["status"]
        for name, d in {"middle": middle, "leaf": leaf, "sibling": sibling}.items()
    } == {"middle": "failed", "leaf": "failed", "sibling": "failed"}
    assert team.get(leaf)["reason"] == f"dependency {middle['id']} failed"


def test_a_dependency_that_dies_while_a_create_runs_makes_the_create_a_422(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = make_team(client, gpu=1)
    dependency = team.deploy(gpu=1)
    team.report(dependency, "failed")
    # As if the create had checked it while it still ran, before its failure committed.
    monkeypatch.setattr(services.deployments, "_check_dependencies", lambda *_args: False)

    answer = client.post(
        "/deployment/create",
        json=team.body(gpu=1, depends_on=[dependency["id"]]),
        headers=team.headers,
    )

    assert answer.status_code == 422
    assert answer.json()["detail"] == (
        f"dependencies that can never complete: dependency {dependency['id']} failed"
    )
    assert [
        d["id"]
        for d in client.get(f"/deployment/list/{team.cluster}", headers=team.headers).json()[
            "deployments"
        ]
    ] == [dependency["id"]]
