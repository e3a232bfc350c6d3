#!/usr/bin/env python3
"""Load-and-fault harness: real `python main.py` replicas on one database, many clients.

It starts K replicas (one database, one shared JWT key), sets up organizations, users and
small clusters through the API, drives a realistic mix of deployment traffic from C client
threads, optionally SIGKILLs one replica mid-run and restarts it on the same port, then
stops the replicas, runs one more scheduling pass itself and checks the invariants of
SPEC §5 directly in the database (SQLAlchemy, not the API), together with everything the
clients were told by 2xx answers. It writes a JSON report and exits 1 on any 5xx or
violation.

    .venv/bin/python bench/load.py                       # 2 replicas on a fresh SQLite file
    .venv/bin/python bench/load.py --replicas 1 --out bench/results/load_sqlite.json
    psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE hv_load_x"
    .venv/bin/python bench/load.py --database-url \\
        postgresql+psycopg://postgres@127.0.0.1:5432/hv_load_x --kill-after 2000

Network traffic goes to 127.0.0.1 only. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.invariants import check_database
from loadtest.replicas import APP_DIR, LOCKED_MARKER, Replica, running_replicas
from loadtest.traffic import MIX, Driver
from loadtest.world import RESOURCES, World, setup_world

DEFAULT_OUT = APP_DIR / "bench" / "results" / "load.json"
MAX_LISTED_VIOLATIONS = 200

logger = logging.getLogger("bench.load")


# --- report ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(q / 100 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def latency_summary(values: list[float]) -> dict[str, float | int]:
    ms = [1000 * x for x in values]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p90_ms": round(percentile(ms, 90), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms, default=0.0), 1),
    }


def redact(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in credentials else ''}@{host}"


def build_report(
    args: argparse.Namespace,
    driver: Driver,
    world: World,
    elapsed: float,
    replicas: list[Replica],
    violations: list[str],
    notes: list[str],
    facts: dict[str, Any],
    database_url: str,
) -> dict[str, Any]:
    stats = driver.stats
    all_latencies = [x for values in stats.latencies.values() for x in values]
    five_xx = sum(n for code, n in stats.status.items() if code >= 500)
    if five_xx:
        violations.insert(0, f"{five_xx} responses were 5xx")
    if stats.locked:
        violations.insert(0, f"{stats.locked} responses mention '{LOCKED_MARKER}'")
    violations.extend(
        f"{op} answered {code} {n} times, e.g. {stats.unexpected_sample[op, code]}"
        for (op, code), n in sorted(stats.unexpected.items())
    )
    if args.kill_after is not None:
        kill = driver.kill_report
        if kill is None:
            violations.append(f"--kill-after {args.kill_after}: the kill never happened")
        elif "restart_error" in kill:
            violations.append(
                "the killed replica did not come back: " + kill["restart_error"][:300]
            )
    timeouts = sum(stats.timeouts.values())
    if timeouts:
        violations.insert(0, f"{timeouts} requests got no answer in {args.request_timeout}s")
    gave_up = sum(stats.gave_up.values())
    if gave_up:
        violations.append(f"{gave_up} requests found no live replica for {args.failover_seconds}s")
    per_replica = {}
    for replica in replicas:
        problems = replica.log_problems()
        per_replica[str(replica.index)] = {
            "port": replica.port,
            "starts": replica.starts,
            "responses": stats.per_replica[replica.index],
            "responses_after_restart": stats.per_replica_after_restart.get(replica.index),
            "connection_errors": stats.connection_errors_by_replica[replica.index],
            "usage": replica.usage,
            "log": problems,
        }
        if problems["tracebacks"] or problems["error_lines"]:
            violations.append(
                f"replica {replica.index} logged {problems['error_lines']} errors, "
                f"{problems['tracebacks']} tracebacks: {problems['exceptions']}"
            )
    total_violations = len(violations)
    responses = sum(stats.status.values())
    return {
        "ok": total_violations == 0,
        "requests": driver.issued,
        "responses": responses,
        "status_counts": {str(k): v for k, v in sorted(stats.status.items())},
        "status_counts_by_op": {
            op: {str(k): v for k, v in sorted(c.items())}
            for op, c in sorted(stats.status_by_op.items())
        },
        "server_errors_5xx": five_xx,
        "server_error_samples": stats.server_errors,
        "database_locked_responses": stats.locked,
        "connection_errors": {
            "total": sum(stats.connection_errors.values()),
            "by_type": dict(stats.connection_errors),
        },
        "timeouts": dict(stats.timeouts),
        "unknown_outcomes": dict(stats.unknown_outcomes),
        "gave_up": dict(stats.gave_up),
        "latency": latency_summary(all_latencies),
        "latency_by_op": {op: latency_summary(v) for op, v in sorted(stats.latencies.items())},
        "duration_seconds": round(elapsed, 2),
        "throughput_rps": round(responses / elapsed, 1) if elapsed else 0.0,
        "accepted_creates": len(world.accepted),
        "harness_cpu_seconds": round(sum(os.times()[:2]), 1),
        "kill": driver.kill_report,
        "per_replica": per_replica,
        "database": facts,
        "notes": notes,
        "violation_count": total_violations,
        "violations": violations[:MAX_LISTED_VIOLATIONS],
        "config": {
            "replicas": args.replicas,
            "clients": args.clients,
            "requests": args.requests,
            "seconds": args.seconds,
            "kill_after": args.kill_after,
            "down_seconds": args.down_seconds,
            "routing": args.routing,
            "clusters": args.clusters,
            "cluster_size": dict(zip(RESOURCES, args.cluster_size, strict=True)),
            "scheduler_interval": args.scheduler_interval,
            "starvation_seconds": args.starvation_seconds,
            "seed": args.seed,
            "database": redact(database_url),
            "backend": "postgresql" if database_url.startswith("postgresql") else "sqlite",
            "mix": MIX,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }


def summary_text(report: dict[str, Any]) -> str:
    lat = report["latency"]
    lines = [
        f"backend={report['config']['backend']} replicas={report['config']['replicas']} "
        f"clients={report['config']['clients']} kill_after={report['config']['kill_after']}",
        f"requests={report['requests']} responses={report['responses']} "
        f"in {report['duration_seconds']}s = {report['throughput_rps']} req/s",
        f"status: {report['status_counts']}",
        f"latency: p50={lat['p50_ms']}ms p99={lat['p99_ms']}ms max={lat['max_ms']}ms",
        f"connection errors: {report['connection_errors']} timeouts: {report['timeouts']} "
        f"unknown outcomes: {report['unknown_outcomes']}",
        f"'database is locked' in bodies: {report['database_locked_responses']}",
        f"database: {report['database'].get('deployments')} preemptions="
        f"{report['database'].get('preemptions')} accepted creates={report['accepted_creates']}",
    ]
    if report["kill"]:
        lines.append(f"kill: {report['kill']}")
    lines.extend(f"note: {n}" for n in report["notes"])
    lines.append(f"violations: {report['violation_count']}")
    lines.extend(f"  - {v}" for v in report["violations"][:30])
    lines.append("RESULT: " + ("OK" if report["ok"] else "FAILED"))
    return "\n".join(lines) + "\n"


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2, help="server processes (default 2)")
    parser.add_argument("--clients", type=int, default=32, help="client threads (default 32)")
    parser.add_argument("--requests", type=int, default=5000, help="total requests (5000)")
    parser.add_argument("--seconds", type=float, default=600, help="time limit of the drive")
    parser.add_argument("--database-url", help="an EMPTY database (default: fresh SQLite file)")
    parser.add_argument("--kill-after", type=int, help="SIGKILL a replica after N responses")
    parser.add_argument("--kill-replica", type=int, default=-1, help="which one (default last)")
    parser.add_argument("--down-seconds", type=float, default=2.0, help="before the restart")
    parser.add_argument("--routing", choices=["round-robin", "random"], default="round-robin")
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument(
        "--cluster-size", type=int, nargs=3, default=[32, 128, 8], metavar=("CPU", "RAM", "GPU")
    )
    parser.add_argument("--scheduler-interval", type=float, default=1.0)
    parser.add_argument(
        "--starvation-seconds",
        type=float,
        default=10**7,
        help="large, so the starvation guard never applies",
    )
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument(
        "--failover-seconds",
        type=float,
        default=90.0,
        help="how long one request keeps looking for a live replica",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--python", default=sys.executable, help="interpreter for replicas")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep-temp", action="store_true", help="keep logs and SQLite file")
    args = parser.parse_args(argv)
    if args.replicas < 1 or args.clients < 1 or args.requests < 1 or args.clusters < 1:
        parser.error("--replicas, --clients, --requests and --clusters must be >= 1")
    if args.seconds <= 0 or args.seconds > 6 * 3600:
        parser.error("--seconds must be in (0, 21600]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="hv-load-"))
    database_url = args.database_url or f"sqlite:///{tmp}/hypervisor.db"
    run_id = secrets.token_hex(3)
    ok = False
    try:
        with running_replicas(args, database_url, tmp) as replicas:
            world = setup_world([r.base_url for r in replicas], args, run_id)
            logger.info(
                "set up %s organizations, %s users; driving %s requests with %s clients",
                len(world.orgs),
                len(world.actors),
                args.requests,
                args.clients,
            )
            driver = Driver(args, replicas, world)
            elapsed = driver.run()
            logger.info("drive done in %.1fs; waiting two scheduler intervals", elapsed)
            time.sleep(2 * args.scheduler_interval + 0.5)
            for replica in replicas:
                replica.stop()
        logger.info("replicas stopped; final pass and database checks")
        violations, notes, facts = check_database(database_url, world, args)
        report = build_report(
            args, driver, world, elapsed, replicas, violations, notes, facts, database_url
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        sys.stdout.write(summary_text(report))
        sys.stdout.write(f"report: {args.out}\n")
        ok = report["ok"]
        return 0 if ok else 1
    finally:
        if args.keep_temp or not ok:
            logger.info("logs kept in %s", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
