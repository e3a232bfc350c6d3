"""A cluster as the scheduler sees it: its shape, its running and queued deployments as
`scheduler.Job`s, the starvation guard, the queue order in SQL, and what running work
holds (the one usage aggregate, which views and metrics reuse).

Loading is read-only; `services.scheduling` runs passes over what this loads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session

import scheduler
from models import FINISHED, Cluster, Deployment
from models import DeploymentStatus as Status
from utils import get_settings

RUNNING, PENDING = Status.running.value, Status.pending.value
UNFINISHED = (PENDING, RUNNING)
FINISHED_VALUES = tuple(status.value for status in FINISHED)
DEAD = (Status.failed.value, Status.cancelled.value)


# --- queue order: defined once, as SQL ------------------------------------------------------

# SPEC §5 step 3, the same order as `scheduler.order_key`: priority descending, first
# submission, id.
QUEUE_ORDER = (Deployment.priority.desc(), Deployment.created_at, Deployment.id)


def ranked_after(priority: int, submitted_at: Any, deployment_id: int) -> ColumnElement[bool]:
    """Deployments placed after (priority, submitted_at, id) in `QUEUE_ORDER`."""
    return or_(
        Deployment.priority < priority,
        and_(Deployment.priority == priority, Deployment.created_at > submitted_at),
        and_(
            Deployment.priority == priority,
            Deployment.created_at == submitted_at,
            Deployment.id > deployment_id,
        ),
    )


def ranked_before(deployment: Deployment) -> ColumnElement[bool]:
    """Deployments placed before this one in `QUEUE_ORDER`."""
    return or_(
        Deployment.priority > deployment.priority,
        and_(
            Deployment.priority == deployment.priority,
            Deployment.created_at < deployment.created_at,
        ),
        and_(
            Deployment.priority == deployment.priority,
            Deployment.created_at == deployment.created_at,
            Deployment.id < deployment.id,
        ),
    )


# --- a cluster in the scheduler's types ------------------------------------------------------


def policy() -> scheduler.Policy:
    """The scheduling knobs of the running process."""
    settings = get_settings()
    return scheduler.Policy(
        starvation_seconds=settings.starvation_seconds,
        preemption_grace_seconds=settings.preemption_grace_seconds,
    )


# What `job_of` reads of a deployment (rows are read by name, so others may add columns).
JOB_COLUMNS = (
    Deployment.id,
    Deployment.priority,
    Deployment.required_cpu,
    Deployment.required_ram,
    Deployment.required_gpu,
    Deployment.created_at,
    Deployment.waiting_since,
    Deployment.started_at,
    Deployment.duration_seconds,
    Deployment.saved_seconds,
    Deployment.checkpointed_at,
)


def job_of(row: Any) -> scheduler.Job:
    """A deployment (a row or an ORM object with the same columns) as the scheduler sees it."""
    started_at, checkpointed_at = row.started_at, row.checkpointed_at
    return scheduler.Job(
        id=row.id,
        priority=row.priority,
        request=scheduler.Resources(row.required_cpu, row.required_ram, row.required_gpu),
        submitted_at=row.created_at.timestamp(),
        waiting_since=row.waiting_since.timestamp(),
        started_at=started_at.timestamp() if started_at is not None else None,
        duration_seconds=row.duration_seconds,
        saved_seconds=row.saved_seconds or 0.0,
        checkpointed_at=checkpointed_at.timestamp() if checkpointed_at is not None else None,
    )


def shape_of(cluster: Cluster) -> scheduler.Cluster:
    """The cluster's capacity and reservations."""
    return scheduler.Cluster(total=capacity_of(cluster), reserved=reserved_of(cluster))


def capacity_of(cluster: Cluster) -> scheduler.Resources:
    """The cluster's total capacity (what no request may ever exceed)."""
    return scheduler.Resources(cluster.total_cpu, cluster.total_ram, cluster.total_gpu)


def reserved_of(cluster: Cluster) -> scheduler.Resources:
    """What reservations hold of the cluster."""
    return scheduler.Resources(cluster.reserved_cpu, cluster.reserved_ram, cluster.reserved_gpu)


def running_summary(
    session: Session, cluster_id: int, now: datetime, rules: scheduler.Policy
) -> scheduler.RunningSummary:
    """What `scheduler.RunningSummary` keeps of the cluster's running deployments, summed by
    the database per priority level from one index (`ix_deployments_running`), and the
    few holders a reason names: a reason for a wait needs no running row."""
    running = (Deployment.cluster_id == cluster_id, Deployment.status == RUNNING)
    amounts = (Deployment.required_cpu, Deployment.required_ram, Deployment.required_gpu)
    # `now - started_at < grace`, as the scheduler counts a job in its grace period.
    in_grace = Deployment.started_at > now - timedelta(seconds=rules.preemption_grace_seconds)

    def total(amount: Any, where: ColumnElement[bool] | None = None) -> Any:
        summed = amount if where is None else case((where, amount), else_=0)
        return func.coalesce(func.sum(summed), 0)

    rows = session.execute(
        select(
            Deployment.priority,
            func.count(),
            *(total(amount) for amount in amounts),
            *(total(1, amount > 0) for amount in amounts),
            total(1, in_grace),
            *(total(amount, in_grace) for amount in amounts),
        )
        .where(*running)
        .group_by(Deployment.priority)
    ).all()
    levels = [
        scheduler.RunningLevel(
            priority=row[0],
            count=row[1],
            held=scheduler.Resources(*map(int, row[2:5])),
            holding=(int(row[5]), int(row[6]), int(row[7])),
            in_grace=int(row[8]),
            grace_held=scheduler.Resources(*map(int, row[9:12])),
            named=((), (), ()),
        )
        for row in rows
    ]
    named: dict[tuple[int, int], list[int]] = {}
    to_name = sorted(scheduler.levels_to_name(levels))
    if to_name:
        lowest = [
            select(literal_column(str(r)).label("resource"), Deployment.priority, Deployment.id)
            .where(*running, Deployment.priority == priority, amount > 0)
            .order_by(Deployment.id)
            .limit(scheduler.NAMED_PER_LEVEL)
            .subquery()
            for priority in to_name
            for r, amount in enumerate(amounts)
        ]
        # LIMIT inside each part: SQLite takes it only in a subquery of a compound select.
        holders: Any = union_all(*(select(*part.c) for part in lowest))
        for r, priority, deployment_id in session.execute(holders):
            named.setdefault((priority, r), []).append(deployment_id)

    def named_on(priority: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        cpu, ram, gpu = (tuple(sorted(named.get((priority, r), []))) for r in range(3))
        return cpu, ram, gpu

    return scheduler.RunningSummary.of_levels(
        [replace(level, named=named_on(level.priority)) for level in levels]
    )


def due_jobs(session: Session, cluster_id: int, now: datetime) -> list[scheduler.Job]:
    """The cluster's running deployments whose stored end has come (`ix_deployments_ends`).

    `ends_at` is what `scheduler.ends_at_of` gives a running deployment (set at its start; a
    checkpoint leaves it unchanged), so step 1 of a pass needs only these, not the running set.
    """
    rows = session.execute(
        select(*JOB_COLUMNS).where(
            Deployment.cluster_id == cluster_id,
            Deployment.status == RUNNING,
            Deployment.ends_at <= now,
        )
    ).all()
    return [job_of(row) for row in rows]


def top_queued_priority(session: Session, cluster_id: int) -> int | None:
    """The highest priority among the cluster's eligible pending deployments (None if none):
    one step into `ix_deployments_queue`."""
    return session.scalar(
        select(Deployment.priority)
        .where(
            Deployment.cluster_id == cluster_id,
            Deployment.status == PENDING,
            Deployment.eligible.is_(True),
        )
        .order_by(Deployment.priority.desc())
        .limit(1)
    )


def running_below(
    session: Session, cluster: Cluster, priority: int
) -> tuple[scheduler.Cluster, list[scheduler.Job]]:
    """The cluster's shape and its running jobs of priority below `priority`, with what
    running work at or above it holds added to the reservations.

    A pass in which nothing pending ranks above `priority` can never preempt that work
    (victims rank strictly below their preemptor): to the pass it is held capacity, like a
    reservation, so it costs one aggregate instead of a row each. A property test checks
    that the pass decides the same either way."""
    held = session.execute(
        select(
            func.coalesce(func.sum(Deployment.required_cpu), 0),
            func.coalesce(func.sum(Deployment.required_ram), 0),
            func.coalesce(func.sum(Deployment.required_gpu), 0),
        ).where(
            Deployment.cluster_id == cluster.id,
            Deployment.status == RUNNING,
            Deployment.priority >= priority,
        )
    ).one()
    rows = session.execute(
        select(*JOB_COLUMNS).where(
            Deployment.cluster_id == cluster.id,
            Deployment.status == RUNNING,
            Deployment.priority < priority,
        )
    ).all()
    reserved = reserved_of(cluster) + scheduler.Resources(*(int(amount) for amount in held))
    shape = scheduler.Cluster(total=capacity_of(cluster), reserved=reserved)
    return shape, [job_of(row) for row in rows]


def _queued(cluster_id: int) -> Any:
    return select(*JOB_COLUMNS).where(
        Deployment.cluster_id == cluster_id,
        Deployment.status == PENDING,
        Deployment.eligible.is_(True),
    )


def _fits(limit: scheduler.Resources) -> tuple[ColumnElement[bool], ...]:
    return (
        Deployment.required_cpu <= limit.cpu,
        Deployment.required_ram <= limit.ram,
        Deployment.required_gpu <= limit.gpu,
    )


# Statements of the create path are built once, with bound parameters: building a
# statement and its cache key costs more CPU than SQLite takes to run most of them.
_STARVING = (
    select(*JOB_COLUMNS)
    .where(
        Deployment.cluster_id == bindparam("cluster_id"),
        Deployment.status == PENDING,
        Deployment.eligible.is_(True),
        Deployment.waiting_since < bindparam("cutoff"),
        Deployment.required_cpu <= bindparam("cpu"),
        Deployment.required_ram <= bindparam("ram"),
        Deployment.required_gpu <= bindparam("gpu"),
    )
    .order_by(*QUEUE_ORDER)
    .limit(1)
)


def starvation_guard(
    session: Session, cluster: Cluster, now: datetime, policy: scheduler.Policy
) -> scheduler.Job | None:
    """The first deployment in queue order that has starved and could ever fit, if any."""
    cutoff = now - timedelta(seconds=policy.starvation_seconds)
    parameters = {
        "cluster_id": cluster.id,
        "cutoff": cutoff,
        "cpu": cluster.total_cpu,
        "ram": cluster.total_ram,
        "gpu": cluster.total_gpu,
    }
    row = session.execute(_STARVING, parameters).first()
    return job_of(row) if row is not None else None


def _in_cluster(*conditions: ColumnElement[bool]) -> Any:
    # Uncorrelated: these subqueries sit in a SELECT over the same table.
    return (
        select(Deployment.id)
        .where(Deployment.cluster_id == bindparam("cluster_id"), *conditions)
        .correlate(None)
        .exists()
    )


_BEFORE_CREATE = select(
    _in_cluster(Deployment.status == RUNNING, Deployment.ends_at <= bindparam("now")),
    _in_cluster(Deployment.status == PENDING, Deployment.eligible.is_(False)),
    func.coalesce(func.sum(Deployment.required_cpu), 0),
    func.coalesce(func.sum(Deployment.required_ram), 0),
    func.coalesce(func.sum(Deployment.required_gpu), 0),
).where(Deployment.cluster_id == bindparam("cluster_id"), Deployment.status == RUNNING)


@dataclass(frozen=True)
class BeforeCreate:
    """What a create's pass asks first, in one round trip."""

    due: bool  # a running timed deployment of the cluster has reached its end
    waiting: bool  # a deployment of the cluster waits on dependencies
    held: scheduler.Resources  # the requests of the running deployments, summed


def before_create(session: Session, cluster_id: int, now: datetime) -> BeforeCreate:
    """Whether anything is due or waits on dependencies, and what running work holds."""
    due, waiting, cpu, ram, gpu = session.execute(
        _BEFORE_CREATE, {"cluster_id": cluster_id, "now": now}
    ).one()
    return BeforeCreate(bool(due), bool(waiting), scheduler.Resources(int(cpu), int(ram), int(gpu)))


def queue_fetcher(session: Session, cluster: Cluster) -> scheduler.Fetch:
    """The scheduler's view of this cluster's queue: the next eligible pending deployments
    in order that could start under the given bounds, or that starve and fit the cluster."""

    def fetch(
        bounds: list[scheduler.Band],
        starving_before: float,
        after: scheduler.Job | None,
        limit: int | None,
    ) -> list[scheduler.Job]:
        could_start = [
            and_(Deployment.priority.between(low, high), *_fits(limit_))
            for low, high, limit_ in bounds
        ]
        starving = and_(
            Deployment.waiting_since < datetime.fromtimestamp(starving_before, UTC),
            *_fits(capacity_of(cluster)),
        )
        statement = _queued(cluster.id).where(or_(*could_start, starving))
        if after is not None:
            # The cursor may be a job this fetch never returned (a victim of this pass that
            # preempted in turn), so its exact place comes from its row, not from memory.
            submitted = select(Deployment.created_at).where(Deployment.id == after.id)
            statement = statement.where(
                ranked_after(after.priority, submitted.scalar_subquery(), after.id)
            )
        rows = session.execute(statement.order_by(*QUEUE_ORDER).limit(limit)).all()
        return [job_of(row) for row in rows]

    return fetch


@dataclass(frozen=True)
class Usage:
    """What running deployments of one cluster hold, summed from the rows themselves."""

    cpu: int = 0
    ram: int = 0
    gpu: int = 0
    running: int = 0
    pending: int = 0

    @property
    def held(self) -> scheduler.Resources:
        """The requests of the running deployments, summed."""
        return scheduler.Resources(self.cpu, self.ram, self.gpu)


def cluster_usage(session: Session, cluster_ids: list[int] | None = None) -> dict[int, Usage]:
    """Per cluster (these, or every cluster with None): requests of running deployments
    summed, and running/pending counts. Allocation is always derived from this."""
    usage = {cluster_id: Usage() for cluster_id in cluster_ids or []}
    statement = select(
        Deployment.cluster_id,
        Deployment.status,
        func.count(),
        func.coalesce(func.sum(Deployment.required_cpu), 0),
        func.coalesce(func.sum(Deployment.required_ram), 0),
        func.coalesce(func.sum(Deployment.required_gpu), 0),
    ).where(Deployment.status.in_(UNFINISHED))
    if cluster_ids is not None:
        if not cluster_ids:
            return usage
        statement = statement.where(Deployment.cluster_id.in_(cluster_ids))
    rows = session.execute(statement.group_by(Deployment.cluster_id, Deployment.status)).all()
    for cluster_id, status, count, cpu, ram, gpu in rows:
        current = usage.get(cluster_id, Usage())
        if status == RUNNING:
            usage[cluster_id] = replace(
                current, cpu=int(cpu), ram=int(ram), gpu=int(gpu), running=int(count)
            )
        else:
            usage[cluster_id] = replace(current, pending=int(count))
    return usage
