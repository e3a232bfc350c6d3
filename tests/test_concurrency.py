"""Many simultaneous requests against one small cluster never over-allocate it."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from workloads import make_team

from models import Cluster, Deployment

CLIENTS = 16


def _allocated_gpu(engine: Engine, cluster_name: str) -> tuple[int, int]:
    with engine.connect() as connection:
        cluster_id, total = connection.execute(
            select(Cluster.id, Cluster.total_gpu).where(Cluster.name == cluster_name)
        ).one()
        used = connection.scalar(
            select(func.coalesce(func.sum(Deployment.required_gpu), 0)).where(
                Deployment.cluster_id == cluster_id, Deployment.status == "running"
            )
        )
    return int(used or 0), int(total)


def test_fifty_concurrent_creates_never_allocate_more_than_three_gpus(
    client: TestClient, engine: Engine
) -> None:
    team = make_team(client, gpu=3)

    def create(index: int) -> int:
        body = team.body(gpu=1 + index % 2, priority=index % 4)
        response = client.post("/deployment/create", json=body, headers=team.headers)
        return response.status_code

    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(create, range(50)))

    assert statuses == [201] * 50
    used, total = _allocated_gpu(engine, team.cluster)
    # Never more, and never less either: 25 of them ask for a single gpu.
    assert used == total == 3
    assert team.cluster_state()["allocated_gpu"] == used
    deployments = client.get(f"/deployment/list/{team.cluster}", headers=team.headers).json()
    assert len(deployments["deployments"]) == 50


def test_concurrent_creates_cancels_and_reports_keep_every_invariant(
    client: TestClient, engine: Engine
) -> None:
    team = make_team(client, cpu=8, ram=8, gpu=3)
    created = [team.deploy(gpu=1, priority=i % 3) for i in range(6)]
    rng = random.Random(7)

    def act(index: int) -> int:
        choice = index % 3
        if choice == 0:
            body = team.body(gpu=rng.randint(0, 2), cpu=1, priority=rng.randint(0, 5))
            return client.post("/deployment/create", json=body, headers=team.headers).status_code
        target: dict[str, Any] = created[index % len(created)]
        if choice == 1:
            return client.delete(
                f"/deployment/delete/{target['id']}", headers=team.headers
            ).status_code
        return client.post(
            f"/deployment/{target['id']}/status", json={"status": "completed"}, headers=team.headers
        ).status_code

    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(act, range(60)))

    assert all(status in (200, 201, 409) for status in statuses), statuses
    used, total = _allocated_gpu(engine, team.cluster)
    assert used <= total
    # After the dust settles the queue is stable: nothing pending would fit.
    state = team.cluster_state()
    for entry in team.queue():
        fits = (
            entry["required_gpu"] <= state["available_gpu"]
            and entry["required_cpu"] <= state["available_cpu"]
            and entry["required_ram"] <= state["available_ram"]
        )
        assert not (entry["eligible"] and fits), entry


def test_more_simultaneous_requests_than_worker_threads_do_not_stall(
    client: TestClient, engine: Engine
) -> None:
    team = make_team(client, gpu=3)
    indices = iter(range(192))
    statuses: list[int] = []
    lock = threading.Lock()
    all_answered = threading.Event()

    def caller() -> None:
        while True:
            with lock:
                index = next(indices, None)
            if index is None:
                return
            if index % 2:
                status = client.get("/user/me", headers=team.headers).status_code
            else:
                body = team.body(gpu=1)
                response = client.post("/deployment/create", json=body, headers=team.headers)
                status = response.status_code
            with lock:
                statuses.append(status)
                if len(statuses) == 192:
                    all_answered.set()

    # Daemon threads: a stall never resolves (every worker thread waits for a request that
    # has none), so the test must be able to give up on them and fail instead of hanging.
    for _ in range(96):
        threading.Thread(target=caller, daemon=True).start()

    assert all_answered.wait(timeout=120), f"stalled: {len(statuses)} of 192 answered"
    assert sorted(statuses) == [200] * 96 + [201] * 96
    used, total = _allocated_gpu(engine, team.cluster)
    assert used == total == 3
