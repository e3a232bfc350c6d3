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
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.replicas import APP_DIR, LOCKED_MARKER, Replica, running_replicas
from loadtest.traffic import MIX, Driver
from loadtest.world import FINISHED, RESOURCES, STATES, World, setup_world

DEFAULT_OUT = APP_DIR / "bench" / "results" / "load.json"
MAX_LISTED_VIOLATIONS = 200

logger = logging.getLogger("bench.load")


# --- invariants in the database --------------------------------------------------------------


class _ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {record.exc_info[1]!r}"
        self.messages.append(text[:500])


def _fits(request: dict[str, int], available: dict[str, int]) -> bool:
    return all(request[r] <= available[r] for r in RESOURCES)


def check_database(
    database_url: str, world: World, args: argparse.Namespace
) -> tuple[list[str], list[str], dict[str, Any]]:
    """Run one final pass with the app's own code, then check SPEC §5 and the clients' view.

    Returns (violations, notes, facts)."""
    sys.path.insert(0, str(APP_DIR))
    from sqlalchemy import select

    import database
    import services
    import utils
    from models import Organization

    utils.use_settings(
        utils.Settings(
            database_url=database_url,
            starvation_seconds=args.starvation_seconds,
            preemption_grace_seconds=0,
            scheduler_interval_seconds=args.scheduler_interval,
        )
    )
    engine = database.make_engine(database_url)
    factory = database.make_session_factory(engine)
    errors = _ErrorCounter()
    logging.getLogger("services").addHandler(errors)
    violations: list[str] = []
    notes: list[str] = []
    facts: dict[str, Any] = {}
    try:
        org_names = [org.name for org in world.orgs]
        with factory() as session:
            org_ids = list(
                session.scalars(select(Organization.id).where(Organization.name.in_(org_names)))
            )
        final_pass_started = utils.utcnow()
        passes = services.run_periodic_passes(factory)
        state = _load(factory, org_ids)
        facts["final_pass"] = {"clusters_passed": passes, "clusters_in_database": state["all"]}
        if passes != state["all"]:
            violations.append(f"final pass covered {passes} of {state['all']} clusters")
        _check_state(state, world, violations, notes, facts, args.scheduler_interval)
        problems, lagging = _queue_check(state, final_pass_started)
        violations.extend(problems.values())
        if lagging:
            # SPEC §5 lets a dependent in another cluster wait for its own cluster's next pass
            # ("at the latest from the loop within one interval"): a second pass must start it.
            notes.append(
                f"{len(lagging)} deployments became eligible during the final pass when a "
                "dependency in another cluster completed; a second pass was run for them"
            )
            services.run_periodic_passes(factory)
            problems, _ = _queue_check(_load(factory, org_ids), utils.utcnow())
            violations.extend(
                f"{message} (still after a second pass)"
                for deployment_id, message in problems.items()
                if deployment_id in lagging
            )
        violations.extend(f"final pass logged an error: {m}" for m in errors.messages)
    finally:
        logging.getLogger("services").removeHandler(errors)
        engine.dispose()
    return violations, notes, facts


def _load(factory: Any, org_ids: list[int]) -> dict[str, Any]:
    """A snapshot of this run's clusters, deployments, dependencies and events."""
    from sqlalchemy import func, select

    from models import Cluster, Deployment, DeploymentDependency, DeploymentEvent

    with factory() as session:
        all_clusters = session.scalar(select(func.count()).select_from(Cluster))
        clusters = {
            c.id: c
            for c in session.scalars(select(Cluster).where(Cluster.organization_id.in_(org_ids)))
        }
        ours = Deployment.cluster_id.in_(list(clusters))
        rows = list(session.scalars(select(Deployment).where(ours)))
        edges = session.execute(
            select(DeploymentDependency.deployment_id, DeploymentDependency.depends_on_id)
            .join(Deployment, Deployment.id == DeploymentDependency.deployment_id)
            .where(ours)
        ).all()
        events = session.execute(
            select(DeploymentEvent.deployment_id, DeploymentEvent.type, DeploymentEvent.at)
            .join(Deployment, Deployment.id == DeploymentEvent.deployment_id)
            .where(ours)
            .order_by(DeploymentEvent.id)
        ).all()
        cluster_names = {cid: (c.organization.name, c.name) for cid, c in clusters.items()}
        session.expunge_all()
    deps: dict[int, list[int]] = defaultdict(list)
    for child, parent in edges:
        deps[child].append(parent)
    evs: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    for deployment_id, kind, at in events:
        evs[deployment_id].append((kind, at))
    deployments = {d.id: d for d in rows}
    running_of: dict[int, list[Any]] = defaultdict(list)
    pending_of: dict[int, list[Any]] = defaultdict(list)
    for d in rows:
        if d.status == "running":
            running_of[d.cluster_id].append(d)
        elif d.status == "pending":
            pending_of[d.cluster_id].append(d)
    available = {
        cid: {
            r: getattr(c, f"total_{r}")
            - getattr(c, f"reserved_{r}")
            - sum(getattr(d, f"required_{r}") for d in running_of[cid])
            for r in RESOURCES
        }
        for cid, c in clusters.items()
    }
    return {
        "all": all_clusters,
        "clusters": clusters,
        "cluster_names": cluster_names,
        "deployments": deployments,
        "deps": deps,
        "events": evs,
        "running_of": running_of,
        "pending_of": pending_of,
        "available": available,
    }


def _req(d: Any) -> dict[str, int]:
    return {"cpu": d.required_cpu, "ram": d.required_ram, "gpu": d.required_gpu}


def _check_state(
    state: dict[str, Any],
    world: World,
    violations: list[str],
    notes: list[str],
    facts: dict[str, Any],
    interval: float,
) -> None:
    """Capacity, existence, states, timestamps, events, dependencies, and the clients' view."""
    clusters, deployments = state["clusters"], state["deployments"]
    deps, events = state["deps"], state["events"]
    running_of, pending_of = state["running_of"], state["pending_of"]
    v = violations.append
    grace = 2 * interval + 1.0

    # 1. capacity: reserved + running <= total, per cluster and resource.
    for cid, c in clusters.items():
        for r in RESOURCES:
            total, reserved = getattr(c, f"total_{r}"), getattr(c, f"reserved_{r}")
            if not 0 <= reserved <= total:
                v(f"cluster {cid}: reserved_{r}={reserved} outside 0..{total}")
            if state["available"][cid][r] < 0:
                used = total - reserved - state["available"][cid][r]
                v(
                    f"cluster {cid}: {r} over-allocated: reserved {reserved} + running {used} "
                    f"> total {total}"
                )

    # 2. accepted creates exist exactly once, in the cluster the client named.
    names_to_cluster = {names: cid for cid, names in state["cluster_names"].items()}
    for deployment_id, names in world.accepted.items():
        d = deployments.get(deployment_id)
        if d is None:
            v(f"deployment {deployment_id} answered 201 but is not in the database")
        elif d.cluster_id != names_to_cluster.get(names):
            v(f"deployment {deployment_id} is in cluster {d.cluster_id}, created in {names}")
    extra = sorted(set(deployments) - set(world.accepted))
    if len(extra) > world.unknown_creates:
        v(
            f"{len(extra)} deployments in the database that no client saw accepted, but only "
            f"{world.unknown_creates} creates had an unknown outcome: {extra[:20]}"
        )
    facts["unacknowledged_deployments"] = len(extra)

    # 3. one valid state each; timestamps and events agree with it.
    cleared = 0
    for did, d in deployments.items():
        kinds = [k for k, _ in events.get(did, [])]
        times = [t for _, t in events.get(did, [])]
        if d.status not in STATES:
            v(f"deployment {did} has invalid status {d.status!r}")
            continue
        starts, preempts = kinds.count("started"), kinds.count("preempted")
        terminal = [k for k in kinds if k in FINISHED]
        last_cycle = next((k for k in reversed(kinds) if k in ("started", "preempted")), None)
        if kinds.count("created") != 1 or (kinds and kinds[0] != "created"):
            v(f"deployment {did} events do not begin with one 'created': {kinds[:6]}")
        if starts > 1 + preempts:
            v(f"deployment {did} started {starts} times with only {preempts} preemptions")
        if d.preemption_count != preempts:
            v(f"deployment {did} preemption_count {d.preemption_count} != {preempts} events")
        if d.status in FINISHED:
            if terminal != [d.status]:
                v(f"deployment {did} is {d.status} with terminal events {terminal}")
            if d.finished_at is None:
                v(f"deployment {did} is {d.status} without finished_at")
            if terminal and "started" in kinds[kinds.index(terminal[0]) :]:
                v(f"deployment {did} started again after it {terminal[0]}")
        else:
            if terminal:
                v(f"deployment {did} is {d.status} but has terminal events {terminal}")
            if d.finished_at is not None:
                v(f"deployment {did} is {d.status} with finished_at set")
        if d.status in ("running", "completed") and last_cycle != "started":
            v(f"deployment {did} is {d.status} but its last start/preempt event is {last_cycle}")
        if d.status == "pending" and last_cycle == "started":
            v(f"deployment {did} is pending but was started and never preempted")
        if d.started_at is not None and starts == 0:
            v(f"deployment {did} has started_at but never started")
        if d.started_at is None and starts > 0:
            if last_cycle == "preempted":
                cleared += 1  # the app clears started_at on preemption
            else:
                v(f"deployment {did} ({d.status}) started but has no started_at")
        if d.started_at is not None and d.started_at < d.created_at:
            v(f"deployment {did} started_at before created_at")
        if d.started_at and d.finished_at and d.finished_at < d.started_at:
            v(f"deployment {did} finished_at before started_at")
        if times != sorted(times):
            v(f"deployment {did} events out of time order: {kinds}")

        # 4. dependencies: only completed ones let a deployment start; dead ones fail it.
        first_start = next((t for k, t in events.get(did, []) if k == "started"), None)
        for parent_id in deps.get(did, []):
            parent = deployments.get(parent_id)
            if parent is None:
                v(f"deployment {did} depends on {parent_id} outside its organization")
                continue
            if first_start is not None:
                if parent.status != "completed":
                    v(f"deployment {did} started while dependency {parent_id} is {parent.status}")
                elif parent.finished_at is not None and parent.finished_at > first_start:
                    v(f"deployment {did} started before dependency {parent_id} completed")
            if parent.status in ("failed", "cancelled") and d.status != "failed":
                if d.status == "cancelled" and d.finished_at and parent.finished_at:
                    # A user may cancel it before a pass fails it: at most one interval later.
                    late = (d.finished_at - parent.finished_at).total_seconds()
                    if late > grace:
                        v(
                            f"deployment {did} stayed pending {late:.1f}s after its dependency "
                            f"{parent_id} was {parent.status} (until a user cancelled it); "
                            "passes should have failed it"
                        )
                else:
                    v(
                        f"deployment {did} is {d.status} though dependency {parent_id} "
                        f"is {parent.status}"
                    )
    if cleared:
        notes.append(
            f"{cleared} deployments that ran and were then preempted have started_at cleared "
            "(the app resets it on requeue; SPEC is silent)"
        )

    # 5. what clients were told by 2xx answers.
    for did in world.cancelled_ok:
        d = deployments.get(did)
        if d is not None and d.status != "cancelled":
            v(f"deployment {did}: cancel answered 200, database says {d.status}")
    for did, status in world.reported_ok.items():
        d = deployments.get(did)
        if d is not None and d.status != status:
            v(f"deployment {did}: report {status} answered 200, database says {d.status}")
    for did, seen in world.observed.items():
        d = deployments.get(did)
        if d is None:
            continue
        finished = sorted(seen.finished_seen)
        if len(finished) > 1 or (finished and d.status not in finished):
            v(f"deployment {did}: clients saw {finished}, database says {d.status}")
        if seen.latest_unfinished_send > seen.first_finished_recv:
            v(
                f"deployment {did}: a request sent after a client saw it {finished} "
                f"answered {seen.latest_unfinished_status}"
            )
    violations.extend(world.client_violations)

    facts["deployments"] = dict(sorted(Counter(d.status for d in deployments.values()).items()))
    facts["deployments_total"] = len(deployments)
    facts["preemptions"] = sum(d.preemption_count for d in deployments.values())
    facts["events"] = sum(len(e) for e in events.values())
    facts["clusters"] = {
        f"{org}/{name}": {
            "running": len(running_of[cid]),
            "pending": len(pending_of[cid]),
            "waiting_for_dependencies": sum(1 for d in pending_of[cid] if not d.eligible),
            "available": state["available"][cid],
        }
        for cid, (org, name) in state["cluster_names"].items()
    }


def _queue_check(state: dict[str, Any], pass_started: datetime) -> tuple[dict[int, str], list[int]]:
    """SPEC §5 after a pass: no eligible pending deployment fits in the available capacity or
    could be made to fit by preempting strictly lower-priority running ones.

    Returns the problems by deployment id, and the ids excused because a dependency in another
    cluster completed during this pass (their own cluster's pass may have come first)."""
    deployments, deps = state["deployments"], state["deps"]
    problems: dict[int, str] = {}
    lagging: list[int] = []
    for cid, pending in state["pending_of"].items():
        available = state["available"][cid]
        for d in pending:
            parents = [deployments.get(p) for p in deps.get(d.id, [])]
            eligible = all(p is not None and p.status == "completed" for p in parents)
            if d.eligible and not eligible:
                problems[d.id] = (
                    f"deployment {d.id} is marked eligible with unfinished dependencies"
                )
                continue
            if not eligible:
                continue
            with_victims = dict(available)
            for r in state["running_of"][cid]:
                if r.priority < d.priority:
                    for res in RESOURCES:
                        with_victims[res] += getattr(r, f"required_{res}")
            fits = _fits(_req(d), available)
            if not fits and not _fits(_req(d), with_victims):
                continue
            if any(
                p is not None
                and p.cluster_id != d.cluster_id
                and p.finished_at is not None
                and p.finished_at >= pass_started
                for p in parents
            ):
                lagging.append(d.id)
                continue
            how = "fits in" if fits else "could preempt lower-priority work in"
            problems[d.id] = (
                f"deployment {d.id} (priority {d.priority}, eligible flag {d.eligible}) is pending "
                f"but {how} cluster {cid}: needs {_req(d)}, available {available}"
            )
    return problems, lagging


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
