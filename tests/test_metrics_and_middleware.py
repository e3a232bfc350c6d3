"""Metrics, shared rate-limit storage and retries of transactions the database aborted."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from conftest import make_settings
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from workloads import make_team

import metrics
import services
from helpers import new_user
from main import create_app
from middleware import RetryAbortedTransactionsMiddleware


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample whose labels include `labels`."""
    value = _sample_or_none(text, name, **labels)
    if value is None:
        raise AssertionError(f"no sample {name} {labels}")
    return value


def _sample_or_none(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        series = line.split("{", 1)[0].split(" ", 1)[0]
        if series == name and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _process_counter(client: TestClient, name: str, **labels: str) -> float:
    """A process-wide counter now (earlier tests of this process count too; 0 if unseen),
    read without a scrape, which would start the cluster part's 5 s sharing window."""
    del client
    return _sample_or_none(metrics.render_process().decode(), name, **labels) or 0.0


def test_metrics_report_each_cluster_from_the_database(client: TestClient) -> None:
    created = {"route": "/deployment/create", "status": "201"}
    creates_before = _process_counter(client, "hypervisor_http_requests_total", **created)
    team = make_team(client, gpu=4)
    low = team.deploy(gpu=4, priority=1)
    team.deploy(gpu=4, priority=5)  # preempts `low`
    team.deploy(gpu=1, priority=0)  # waits

    text = client.get("/metrics").text

    labels = {"organization": team.org, "cluster": team.cluster}
    assert _sample(text, "hypervisor_cluster_queue_length", **labels) == 2
    assert _sample(text, "hypervisor_cluster_running", **labels) == 1
    assert _sample(text, "hypervisor_cluster_allocated", resource="gpu", **labels) == 4
    assert _sample(text, "hypervisor_cluster_total", resource="cpu", **labels) == 64
    assert _sample(text, "hypervisor_cluster_preemptions_total", **labels) == 1
    assert team.get(low)["preemption_count"] == 1
    assert _sample(text, "hypervisor_http_requests_total", **created) == creates_before + 3


def test_every_scheduling_pass_is_timed(client: TestClient, app: FastAPI) -> None:
    for _ in range(2):  # two clusters with waiting work: the loop passes over both
        team = make_team(client, gpu=1)
        team.deploy(gpu=1)
        team.deploy(gpu=1)
    make_team(client)  # an idle one it skips
    count = "hypervisor_scheduling_pass_duration_seconds_count"
    before = _process_counter(client, count)

    passes = services.run_periodic_passes(app.state.session_factory)

    assert passes == 2
    assert _process_counter(client, count) == before + passes


def test_the_docs_and_the_openapi_document_are_counted_under_their_own_routes(
    client: TestClient,
) -> None:
    def count(route: str, status: str = "200") -> float:
        try:
            return _sample(
                client.get("/metrics").text,
                "hypervisor_http_requests_total",
                method="GET",
                route=route,
                status=status,
            )
        except AssertionError:
            return 0.0

    paths = {
        "/docs": "/docs",
        "/openapi.json": "/openapi.json",
        "/docs/assets/swagger-ui.css": "/docs/assets/{name}",
    }
    before = {route: count(route) for route in paths.values()}
    unmatched_before = count("unmatched")

    for path in paths:
        assert client.get(path).status_code == 200

    assert {route: count(route) - before[route] for route in paths.values()} == {
        "/docs": 1,
        "/openapi.json": 1,
        "/docs/assets/{name}": 1,
    }
    assert count("unmatched") == unmatched_before


def test_metrics_need_the_operator_token_when_one_is_set(tmp_path: Path, engine: Engine) -> None:
    app = create_app(make_settings(tmp_path, metrics_token="scrape-me"), engine=engine)
    with TestClient(app) as client:
        user_token = new_user(client)

        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=user_token).status_code == 401
        scraped = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert scraped.status_code == 200
        assert "hypervisor_http_requests_total" in scraped.text


def test_rate_limits_are_shared_through_redis_between_replicas(
    tmp_path: Path, engine: Engine
) -> None:
    redis_url = os.environ.get("HYPERVISOR_TEST_REDIS_URL")
    if not redis_url:
        if os.environ.get("HYPERVISOR_TEST_REQUIRE_SERVICES"):
            pytest.fail("HYPERVISOR_TEST_REDIS_URL is required in CI")
        pytest.skip("set HYPERVISOR_TEST_REDIS_URL=redis://127.0.0.1:6379/15 to test Redis storage")
    import redis

    try:
        redis.Redis.from_url(redis_url).ping()
    except redis.RedisError as error:
        if os.environ.get("HYPERVISOR_TEST_REQUIRE_SERVICES"):
            raise
        pytest.skip(f"Redis at {redis_url} does not answer: {error}")
    # A unique limit per run keeps counters of earlier runs out of the way.
    limit = f"{3 + uuid.uuid4().int % 1000}/hour"
    allowed = int(limit.split("/")[0])
    settings = make_settings(tmp_path, rate_limit=limit, rate_limit_storage=redis_url)
    first, second = create_app(settings, engine=engine), create_app(settings, engine=engine)
    with TestClient(first) as one, TestClient(second) as two:
        headers = new_user(one)  # register + login: two requests by address
        redis.Redis.from_url(redis_url).flushdb()
        codes = [
            (one if i % 2 else two).get("/user/me", headers=headers).status_code
            for i in range(allowed + 1)
        ]
    assert codes[:allowed] == [200] * allowed
    assert codes[allowed] == 429


class _Deadlock(Exception):
    sqlstate = "40P01"


def test_a_request_whose_transaction_was_aborted_as_a_deadlock_victim_is_retried() -> None:
    app = FastAPI()
    attempts: list[bytes] = []

    @app.post("/work")
    async def work(body: dict[str, int]) -> dict[str, int]:
        attempts.append(str(body).encode())
        if len(attempts) < 3:
            raise OperationalError("UPDATE ...", {}, _Deadlock("deadlock detected"))
        return {"attempts": len(attempts), **body}

    app.add_middleware(RetryAbortedTransactionsMiddleware)
    with TestClient(app) as client:
        response = client.post("/work", json={"n": 7})

    assert response.status_code == 200
    assert response.json() == {"attempts": 3, "n": 7}
    assert len(set(attempts)) == 1  # the same body each time


def test_other_database_errors_are_not_retried() -> None:
    app = FastAPI()
    attempts = []

    @app.get("/work")
    async def work() -> None:
        attempts.append(1)
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    app.add_middleware(RetryAbortedTransactionsMiddleware)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/work").status_code == 500
    assert attempts == [1]
