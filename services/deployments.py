"""Deployments: submit, list, read, cancel, report an end, and read a cluster's queue.

Every change schedules the cluster in the same transaction, under its row lock, so the
answer already shows the pass's decision.
"""

from __future__ import annotations

import threading
from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

import scheduler
import schemas
from database import lock_cluster
from models import (
    Cluster,
    Deployment,
    DeploymentDependency,
    DeploymentStatus,
    Organization,
    Role,
    User,
)
from services.access import cluster_in, find_cluster, organization_as_member, visible_deployment
from services.clusters import exceeding
from services.errors import Conflict, Invalid
from services.forecasting import moment_of, start_question
from services.loading import (
    DEAD,
    FINISHED_VALUES,
    PENDING,
    RUNNING,
    capacity_of,
    job_of,
    policy,
    starvation_guard,
)
from services.scheduling import (
    CLUSTERS_DUE,
    after_arrival,
    arrive,
    changed,
    finish,
    finish_due,
    record,
    record_arrival,
    schedule_locked_cluster,
)
from services.views import deployment_views, queue_of
from utils import get_settings, utcnow

# A would-wait preview simulates the cluster forward (up to the forecast's caps: about a
# second of CPU at 10,000 pending). At most this many run at once in a process, so previews
# cannot crowd out every other request; one that finds them all busy for PREVIEW_WAIT_SECONDS
# answers with the basis "unknown" rather than queue up.
PREVIEW_SIMULATIONS = threading.BoundedSemaphore(2)
PREVIEW_WAIT_SECONDS = 1.0


def create_deployment(
    session: Session, user: User, body: schemas.DeploymentCreate
) -> schemas.DeploymentRead:
    """Queue a deployment and schedule it at once: it is running or pending in the answer."""
    organization, _ = organization_as_member(session, user, body.organization_name, Role.developer)
    cluster = cluster_in(session, organization, body.cluster_name, lock=True)
    request = scheduler.Resources(body.required_cpu, body.required_ram, body.required_gpu)
    too_big = exceeding(
        request, capacity_of(cluster), "{wanted} {name} requested, {limit} in total"
    )
    if too_big:
        raise Invalid(
            f"the request exceeds the cluster's total capacity and could never run: {too_big}"
        )
    _within_pending_limit(session, organization)
    dependency_ids = sorted(set(body.depends_on))
    all_completed = _check_dependencies(session, organization.id, dependency_ids)
    now = utcnow()
    deployment = Deployment(
        cluster_id=cluster.id,
        organization_id=organization.id,
        created_by_id=user.id,
        name=body.name,
        docker_image=body.docker_image,
        required_cpu=body.required_cpu,
        required_ram=body.required_ram,
        required_gpu=body.required_gpu,
        priority=body.priority,
        status=PENDING,
        eligible=all_completed,
        duration_seconds=body.duration_seconds,
        preemption_count=0,
        created_at=now,
        waiting_since=now,
    )
    arrival = arrive(session, cluster, deployment, now)  # one that starts is written running
    session.add(deployment)
    session.flush()
    session.add_all(
        DeploymentDependency(deployment_id=deployment.id, depends_on_id=dependency_id)
        for dependency_id in dependency_ids
    )
    record_arrival(session, deployment, user.username, now)
    if not after_arrival(session, cluster, deployment, arrival, now):
        session.flush()
        session.refresh(deployment)  # the pass wrote its state with bulk updates
    if deployment.status == DeploymentStatus.failed:
        # A dependency died after the check above, in a transaction that committed since:
        # the answer is the check's, and nothing of this create is kept.
        raise Invalid(f"dependencies that can never complete: {deployment.reason}")
    known = {deployment.id: dependency_ids}
    return deployment_views(
        session, [deployment], now, depends_on=known, usernames={user.id: user.username}
    )[0]


def preview_deployment(
    session: Session, user: User, body: schemas.DeploymentCreate
) -> schemas.Preview:
    """What a create would do now, decided by the create itself inside a savepoint that is
    then rolled back: nothing is stored, and the request's transaction (with the cluster
    lock the create took) ends before any simulation. One that would wait gets the forecast's
    start for it, simulated until it starts, at most as far as the loop's forecast goes."""
    # Passes the would-be create made due in other clusters belong to it, not to this request.
    due_before = set(session.info.get(CLUSTERS_DUE, set()))
    savepoint = session.begin_nested()
    try:
        created = create_deployment(session, user, body)
        victims = sorted(
            session.scalars(
                select(Deployment.id).where(
                    Deployment.preempted_by_id == created.id,
                    Deployment.status == PENDING,
                    Deployment.started_at.is_(None),
                )
            )
        )
        question = None
        if created.status != RUNNING:
            # The state the create left, with the new deployment in it, read here and
            # forecast after the rollback: on PostgreSQL that also ends the cluster lock the
            # create took, so the simulation holds up no other request of the cluster.
            cluster = session.get_one(Cluster, session.get_one(Deployment, created.id).cluster_id)
            question = start_question(session, cluster, created.id, created.created_at)
    finally:
        savepoint.rollback()
        session.info[CLUSTERS_DUE] = due_before
    would_start = question is None
    start: datetime | None = None
    basis = "unknown"
    if question is None:
        start = created.started_at
        basis = "declared"
    else:
        # Nothing more is read or written: end the transaction before simulating, so the
        # simulation holds neither PostgreSQL's cluster lock nor SQLite's write turn.
        session.rollback()
        if PREVIEW_SIMULATIONS.acquire(timeout=PREVIEW_WAIT_SECONDS):
            try:
                estimate = question.answer()
            finally:
                PREVIEW_SIMULATIONS.release()
            start = moment_of(estimate.start_at)
            basis = estimate.basis
    return schemas.Preview(
        would_start=would_start,
        would_preempt=victims,
        queue_position=created.queue_position,
        reason=created.reason,
        estimated_start_at=start,
        estimate_basis=basis,
    )


def list_deployments(
    session: Session,
    user: User,
    cluster_name: str,
    org_name: str | None,
    status: str | None,
    page: schemas.Page,
) -> schemas.DeploymentList:
    """A page of a cluster's deployments by id, optionally only those in one state."""
    cluster = find_cluster(session, user, cluster_name, org_name)
    statement = select(Deployment).where(
        Deployment.cluster_id == cluster.id, Deployment.id > page.after
    )
    if status is not None:
        statement = statement.where(Deployment.status == status)
    # One more than the page tells whether another page follows.
    rows = list(session.scalars(statement.order_by(Deployment.id).limit(page.limit + 1)))
    more = len(rows) > page.limit
    deployments = rows[: page.limit]
    return schemas.DeploymentList(
        cluster_name=cluster.name,
        deployments=deployment_views(session, deployments, utcnow()),
        next_after=deployments[-1].id if more else None,
    )


def read_deployment(session: Session, user: User, deployment_id: int) -> schemas.DeploymentDetail:
    """One deployment with its history of events."""
    deployment = visible_deployment(session, user, deployment_id, Role.viewer)
    view = deployment_views(session, [deployment], utcnow())[0]
    events = [schemas.DeploymentEventRead.model_validate(event) for event in deployment.events]
    return schemas.DeploymentDetail(**view.model_dump(), events=events)


def read_queue(
    session: Session, user: User, cluster_name: str, org_name: str | None, page: schemas.Page
) -> schemas.Queue:
    """A page of a cluster's pending deployments in scheduling order, with why each waits."""
    cluster = find_cluster(session, user, cluster_name, org_name)
    return queue_of(session, cluster, utcnow(), offset=page.after, limit=page.limit)


def cancel_deployment(session: Session, user: User, deployment_id: int) -> schemas.DeploymentRead:
    """Cancel a pending or running deployment, free what it held and schedule the queue."""
    deployment, cluster, now, completed_some = _locked_with_due_finished(
        session, user, deployment_id
    )
    _refuse_finished(deployment)
    # The queue was stable: cancelling a waiting deployment frees nothing, so it can only
    # let others start if it was the starving one holding them back.
    guard = starvation_guard(session, cluster, now, policy())
    frees_room = (
        completed_some
        or deployment.status == RUNNING
        or (guard is not None and guard.id == deployment.id)
    )
    message = f"cancelled by {user.username}"
    if not finish(session, cluster, [deployment.id], DeploymentStatus.cancelled, message, now):
        session.refresh(deployment)
        _refuse_finished(deployment)
    if frees_room:
        schedule_locked_cluster(session, cluster, now)
    session.refresh(deployment)
    return deployment_views(session, [deployment], now)[0]


def report_status(
    session: Session, user: User, deployment_id: int, body: schemas.StatusReport
) -> schemas.DeploymentRead:
    """An external runtime reports that a running deployment completed or failed."""
    deployment, cluster, now, completed_some = _locked_with_due_finished(
        session, user, deployment_id
    )
    if deployment.status != RUNNING:
        if completed_some:
            schedule_locked_cluster(session, cluster, now)  # keep what step 1 did, then 409
        raise Conflict(
            f"deployment {deployment.id} is {deployment.status}; only a running one can finish"
        )
    message = body.message or f"reported {body.status} by {user.username}"
    finish(session, cluster, [deployment.id], DeploymentStatus(body.status), message, now)
    schedule_locked_cluster(session, cluster, now)
    session.refresh(deployment)
    return deployment_views(session, [deployment], now)[0]


# Built once: every create asks it.
_PENDING_IN_ORGANIZATION = (
    select(func.count())
    .select_from(Deployment)
    .where(Deployment.organization_id == bindparam("organization_id"), Deployment.status == PENDING)
)


def _within_pending_limit(session: Session, organization: Organization) -> None:
    """Refuse a create beyond the organization's pending limit (SPEC §7). Creates in other
    clusters of the organization run at once, so it may be passed by as many as run."""
    limit = get_settings().max_pending_per_organization
    pending = session.scalar(_PENDING_IN_ORGANIZATION, {"organization_id": organization.id})
    if (pending or 0) >= limit:
        raise Conflict(
            f"'{organization.name}' has {pending} pending deployments, the limit per "
            f"organization (HYPERVISOR_MAX_PENDING_PER_ORGANIZATION={limit})"
        )


def checkpoint_deployment(
    session: Session, user: User, deployment_id: int, body: schemas.CheckpointReport
) -> schemas.DeploymentRead:
    """The runtime says a running deployment's work so far is saved: a preemption from now
    on loses only what comes after (SPEC §5 "Checkpoints")."""
    deployment, cluster, now, completed_some = _locked_with_due_finished(
        session, user, deployment_id
    )
    if deployment.status != RUNNING:
        raise Conflict(
            f"deployment {deployment.id} is {deployment.status}; only a running one can checkpoint"
        )
    job = job_of(deployment)
    saved = job.saved_seconds + scheduler.unsaved_seconds(job, now.timestamp())
    if deployment.duration_seconds is not None:
        saved = min(saved, float(deployment.duration_seconds))
    deployment.saved_seconds = round(saved, 3)
    deployment.checkpointed_at = now
    changed(cluster)
    message = body.message or f"{deployment.saved_seconds:g} s of work saved"
    record(session, [deployment.id], "checkpointed", message, now)
    session.flush()
    if completed_some:  # room that step 1 freed goes to the queue now
        schedule_locked_cluster(session, cluster, now)
    return deployment_views(session, [deployment], now)[0]


def _locked_with_due_finished(
    session: Session, user: User, deployment_id: int
) -> tuple[Deployment, Cluster, datetime, bool]:
    """The caller's deployment with its cluster locked, after that cluster's due timed
    deployments ended (so one whose time is up reads as completed); whether any did.

    A refusal that follows rolls this back with the rest; the loop ends them within one
    interval, at the instant their time was up all the same."""
    deployment = visible_deployment(session, user, deployment_id, Role.developer)
    cluster = lock_cluster(session, deployment.cluster_id)
    now = utcnow()
    completed_some = finish_due(session, cluster, now)
    session.refresh(deployment)  # its state may have changed while we waited for the lock
    return deployment, cluster, now, completed_some


def _refuse_finished(deployment: Deployment) -> None:
    if deployment.status in FINISHED_VALUES:
        raise Conflict(f"deployment {deployment.id} is already {deployment.status}")


def _check_dependencies(session: Session, organization_id: int, ids: list[int]) -> bool:
    """Refuse unknown, foreign, failed or cancelled dependencies; True if all completed."""
    if not ids:
        return True
    found = dict(
        session.execute(
            select(Deployment.id, Deployment.status).where(
                Deployment.id.in_(ids), Deployment.organization_id == organization_id
            )
        ).all()
    )
    unknown = [str(i) for i in ids if i not in found]
    if unknown:
        raise Invalid(f"unknown dependencies: {', '.join(unknown)}")
    dead = [f"{i} ({found[i]})" for i in ids if found[i] in DEAD]
    if dead:
        raise Invalid(f"dependencies that can never complete: {', '.join(dead)}")
    return all(found[i] == DeploymentStatus.completed for i in ids)
