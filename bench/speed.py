"""Speed: scheduling-pass time and live create/cancel latency against queue depth.

    .venv/bin/python bench/speed.py                      # SQLite, and PostgreSQL if reachable
    .venv/bin/python bench/speed.py --smoke --out /tmp/s # seconds, for the test suite

Part 1 times `scheduler.run_pass` alone with 1,000 running and 100 … 100,000 pending.
Part 2 starts a real server (`python main.py`) per database, fills one cluster's queue to
each depth straight through SQL (creating 10,000 deployments through the API would only
measure the filling), then drives it with concurrent clients that each create a deployment
(which waits: the cluster is full of higher-priority work) and cancel it again, recording
latency percentiles and throughput, and the server's resident memory at the end. A last
step stores 100,000 deployments in all and reports the server's peak RSS.
Writes JSON and a markdown table to `--out` (default bench/results/), plus a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil
from sqlalchemy import create_engine, insert, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import scheduler  # noqa: E402
from models import Cluster, Deployment, User  # noqa: E402

log = logging.getLogger("bench.speed")
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PASSWORD = "benchmark password"


# --- part 1: the pure pass -------------------------------------------------------------------


def _random_jobs(
    count: int, rng: random.Random, running: bool, first_id: int
) -> list[scheduler.Job]:
    jobs = []
    for index in range(count):
        jobs.append(
            scheduler.Job(
                id=first_id + index,
                priority=rng.randint(0, 9) if not running else rng.randint(5, 9),
                request=scheduler.Resources(
                    rng.randint(1, 8), rng.randint(1, 32), rng.randint(0, 2)
                ),
                submitted_at=1_000.0 + index,
                waiting_since=1_000.0 + index,
                started_at=900.0 if running else None,
            )
        )
    return jobs


def time_passes(depths: list[int], repeats: int) -> list[dict[str, Any]]:
    """Median run_pass time with 1,000 running and each number of pending jobs, for two
    queues: `churn`, a random queue whose higher priorities preempt most running work in
    one pass (the worst case), and `steady`, the queue a previous pass left (what a pass
    meets in service: nothing fits, nothing can preempt)."""
    rng = random.Random(1)
    running = _random_jobs(1000, rng, running=True, first_id=1)
    used = scheduler.Resources(
        sum(j.request.cpu for j in running),
        sum(j.request.ram for j in running),
        sum(j.request.gpu for j in running),
    )
    cluster = scheduler.Cluster(total=used + scheduler.Resources(2, 4, 0))
    results = []
    for depth in depths:
        pending = _random_jobs(depth, rng, running=False, first_id=10_000)
        settled = scheduler.run_pass(cluster, running, pending, now=2_000.0)
        row: dict[str, Any] = {"running": 1000, "pending": depth}
        for label, (run, wait) in {
            "churn": (running, pending),
            "steady": (settled.running, settled.pending),
        }.items():
            samples = []
            for _ in range(repeats):
                started = time.perf_counter()
                scheduler.run_pass(cluster, run, wait, now=2_000.0)
                samples.append(time.perf_counter() - started)
            row[f"{label}_ms"] = statistics.median(samples) * 1000
        row["preempted_in_churn"] = len(settled.preempted)
        results.append(row)
        log.info(
            "pass 1000 running + %s pending: steady %.1f ms, churn %.1f ms (%s preemptions)",
            depth,
            row["steady_ms"],
            row["churn_ms"],
            row["preempted_in_churn"],
        )
    return results


# --- part 2: a live server -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One `python main.py` process on its own port."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "HYPERVISOR_DATABASE_URL": database_url,
            "HYPERVISOR_PORT": str(self.port),
            "HYPERVISOR_RATE_LIMIT": "0",
            "HYPERVISOR_SECRET_KEY": secrets.token_urlsafe(32),
            "HYPERVISOR_LOG_LEVEL": "warning",
            "HYPERVISOR_BCRYPT_ROUNDS": "4",
        }
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py")],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.peak_rss = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def rss_mb(self) -> float:
        rss = psutil.Process(self.process.pid).memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)
        return rss / 2**20

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _setup(server: Server) -> tuple[dict[str, str], str, str]:
    """A user, an organization and a 64-GPU cluster full of priority-9 work."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.post("/user/register", json={"username": "bench", "password": PASSWORD})
        token = client.post("/user/login", data={"username": "bench", "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        client.post("/organization/create", json={"name": "bench-org"}, headers=headers)
        client.post(
            "/cluster/create",
            json={
                "name": "gpu-a",
                "organization_name": "bench-org",
                "total_cpu": 512,
                "total_ram": 4096,
                "total_gpu": 64,
            },
            headers=headers,
        )
        body = {
            "cluster_name": "gpu-a",
            "organization_name": "bench-org",
            "docker_image": "ghcr.io/acme/train:1.0",
            "required_cpu": 8,
            "required_ram": 64,
            "required_gpu": 1,
            "priority": 9,
        }
        for _ in range(64):
            assert client.post("/deployment/create", json=body, headers=headers).status_code == 201
    return headers, "bench-org", "gpu-a"


def _fill(database_url: str, cluster_name: str, count: int, status: str = "pending") -> None:
    """Insert `count` deployments of lower priority straight into the database."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        cluster = connection.execute(select(Cluster).where(Cluster.name == cluster_name)).one()
        user_id = connection.scalar(select(User.id).where(User.username == "bench"))
        now = datetime.now(UTC)
        rows = [
            {
                "cluster_id": cluster.id,
                "organization_id": cluster.organization_id,
                "created_by_id": user_id,
                "docker_image": "ghcr.io/acme/train:1.0",
                "required_cpu": 4,
                "required_ram": 16,
                "required_gpu": 1,
                "priority": index % 5,
                "status": status,
                "eligible": True,
                "preemption_count": 0,
                "created_at": now - timedelta(seconds=count - index),
                "waiting_since": now,
                "finished_at": now if status != "pending" else None,
            }
            for index in range(count)
        ]
        for start in range(0, len(rows), 5000):
            connection.execute(insert(Deployment), rows[start : start + 5000])
    engine.dispose()


def _drive(
    server: Server, headers: dict[str, str], org: str, cluster: str, clients: int, pairs: int
) -> dict[str, Any]:
    """Each client creates a (waiting) deployment and cancels it, `pairs` times in all."""
    body = {
        "cluster_name": cluster,
        "organization_name": org,
        "docker_image": "ghcr.io/acme/eval:2.0",
        "required_cpu": 1,
        "required_ram": 1,
        "required_gpu": 1,
        "priority": 2,
    }
    creates: list[float] = []
    cancels: list[float] = []
    errors = 0

    def work(_: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            started = time.perf_counter()
            response = client.post("/deployment/create", json=body)
            creates.append(time.perf_counter() - started)
            if response.status_code != 201:
                errors += 1
                return
            started = time.perf_counter()
            cancelled = client.delete(f"/deployment/delete/{response.json()['id']}")
            cancels.append(time.perf_counter() - started)
            errors += cancelled.status_code != 200

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, range(pairs)))
    elapsed = time.perf_counter() - began
    return {
        "create_p50_ms": _percentile(creates, 50),
        "create_p99_ms": _percentile(creates, 99),
        "cancel_p50_ms": _percentile(cancels, 50),
        "cancel_p99_ms": _percentile(cancels, 99),
        "requests_per_second": (len(creates) + len(cancels)) / elapsed,
        "errors": errors,
        "rss_mb": server.rss_mb(),
    }


def _percentile(samples: list[float], q: int) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] * 1000 if ordered else 0.0


def bench_database(
    label: str, database_url: str, depths: list[int], clients: int, pairs: int, stored: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir:
        server = Server(database_url, Path(workdir))
        try:
            headers, org, cluster = _setup(server)
            rows = []
            queued = 0
            for depth in depths:
                _fill(database_url, cluster, depth - queued)
                queued = depth
                _drive(server, headers, org, cluster, clients, max(8, pairs // 10))  # warm-up
                result = {
                    "database": label,
                    "pending": depth,
                    **_drive(server, headers, org, cluster, clients, pairs),
                }
                log.info(
                    "%s depth=%s create p50=%.1f p99=%.1f cancel p50=%.1f ms rps=%.0f rss=%.0f MB",
                    label,
                    depth,
                    result["create_p50_ms"],
                    result["create_p99_ms"],
                    result["cancel_p50_ms"],
                    result["requests_per_second"],
                    result["rss_mb"],
                )
                rows.append(result)
            total_now = depths[-1] + 64 + 2 * pairs * len(depths)
            if stored > total_now:
                _fill(database_url, cluster, stored - total_now, status="completed")
            stored_result = _drive(server, headers, org, cluster, clients, pairs)
            peak = {
                "database": label,
                "stored": stored,
                "peak_rss_mb": server.peak_rss / 2**20,
                "create_p50_ms": stored_result["create_p50_ms"],
            }
            log.info("%s with %s stored: peak RSS %.0f MB", label, stored, peak["peak_rss_mb"])
            return {"latency": rows, "memory": peak}
        finally:
            server.stop()


def _postgres_url() -> str | None:
    """A fresh database on the local PostgreSQL, or None when it does not answer."""
    try:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"hv_speed_{os.getpid()}"
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            connection.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
    except Exception as error:  # noqa: BLE001 - no PostgreSQL here: skip that part
        log.warning("PostgreSQL unavailable, skipping it: %s", error)
        return None
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _write(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(result, indent=2))
    lines = [
        "| running | pending | steady pass (ms) | churn pass (ms) | preemptions in churn |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['running']} | {r['pending']} | {r['steady_ms']:.1f} | {r['churn_ms']:.1f} "
        f"| {r['preempted_in_churn']} |"
        for r in result["passes"]
    ]
    lines += [
        "",
        "| database | pending | create p50 / p99 (ms) | cancel p50 / p99 (ms) | req/s | RSS (MB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for db in result["live"]:
        for r in db["latency"]:
            create = f"{r['create_p50_ms']:.1f} / {r['create_p99_ms']:.1f}"
            cancel = f"{r['cancel_p50_ms']:.1f} / {r['cancel_p99_ms']:.1f}"
            lines.append(
                f"| {r['database']} | {r['pending']} | {create} | {cancel} "
                f"| {r['requests_per_second']:.0f} | {r['rss_mb']:.0f} |"
            )
    lines += ["", "| database | deployments stored | peak RSS (MB) |", "| --- | --- | --- |"]
    for db in result["live"]:
        memory = db["memory"]
        lines.append(f"| {memory['database']} | {memory['stored']} | {memory['peak_rss_mb']:.0f} |")
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    _plot(out, result)


def _merge_passes(out: Path, passes: list[dict[str, Any]]) -> None:
    """Replace the pass timings of an earlier full run's results, keeping its live part."""
    previous = json.loads((out / "speed.json").read_text()) if (out / "speed.json").exists() else {}
    _write(out, {"passes": passes, "live": previous.get("live", [])})


def _plot(out: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for db in result["live"]:
        depths = [r["pending"] for r in db["latency"]]
        axis.plot(
            depths,
            [r["create_p50_ms"] for r in db["latency"]],
            marker="o",
            label=f"{db['memory']['database']} create p50",
        )
        axis.plot(
            depths,
            [r["cancel_p50_ms"] for r in db["latency"]],
            marker="x",
            linestyle="--",
            label=f"{db['memory']['database']} cancel p50",
        )
    axis.set_xscale("log")
    axis.set_xlabel("pending deployments in the cluster")
    axis.set_ylabel("latency (ms)")
    axis.set_title("Request latency vs queue depth (8 clients)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "latency_vs_depth.png", dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=400, help="create+cancel pairs per depth")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, SQLite only")
    parser.add_argument("--passes-only", action="store_true", help="part 1 only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.smoke:
        pass_depths, depths, pairs, stored = [100], [10, 50], 10, 200
    else:
        pass_depths, depths, pairs, stored = (
            [100, 1000, 10_000, 100_000],
            [100, 1000, 10_000],
            args.pairs,
            100_000,
        )
    result: dict[str, Any] = {
        "passes": time_passes(pass_depths, repeats=3 if args.smoke else 5),
        "live": [],
    }
    if args.passes_only:
        _merge_passes(args.out, result["passes"])
        return result
    with tempfile.TemporaryDirectory() as workdir:
        sqlite_url = f"sqlite:///{workdir}/speed.db"
        result["live"].append(
            bench_database("SQLite", sqlite_url, depths, args.clients, pairs, stored)
        )
    if not (args.smoke or args.no_postgres):
        postgres_url = _postgres_url()
        if postgres_url:
            result["live"].append(
                bench_database("PostgreSQL", postgres_url, depths, args.clients, pairs, stored)
            )
    _write(args.out, result)
    return result


if __name__ == "__main__":
    main()
