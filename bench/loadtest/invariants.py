"""Database checks after the run: capacity, states, dependencies, stable queues, 2xx reflected."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .replicas import APP_DIR
from .world import FINISHED, RESOURCES, STATES, World

Violation = Callable[[str], None]  # records one violated invariant


class _ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {record.exc_info[1]!r}"
        self.messages.append(text[:500])


def _req(d: Any) -> dict[str, int]:
    return {r: getattr(d, f"required_{r}") for r in RESOURCES}


def _fits(request: dict[str, int], available: dict[str, int]) -> bool:
    return all(request[r] <= available[r] for r in RESOURCES)


@dataclass
class Snapshot:
    """This run's clusters, deployments, dependencies and events, read after a pass."""

    all_clusters: int
    clusters: dict[int, Any]
    cluster_names: dict[int, tuple[str, str]]
    deployments: dict[int, Any]
    deps: dict[int, list[int]]
    events: dict[int, list[tuple[str, datetime]]]
    running_of: dict[int, list[Any]]
    pending_of: dict[int, list[Any]]
    available: dict[int, dict[str, int]]


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
        facts["final_pass"] = {
            "clusters_passed": passes,
            "clusters_in_database": state.all_clusters,
        }
        if passes != state.all_clusters:
            violations.append(f"final pass covered {passes} of {state.all_clusters} clusters")
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


def _load(factory: Any, org_ids: list[int]) -> Snapshot:
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
            - sum(_req(d)[r] for d in running_of[cid])
            for r in RESOURCES
        }
        for cid, c in clusters.items()
    }
    return Snapshot(
        all_clusters=all_clusters,
        clusters=clusters,
        cluster_names=cluster_names,
        deployments={d.id: d for d in rows},
        deps=deps,
        events=evs,
        running_of=running_of,
        pending_of=pending_of,
        available=available,
    )


def _check_state(
    state: Snapshot,
    world: World,
    violations: list[str],
    notes: list[str],
    facts: dict[str, Any],
    interval: float,
) -> None:
    """Capacity, existence, states, timestamps, events, dependencies, and the clients' view."""
    v = violations.append
    _check_capacity(state, v)
    _check_accepted(state, world, v, facts)
    grace = 2 * interval + 1.0
    cleared = 0
    for did, d in state.deployments.items():
        if d.status not in STATES:
            v(f"deployment {did} has invalid status {d.status!r}")
            continue
        cleared += _check_lifecycle(did, d, state.events.get(did, []), v)
        _check_dependencies(did, d, state, grace, v)
    if cleared:
        notes.append(
            f"{cleared} deployments that ran and were then preempted have started_at cleared "
            "(the app resets it on requeue; SPEC is silent)"
        )
    _check_clients_view(state, world, v)
    violations.extend(world.client_violations)
    facts.update(_facts(state))


def _check_capacity(state: Snapshot, v: Violation) -> None:
    """1. reserved + running <= total, per cluster and resource."""
    for cid, c in state.clusters.items():
        for r in RESOURCES:
            total, reserved = getattr(c, f"total_{r}"), getattr(c, f"reserved_{r}")
            if not 0 <= reserved <= total:
                v(f"cluster {cid}: reserved_{r}={reserved} outside 0..{total}")
            if state.available[cid][r] < 0:
                used = total - reserved - state.available[cid][r]
                v(
                    f"cluster {cid}: {r} over-allocated: reserved {reserved} + running {used} "
                    f"> total {total}"
                )


def _check_accepted(state: Snapshot, world: World, v: Violation, facts: dict[str, Any]) -> None:
    """2. Accepted creates exist exactly once, in the cluster the client named."""
    deployments = state.deployments
    names_to_cluster = {names: cid for cid, names in state.cluster_names.items()}
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


def _check_lifecycle(did: int, d: Any, history: list[tuple[str, datetime]], v: Violation) -> int:
    """3. One valid state; timestamps and events agree with it. Returns 1 if started_at was
    cleared by a preemption (a note, not a violation), else 0."""
    kinds = [k for k, _ in history]
    times = [t for _, t in history]
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
    cleared = 0
    if d.started_at is None and starts > 0:
        if last_cycle == "preempted":
            cleared = 1  # the app clears started_at on preemption
        else:
            v(f"deployment {did} ({d.status}) started but has no started_at")
    if d.started_at is not None and d.started_at < d.created_at:
        v(f"deployment {did} started_at before created_at")
    if d.started_at and d.finished_at and d.finished_at < d.started_at:
        v(f"deployment {did} finished_at before started_at")
    if times != sorted(times):
        v(f"deployment {did} events out of time order: {kinds}")
    return cleared


def _check_dependencies(did: int, d: Any, state: Snapshot, grace: float, v: Violation) -> None:
    """4. Only completed dependencies let a deployment start; dead ones fail it."""
    first_start = next((t for k, t in state.events.get(did, []) if k == "started"), None)
    for parent_id in state.deps.get(did, []):
        parent = state.deployments.get(parent_id)
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


def _check_clients_view(state: Snapshot, world: World, v: Violation) -> None:
    """5. What clients were told by 2xx answers is what the database says."""
    deployments = state.deployments
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


def _facts(state: Snapshot) -> dict[str, Any]:
    """Counts for the report: states, preemptions, events, and each cluster's load."""
    deployments = state.deployments.values()
    return {
        "deployments": dict(sorted(Counter(d.status for d in deployments).items())),
        "deployments_total": len(deployments),
        "preemptions": sum(d.preemption_count for d in deployments),
        "events": sum(len(e) for e in state.events.values()),
        "clusters": {
            f"{org}/{name}": {
                "running": len(state.running_of[cid]),
                "pending": len(state.pending_of[cid]),
                "waiting_for_dependencies": sum(1 for d in state.pending_of[cid] if not d.eligible),
                "available": state.available[cid],
            }
            for cid, (org, name) in state.cluster_names.items()
        },
    }


def _queue_check(state: Snapshot, pass_started: datetime) -> tuple[dict[int, str], list[int]]:
    """SPEC §5 after a pass: no eligible pending deployment fits in the available capacity or
    could be made to fit by preempting strictly lower-priority running ones.

    Returns the problems by deployment id, and the ids excused because a dependency in another
    cluster completed during this pass (their own cluster's pass may have come first)."""
    deployments, deps = state.deployments, state.deps
    problems: dict[int, str] = {}
    lagging: list[int] = []
    for cid, pending in state.pending_of.items():
        available = state.available[cid]
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
            for r in state.running_of[cid]:
                if r.priority < d.priority:
                    for res in RESOURCES:
                        with_victims[res] += _req(r)[res]
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
