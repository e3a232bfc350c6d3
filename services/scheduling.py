"""Scheduling passes (SPEC §5) as the database sees them: plans applied with their events,
dependencies settled, the periodic passes of the background loop, and the passes a commit
makes due in other clusters.

`scheduler.py` decides; `services.loading` gives it the cluster; this module runs the pass
in the transaction of the change that triggered it, under that cluster's row lock, and
writes the decisions back.
Every change to a deployment row happens under the lock of the deployment's own cluster,
and a transaction holds at most one cluster lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, String, Table, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

import scheduler
from database import lock_cluster, read_only_session, try_lock_cluster
from metrics import PASS_SECONDS
from models import Cluster, Deployment, DeploymentDependency, DeploymentEvent, Timestamp
from models import DeploymentStatus as Status
from services.loading import (
    DEAD,
    PENDING,
    RUNNING,
    UNFINISHED,
    before_create,
    due_jobs,
    job_of,
    policy,
    queue_fetcher,
    running_below,
    shape_of,
    starvation_guard,
    top_queued_priority,
)
from utils import utcnow

logger = logging.getLogger(__name__)

# How many queued deployments a pass loads at a time. After a pass the queue is stable, so a
# pass only ever needs the few that could start; this bounds the work when many suddenly can.
CANDIDATE_BATCH = 64
# `session.info` key: clusters holding dependents of what this transaction finished, whose
# passes run right after the commit (each in its own transaction, under its own lock).
CLUSTERS_DUE = "hypervisor.clusters_due"
# How many waiting deployments one transaction settles at most (SPEC §5 step 2).
SETTLE_BATCH = 50
SETTLED = "hypervisor.settled"  # `session.info` key: how many this transaction settled
# A bound on the passes one commit sets off down chains across clusters; the loop
# catches whatever remains within one interval.
MAX_PASSES_AFTER_COMMIT = 100


# --- units of work ---------------------------------------------------------------------------


@contextmanager
def transaction(
    session_factory: sessionmaker[Session], *, read_only: bool = False
) -> Iterator[Session]:
    """One unit of work: committed at the end of the block, rolled back on an error. After
    the commit, the clusters holding dependents of what it finished get their passes.

    `read_only`: the transaction only reads (`database.read_only_session`). Entering the
    block does no I/O: the connection is taken at the first query."""
    opened = read_only_session(session_factory) if read_only else session_factory()
    with opened as session, session.begin():
        yield session
        due: set[int] = session.info.pop(CLUSTERS_DUE, set())
    if due:
        run_passes_after_commit(session_factory, due)


def run_passes_after_commit(session_factory: sessionmaker[Session], cluster_ids: set[int]) -> None:
    """A pass over each cluster, lowest id first, each in its own transaction under its
    own lock (never two at once), following chains of dependents into further clusters.

    The change that made them due is committed already: a failure here is logged and left
    to the loop, which runs every cluster's pass within one interval.
    """
    due = set(cluster_ids)
    for _ in range(MAX_PASSES_AFTER_COMMIT):
        if not due:
            return
        cluster_id = min(due)
        due.discard(cluster_id)
        try:
            with session_factory.begin() as session:
                schedule_locked_cluster(session, lock_cluster(session, cluster_id))
                due |= session.info.pop(CLUSTERS_DUE, set())
        except Exception:
            logger.exception("pass after commit failed cluster_id=%s", cluster_id)
    if due:
        logger.warning("passes left to the loop clusters=%s", len(due))


def run_periodic_passes(session_factory: sessionmaker[Session]) -> int:
    """One tick of the background loop: a pass over every cluster that no other transaction
    is passing over right now, each in its own transaction; returns how many ran.

    One failing cluster is logged and skipped; it never stops the others or the loop.
    """
    with session_factory() as session:
        cluster_ids = list(session.scalars(_clusters_with_work().order_by(Cluster.id)))
    passes = 0
    for cluster_id in cluster_ids:
        try:
            with transaction(session_factory) as session:
                cluster = try_lock_cluster(session, cluster_id)
                if cluster is not None:
                    schedule_locked_cluster(session, cluster)
                    passes += 1
        except Exception:
            logger.exception("scheduling pass failed cluster_id=%s", cluster_id)
    return passes


def seconds_to_next_end(session_factory: sessionmaker[Session]) -> float | None:
    """Seconds until the earliest known end of a running timed deployment, anywhere (None
    if there is none, or if the earliest is already due: the loop's interval then rules)."""
    with session_factory() as session:
        earliest = session.scalar(
            select(func.min(Deployment.ends_at)).where(Deployment.status == RUNNING)
        )
    if earliest is None:
        return None
    seconds = (earliest - utcnow()).total_seconds()
    return seconds if seconds > 0 else None


def _clusters_with_work() -> Any:
    """Clusters a tick may change: with timed work running (it may be due) or work waiting
    (to settle or start). An idle cluster costs the loop nothing, however many there are."""

    def having(*conditions: ColumnElement[bool]) -> Any:
        return select(Deployment.id).where(Deployment.cluster_id == Cluster.id, *conditions)

    timed = having(Deployment.status == RUNNING, Deployment.duration_seconds.is_not(None))
    waiting = having(Deployment.status == PENDING)
    return select(Cluster.id).where(or_(timed.exists(), waiting.exists()))


# --- passes ----------------------------------------------------------------------------------


def schedule_locked_cluster(
    session: Session, cluster: Cluster, now: datetime | None = None
) -> None:
    """A full scheduling pass (SPEC §5) over a cluster whose row this transaction has locked.

    It finishes elapsed deployments, resolves dependencies (so dependents of what just
    finished can start in this very pass), then sweeps the queue. The queue is stable after
    every pass, so instead of loading it whole the scheduler asks for the few deployments
    that could start now, a batch at a time; and of the running set it gets only what the
    queue could preempt (`running_below`): nothing at all when nothing is eligible.
    """
    started = time.perf_counter()
    now = now or utcnow()
    rules = policy()
    finish_due(session, cluster, now)
    resolve_ready(session, cluster, now)
    top = top_queued_priority(session, cluster.id)
    if top is not None:
        if not (rules.priority_order and rules.backfill):
            top = scheduler.PRIORITY_MAX + 1  # other orders may load anyone: load everything
        shape, running = running_below(session, cluster, top)
        fetch = queue_fetcher(session, cluster)
        plan = scheduler.run_pass_incrementally(
            shape, running, now.timestamp(), fetch, rules, CANDIDATE_BATCH
        )
        apply_plan(session, cluster, plan, now)
    PASS_SECONDS.observe(time.perf_counter() - started)


@dataclass(frozen=True)
class Arrival:
    """What the pass after a create found before the deployment's row was written."""

    started: bool  # it fits in free capacity: written running, its pass is done
    whole_pass: bool  # time made room: the whole pass runs first
    settle: bool  # deployments wait on dependencies: settle them once the row exists
    guard: scheduler.Job | None  # the starving deployment that holds it back, if any


def arrive(session: Session, cluster: Cluster, deployment: Deployment, now: datetime) -> Arrival:
    """The first half of the pass after a create, asked before the new row exists, so a
    deployment that starts at once is written running in its one INSERT.

    The queue was stable after the last pass, so usually only the new deployment (and the
    starving one that may hold it back) can start. Unless time made room or work since
    then — a timed deployment's end, a dependency settled, a grace period over — which the
    whole pass must first offer to older work, in queue order (`after_arrival`).
    """
    started = time.perf_counter()
    changed(cluster)
    rules = policy()
    first = before_create(session, cluster.id, now)
    if first.due or rules.preemption_grace_seconds > 0:
        return Arrival(started=False, whole_pass=True, settle=False, guard=None)
    if first.waiting or not deployment.eligible:
        # The new deployment may be one of those waiting (a dependency of it may have died
        # since its check): settling them reads its row, so after its INSERT.
        return Arrival(started=False, whole_pass=False, settle=True, guard=None)
    # The new deployment cannot be the starving one: it has only just begun to wait.
    guard = starvation_guard(session, cluster, now, rules)
    if guard is None:
        # What fits in free capacity needs only the usage aggregate, not the running set.
        shape = shape_of(cluster)
        job = job_of(deployment)
        if job.request.fits_in(shape.total - shape.reserved - first.held):
            deployment.status = RUNNING
            deployment.started_at = now
            deployment.ends_at = _ends_at(job, now)
            PASS_SECONDS.observe(time.perf_counter() - started)
            return Arrival(started=True, whole_pass=False, settle=False, guard=None)
    return Arrival(started=False, whole_pass=False, settle=False, guard=guard)


def after_arrival(
    session: Session, cluster: Cluster, deployment: Deployment, arrival: Arrival, now: datetime
) -> bool:
    """The rest of the pass after a create, once its row is written (`arrive`); True if the
    deployment's object is current, False if the pass wrote with bulk updates (the caller
    re-reads it)."""
    if arrival.started:
        return True
    started = time.perf_counter()
    if arrival.whole_pass or (arrival.settle and resolve_ready(session, cluster, now)):
        schedule_locked_cluster(session, cluster, now)
        return False
    guard = arrival.guard
    if arrival.settle:  # asked now that the settling is done (never the new deployment)
        guard = starvation_guard(session, cluster, now, policy())
    candidates = [job_of(deployment)] if deployment.eligible else []
    if guard is not None:
        candidates.append(guard)
    if not candidates:
        PASS_SECONDS.observe(time.perf_counter() - started)
        return True
    # Only work below the candidates' priorities can be preempted: the rest is held room.
    shape, running = running_below(session, cluster, max(c.priority for c in candidates))
    plan = scheduler.run_pass(shape, running, candidates, now.timestamp(), policy())
    if plan.preempting:
        # A preemption may leave room over, which the sweep offers to the queue in its order:
        # to the work between the candidates before the starving one. Only the whole pass
        # knows that order, so it decides instead (the candidates' plan is dropped).
        schedule_locked_cluster(session, cluster, now)
        return False
    apply_plan(session, cluster, plan, now)
    PASS_SECONDS.observe(time.perf_counter() - started)
    return False


def apply_plan(
    session: Session, cluster: Cluster, plan: scheduler.Plan, now: datetime
) -> list[scheduler.Job]:
    """Write a plan's decisions and their events; returns the running jobs after it."""
    for job_id in plan.completed:
        # Completed at the instant its work reached its duration, even if found later.
        at = datetime.fromtimestamp(plan.finished_at.get(job_id, now.timestamp()), UTC)
        finish(session, cluster, [job_id], Status.completed, "ran for its full duration", at)
    if plan.preempted:
        _record_preemptions(session, cluster, plan, now)
    if plan.started:
        _start(session, [job for job in plan.running if job.id in set(plan.started)], now)
    if plan.started or plan.preempted or plan.completed:
        changed(cluster)
        logger.debug(
            "pass applied cluster_id=%s started=%s preempted=%s completed=%s",
            cluster.id,
            len(plan.started),
            len(plan.preempted),
            len(plan.completed),
        )
    return plan.running


def _start(session: Session, jobs: list[scheduler.Job], now: datetime) -> None:
    """Mark these jobs running since `now`, each with the end its duration and saved
    work give it."""

    session.execute(
        update(Deployment),
        [
            {
                "id": job.id,
                "status": RUNNING,
                "started_at": now,
                "checkpointed_at": None,
                "ends_at": _ends_at(job, now),
            }
            for job in jobs
        ],
    )
    record(session, [job.id for job in jobs], "started", "started", now)


def _ends_at(job: scheduler.Job, now: datetime) -> datetime | None:
    """When this job, started at `now`, completes (None if it runs until stopped)."""
    end = scheduler.ends_at_of(replace(job, started_at=now.timestamp(), checkpointed_at=None))
    return datetime.fromtimestamp(end, UTC) if end is not None else None


def _record_preemptions(
    session: Session, cluster: Cluster, plan: scheduler.Plan, now: datetime
) -> None:
    """Requeue the plan's victims with their saved work, and count what was lost."""
    requests = {
        row.id: row
        for row in session.execute(
            select(
                Deployment.id,
                Deployment.required_cpu,
                Deployment.required_ram,
                Deployment.required_gpu,
            ).where(Deployment.id.in_(plan.preempted))
        )
    }
    lost = {"cpu": 0.0, "ram": 0.0, "gpu": 0.0}
    for victim, preemptor in plan.preempted.items():
        seconds = round(plan.lost_seconds.get(victim, 0.0), 3)
        session.execute(
            update(Deployment)
            .where(Deployment.id == victim)
            .values(
                status=PENDING,
                started_at=None,
                waiting_since=now,
                preempted_by_id=preemptor,
                preemption_count=Deployment.preemption_count + 1,
                # Its estimates were of the run that just ended: none until the next forecast.
                estimated_start_at=None,
                estimated_end_at=None,
                estimate_basis=None,
                estimate_reason=None,
            )
        )
        message = f"preempted by deployment {preemptor}; {seconds:g} s of unsaved work lost"
        record(session, [victim], "preempted", message, now)
        record(session, [victim], "requeued", "back in the queue at its original place", now)
        for name in lost:
            lost[name] += seconds * getattr(requests[victim], f"required_{name}")
    cluster.preemptions += len(plan.preempted)
    cluster.lost_cpu_seconds += lost["cpu"]
    cluster.lost_ram_seconds += lost["ram"]
    cluster.lost_gpu_seconds += lost["gpu"]


def finish_due(session: Session, cluster: Cluster, now: datetime) -> bool:
    """Step 1 of a pass alone: complete the locked cluster's timed deployments whose time is
    up; True if any did (the queue then has room to offer). Reads only those that are due."""
    due = due_jobs(session, cluster.id, now)
    if not due:
        return False
    plan = scheduler.run_pass(shape_of(cluster), due, [], now.timestamp(), policy())
    apply_plan(session, cluster, plan, now)
    return bool(plan.completed)


def changed(cluster: Cluster) -> None:
    """Note that the locked cluster's state moved: its forecast is to be made again."""
    cluster.revision += 1


# Built once (every change records events): the statement cache then serves it. On the
# table, not the entity: the ORM would read a parameter dictionary as rows to insert.
_RECORD = insert(cast(Table, DeploymentEvent.__table__)).from_select(
    ["deployment_id", "organization_id", "cluster_id", "at", "type", "message"],
    select(
        Deployment.id,
        Deployment.organization_id,
        Deployment.cluster_id,
        bindparam("at", type_=Timestamp()),
        bindparam("type", type_=String()),
        bindparam("message", type_=String()),
    )
    .where(Deployment.id.in_(bindparam("ids", expanding=True)))
    .order_by(Deployment.id),
)


def record(
    session: Session, deployment_ids: Iterable[int], kind: str, message: str, now: datetime
) -> None:
    """Add one event of this kind to each deployment (ids ascending), with the deployment's
    organization and cluster copied in the same statement for the event feed."""
    ids = sorted(set(deployment_ids))
    if not ids:
        return
    session.execute(_RECORD, {"ids": ids, "at": now, "type": kind, "message": message})


_EVENT_ROWS = insert(cast(Table, DeploymentEvent.__table__))


def record_arrival(
    session: Session, deployment: Deployment, submitted_by: str, now: datetime
) -> None:
    """A new deployment's first events in one statement: created, and started if `arrive`
    started it (a pass that starts it later records that itself)."""
    events = [("created", f"submitted by {submitted_by}")]
    if deployment.status == RUNNING:
        events.append(("started", "started"))
    columns = {
        "deployment_id": deployment.id,
        "organization_id": deployment.organization_id,
        "cluster_id": deployment.cluster_id,
        "at": now,
    }
    session.execute(
        _EVENT_ROWS, [{**columns, "type": kind, "message": text} for kind, text in events]
    )


def finish(
    session: Session,
    cluster: Cluster,
    deployment_ids: list[int],
    status: Status,
    message: str,
    now: datetime,
) -> list[int]:
    """End these deployments of the locked cluster for good, then settle what depended on
    them; returns the ids it ended. One that another transaction ended first keeps its end."""
    if not deployment_ids:
        return []
    ended = list(
        session.scalars(
            update(Deployment)
            .where(
                Deployment.id.in_(deployment_ids),
                Deployment.cluster_id == cluster.id,
                Deployment.status.in_(UNFINISHED),
            )
            .values(
                status=status.value,
                finished_at=now,
                reason=None if status == Status.completed else message,
            )
            .returning(Deployment.id)
        )
    )
    record(session, ended, status.value, message, now)
    if ended:
        changed(cluster)
    settle_dependents(session, cluster, ended, now)
    return ended


# --- dependencies (SPEC §5 step 2) -----------------------------------------------------------


def settle_dependents(
    session: Session, cluster: Cluster, finished_ids: list[int], now: datetime
) -> None:
    """Make this cluster's waiting dependents of what finished eligible, or fail them (and
    theirs, down the chain) when a dependency died. Dependents in other clusters are
    theirs to settle: their clusters are noted for a pass right after the commit.

    A transaction settles at most `SETTLE_BATCH` deployments; the rest of a long chain is
    left to passes after the commit (their step 2 finds it), so no transaction holds the
    cluster's lock for work proportional to one tenant's data."""
    frontier = finished_ids
    while frontier:
        budget = _settle_budget(session)
        if budget <= 0:
            _note_due(session, cluster.id)
            return
        rows = session.execute(
            select(Deployment.id, Deployment.cluster_id)
            .join(DeploymentDependency, DeploymentDependency.deployment_id == Deployment.id)
            .where(
                DeploymentDependency.depends_on_id.in_(frontier),
                Deployment.status == PENDING,
                Deployment.eligible.is_(False),
            )
            .distinct()
        ).all()
        _note_due(session, *{cluster_id for _, cluster_id in rows if cluster_id != cluster.id})
        here = sorted(i for i, cluster_id in rows if cluster_id == cluster.id)
        if len(here) > budget:
            _note_due(session, cluster.id)
            here = here[:budget]
        frontier = _resolve(session, cluster, here, now)


def _settle_budget(session: Session) -> int:
    """How many more waiting deployments this transaction may settle."""
    return SETTLE_BATCH - int(session.info.get(SETTLED, 0))


def _note_due(session: Session, *cluster_ids: int) -> None:
    """Have these clusters passed over right after this transaction commits."""
    if cluster_ids:
        session.info.setdefault(CLUSTERS_DUE, set()).update(cluster_ids)


# Does any deployment of the cluster wait on dependencies? Built once (a create asks it).
_ANY_WAITING = (
    select(Deployment.id)
    .where(
        Deployment.cluster_id == bindparam("cluster_id"),
        Deployment.status == PENDING,
        Deployment.eligible.is_(False),
    )
    .limit(1)
)


def resolve_ready(session: Session, cluster: Cluster, now: datetime) -> bool:
    """Settle this cluster's waiting deployments whose dependencies all completed or one of
    which died, wherever those live; True if any changed. (Their dependencies' passes
    normally note this cluster as due; this also catches a dependency that ended while its
    dependent's create was not yet committed.)"""

    def dependency_in(statuses: tuple[str, ...]) -> Any:
        dependency = aliased(Deployment)
        return (
            select(DeploymentDependency.depends_on_id)
            .join(dependency, dependency.id == DeploymentDependency.depends_on_id)
            .where(
                DeploymentDependency.deployment_id == Deployment.id,
                dependency.status.in_(statuses),
            )
            .exists()
        )

    if session.scalar(_ANY_WAITING, {"cluster_id": cluster.id}) is None:
        return False  # nothing waits on dependencies: one index probe, the usual case
    budget = _settle_budget(session)
    ready = list(
        session.scalars(
            select(Deployment.id)
            .where(
                Deployment.cluster_id == cluster.id,
                Deployment.status == PENDING,
                Deployment.eligible.is_(False),
                or_(~dependency_in(UNFINISHED), dependency_in(DEAD)),
            )
            .order_by(Deployment.id)
            .limit(max(budget, 0) + 1)
        )
    )
    if len(ready) > budget:
        _note_due(session, cluster.id)  # more than this transaction may do: the next goes on
        ready = ready[: max(budget, 0)]
    failed = _resolve(session, cluster, ready, now)
    if failed:
        settle_dependents(session, cluster, failed, now)
    return bool(ready)


def _resolve(
    session: Session, cluster: Cluster, waiting_ids: list[int], now: datetime
) -> list[int]:
    """Apply the dependency rule to these waiting deployments of the cluster; returns those
    that failed."""
    if not waiting_ids:
        return []
    session.info[SETTLED] = int(session.info.get(SETTLED, 0)) + len(waiting_ids)
    edges = session.execute(
        select(DeploymentDependency.deployment_id, DeploymentDependency.depends_on_id).where(
            DeploymentDependency.deployment_id.in_(waiting_ids)
        )
    ).all()
    waiting: dict[int, list[int]] = {i: [] for i in waiting_ids}
    for deployment_id, depends_on_id in edges:
        waiting[deployment_id].append(depends_on_id)
    needed = {d for deps in waiting.values() for d in deps}
    statuses: dict[int, str] = {}
    finished: dict[int, datetime] = {}
    for dependency_id, status, finished_at in session.execute(
        select(Deployment.id, Deployment.status, Deployment.finished_at).where(
            Deployment.id.in_(needed)
        )
    ):
        statuses[dependency_id] = status
        if finished_at is not None:
            finished[dependency_id] = finished_at
    resolution = scheduler.resolve_dependencies(waiting, statuses)
    if resolution.eligible or resolution.failed:
        changed(cluster)
    if resolution.eligible:
        # Its wait counts from its dependencies completing (SPEC §5 step 6): the last of them.
        session.execute(
            update(Deployment),
            [
                {
                    "id": i,
                    "eligible": True,
                    "waiting_since": min(
                        now, max((finished[d] for d in waiting[i] if d in finished), default=now)
                    ),
                }
                for i in resolution.eligible
            ],
        )
    for deployment_id, reason in resolution.failed.items():
        session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id)
            .values(status=Status.failed.value, finished_at=now, reason=reason)
        )
        record(session, [deployment_id], "failed", reason, now)
    return list(resolution.failed)
