"""The report: what the clients and replicas saw, as the JSON document and a text summary."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from typing import Any

from .replicas import LOCKED_MARKER, Replica
from .traffic import MIX, Driver
from .world import RESOURCES, World

MAX_LISTED_VIOLATIONS = 200


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
    """The database URL without its password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in credentials else ''}@{host}"


def _traffic_violations(args: argparse.Namespace, driver: Driver, database: list[str]) -> list[str]:
    """All violations in report order: requests without an answer, locked, 5xx; then the
    database's; then unexpected status codes, a failed kill or restart, no live replica."""
    stats = driver.stats
    five_xx = stats.five_xx()
    timeouts = sum(stats.timeouts.values())
    first: list[str] = []
    if timeouts:
        first.append(f"{timeouts} requests got no answer in {args.request_timeout}s")
    if stats.locked:
        first.append(f"{stats.locked} responses mention '{LOCKED_MARKER}'")
    if five_xx:
        first.append(f"{five_xx} responses were 5xx")
    after = [
        f"{op} answered {code} {n} times, e.g. {stats.unexpected_sample[op, code]}"
        for (op, code), n in sorted(stats.unexpected.items())
    ]
    if args.kill_after is not None:
        kill = driver.kill_report
        if kill is None:
            after.append(f"--kill-after {args.kill_after}: the kill never happened")
        elif "restart_error" in kill:
            after.append("the killed replica did not come back: " + kill["restart_error"][:300])
    gave_up = sum(stats.gave_up.values())
    if gave_up:
        after.append(f"{gave_up} requests found no live replica for {args.failover_seconds}s")
    return first + database + after


def _per_replica(driver: Driver, replicas: list[Replica], violations: list[str]) -> dict[str, Any]:
    """Each replica's starts, answers and log problems; errors in a log are violations."""
    stats = driver.stats
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
    return per_replica


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
    """The JSON report: `violations` are the database's, the rest is added here."""
    stats = driver.stats
    all_latencies = [x for values in stats.latencies.values() for x in values]
    violations = _traffic_violations(args, driver, violations)
    per_replica = _per_replica(driver, replicas, violations)
    responses = sum(stats.status.values())
    return {
        "ok": not violations,
        "requests": driver.issued,
        "responses": responses,
        "status_counts": {str(k): v for k, v in sorted(stats.status.items())},
        "status_counts_by_op": {
            op: {str(k): v for k, v in sorted(c.items())}
            for op, c in sorted(stats.status_by_op.items())
        },
        "server_errors_5xx": stats.five_xx(),
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
        "violation_count": len(violations),
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
    """The few lines the harness prints: throughput, latency, errors, violations, the result."""
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
