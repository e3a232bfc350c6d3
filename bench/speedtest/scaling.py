"""Part 2: does a request's cost follow the data? Hypervisor only, one client at a time (no
queueing), each size against a small and a large world side by side.

A world is one server on a database of its own, set up through the API and filled through
SQL (`fill`). The two worlds of a pair run at once and are measured in alternating rounds
(small first in even rounds), so a change in the machine's load hits both; what is reported
is the median over rounds of each round's p50, and the ratio large/small of those medians
(with the per-round ratios' spread). Creates are cancelled right after, outside the timing,
so the counts stay where they were filled.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fill
from .client import Http, percentile, spread, timed
from .servers import ROOMY, Process, Tenant, hypervisor_tenant, start_hypervisor

log = logging.getLogger(__name__)
TARGET_RATIO = 1.5
FULL = {"total_cpu": 512, "total_ram": 4096, "total_gpu": 64}  # 64 x (8, 64, 1) fill it


@dataclass
class World:
    server: Process
    tenant: Tenant
    size: int


@dataclass
class Measure:
    """One request type timed against a pair of worlds."""

    name: str
    label: str  # "create p50 at {n} running"
    # (ok, seconds, seconds of the follow-up request or None): a create's cancel is timed too
    request: Callable[[World, Http], tuple[bool, float, float | None]]


def _create(expected: str) -> Callable[[World, Http], tuple[bool, float, float | None]]:
    def request(world: World, http: Http) -> tuple[bool, float, float | None]:
        body = {
            "cluster_name": world.tenant.cluster,
            "organization_name": world.tenant.organization,
            "docker_image": "ghcr.io/acme/eval:2.0",
            "required_cpu": 1,
            "required_ram": 1,
            "required_gpu": 1,
            "priority": 2,
        }
        status, answer, seconds = timed(http, "POST", "/deployment/create", body)
        if status != 201 or answer.get("status") != expected:
            return False, seconds, None
        cancelled, _, cancel_seconds = timed(http, "DELETE", f"/deployment/delete/{answer['id']}")
        return cancelled == 200, seconds, cancel_seconds

    return request


def _queue_page(world: World, http: Http) -> tuple[bool, float, float | None]:
    path = f"/deployment/queue/{world.tenant.cluster}?limit=100"
    status, answer, seconds = timed(http, "GET", path)
    ok = status == 200 and answer["total"] == world.size
    ok = ok and len(answer["queue"]) == min(100, world.size)
    return ok, seconds, None


def _queue_page_of_full(world: World, http: Http) -> tuple[bool, float, float | None]:
    """The first page of a full cluster's queue (100 waiting, whatever runs), reasons and
    all."""
    path = f"/deployment/queue/{world.tenant.cluster}?limit=100"
    status, answer, seconds = timed(http, "GET", path)
    ok = status == 200 and answer["total"] == 100 and len(answer["queue"]) == 100
    return ok and all(entry["reason"] for entry in answer["queue"]), seconds, None


def _full_of(size: int) -> dict[str, int]:
    """A cluster that `size` running deployments of (1, 1, 1) fill exactly."""
    return {"total_cpu": size, "total_ram": size, "total_gpu": size}


def _metrics(world: World, http: Http) -> tuple[bool, float, float | None]:
    started = time.perf_counter()
    status, body = http.request("GET", "/metrics")
    seconds = time.perf_counter() - started
    return status == 200 and world.tenant.cluster.encode() in body, seconds, None


def _fill_world(database_url: str, tenant: Tenant, kind: str, size: int) -> None:
    engine = fill.engine_for(database_url)
    try:
        ids = fill.owners(engine, tenant.organization, tenant.cluster)
        if kind == "running":
            rows = fill.running_rows(ids, size, (1, 1, 1), (0, 9))
        elif kind == "pending":  # a full cluster of priority-9 work, then the queue
            rows = fill.running_rows(ids, 64, (8, 64, 1), (9, 9))
            rows += fill.pending_rows(ids, size, (4, 16, 1))
        elif kind == "full":  # `size` priority-9 deployments filling the cluster, a short queue
            rows = fill.running_rows(ids, size, (1, 1, 1), (9, 9))
            rows += fill.pending_rows(ids, 100, (1, 1, 1))
        else:  # stored history beside a little running work
            rows = fill.running_rows(ids, 10, (1, 1, 1), (0, 9)) + fill.finished_rows(ids, size)
        fill.insert_rows(engine, rows)
        counts = fill.count_status(engine, ids["cluster_id"])
        log.info("world %s=%s filled: %s", kind, size, counts)
    finally:
        engine.dispose()


@contextmanager
def _world(new_database: Callable[[], str], kind: str, size: int) -> Iterator[World]:
    with tempfile.TemporaryDirectory() as workdir:
        url = new_database() if new_database else f"sqlite:///{workdir}/hypervisor.db"
        server = start_hypervisor(url, Path(workdir))
        try:
            shape = {"pending": FULL, "full": _full_of(size)}.get(kind, ROOMY)
            tenant = hypervisor_tenant(server, {f"{kind}-{size}": shape})
            _fill_world(url, tenant, kind, size)
            yield World(server, tenant, size)
        finally:
            server.stop()


def _measure_pair(
    measure: Measure, small: World, large: World, rounds: int, per_round: int
) -> dict[str, Any]:
    worlds = {"small": small, "large": large}
    connections = {
        name: Http(world.server.url, world.tenant.headers) for name, world in worlds.items()
    }
    samples: dict[str, list[float]] = {"small": [], "large": []}
    round_p50: dict[str, list[float]] = {"small": [], "large": []}
    round_cpu: dict[str, list[float]] = {"small": [], "large": []}
    round_follow_up: dict[str, list[float]] = {"small": [], "large": []}
    errors = {"small": 0, "large": 0}
    try:
        for name, world in worlds.items():  # warm-up, not kept
            for _ in range(max(3, per_round // 4)):
                measure.request(world, connections[name])
        for index in range(rounds):
            for name in ("small", "large") if index % 2 == 0 else ("large", "small"):
                taken, follow_ups = [], []
                cpu_before = worlds[name].server.cpu_seconds()
                for _ in range(per_round):
                    ok, seconds, follow_up = measure.request(worlds[name], connections[name])
                    if ok:
                        taken.append(seconds)
                        if follow_up is not None:
                            follow_ups.append(follow_up)
                    else:
                        errors[name] += 1
                used = worlds[name].server.cpu_seconds() - cpu_before
                round_cpu[name].append(1000 * used / per_round)
                samples[name] += taken
                if follow_ups:
                    round_follow_up[name].append(statistics.median(follow_ups) * 1000)
                round_p50[name].append(statistics.median(taken) * 1000 if taken else 0.0)
    finally:
        for connection in connections.values():
            connection.close()
    per_round_ratios = [
        large_p50 / small_p50
        for small_p50, large_p50 in zip(round_p50["small"], round_p50["large"], strict=True)
        if small_p50
    ]
    medians = {name: statistics.median(values) for name, values in round_p50.items()}
    ratio = medians["large"] / medians["small"] if medians["small"] else 0.0
    cpu = {name: statistics.median(values) for name, values in round_cpu.items()}
    follow = {
        name: round(statistics.median(values), 2) if values else None
        for name, values in round_follow_up.items()
    }
    return {
        "measure": measure.name,
        "small": {
            "label": measure.label.format(n=f"{small.size:,}"),
            "size": small.size,
            "p50_ms": round(medians["small"], 2),
            "p99_ms": round(percentile(samples["small"], 99) * 1000, 2),
            "round_p50_ms": [round(v, 2) for v in round_p50["small"]],
            "server_cpu_ms": round(cpu["small"], 2),
            "cancel_p50_ms": follow["small"],
            "errors": errors["small"],
        },
        "large": {
            "label": measure.label.format(n=f"{large.size:,}"),
            "size": large.size,
            "p50_ms": round(medians["large"], 2),
            "p99_ms": round(percentile(samples["large"], 99) * 1000, 2),
            "round_p50_ms": [round(v, 2) for v in round_p50["large"]],
            "server_cpu_ms": round(cpu["large"], 2),
            "cancel_p50_ms": follow["large"],
            "errors": errors["large"],
        },
        "ratio": round(ratio, 3),
        "ratio_per_round": spread(per_round_ratios),
        "cancel_ratio": round(follow["large"] / follow["small"], 3)
        if follow["small"] and follow["large"]
        else None,
        "server_cpu_ratio": round(cpu["large"] / cpu["small"], 3) if cpu["small"] else None,
        "target_ratio": TARGET_RATIO,
        "within_target": ratio <= TARGET_RATIO,
    }


# (kind of world, small size, large size, measures timed against that pair)
PAIRS: list[tuple[str, int, int, list[Measure]]] = [
    (
        "running",
        10,
        5_000,
        [Measure("create_vs_running", "create at {n} running", _create("running"))],
    ),
    (
        "pending",
        100,
        10_000,
        [
            Measure("create_vs_pending", "create at {n} pending", _create("pending")),
            Measure("queue_page_vs_pending", "queue first page at {n} pending", _queue_page),
        ],
    ),
    ("stored", 1_000, 100_000, [Measure("metrics_vs_stored", "/metrics at {n} stored", _metrics)]),
    # A create that waits says why (the running set's summary) and may preempt (the running
    # set below its priority): neither may follow the running set's size.
    (
        "full",
        10,
        5_000,
        [
            Measure(
                "waiting_create_vs_running", "waiting create at {n} running", _create("pending")
            ),
            Measure(
                "queue_page_vs_running", "queue first page at {n} running", _queue_page_of_full
            ),
        ],
    ),
]


def run(
    database: str,
    new_database: Callable[[], str] | None,
    rounds: int,
    per_round: int,
    scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Every pair of worlds on this database (`new_database` makes a fresh PostgreSQL one;
    None means a SQLite file per world). `scale` shrinks the sizes for the smoke run."""
    results = []
    for kind, small_size, large_size, measures in PAIRS:
        sizes = (max(1, int(small_size * scale)), max(2, int(large_size * scale)))
        with ExitStack() as stack:
            small, large = (stack.enter_context(_world(new_database, kind, n)) for n in sizes)
            for measure in measures:
                row = {
                    "database": database,
                    **_measure_pair(measure, small, large, rounds, per_round),
                }
                log.info(
                    "%s %s: %.1f ms vs %.1f ms p50, ratio %.2f (rounds %.2f-%.2f)",
                    database,
                    measure.name,
                    row["small"]["p50_ms"],
                    row["large"]["p50_ms"],
                    row["ratio"],
                    row["ratio_per_round"]["min"],
                    row["ratio_per_round"]["max"],
                )
                results.append(row)
    return results
