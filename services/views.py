"""Read models: clusters with their derived allocation, deployments with their reasons and
queue positions, a cluster's queue, and the per-cluster numbers `/metrics` exposes.

Why a pending deployment waits is derived when it is read, from the cluster's live state:
after every pass the queue is stable, so the state now is the state of the latest pass, and
passes never rewrite every queued row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, aliased

import scheduler
import schemas
from models import Cluster, Deployment, DeploymentDependency, Organization, User
from services.loading import (
    PENDING,
    QUEUE_ORDER,
    UNFINISHED,
    Usage,
    cluster_usage,
    job_of,
    policy,
    ranked_before,
    running_summary,
    shape_of,
    starvation_guard,
)


def cluster_view(session: Session, cluster: Cluster) -> schemas.ClusterRead:
    """The flat cluster object of SPEC §4, allocation derived from running deployments."""
    return cluster_read(cluster, cluster_usage(session, [cluster.id])[cluster.id])


def cluster_read(cluster: Cluster, usage: Usage) -> schemas.ClusterRead:
    """The flat cluster object from the cluster's row and its usage."""
    allocated = {
        "cpu": cluster.reserved_cpu + usage.cpu,
        "ram": cluster.reserved_ram + usage.ram,
        "gpu": cluster.reserved_gpu + usage.gpu,
    }
    return schemas.ClusterRead(
        id=cluster.id,
        name=cluster.name,
        organization_name=cluster.organization.name,
        total_cpu=cluster.total_cpu,
        total_ram=cluster.total_ram,
        total_gpu=cluster.total_gpu,
        reserved_cpu=cluster.reserved_cpu,
        reserved_ram=cluster.reserved_ram,
        reserved_gpu=cluster.reserved_gpu,
        allocated_cpu=allocated["cpu"],
        allocated_ram=allocated["ram"],
        allocated_gpu=allocated["gpu"],
        available_cpu=cluster.total_cpu - allocated["cpu"],
        available_ram=cluster.total_ram - allocated["ram"],
        available_gpu=cluster.total_gpu - allocated["gpu"],
        running=usage.running,
        pending=usage.pending,
        created_at=cluster.created_at,
    )


@dataclass(frozen=True)
class ClusterGauges:
    """One cluster's numbers for `/metrics`."""

    organization: str
    cluster: str
    total: scheduler.Resources
    allocated: scheduler.Resources
    running: int
    pending: int
    preemptions: int
    lost_seconds: dict[str, float]  # unsaved work preemptions discarded, per resource


def cluster_gauges(session: Session) -> list[ClusterGauges]:
    """Every cluster's queue, running count, capacity, allocation, preemptions and the work
    they lost: read from the clusters and the unfinished deployments only, never history."""
    clusters = session.execute(
        select(Cluster, Organization.name)
        .join(Organization, Organization.id == Cluster.organization_id)
        .order_by(Cluster.id)
    ).all()
    usage = cluster_usage(session)
    gauges = []
    for cluster, organization in clusters:
        used = usage.get(cluster.id, Usage())
        shape = shape_of(cluster)
        held = shape.reserved + scheduler.Resources(used.cpu, used.ram, used.gpu)
        gauges.append(
            ClusterGauges(
                organization=organization,
                cluster=cluster.name,
                total=shape.total,
                allocated=held,
                running=used.running,
                pending=used.pending,
                preemptions=cluster.preemptions,
                lost_seconds={
                    "cpu": cluster.lost_cpu_seconds,
                    "ram": cluster.lost_ram_seconds,
                    "gpu": cluster.lost_gpu_seconds,
                },
            )
        )
    return gauges


class WaitExplainer:
    """Why each pending deployment of one cluster waits, read from the cluster's live state."""

    def __init__(self, session: Session, cluster: Cluster, now: datetime) -> None:
        self.session = session
        self.now = now
        self.shape = shape_of(cluster)
        self.policy = policy()
        self.running = running_summary(session, cluster.id, now, self.policy)
        self.guard = starvation_guard(session, cluster, now, self.policy)
        self.unfinished: dict[int, list[int]] | None = None

    def reason(self, deployment: Deployment) -> str:
        """Why this pending deployment waits, and what keeps its start unknown if it is."""
        why = self._why(deployment)
        if deployment.estimate_basis == "unknown" and deployment.estimate_reason:
            return f"{why}; start unknown: {deployment.estimate_reason}"
        start = _estimates(deployment)["estimated_start_at"]
        if start is not None:
            at = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return f"{why}; the forecast expects it to start at {at}"
        return why

    def _why(self, deployment: Deployment) -> str:
        job = job_of(deployment)
        held_back_by = None
        if self.guard is not None and deployment.eligible:
            if scheduler.order_key(job) > scheduler.order_key(self.guard):
                held_back_by = self.guard
        return scheduler.explain_wait(
            job,
            self.shape,
            self.running,
            unfinished_dependencies=self._unfinished_of(deployment),
            held_back_by=held_back_by,
            preempted_by=deployment.preempted_by_id,
            now=self.now.timestamp(),
            policy=self.policy,
            name_blockers=True,
        )

    def _unfinished_of(self, deployment: Deployment) -> list[int]:
        if deployment.eligible:
            return []
        if self.unfinished is None:
            # One query for every waiting deployment of the cluster, not one per row.
            self.unfinished = {}
            waiting = aliased(Deployment)
            rows = self.session.execute(
                select(DeploymentDependency.deployment_id, DeploymentDependency.depends_on_id)
                .join(waiting, waiting.id == DeploymentDependency.deployment_id)
                .join(Deployment, Deployment.id == DeploymentDependency.depends_on_id)
                .where(
                    waiting.cluster_id == deployment.cluster_id,
                    waiting.status == PENDING,
                    waiting.eligible.is_(False),
                    Deployment.status.in_(UNFINISHED),
                )
                .order_by(DeploymentDependency.depends_on_id)
            ).all()
            for deployment_id, depends_on_id in rows:
                self.unfinished.setdefault(deployment_id, []).append(depends_on_id)
        return self.unfinished.get(deployment.id, [])


# Built once (every answer with a deployment asks them): the statement cache serves them.
_DEPENDENCIES = (
    select(DeploymentDependency.deployment_id, DeploymentDependency.depends_on_id)
    .where(DeploymentDependency.deployment_id.in_(bindparam("ids", expanding=True)))
    .order_by(DeploymentDependency.depends_on_id)
)
_USERNAMES = select(User.id, User.username).where(User.id.in_(bindparam("ids", expanding=True)))


def deployment_views(
    session: Session,
    deployments: list[Deployment],
    now: datetime,
    *,
    depends_on: dict[int, list[int]] | None = None,
    usernames: dict[int, str] | None = None,
) -> list[schemas.DeploymentRead]:
    """The deployment objects of SPEC §4, with a handful of queries whatever their number.

    The caller may hand over what it holds already, which is then not read: `depends_on`,
    each deployment's dependency ids (ascending);
    `usernames`, their creators' names (a create knows both)."""
    if not deployments:
        return []
    ids = [d.id for d in deployments]
    if depends_on is None:
        depends_on = {i: [] for i in ids}
        for deployment_id, depends_on_id in session.execute(_DEPENDENCIES, {"ids": ids}):
            depends_on[deployment_id].append(depends_on_id)
    # Usually one cluster, already in the session (its lock was read): no query then.
    clusters = {i: session.get_one(Cluster, i) for i in {d.cluster_id for d in deployments}}
    if usernames is None:
        creators = sorted({d.created_by_id for d in deployments})
        usernames = {i: name for i, name in session.execute(_USERNAMES, {"ids": creators})}
    positions = queue_positions(session, [d for d in deployments if d.status == PENDING])
    explainers: dict[int, WaitExplainer] = {}
    views = []
    for d in deployments:
        cluster = clusters[d.cluster_id]
        reason = d.reason
        if d.status == PENDING:
            if d.cluster_id not in explainers:
                explainers[d.cluster_id] = WaitExplainer(session, cluster, now)
            reason = explainers[d.cluster_id].reason(d)
        views.append(
            schemas.DeploymentRead(
                id=d.id,
                name=d.name,
                cluster_name=cluster.name,
                organization_name=cluster.organization.name,
                docker_image=d.docker_image,
                required_cpu=d.required_cpu,
                required_ram=d.required_ram,
                required_gpu=d.required_gpu,
                priority=d.priority,
                status=d.status,
                reason=reason,
                queue_position=positions.get(d.id),
                depends_on=depends_on[d.id],
                duration_seconds=d.duration_seconds,
                preemption_count=d.preemption_count,
                saved_seconds=d.saved_seconds,
                checkpointed_at=d.checkpointed_at,
                **_estimates(d),
                created_by=usernames[d.created_by_id],
                created_at=d.created_at,
                started_at=d.started_at,
                finished_at=d.finished_at,
            )
        )
    return views


def _basis(deployment: Deployment) -> Any:
    """The forecast's basis while unfinished (null before its first forecast)."""
    return deployment.estimate_basis if deployment.status in UNFINISHED else None


def _estimates(deployment: Deployment) -> dict[str, Any]:
    """The forecast's fields of SPEC §4: start while pending, end while unfinished."""
    basis = _basis(deployment)
    known = basis in ("declared", "history")
    return {
        "estimated_start_at": deployment.estimated_start_at
        if known and deployment.status == PENDING
        else None,
        "estimated_end_at": deployment.estimated_end_at if known else None,
        "estimate_basis": basis,
    }


def queue_positions(session: Session, pending: list[Deployment]) -> dict[int, int]:
    """1-based places in their clusters' queues: an indexed count for one deployment, one
    ordered id scan per cluster for many."""
    if len(pending) == 1:
        d = pending[0]
        ahead = session.scalar(
            select(func.count())
            .select_from(Deployment)
            .where(
                Deployment.cluster_id == d.cluster_id,
                Deployment.status == PENDING,
                ranked_before(d),
            )
        )
        return {d.id: (ahead or 0) + 1}
    positions: dict[int, int] = {}
    for cluster_id in {d.cluster_id for d in pending}:
        ordered = session.scalars(
            select(Deployment.id)
            .where(Deployment.cluster_id == cluster_id, Deployment.status == PENDING)
            .order_by(*QUEUE_ORDER)
        )
        positions.update({i: place for place, i in enumerate(ordered, start=1)})
    return positions


def queue_of(
    session: Session, cluster: Cluster, now: datetime, *, offset: int = 0, limit: int = 1000
) -> schemas.Queue:
    """A page of the cluster's pending deployments in scheduling order, with why each
    waits; it costs the page, not the queue (an indexed count gives the total)."""
    total = session.scalar(
        select(func.count())
        .select_from(Deployment)
        .where(Deployment.cluster_id == cluster.id, Deployment.status == PENDING)
    )
    pending = list(
        session.scalars(
            select(Deployment)
            .where(Deployment.cluster_id == cluster.id, Deployment.status == PENDING)
            .order_by(*QUEUE_ORDER)
            .offset(offset)
            .limit(limit)
        ).all()
    )
    explainer = WaitExplainer(session, cluster, now)
    entries = [
        schemas.QueueEntry(
            deployment_id=deployment.id,
            name=deployment.name,
            position=position,
            priority=deployment.priority,
            required_cpu=deployment.required_cpu,
            required_ram=deployment.required_ram,
            required_gpu=deployment.required_gpu,
            reason=explainer.reason(deployment),
            waiting_seconds=round((now - deployment.waiting_since).total_seconds(), 3),
            eligible=deployment.eligible,
            preemption_count=deployment.preemption_count,
            submitted_at=deployment.created_at,
            estimated_start_at=_estimates(deployment)["estimated_start_at"],
            estimate_basis=_basis(deployment),
        )
        for position, deployment in enumerate(pending, start=offset + 1)
    ]
    return schemas.Queue(cluster_name=cluster.name, total=total or 0, queue=entries)
