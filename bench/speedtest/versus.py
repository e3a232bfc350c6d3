"""Part 1: Hypervisor against the original seed service, side by side in one run.

Both run as one uvicorn process on SQLite, on the same machine at the same time, and the
same client code (`client.drive`) sends them the same create at the same concurrency, in
alternating rounds (seed first in even rounds, Hypervisor first in odd ones). The cluster
has room for everything, so every create starts. The seed simulates each run with a thread
that sleeps 15 s and then completes it; Hypervisor's creates say `duration_seconds: 15`, so
both hold the same running work. Between rounds both are left to complete what the round
started (bounded wait).

The seed's completion thread holds the cluster's lock while it waits up to 10 s for that
same lock whenever the cluster's queue is not empty, and a create that cannot get the lock
within 10 s leaves its deployment queued, which keeps the queue non-empty. So it is
measured two ways: `fresh` (a new cluster per round, rounds shorter than a simulated run:
no round meets a completion in its cluster, the seed at its best) and `sustained` (one
cluster throughout, rounds up to 60 s: what steady use of it meets).
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from .client import Drive, Http, drive, spread, timed
from .servers import (
    ROOMY,
    Process,
    Tenant,
    add_cluster,
    create_body,
    forget_seed_queue,
    hypervisor_tenant,
    seed_tenant,
    start_hypervisor,
    start_seed,
)

log = logging.getLogger(__name__)
SIMULATED_RUN_SECONDS = 15  # the seed's `time.sleep(15)` in simulate_deployment_execution


@dataclass
class Target:
    """A service as the drive loop sees it."""

    name: str
    server: Process
    tenant: Tenant
    database: Path
    operation: Callable[[Http, int], tuple[bool, float, Any]]
    running_sql: str
    clusters: list[str]

    def new_cluster(self, name: str) -> None:
        """Create a roomy cluster and send the creates that follow to it."""
        created = 201 if self.name == "hypervisor" else 200
        add_cluster(self.server, self.tenant, name, ROOMY, created)
        self.tenant.cluster = name
        self.clusters.append(name)


def _hypervisor(workdir: Path) -> Target:
    database = workdir / "hypervisor.db"
    server = start_hypervisor(f"sqlite:///{database}", workdir)
    tenant = hypervisor_tenant(server, {"roomy": ROOMY})

    def create(http: Http, _: int) -> tuple[bool, float, Any]:
        body = {**create_body(tenant), "duration_seconds": SIMULATED_RUN_SECONDS}
        status, answer, seconds = timed(http, "POST", "/deployment/create", body)
        started = status == 201 and isinstance(answer, dict) and answer["status"] == "running"
        return started, seconds, answer.get("id") if isinstance(answer, dict) else None

    running = "SELECT count(*) FROM deployments WHERE status = 'running'"
    return Target("hypervisor", server, tenant, database, create, running, [tenant.cluster])


def _seed(workdir: Path, seed_dir: Path, seed_python: Path) -> Target:
    server = start_seed(seed_dir, seed_python, workdir)
    tenant = seed_tenant(server, secrets.token_hex(4))

    def create(http: Http, _: int) -> tuple[bool, float, Any]:
        status, answer, seconds = timed(http, "POST", "/deployment/create", create_body(tenant))
        ok = status == 200 and isinstance(answer, dict) and "deployment_id" in answer
        return ok, seconds, answer.get("deployment_id") if ok else None

    running = "SELECT count(*) FROM deployments WHERE status = 'running'"
    database = workdir / "mlops_platform.db"
    return Target("seed", server, tenant, database, create, running, [tenant.cluster])


def _query(database: Path, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as connection:
        return connection.execute(sql, parameters).fetchall()


def _not_started(target: Target, result: Drive) -> int:
    """Creates of this round that did not start (the seed answers before it knows)."""
    if target.name == "hypervisor":
        return 0  # its answer says "running", or the create counted as an error
    ids = [i for i in result.kept if isinstance(i, int)]
    if not ids:
        return 0
    rows = _query(
        target.database,
        "SELECT count(*) FROM deployments WHERE id BETWEEN ? AND ? AND status = 'in_queue'",
        min(ids),
        max(ids),
    )
    return int(rows[0][0])


def _drain(targets: list[Target], seconds: float) -> dict[str, int]:
    """Wait (bounded) until neither service has running work left; what remains."""
    deadline = time.monotonic() + seconds
    while True:
        left = {t.name: int(_query(t.database, t.running_sql)[0][0]) for t in targets}
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _round(target: Target, targets: list[Target], clients: int, creates: int, seconds: float):
    """One measured drive of `creates` creates, with what it cost this server, both servers
    and the client, and how busy the rest of the machine was meanwhile."""
    me = psutil.Process()
    servers_before = [t.server.cpu_seconds() for t in targets]
    own_before = target.server.cpu_seconds()
    client_before = sum(me.cpu_times()[:2])
    busy_before, load = _busy_seconds(), os.getloadavg()[0]
    result = drive(target.server.url, target.tenant.headers, clients, creates, seconds,
                   target.operation)  # fmt: skip
    own = target.server.cpu_seconds() - own_before
    servers = sum(t.server.cpu_seconds() - b for t, b in zip(targets, servers_before, strict=True))
    client = sum(me.cpu_times()[:2]) - client_before
    others = max(0.0, _busy_seconds() - busy_before - servers - client)
    return {
        **result.summary(),
        "not_started": _not_started(target, result),
        "server_cpu_ms_per_create": round(1000 * own / max(1, result.ok), 2),
        "client_cpu_ms_per_create": round(1000 * client / max(1, result.ok), 2),
        "server_rss_mb": round(target.server.rss_mb(), 1),
        "other_cpu_share": round(others / (result.elapsed * (os.cpu_count() or 1)), 3),
        "load_average": round(load, 2),
    }


def _summarize(clients: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    per = {
        name: {
            "creates_per_second": spread([r[name]["per_second"] for r in rounds]),
            "p50_ms": spread([r[name]["p50_ms"] for r in rounds]),
            "p99_ms": spread([r[name]["p99_ms"] for r in rounds]),
            "server_cpu_ms_per_create": spread(
                [r[name]["server_cpu_ms_per_create"] for r in rounds]
            ),
            "errors": sum(r[name]["errors"] for r in rounds),
            "not_started": sum(r[name]["not_started"] for r in rounds),
            # A round longer than a simulated run meets completions of its own creates.
            "rounds_longer_than_a_run": sum(
                r[name]["seconds"] > SIMULATED_RUN_SECONDS for r in rounds
            ),
        }
        for name in ("hypervisor", "seed")
    }
    ratios = [r["throughput_ratio"] for r in rounds]
    hv, seed = per["hypervisor"]["creates_per_second"], per["seed"]["creates_per_second"]
    return {
        "clients": clients,
        **per,
        "ratio_per_round": spread(ratios),
        "ratio_of_medians": round(hv["median"] / seed["median"], 3) if seed["median"] else None,
        "p50_ratio_seed_over_hypervisor": round(
            per["seed"]["p50_ms"]["median"] / per["hypervisor"]["p50_ms"]["median"], 3
        )
        if per["hypervisor"]["p50_ms"]["median"]
        else None,
        "other_cpu_share": spread([r[n]["other_cpu_share"] for r in rounds for n in per]),
        "target_ratio": 5.0,
        "meets_target": spread(ratios)["median"] >= 5.0,
        "rounds": rounds,
    }


def run(
    seed_dir: Path,
    seed_python: Path,
    concurrencies: list[int],
    rounds: int,
    creates: int,
    round_seconds: float,
    drain_seconds: float,
    fresh_clusters: bool,
) -> dict[str, Any]:
    """Every concurrency: a warm-up round each, then `rounds` alternating measured rounds.

    With `fresh_clusters`, each round of each service goes to a cluster of its own, and
    rounds should be shorter than a simulated run: no round then meets a completion in its
    cluster (the seed's lock is per cluster). Without, every round goes to one cluster and
    meets whatever earlier rounds left behind: the service in sustained use."""
    with tempfile.TemporaryDirectory() as hv_dir, tempfile.TemporaryDirectory() as seed_dir_tmp:
        hypervisor = _hypervisor(Path(hv_dir))
        try:
            seed = _seed(Path(seed_dir_tmp), seed_dir, seed_python)
        except Exception:
            hypervisor.server.stop()
            raise
        targets = [seed, hypervisor]
        try:
            results = []
            for clients in concurrencies:
                for target in targets:  # warm-up: connections, caches, first-call costs
                    if fresh_clusters:
                        target.new_cluster(f"{target.tenant.organization}-c{clients}-warm")
                    drive(target.server.url, target.tenant.headers, clients, 4 * clients,
                          round_seconds, target.operation)  # fmt: skip
                _drain(targets, drain_seconds)
                measured = []
                for index in range(rounds):
                    order = targets if index % 2 == 0 else targets[::-1]
                    row: dict[str, Any] = {"round": index, "order": [t.name for t in order]}
                    for target in order:
                        if fresh_clusters:
                            name = f"{target.tenant.organization}-c{clients}-r{index}"
                            target.new_cluster(name)
                        row[target.name] = _round(target, targets, clients, creates, round_seconds)
                    row["throughput_ratio"] = round(
                        row["hypervisor"]["per_second"] / max(row["seed"]["per_second"], 1e-9), 3
                    )
                    row["left_running_after_drain"] = _drain(targets, drain_seconds)
                    log.info(
                        "vs seed c=%s round %s: hypervisor %.1f/s p50 %.0f ms, seed %.1f/s "
                        "p50 %.0f ms, ratio %.2f, others' CPU %.0f%%",
                        clients,
                        index,
                        row["hypervisor"]["per_second"],
                        row["hypervisor"]["p50_ms"],
                        row["seed"]["per_second"],
                        row["seed"]["p50_ms"],
                        row["throughput_ratio"],
                        100 * row["seed"]["other_cpu_share"],
                    )
                    measured.append(row)
                results.append(_summarize(clients, measured))
            return {
                "mode": "a fresh cluster per round" if fresh_clusters else "one cluster, sustained",
                "round_seconds_limit": round_seconds,
                "database": "SQLite (each service its own file)",
                "creates_per_round": creates,
                "rounds": rounds,
                "simulated_run_seconds": SIMULATED_RUN_SECONDS,
                "by_clients": results,
            }
        finally:
            for target in targets:
                target.server.stop()
            for cluster in seed.clusters:
                forget_seed_queue(seed_python, cluster)
