"""SPEC §4 `/metrics`: the per-cluster part of a scrape is read from the database at most
once per window, however many scrapers ask at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from workloads import make_team

import services
from metrics import SharedSnapshot
from routes.operations import CLUSTER_METRICS_SECONDS


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gauge_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per call of `services.cluster_gauges`."""
    calls: list[int] = []
    real = services.cluster_gauges

    def counting(session: Any) -> Any:
        calls.append(1)
        return real(session)

    monkeypatch.setattr(services, "cluster_gauges", counting)
    return calls


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the app's engine runs while the test lasts."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_two_scrapes_within_the_window_read_the_database_once(
    client: TestClient, gauge_reads: list[int], statements: list[str]
) -> None:
    team = make_team(client)

    first = client.get("/metrics")
    statements.clear()
    second = client.get("/metrics")

    assert first.status_code == second.status_code == 200
    assert gauge_reads == [1]
    assert statements == []
    assert f'cluster="{team.cluster}"' in second.text
    assert CLUSTER_METRICS_SECONDS <= 10


def test_after_the_window_a_scrape_reads_the_database_again(
    app: FastAPI, client: TestClient, gauge_reads: list[int]
) -> None:
    clock = FakeClock()
    app.state.cluster_metrics = SharedSnapshot(CLUSTER_METRICS_SECONDS, clock=clock)
    client.get("/metrics")
    team = make_team(client)

    within = client.get("/metrics").text
    clock.now += CLUSTER_METRICS_SECONDS
    after = client.get("/metrics").text

    assert gauge_reads == [1, 1]
    assert f'cluster="{team.cluster}"' not in within
    assert f'cluster="{team.cluster}"' in after


def test_while_one_caller_recomputes_the_others_take_the_previous_value() -> None:
    clock = FakeClock()
    snapshot: SharedSnapshot[str] = SharedSnapshot(5, clock=clock)
    assert snapshot.get(lambda: "first") == "first"
    clock.now += 5
    computing, finish = threading.Event(), threading.Event()
    computed: list[str] = []

    def slow() -> str:
        computing.set()
        finish.wait(timeout=10)
        computed.append("second")
        return "second"

    recomputing = threading.Thread(target=lambda: snapshot.get(slow))
    recomputing.start()
    assert computing.wait(timeout=10)

    meanwhile = [snapshot.get(lambda: "never") for _ in range(3)]
    finish.set()
    recomputing.join(timeout=10)

    assert meanwhile == ["first"] * 3
    assert computed == ["second"]
    assert snapshot.get(lambda: "never") == "second"


def test_callers_before_the_first_value_wait_for_it_instead_of_computing_their_own() -> None:
    snapshot: SharedSnapshot[int] = SharedSnapshot(5, clock=FakeClock())
    started = threading.Barrier(8, timeout=10)
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return 42

    results: list[int] = []

    def scrape() -> None:
        started.wait()
        results.append(snapshot.get(compute))

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert results == [42] * 8
    assert calls == [1]
