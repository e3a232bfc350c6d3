#!/usr/bin/env python3
"""One client, in process: what a create, a cancel, a checkpoint and a status report cost
at a small and a large running set, in milliseconds and in SQL statements.

The app runs under `TestClient` (no network, no second process), so the numbers are the
service's own work plus the client's; statements are counted with an engine event. Each
world is a roomy cluster with `size` deployments already running (written straight into
the tables, as `bench/speedtest/fill.py` does), and every measured create starts at once.

    .venv/bin/python bench/request_cost.py [--database-url URL] [--sizes 10,5000]

Prints a table and writes JSON (`--out`, default bench/results/request_cost.json).
Medians over `--rounds` rounds of `--per-round` requests, worlds measured in alternation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from speedtest import fill  # noqa: E402
from speedtest.servers import PASSWORD, ROOMY  # noqa: E402
from sqlalchemy import Engine, event  # noqa: E402

BODY = {
    "cluster_name": "roomy",
    "organization_name": "bench-org",
    "docker_image": "ghcr.io/acme/train:1.0",
    "required_cpu": 1,
    "required_ram": 1,
    "required_gpu": 1,
    "priority": 1,
}


class Counter:
    """Statements sent to any engine while `on` is set."""

    def __init__(self) -> None:
        self.on = False
        self.count = 0
        event.listen(Engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        if self.on:
            self.count += 1


def _world(stack: ExitStack, database_url: str | None, size: int) -> Any:
    from fastapi.testclient import TestClient

    from main import create_app
    from utils import Settings

    if database_url is None:
        workdir = stack.enter_context(tempfile.TemporaryDirectory())
        url = f"sqlite:///{workdir}/hypervisor.db"
    else:
        url = database_url.format(size=size)
    settings = Settings(
        database_url=url,
        secret_key="request-cost-secret-key-that-is-long-enough-for-hs256",
        rate_limit="0",
        scheduler_interval_seconds=3600,
        bcrypt_rounds=4,
        log_level="warning",
    )
    client = stack.enter_context(TestClient(create_app(settings)))
    user = {"username": "bench", "password": PASSWORD}
    client.post("/user/register", json=user)
    token = client.post("/user/login", data=user).json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    client.post("/organization/create", json={"name": "bench-org"})
    cluster = {"name": "roomy", "organization_name": "bench-org", **ROOMY}
    client.post("/cluster/create", json=cluster)
    engine = fill.engine_for(url)
    try:
        ids = fill.owners(engine, "bench-org", "roomy")
        fill.insert_rows(engine, fill.running_rows(ids, size, (1, 1, 1), (0, 9)))
    finally:
        engine.dispose()
    return client


def _create(client: Any) -> int:
    answer = client.post("/deployment/create", json=BODY)
    assert answer.status_code == 201 and answer.json()["status"] == "running", answer.text
    return int(answer.json()["id"])


REQUESTS: dict[str, Callable[[Any, int], Any]] = {
    "cancel": lambda client, i: client.delete(f"/deployment/delete/{i}"),
    "checkpoint": lambda client, i: client.post(f"/deployment/{i}/checkpoint", json={}),
    "status": lambda client, i: client.post(
        f"/deployment/{i}/status", json={"status": "completed"}
    ),
}


def _round(client: Any, counter: Counter, per_round: int) -> dict[str, tuple[float, int]]:
    """Median ms and statements per request of each kind in one round."""
    seconds: dict[str, list[float]] = {"create": [], **{kind: [] for kind in REQUESTS}}
    statements: dict[str, list[int]] = {kind: [] for kind in seconds}

    def timed(kind: str, call: Callable[[], Any]) -> Any:
        counter.count, counter.on = 0, True
        began = time.perf_counter()
        result = call()
        seconds[kind].append(time.perf_counter() - began)
        counter.on = False
        statements[kind].append(counter.count)
        return result

    for _ in range(per_round):
        for kind, request in REQUESTS.items():
            deployment_id = timed("create", lambda: _create(client))
            answer = timed(kind, lambda r=request, d=deployment_id: r(client, d))  # type: ignore[misc]
            assert answer.status_code == 200, answer.text
            if kind == "checkpoint":
                client.delete(f"/deployment/delete/{deployment_id}")
    return {
        kind: (1000 * statistics.median(values), int(statistics.median(statements[kind])))
        for kind, values in seconds.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--database-url", help="one database per world: '{size}' in it is replaced")
    parser.add_argument("--sizes", default="10,5000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "request_cost.json")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    counter = Counter()
    rounds: dict[int, list[dict[str, tuple[float, int]]]] = {size: [] for size in sizes}
    with ExitStack() as stack:
        clients = {size: _world(stack, args.database_url, size) for size in sizes}
        for client in clients.values():  # warm-up: caches, connections, first statements
            _round(client, counter, 2)
        for _ in range(args.rounds):
            for size, client in clients.items():
                rounds[size].append(_round(client, counter, args.per_round))
    result: dict[str, Any] = {
        "database": "sqlite" if args.database_url is None else "postgresql",
        "rounds": args.rounds,
        "per_round": args.per_round,
        "running": {},
    }
    sys.stdout.write(f"{'running':>8} {'request':>10} {'p50 ms':>8} {'statements':>10}\n")
    for size, measured in rounds.items():
        result["running"][size] = {}
        for kind in measured[0]:
            ms = statistics.median(m[kind][0] for m in measured)
            queries = measured[-1][kind][1]
            result["running"][size][kind] = {"p50_ms": round(ms, 2), "statements": queries}
            sys.stdout.write(f"{size:>8} {kind:>10} {ms:>8.1f} {queries:>10}\n")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(f"wrote {args.out}\n")


if __name__ == "__main__":
    main()
