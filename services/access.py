"""The one place that answers "may this caller see or do this": membership, roles, and
finding an organization, cluster or deployment as the caller may see it.

Everything a tenant reads or changes is found through these functions, so a new service
cannot forget the membership check. Not a member reads as "not found" (404), so nobody
learns another tenant's names.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from database import lock_cluster
from models import Cluster, Deployment, Membership, Organization, Role, User
from services.errors import Forbidden, Invalid, NotFound

ROLE_RANK = {Role.viewer: 0, Role.developer: 1, Role.admin: 2}


def has_role(role: str, minimum: Role) -> bool:
    """True if `role` is `minimum` or above it."""
    return ROLE_RANK[Role(role)] >= ROLE_RANK[minimum]


def _require(role: str, minimum: Role, where: str = "") -> None:
    if not has_role(role, minimum):
        place = f" in '{where}'" if where else ""
        raise Forbidden(f"this needs the {minimum.value} role{place}; you are {role}")


def membership_of(session: Session, user_id: int, organization_id: int) -> Membership | None:
    """The user's membership of the organization, if any."""
    return session.get(Membership, (user_id, organization_id))


# Statements of every request, built once: building one costs more CPU than running it.
_ORGANIZATION_AS_MEMBER = (
    select(Organization, Membership)
    .outerjoin(
        Membership,
        (Membership.organization_id == Organization.id)
        & (Membership.user_id == bindparam("user_id")),
    )
    .where(func.lower(Organization.name) == bindparam("name"))
)
_CLUSTER_LOCKED = (
    select(Cluster)
    .where(
        Cluster.organization_id == bindparam("organization_id"),
        func.lower(Cluster.name) == bindparam("name"),
    )
    .with_for_update()
    .execution_options(populate_existing=True)
)


def organization_as_member(
    session: Session, user: User, org_name: str, minimum: Role, *, lock: bool = False
) -> tuple[Organization, Membership]:
    """The organization and the caller's membership, once the caller's role is enough.

    `lock` serialises membership changes, so two admins demoting each other cannot both
    succeed.
    """
    named = func.lower(Organization.name) == org_name.lower()
    organization: Organization | None
    membership: Membership | None
    if lock:
        organization = session.scalar(select(Organization).where(named).with_for_update())
        membership = (
            membership_of(session, user.id, organization.id) if organization is not None else None
        )
    else:  # one round trip for both
        parameters = {"name": org_name.lower(), "user_id": user.id}
        row = session.execute(_ORGANIZATION_AS_MEMBER, parameters).first()
        organization, membership = (row[0], row[1]) if row is not None else (None, None)
    if organization is None or membership is None:
        raise NotFound(f"organization '{org_name}' not found")
    _require(membership.role, minimum, organization.name)
    return organization, membership


def member_named(
    session: Session, organization: Organization, username: str
) -> tuple[User, Membership]:
    """A member of the organization by username (any case), else NotFound."""
    row = session.execute(
        select(User, Membership)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.organization_id == organization.id)
        .where(func.lower(User.username) == username.lower())
    ).first()
    if row is None:
        raise NotFound(f"'{username}' is not a member of '{organization.name}'")
    return row[0], row[1]


def cluster_in(
    session: Session, organization: Organization, cluster_name: str, *, lock: bool = False
) -> Cluster:
    """The organization's cluster of that name (any case), else NotFound; with `lock`, read
    under the row lock of `database.lock_cluster` in the same statement."""
    if lock:
        parameters = {"organization_id": organization.id, "name": cluster_name.lower()}
        cluster = session.scalar(_CLUSTER_LOCKED, parameters)
    else:
        cluster = session.scalar(
            select(Cluster).where(
                Cluster.organization_id == organization.id,
                func.lower(Cluster.name) == cluster_name.lower(),
            )
        )
    if cluster is None:
        raise NotFound(f"cluster '{cluster_name}' not found in '{organization.name}'")
    return cluster


def find_cluster(
    session: Session,
    user: User,
    cluster_name: str,
    org_name: str | None,
    minimum: Role = Role.viewer,
) -> Cluster:
    """The cluster a bare name means among the caller's organizations: with several
    organizations owning that name, `org_name` must choose one (422 without it)."""
    if org_name is not None:
        organization, _ = organization_as_member(session, user, org_name, minimum)
        return cluster_in(session, organization, cluster_name)
    rows = session.execute(
        select(Cluster, Membership.role)
        .join(Membership, Membership.organization_id == Cluster.organization_id)
        .where(Membership.user_id == user.id, func.lower(Cluster.name) == cluster_name.lower())
    ).all()
    if not rows:
        raise NotFound(f"cluster '{cluster_name}' not found")
    if len(rows) > 1:
        raise Invalid(
            f"several of your organizations have a cluster '{cluster_name}': "
            "pass ?organization_name= to choose one"
        )
    cluster, role = rows[0]
    _require(role, minimum)
    return cluster


def locked_cluster(
    session: Session, user: User, org_name: str, cluster_name: str, minimum: Role
) -> Cluster:
    """The caller's cluster, its row locked for a change to its allocation."""
    organization, _ = organization_as_member(session, user, org_name, minimum)
    return lock_cluster(session, cluster_in(session, organization, cluster_name).id)


def deployment_in(session: Session, organization: Organization, deployment_id: int) -> Deployment:
    """The organization's deployment of that id, else NotFound."""
    deployment = session.scalar(
        select(Deployment).where(
            Deployment.id == deployment_id, Deployment.organization_id == organization.id
        )
    )
    if deployment is None:
        raise NotFound(f"deployment {deployment_id} not found in '{organization.name}'")
    return deployment


def visible_deployment(
    session: Session, user: User, deployment_id: int, minimum: Role
) -> Deployment:
    """A deployment of one of the caller's organizations, once the caller's role is enough."""
    row = session.execute(
        select(Deployment, Membership.role)
        .join(Membership, Membership.organization_id == Deployment.organization_id)
        .where(Deployment.id == deployment_id, Membership.user_id == user.id)
    ).first()
    if row is None:
        raise NotFound(f"deployment {deployment_id} not found")
    deployment, role = row
    _require(role, minimum)
    return deployment
