"""Business rules and transactions: who may do what, and what each change does to state.

Services speak the domain, never HTTP: they raise `DomainError` subclasses that `main.py`
maps to status codes, so the scheduler loop and tests can call them without a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

import scheduler
import schemas
from database import lock_cluster, try_lock_cluster
from metrics import PASS_SECONDS
from models import (
    FINISHED,
    Cluster,
    Deployment,
    DeploymentDependency,
    DeploymentEvent,
    DeploymentStatus,
    Membership,
    Organization,
    Role,
    User,
)
from utils import (
    dummy_password_hash,
    get_settings,
    hash_password,
    new_invite_code,
    utcnow,
    verify_password,
)

logger = logging.getLogger(__name__)

DEFAULT_INVITE_HOURS = 168
ROLE_RANK = {Role.viewer: 0, Role.developer: 1, Role.admin: 2}


# --- domain errors ---------------------------------------------------------------------------


class DomainError(Exception):
    """A request that the rules refuse; `main.py` maps each kind to one status code."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthorized(DomainError):
    """No valid credentials."""


class Forbidden(DomainError):
    """A member whose role is too low for the action."""


class NotFound(DomainError):
    """Does not exist, or the caller may not know that it exists."""


class Conflict(DomainError):
    """Duplicate name or a state that does not allow the change."""


class Invalid(DomainError):
    """Well-formed input that the current state makes meaningless (422)."""


class BadRequest(DomainError):
    """A request that cannot be honoured as sent (400), e.g. an unknown invite code."""


@contextmanager
def transaction(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed at the end of the block, rolled back on an error."""
    with session_factory.begin() as session:
        yield session


# --- users -----------------------------------------------------------------------------------


def _lower(name: str) -> str:
    return name.lower()


def register_user(session: Session, body: schemas.UserRegister) -> schemas.UserRead:
    """Create an account; usernames are unique ignoring case."""
    taken = session.scalar(
        select(User.id).where(func.lower(User.username) == _lower(body.username))
    )
    if taken is not None:
        raise Conflict(f"username '{body.username}' is already taken")
    user = User(username=body.username, password_hash=hash_password(body.password))
    session.add(user)
    _flush_or_conflict(session, f"username '{body.username}' is already taken")
    return schemas.UserRead.model_validate(user)


def authenticate(session: Session, username: str, password: str) -> User:
    """The user with these credentials, else Unauthorized (without saying which part is wrong)."""
    if len(password) > schemas.MAX_PASSWORD_LENGTH or "\x00" in username:
        # No account can have these; hashing megabytes of hostile input is a cheap DoS, and
        # PostgreSQL refuses NUL in a query.
        raise Unauthorized("incorrect username or password")
    user = session.scalar(select(User).where(func.lower(User.username) == _lower(username)))
    if user is None:
        verify_password(password, dummy_password_hash())  # same cost as a wrong password
        raise Unauthorized("incorrect username or password")
    if not verify_password(password, user.password_hash):
        raise Unauthorized("incorrect username or password")
    return user


def user_by_id(session: Session, user_id: int) -> User:
    """The user a token names, else Unauthorized."""
    user = session.get(User, user_id)
    if user is None:
        raise Unauthorized("the token's user no longer exists")
    return user


def describe_me(session: Session, user: User) -> schemas.Me:
    """The caller with every organization they belong to and their role in it."""
    rows = session.execute(
        select(Organization.name, Membership.role)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.user_id == user.id)
        .order_by(Organization.name)
    ).all()
    organizations = [schemas.OrganizationRole(name=name, role=role) for name, role in rows]
    return schemas.Me(id=user.id, username=user.username, organizations=organizations)


def join_organization(session: Session, user: User, code: str) -> schemas.JoinResult:
    """Join the organization whose active invite code this is, with the code's role."""
    organization = session.scalar(select(Organization).where(Organization.invite_code == code))
    if organization is None or organization.invite_expires_at <= utcnow():
        raise BadRequest("invalid or expired invite code")
    if _find_membership(session, user.id, organization.id) is not None:
        raise Conflict(f"you are already a member of '{organization.name}'")
    session.add(
        Membership(user_id=user.id, organization_id=organization.id, role=organization.invite_role)
    )
    _flush_or_conflict(session, f"you are already a member of '{organization.name}'")
    return schemas.JoinResult(organization=organization.name, role=organization.invite_role)


# --- organizations ---------------------------------------------------------------------------


def create_organization(
    session: Session, user: User, body: schemas.OrganizationCreate
) -> schemas.OrganizationCreated:
    """Create an organization with its creator as admin and a fresh developer invite code."""
    taken = session.scalar(
        select(Organization.id).where(func.lower(Organization.name) == _lower(body.name))
    )
    if taken is not None:
        raise Conflict(f"organization '{body.name}' already exists")
    organization = Organization(
        name=body.name,
        invite_code=new_invite_code(),
        invite_role=Role.developer.value,
        invite_expires_at=utcnow() + timedelta(hours=DEFAULT_INVITE_HOURS),
    )
    session.add(organization)
    _flush_or_conflict(session, f"organization '{body.name}' already exists")
    session.add(Membership(user_id=user.id, organization_id=organization.id, role=Role.admin.value))
    session.flush()
    return schemas.OrganizationCreated.model_validate(organization)


def read_invite_code(session: Session, user: User, org_name: str) -> schemas.InviteCode:
    """The organization's active invite code; admins only."""
    organization, _ = _membership_at_least(session, user, org_name, Role.admin)
    return _invite_of(organization)


def rotate_invite_code(
    session: Session, user: User, org_name: str, body: schemas.InviteRotate
) -> schemas.InviteCode:
    """Replace the invite code; the previous one stops working in this transaction."""
    organization, _ = _membership_at_least(session, user, org_name, Role.admin)
    organization.invite_code = new_invite_code()
    organization.invite_role = body.role
    organization.invite_expires_at = utcnow() + timedelta(hours=body.expires_in_hours)
    session.flush()
    logger.info("invite code rotated organization_id=%s", organization.id)
    return _invite_of(organization)


def list_members(session: Session, user: User, org_name: str) -> schemas.MemberList:
    """Every member of an organization the caller belongs to."""
    organization, _ = _membership_at_least(session, user, org_name, Role.viewer)
    rows = session.execute(
        select(User.username, Membership.role, Membership.joined_at)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.organization_id == organization.id)
        .order_by(Membership.joined_at, User.id)
    ).all()
    members = [schemas.Member(username=u, role=r, joined_at=j) for u, r, j in rows]
    return schemas.MemberList(organization=organization.name, users=members)


def change_role(
    session: Session, user: User, org_name: str, username: str, body: schemas.RoleUpdate
) -> schemas.Member:
    """Give a member another role; the last admin cannot be demoted."""
    organization, _ = _membership_at_least(session, user, org_name, Role.admin, lock=True)
    target_user, target = _member_named(session, organization, username)
    if target.role == Role.admin and body.role != Role.admin:
        _ensure_another_admin(session, organization, "demote")
    target.role = body.role
    session.flush()
    return schemas.Member(
        username=target_user.username, role=target.role, joined_at=target.joined_at
    )


def remove_member(session: Session, user: User, org_name: str, username: str) -> None:
    """Remove a member (admins) or leave (the member itself); the last admin stays."""
    organization, own = _membership_at_least(session, user, org_name, Role.viewer, lock=True)
    leaving = username.lower() == user.username.lower()
    if not leaving and own.role != Role.admin:
        raise Forbidden("only an admin can remove other members")
    _, target = _member_named(session, organization, username)
    if target.role == Role.admin:
        _ensure_another_admin(session, organization, "remove")
    session.delete(target)
    session.flush()


def _invite_of(organization: Organization) -> schemas.InviteCode:
    return schemas.InviteCode(
        invite_code=organization.invite_code,
        role=organization.invite_role,
        expires_at=organization.invite_expires_at,
    )


def _find_membership(session: Session, user_id: int, organization_id: int) -> Membership | None:
    return session.get(Membership, (user_id, organization_id))


def _membership_at_least(
    session: Session, user: User, org_name: str, minimum: Role, *, lock: bool = False
) -> tuple[Organization, Membership]:
    """The organization and the caller's membership, checking the caller's role.

    Not a member reads as "not found", so nobody learns another tenant's names. `lock`
    serialises membership changes, so two admins demoting each other cannot both succeed.
    """
    statement = select(Organization).where(func.lower(Organization.name) == _lower(org_name))
    if lock:
        statement = statement.with_for_update()
    organization = session.scalar(statement)
    membership = (
        _find_membership(session, user.id, organization.id) if organization is not None else None
    )
    if organization is None or membership is None:
        raise NotFound(f"organization '{org_name}' not found")
    if ROLE_RANK[Role(membership.role)] < ROLE_RANK[minimum]:
        raise Forbidden(
            f"this needs the {minimum.value} role in '{organization.name}'; "
            f"you are {membership.role}"
        )
    return organization, membership


def _member_named(
    session: Session, organization: Organization, username: str
) -> tuple[User, Membership]:
    row = session.execute(
        select(User, Membership)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.organization_id == organization.id)
        .where(func.lower(User.username) == _lower(username))
    ).first()
    if row is None:
        raise NotFound(f"'{username}' is not a member of '{organization.name}'")
    return row[0], row[1]


def _ensure_another_admin(session: Session, organization: Organization, action: str) -> None:
    admins = session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.organization_id == organization.id, Membership.role == Role.admin.value)
    )
    if (admins or 0) <= 1:
        raise Conflict(f"cannot {action} the last admin of '{organization.name}'")


def _flush_or_conflict(session: Session, message: str) -> None:
    """Flush, turning a unique-constraint race lost to another request into a Conflict."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as error:
        raise Conflict(message) from error


def _amount(body: schemas.Reservation) -> scheduler.Resources:
    return scheduler.Resources(body.cpu, body.ram, body.gpu)


def _exceeding(wanted: scheduler.Resources, limit: scheduler.Resources, template: str) -> str:
    """`template` filled in for every resource where `wanted` exceeds `limit`, joined by
    "; " (empty when nothing exceeds): the detail of a refusal, naming each shortfall."""
    return "; ".join(
        template.format(name=name, wanted=getattr(wanted, name), limit=getattr(limit, name))
        for name in scheduler.RESOURCE_NAMES
        if getattr(wanted, name) > getattr(limit, name)
    )


# --- clusters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What running deployments of one cluster hold, summed from the rows themselves."""

    cpu: int = 0
    ram: int = 0
    gpu: int = 0
    running: int = 0
    pending: int = 0


def create_cluster(
    session: Session, user: User, body: schemas.ClusterCreate
) -> schemas.ClusterRead:
    """Create a cluster of fixed capacity in an organization the caller administers."""
    organization, _ = _membership_at_least(session, user, body.organization_name, Role.admin)
    taken = session.scalar(
        select(Cluster.id).where(
            Cluster.organization_id == organization.id,
            func.lower(Cluster.name) == _lower(body.name),
        )
    )
    message = f"cluster '{body.name}' already exists in '{organization.name}'"
    if taken is not None:
        raise Conflict(message)
    cluster = Cluster(
        organization=organization,
        name=body.name,
        total_cpu=body.total_cpu,
        total_ram=body.total_ram,
        total_gpu=body.total_gpu,
        reserved_cpu=0,
        reserved_ram=0,
        reserved_gpu=0,
    )
    session.add(cluster)
    _flush_or_conflict(session, message)
    return cluster_view(session, cluster)


def list_clusters(session: Session, user: User, org_name: str) -> schemas.ClusterList:
    """Every cluster of an organization the caller belongs to, by id."""
    organization, _ = _membership_at_least(session, user, org_name, Role.viewer)
    clusters = session.scalars(
        select(Cluster).where(Cluster.organization_id == organization.id).order_by(Cluster.id)
    ).all()
    usage = cluster_usage(session, [cluster.id for cluster in clusters])
    views = [_view(cluster, usage.get(cluster.id, Usage())) for cluster in clusters]
    return schemas.ClusterList(organization_name=organization.name, clusters=views)


def reserve_capacity(
    session: Session, user: User, body: schemas.Reservation
) -> schemas.ClusterRead:
    """Hold capacity outside any deployment; refused beyond what is available."""
    cluster = _locked_cluster(session, user, body.organization_name, body.cluster_name, Role.admin)
    view = cluster_view(session, cluster)
    available = scheduler.Resources(view.available_cpu, view.available_ram, view.available_gpu)
    short = _exceeding(_amount(body), available, "{wanted} {name} requested, {limit} available")
    if short:
        raise Conflict(f"cannot reserve more than is available: {short}")
    cluster.reserved_cpu += body.cpu
    cluster.reserved_ram += body.ram
    cluster.reserved_gpu += body.gpu
    session.flush()
    return cluster_view(session, cluster)


def release_capacity(
    session: Session, user: User, body: schemas.Reservation
) -> schemas.ClusterRead:
    """Free reserved capacity and let waiting deployments use it."""
    cluster = _locked_cluster(session, user, body.organization_name, body.cluster_name, Role.admin)
    reserved = _shape(cluster).reserved
    over = _exceeding(_amount(body), reserved, "{wanted} {name} to release, {limit} reserved")
    if over:
        raise Conflict(f"cannot release more than is reserved: {over}")
    cluster.reserved_cpu -= body.cpu
    cluster.reserved_ram -= body.ram
    cluster.reserved_gpu -= body.gpu
    session.flush()
    schedule_locked_cluster(session, cluster)
    return cluster_view(session, cluster)


def resize_cluster(
    session: Session, user: User, body: schemas.ClusterResize
) -> schemas.ClusterRead:
    """Change a cluster's totals; never below what is allocated now."""
    cluster = _locked_cluster(session, user, body.organization_name, body.cluster_name, Role.admin)
    view = cluster_view(session, cluster)
    allocated = scheduler.Resources(view.allocated_cpu, view.allocated_ram, view.allocated_gpu)
    new_total = scheduler.Resources(body.total_cpu, body.total_ram, body.total_gpu)
    below = _exceeding(allocated, new_total, "{name} {limit} < {wanted} allocated")
    if below:
        raise Conflict(f"the new total is below what is allocated: {below}")
    cluster.total_cpu = body.total_cpu
    cluster.total_ram = body.total_ram
    cluster.total_gpu = body.total_gpu
    session.flush()
    schedule_locked_cluster(session, cluster)
    return cluster_view(session, cluster)


def find_cluster(
    session: Session,
    user: User,
    cluster_name: str,
    org_name: str | None,
    minimum: Role = Role.viewer,
) -> Cluster:
    """The cluster a bare name means among the caller's organizations (SPEC §1)."""
    if org_name is not None:
        organization, _ = _membership_at_least(session, user, org_name, minimum)
        return _cluster_in(session, organization, cluster_name)
    rows = session.execute(
        select(Cluster, Membership.role)
        .join(Membership, Membership.organization_id == Cluster.organization_id)
        .where(Membership.user_id == user.id, func.lower(Cluster.name) == _lower(cluster_name))
    ).all()
    if not rows:
        raise NotFound(f"cluster '{cluster_name}' not found")
    if len(rows) > 1:
        raise Invalid(
            f"several of your organizations have a cluster '{cluster_name}': "
            "pass ?organization_name= to choose one"
        )
    cluster, role = rows[0]
    if ROLE_RANK[Role(role)] < ROLE_RANK[minimum]:
        raise Forbidden(f"this needs the {minimum.value} role; you are {role}")
    return cluster


def _cluster_in(session: Session, organization: Organization, cluster_name: str) -> Cluster:
    cluster = session.scalar(
        select(Cluster).where(
            Cluster.organization_id == organization.id,
            func.lower(Cluster.name) == _lower(cluster_name),
        )
    )
    if cluster is None:
        raise NotFound(f"cluster '{cluster_name}' not found in '{organization.name}'")
    return cluster


def _locked_cluster(
    session: Session, user: User, org_name: str, cluster_name: str, minimum: Role
) -> Cluster:
    organization, _ = _membership_at_least(session, user, org_name, minimum)
    return lock_cluster(session, _cluster_in(session, organization, cluster_name).id)


def cluster_usage(session: Session, cluster_ids: list[int]) -> dict[int, Usage]:
    """Per cluster: requests of running deployments summed, and running/pending counts."""
    usage = {cluster_id: Usage() for cluster_id in cluster_ids}
    if not cluster_ids:
        return usage
    rows = session.execute(
        select(
            Deployment.cluster_id,
            Deployment.status,
            func.count(),
            func.coalesce(func.sum(Deployment.required_cpu), 0),
            func.coalesce(func.sum(Deployment.required_ram), 0),
            func.coalesce(func.sum(Deployment.required_gpu), 0),
        )
        .where(
            Deployment.cluster_id.in_(cluster_ids),
            Deployment.status.in_([DeploymentStatus.running.value, DeploymentStatus.pending.value]),
        )
        .group_by(Deployment.cluster_id, Deployment.status)
    ).all()
    for cluster_id, status, count, cpu, ram, gpu in rows:
        current = usage[cluster_id]
        if status == DeploymentStatus.running:
            usage[cluster_id] = replace(
                current, cpu=int(cpu), ram=int(ram), gpu=int(gpu), running=int(count)
            )
        else:
            usage[cluster_id] = replace(current, pending=int(count))
    return usage


def cluster_view(session: Session, cluster: Cluster) -> schemas.ClusterRead:
    """The flat cluster object of SPEC §4, allocation derived from running deployments."""
    return _view(cluster, cluster_usage(session, [cluster.id])[cluster.id])


def _view(cluster: Cluster, usage: Usage) -> schemas.ClusterRead:
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


# --- deployments -----------------------------------------------------------------------------

# How many queued deployments a pass loads at a time. After a pass the queue is stable, so a
# pass only ever needs the few that could start; this bounds the work when many suddenly can.
CANDIDATE_BATCH = 64
RUNNING, PENDING = DeploymentStatus.running.value, DeploymentStatus.pending.value
FINISHED_VALUES = tuple(status.value for status in FINISHED)


def scheduling_policy(session: Session) -> scheduler.Policy:
    """The scheduling knobs of the running process."""
    settings = get_settings()
    return scheduler.Policy(
        starvation_seconds=settings.starvation_seconds,
        preemption_grace_seconds=settings.preemption_grace_seconds,
    )


def create_deployment(
    session: Session, user: User, body: schemas.DeploymentCreate
) -> schemas.DeploymentRead:
    """Queue a deployment and schedule it at once: it is running or pending in the answer."""
    organization, _ = _membership_at_least(session, user, body.organization_name, Role.developer)
    cluster = lock_cluster(session, _cluster_in(session, organization, body.cluster_name).id)
    request = scheduler.Resources(body.required_cpu, body.required_ram, body.required_gpu)
    too_big = _exceeding(request, _capacity(cluster), "{wanted} {name} requested, {limit} in total")
    if too_big:
        raise Invalid(
            f"the request exceeds the cluster's total capacity and could never run: {too_big}"
        )
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
    session.add(deployment)
    session.flush()
    session.add_all(
        DeploymentDependency(deployment_id=deployment.id, depends_on_id=dependency_id)
        for dependency_id in dependency_ids
    )
    _record(session, [deployment.id], "created", f"submitted by {user.username}", now)
    running = _schedule_new(session, cluster, deployment, now) if all_completed else None
    session.flush()
    session.refresh(deployment)  # the pass wrote its state with bulk updates
    known = {cluster.id: running} if running is not None else None
    return deployment_views(session, [deployment], now, known)[0]


def list_deployments(
    session: Session,
    user: User,
    cluster_name: str,
    org_name: str | None,
    status: str | None,
) -> schemas.DeploymentList:
    """A cluster's deployments by id, optionally only those in one state."""
    cluster = find_cluster(session, user, cluster_name, org_name)
    statement = select(Deployment).where(Deployment.cluster_id == cluster.id)
    if status is not None:
        statement = statement.where(Deployment.status == status)
    deployments = list(session.scalars(statement.order_by(Deployment.id)).all())
    return schemas.DeploymentList(
        cluster_name=cluster.name, deployments=deployment_views(session, deployments, utcnow())
    )


def read_deployment(session: Session, user: User, deployment_id: int) -> schemas.DeploymentDetail:
    """One deployment with its history of events."""
    deployment = _visible_deployment(session, user, deployment_id, Role.viewer)
    view = deployment_views(session, [deployment], utcnow())[0]
    events = [schemas.DeploymentEventRead.model_validate(event) for event in deployment.events]
    return schemas.DeploymentDetail(**view.model_dump(), events=events)


def cancel_deployment(session: Session, user: User, deployment_id: int) -> schemas.DeploymentRead:
    """Cancel a pending or running deployment, free what it held and schedule the queue."""
    deployment = _visible_deployment(session, user, deployment_id, Role.developer)
    cluster = lock_cluster(session, deployment.cluster_id)
    session.refresh(deployment)  # its state may have changed while we waited for the lock
    if deployment.status in FINISHED_VALUES:
        raise Conflict(f"deployment {deployment.id} is already {deployment.status}")
    now = utcnow()
    # The queue was stable: cancelling a waiting deployment frees nothing, so it can only
    # let others start if it was the starving one holding them back.
    guard = _starvation_guard(session, cluster, now, scheduling_policy(session))
    freed = deployment.status == RUNNING or (guard is not None and guard.id == deployment.id)
    _finish(
        session, [deployment.id], DeploymentStatus.cancelled, f"cancelled by {user.username}", now
    )
    if freed:
        schedule_locked_cluster(session, cluster, now)
    session.refresh(deployment)
    return deployment_views(session, [deployment], now)[0]


def report_status(
    session: Session, user: User, deployment_id: int, body: schemas.StatusReport
) -> schemas.DeploymentRead:
    """An external runtime reports that a running deployment completed or failed."""
    deployment = _visible_deployment(session, user, deployment_id, Role.developer)
    cluster = lock_cluster(session, deployment.cluster_id)
    session.refresh(deployment)
    if deployment.status != RUNNING:
        raise Conflict(
            f"deployment {deployment.id} is {deployment.status}; only a running one can finish"
        )
    now = utcnow()
    message = body.message or f"reported {body.status} by {user.username}"
    _finish(session, [deployment.id], DeploymentStatus(body.status), message, now)
    schedule_locked_cluster(session, cluster, now)
    session.refresh(deployment)
    return deployment_views(session, [deployment], now)[0]


def read_queue(
    session: Session, user: User, cluster_name: str, org_name: str | None
) -> schemas.Queue:
    """Every pending deployment of a cluster in scheduling order, with why it waits."""
    cluster = find_cluster(session, user, cluster_name, org_name)
    now = utcnow()
    pending = list(
        session.scalars(
            select(Deployment)
            .where(Deployment.cluster_id == cluster.id, Deployment.status == PENDING)
            .order_by(*QUEUE_ORDER)
        ).all()
    )
    explainer = _WaitExplainer(session, cluster, now)
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
        )
        for position, deployment in enumerate(pending, start=1)
    ]
    return schemas.Queue(cluster_name=cluster.name, queue=entries)


QUEUE_ORDER = (Deployment.priority.desc(), Deployment.created_at, Deployment.id)


def _visible_deployment(
    session: Session, user: User, deployment_id: int, minimum: Role
) -> Deployment:
    row = session.execute(
        select(Deployment, Membership.role)
        .join(Membership, Membership.organization_id == Deployment.organization_id)
        .where(Deployment.id == deployment_id, Membership.user_id == user.id)
    ).first()
    if row is None:
        raise NotFound(f"deployment {deployment_id} not found")
    deployment, role = row
    if ROLE_RANK[Role(role)] < ROLE_RANK[minimum]:
        raise Forbidden(f"this needs the {minimum.value} role; you are {role}")
    return deployment


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
    dead = [f"{i} ({found[i]})" for i in ids if found[i] in ("failed", "cancelled")]
    if dead:
        raise Invalid(f"dependencies that can never complete: {', '.join(dead)}")
    return all(found[i] == DeploymentStatus.completed for i in ids)


def _record(
    session: Session, deployment_ids: Iterable[int], kind: str, message: str, now: datetime
) -> None:
    session.add_all(
        DeploymentEvent(deployment_id=i, at=now, type=kind, message=message) for i in deployment_ids
    )


def _finish(
    session: Session,
    deployment_ids: list[int],
    status: DeploymentStatus,
    message: str,
    now: datetime,
) -> None:
    """End deployments for good, then settle what depended on them."""
    if not deployment_ids:
        return
    session.execute(
        update(Deployment)
        .where(Deployment.id.in_(deployment_ids))
        .values(
            status=status.value,
            finished_at=now,
            reason=None if status == DeploymentStatus.completed else message,
        )
    )
    _record(session, deployment_ids, status.value, message, now)
    _settle_dependents(session, deployment_ids, now)


def _settle_dependents(session: Session, finished_ids: list[int], now: datetime) -> None:
    """Make waiting dependents eligible, or fail them (and theirs) when a dependency died.

    Dependents may sit in other clusters; changing a pending deployment's eligibility moves
    no capacity, so no cluster lock is needed, only the dependents' own row locks (taken
    before reading their dependencies, so two dependencies finishing at once cannot both
    miss that the other one is done). Their clusters' next pass starts them.
    """
    frontier = finished_ids
    while frontier:
        dependents = list(
            session.scalars(
                select(Deployment.id)
                .join(DeploymentDependency, DeploymentDependency.deployment_id == Deployment.id)
                .where(
                    DeploymentDependency.depends_on_id.in_(frontier),
                    Deployment.status == PENDING,
                    Deployment.eligible.is_(False),
                )
                .order_by(Deployment.id)
                .with_for_update()
            ).unique()
        )
        frontier = _resolve(session, dependents, now)


def _resolve(session: Session, waiting_ids: list[int], now: datetime) -> list[int]:
    """Apply the dependency rule to these waiting deployments; returns those that failed."""
    if not waiting_ids:
        return []
    edges = session.execute(
        select(DeploymentDependency.deployment_id, DeploymentDependency.depends_on_id).where(
            DeploymentDependency.deployment_id.in_(waiting_ids)
        )
    ).all()
    waiting: dict[int, list[int]] = {i: [] for i in waiting_ids}
    for deployment_id, depends_on_id in edges:
        waiting[deployment_id].append(depends_on_id)
    needed = {d for deps in waiting.values() for d in deps}
    statuses = dict(
        session.execute(
            select(Deployment.id, Deployment.status).where(Deployment.id.in_(needed))
        ).all()
    )
    resolution = scheduler.resolve_dependencies(waiting, statuses)
    if resolution.eligible:
        session.execute(
            update(Deployment)
            .where(Deployment.id.in_(resolution.eligible))
            .values(eligible=True, waiting_since=now)
        )
    for deployment_id, reason in resolution.failed.items():
        session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id)
            .values(status=DeploymentStatus.failed.value, finished_at=now, reason=reason)
        )
        _record(session, [deployment_id], "failed", reason, now)
    return list(resolution.failed)


# --- scheduling passes -----------------------------------------------------------------------

_JOB_COLUMNS = (
    Deployment.id,
    Deployment.priority,
    Deployment.required_cpu,
    Deployment.required_ram,
    Deployment.required_gpu,
    Deployment.created_at,
    Deployment.waiting_since,
    Deployment.started_at,
    Deployment.duration_seconds,
)


def _job(row: Any) -> scheduler.Job:
    started_at = row.started_at
    return scheduler.Job(
        id=row.id,
        priority=row.priority,
        request=scheduler.Resources(row.required_cpu, row.required_ram, row.required_gpu),
        submitted_at=row.created_at.timestamp(),
        waiting_since=row.waiting_since.timestamp(),
        started_at=started_at.timestamp() if started_at is not None else None,
        duration_seconds=row.duration_seconds,
    )


def _shape(cluster: Cluster) -> scheduler.Cluster:
    return scheduler.Cluster(
        total=scheduler.Resources(cluster.total_cpu, cluster.total_ram, cluster.total_gpu),
        reserved=scheduler.Resources(
            cluster.reserved_cpu, cluster.reserved_ram, cluster.reserved_gpu
        ),
    )


def _running_jobs(session: Session, cluster_id: int) -> list[scheduler.Job]:
    rows = session.execute(
        select(*_JOB_COLUMNS).where(
            Deployment.cluster_id == cluster_id, Deployment.status == RUNNING
        )
    ).all()
    return [_job(row) for row in rows]


def _queued(cluster_id: int) -> Any:
    return select(*_JOB_COLUMNS).where(
        Deployment.cluster_id == cluster_id,
        Deployment.status == PENDING,
        Deployment.eligible.is_(True),
    )


def _starvation_guard(
    session: Session, cluster: Cluster, now: datetime, policy: scheduler.Policy
) -> scheduler.Job | None:
    """The first deployment in queue order that has starved and could ever fit, if any."""
    cutoff = now - timedelta(seconds=policy.starvation_seconds)
    row = session.execute(
        _queued(cluster.id)
        .where(Deployment.waiting_since < cutoff, *_fits(_capacity(cluster)))
        .order_by(*QUEUE_ORDER)
        .limit(1)
    ).first()
    return _job(row) if row is not None else None


def _capacity(cluster: Cluster) -> scheduler.Resources:
    """The cluster's total capacity (what no request may ever exceed)."""
    return scheduler.Resources(cluster.total_cpu, cluster.total_ram, cluster.total_gpu)


def _fits(limit: scheduler.Resources) -> tuple[Any, ...]:
    return (
        Deployment.required_cpu <= limit.cpu,
        Deployment.required_ram <= limit.ram,
        Deployment.required_gpu <= limit.gpu,
    )


def _fetcher(session: Session, cluster: Cluster) -> scheduler.Fetch:
    """The scheduler's view of this cluster's queue: the next eligible pending deployments
    in order that could start under the given bounds, or that starve and fit the cluster."""
    submitted: dict[int, datetime] = {}  # id -> exact submission time, for the cursor

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
            *_fits(_capacity(cluster)),
        )
        statement = _queued(cluster.id).where(or_(*could_start, starving))
        if after is not None:
            at = submitted[after.id]
            statement = statement.where(
                or_(
                    Deployment.priority < after.priority,
                    and_(Deployment.priority == after.priority, Deployment.created_at > at),
                    and_(
                        Deployment.priority == after.priority,
                        Deployment.created_at == at,
                        Deployment.id > after.id,
                    ),
                )
            )
        rows = session.execute(statement.order_by(*QUEUE_ORDER).limit(limit)).all()
        submitted.update((row.id, row.created_at) for row in rows)
        return [_job(row) for row in rows]

    return fetch


def schedule_locked_cluster(
    session: Session, cluster: Cluster, now: datetime | None = None
) -> None:
    """A full scheduling pass (SPEC §5) over a cluster whose row this transaction has locked.

    It finishes elapsed deployments, resolves dependencies (so dependents of what just
    finished can start in this very pass), then sweeps the queue. The queue is stable after
    every pass, so instead of loading it whole the scheduler asks for the few deployments
    that could start now, a batch at a time.
    """
    started = time.perf_counter()
    now = now or utcnow()
    policy = scheduling_policy(session)
    shape = _shape(cluster)
    finishing = scheduler.run_pass(
        shape, _running_jobs(session, cluster.id), [], now.timestamp(), policy
    )
    running = _apply(session, finishing, now)
    _resolve_ready(session, cluster.id, now)
    plan = scheduler.run_pass_incrementally(
        shape,
        running,
        now.timestamp(),
        _fetcher(session, cluster),
        policy,
        batch_size=CANDIDATE_BATCH,
    )
    _apply(session, plan, now)
    PASS_SECONDS.observe(time.perf_counter() - started)


def run_periodic_passes(session_factory: sessionmaker[Session]) -> int:
    """One tick of the background loop: a pass over every cluster that no other transaction
    is passing over right now, each in its own transaction; returns how many ran.

    One failing cluster is logged and skipped; it never stops the others or the loop.
    """
    with session_factory() as session:
        cluster_ids = list(session.scalars(select(Cluster.id).order_by(Cluster.id)))
    passes = 0
    for cluster_id in cluster_ids:
        try:
            with session_factory.begin() as session:
                cluster = try_lock_cluster(session, cluster_id)
                if cluster is not None:
                    schedule_locked_cluster(session, cluster)
                    passes += 1
        except Exception:
            logger.exception("scheduling pass failed cluster_id=%s", cluster_id)
    return passes


def _schedule_new(
    session: Session, cluster: Cluster, deployment: Deployment, now: datetime
) -> list[scheduler.Job] | None:
    """Schedule one new eligible deployment: the queue was stable, so only it can start.

    Falls back to a full pass when its start changed more than itself (a preemption frees
    capacity others may use; an elapsed deployment was finished on the way). Returns the
    cluster's running jobs afterwards when it knows them without asking again.
    """
    started = time.perf_counter()
    session.flush()
    policy = scheduling_policy(session)
    shape = _shape(cluster)
    candidates = [_job(deployment)]
    guard = _starvation_guard(session, cluster, now, policy)
    if guard is not None and guard.id != deployment.id:
        candidates.append(guard)
    running = _running_jobs(session, cluster.id)
    plan = scheduler.run_pass(shape, running, candidates, now.timestamp(), policy)
    running_after = _apply(session, plan, now)
    PASS_SECONDS.observe(time.perf_counter() - started)
    if plan.preempting or plan.completed:
        schedule_locked_cluster(session, cluster, now)
        return None
    return running_after


def _resolve_ready(session: Session, cluster_id: int, now: datetime) -> None:
    """Step 2 of a pass: settle this cluster's waiting deployments whose dependencies all
    completed or one of which died (normally done when the dependency finished; this
    catches a dependency that ended while its dependent's create was not yet committed)."""

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

    ready = list(
        session.scalars(
            select(Deployment.id).where(
                Deployment.cluster_id == cluster_id,
                Deployment.status == PENDING,
                Deployment.eligible.is_(False),
                or_(
                    ~dependency_in((PENDING, RUNNING)),
                    dependency_in(
                        (DeploymentStatus.failed.value, DeploymentStatus.cancelled.value)
                    ),
                ),
            )
        )
    )
    failed = _resolve(session, ready, now)
    if failed:
        _settle_dependents(session, failed, now)


def _apply(session: Session, plan: scheduler.Plan, now: datetime) -> list[scheduler.Job]:
    """Write a plan's decisions and their events; returns the running jobs after it."""
    if plan.completed:
        _finish(
            session, plan.completed, DeploymentStatus.completed, "ran for its full duration", now
        )
    for victim, preemptor in plan.preempted.items():
        session.execute(
            update(Deployment)
            .where(Deployment.id == victim)
            .values(
                status=PENDING,
                started_at=None,
                waiting_since=now,
                preempted_by_id=preemptor,
                preemption_count=Deployment.preemption_count + 1,
            )
        )
        _record(session, [victim], "preempted", f"preempted by deployment {preemptor}", now)
        _record(session, [victim], "requeued", "back in the queue at its original place", now)
    if plan.started:
        session.execute(
            update(Deployment)
            .where(Deployment.id.in_(plan.started))
            .values(status=RUNNING, started_at=now)
        )
        _record(session, plan.started, "started", "started", now)
    if plan.started or plan.preempted or plan.completed:
        logger.debug(
            "pass applied started=%s preempted=%s completed=%s",
            len(plan.started),
            len(plan.preempted),
            len(plan.completed),
        )
    return plan.running


# --- how deployments read --------------------------------------------------------------------


class _WaitExplainer:
    """Why each pending deployment of one cluster waits, read from the cluster's live state.

    After every pass the queue is stable, so the state now is the state of the latest pass;
    deriving reasons on read keeps passes from rewriting every queued row.
    """

    def __init__(
        self,
        session: Session,
        cluster: Cluster,
        now: datetime,
        running: list[scheduler.Job] | None = None,
    ) -> None:
        self.session = session
        self.now = now
        self.shape = _shape(cluster)
        self.policy = scheduling_policy(session)
        self.running = running if running is not None else _running_jobs(session, cluster.id)
        self.guard = _starvation_guard(session, cluster, now, self.policy)
        self.unfinished: dict[int, list[int]] | None = None

    def reason(self, deployment: Deployment) -> str:
        job = _job(deployment)
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
                    Deployment.status.in_([PENDING, RUNNING]),
                )
                .order_by(DeploymentDependency.depends_on_id)
            ).all()
            for deployment_id, depends_on_id in rows:
                self.unfinished.setdefault(deployment_id, []).append(depends_on_id)
        return self.unfinished.get(deployment.id, [])


def deployment_views(
    session: Session,
    deployments: list[Deployment],
    now: datetime,
    running: dict[int, list[scheduler.Job]] | None = None,
) -> list[schemas.DeploymentRead]:
    """The deployment objects of SPEC §4, with a handful of queries whatever their number.

    `running` may hand over clusters' running jobs that the caller already holds."""
    if not deployments:
        return []
    ids = [d.id for d in deployments]
    depends_on: dict[int, list[int]] = {i: [] for i in ids}
    for deployment_id, depends_on_id in session.execute(
        select(DeploymentDependency.deployment_id, DeploymentDependency.depends_on_id)
        .where(DeploymentDependency.deployment_id.in_(ids))
        .order_by(DeploymentDependency.depends_on_id)
    ):
        depends_on[deployment_id].append(depends_on_id)
    clusters = {
        cluster.id: cluster
        for cluster in session.scalars(
            select(Cluster).where(Cluster.id.in_({d.cluster_id for d in deployments}))
        )
    }
    usernames = dict(
        session.execute(
            select(User.id, User.username).where(
                User.id.in_({d.created_by_id for d in deployments})
            )
        ).all()
    )
    positions = _queue_positions(session, [d for d in deployments if d.status == PENDING])
    explainers: dict[int, _WaitExplainer] = {}
    views = []
    for d in deployments:
        cluster = clusters[d.cluster_id]
        reason = d.reason
        if d.status == PENDING:
            if d.cluster_id not in explainers:
                explainers[d.cluster_id] = _WaitExplainer(
                    session, cluster, now, (running or {}).get(d.cluster_id)
                )
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
                created_by=usernames[d.created_by_id],
                created_at=d.created_at,
                started_at=d.started_at,
                finished_at=d.finished_at,
            )
        )
    return views


def _queue_positions(session: Session, pending: list[Deployment]) -> dict[int, int]:
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
                or_(
                    Deployment.priority > d.priority,
                    and_(Deployment.priority == d.priority, Deployment.created_at < d.created_at),
                    and_(
                        Deployment.priority == d.priority,
                        Deployment.created_at == d.created_at,
                        Deployment.id < d.id,
                    ),
                ),
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
