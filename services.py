"""Business rules and transactions: who may do what, and what each change does to state.

Services speak the domain, never HTTP: they raise `DomainError` subclasses that `main.py`
maps to status codes, so the scheduler loop and tests can call them without a request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import schemas
from database import lock_cluster
from models import Cluster, Membership, Organization, Role, User
from utils import (
    dummy_password_hash,
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
    short = [
        f"{amount} {name} requested, {available} available"
        for name, amount, available in (
            ("cpu", body.cpu, view.available_cpu),
            ("ram", body.ram, view.available_ram),
            ("gpu", body.gpu, view.available_gpu),
        )
        if amount > available
    ]
    if short:
        raise Conflict("cannot reserve more than is available: " + "; ".join(short))
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
    over = [
        f"{amount} {name} to release, {reserved} reserved"
        for name, amount, reserved in (
            ("cpu", body.cpu, cluster.reserved_cpu),
            ("ram", body.ram, cluster.reserved_ram),
            ("gpu", body.gpu, cluster.reserved_gpu),
        )
        if amount > reserved
    ]
    if over:
        raise Conflict("cannot release more than is reserved: " + "; ".join(over))
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
    below = [
        f"{name} {new_total} < {allocated} allocated"
        for name, new_total, allocated in (
            ("cpu", body.total_cpu, view.allocated_cpu),
            ("ram", body.total_ram, view.allocated_ram),
            ("gpu", body.total_gpu, view.allocated_gpu),
        )
        if new_total < allocated
    ]
    if below:
        raise Conflict("the new total is below what is allocated: " + "; ".join(below))
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
    # Deployments arrive with the scheduler; until then nothing runs.
    return {cluster_id: Usage() for cluster_id in cluster_ids}


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


def schedule_locked_cluster(session: Session, cluster: Cluster) -> None:
    """Run a scheduling pass over a cluster whose row this transaction has locked."""
    # The scheduler arrives with deployments; capacity changes already call this seam.
