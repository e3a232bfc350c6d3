"""Organizations: creation, the invite code, members and their roles."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import schemas
from models import Membership, MembershipEnd, Organization, Role, User
from services.access import member_named, organization_as_member
from services.errors import Conflict, Forbidden, flush_or_conflict
from utils import new_invite_code, utcnow

logger = logging.getLogger(__name__)

DEFAULT_INVITE_HOURS = 168


def create_organization(
    session: Session, user: User, body: schemas.OrganizationCreate
) -> schemas.OrganizationCreated:
    """Create an organization with its creator as admin and a fresh developer invite code."""
    message = f"organization '{body.name}' already exists"
    taken = session.scalar(
        select(Organization.id).where(func.lower(Organization.name) == body.name.lower())
    )
    if taken is not None:
        raise Conflict(message)
    now = utcnow()
    organization = Organization(
        name=body.name,
        invite_code=new_invite_code(),
        invite_role=Role.developer.value,
        invite_issued_at=now,
        invite_expires_at=now + timedelta(hours=DEFAULT_INVITE_HOURS),
    )
    session.add(organization)
    flush_or_conflict(session, message)
    session.add(Membership(user_id=user.id, organization_id=organization.id, role=Role.admin.value))
    session.flush()
    return schemas.OrganizationCreated.model_validate(organization)


def read_invite_code(session: Session, user: User, org_name: str) -> schemas.InviteCode:
    """The organization's active invite code; admins only."""
    organization, _ = organization_as_member(session, user, org_name, Role.admin)
    return _invite_of(organization)


def rotate_invite_code(
    session: Session, user: User, org_name: str, body: schemas.InviteRotate
) -> schemas.InviteCode:
    """Replace the invite code; the previous one stops working in this transaction."""
    organization, _ = organization_as_member(session, user, org_name, Role.admin)
    now = utcnow()
    organization.invite_code = new_invite_code()
    organization.invite_role = body.role
    organization.invite_issued_at = now
    organization.invite_expires_at = now + timedelta(hours=body.expires_in_hours)
    session.flush()
    logger.info("invite code rotated organization_id=%s", organization.id)
    return _invite_of(organization)


def list_members(session: Session, user: User, org_name: str) -> schemas.MemberList:
    """Every member of an organization the caller belongs to."""
    organization, _ = organization_as_member(session, user, org_name, Role.viewer)
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
    organization, _ = organization_as_member(session, user, org_name, Role.admin, lock=True)
    target_user, target = member_named(session, organization, username)
    if target.role == Role.admin and body.role != Role.admin:
        _ensure_another_admin(session, organization, "demote")
    target.role = body.role
    session.flush()
    return schemas.Member(
        username=target_user.username, role=target.role, joined_at=target.joined_at
    )


def remove_member(session: Session, user: User, org_name: str, username: str) -> None:
    """Remove a member (admins) or leave (the member itself); the last admin stays. The
    moment is kept: only an invite code issued after it lets them back in."""
    organization, own = organization_as_member(session, user, org_name, Role.viewer, lock=True)
    leaving = username.lower() == user.username.lower()
    if not leaving and own.role != Role.admin:
        raise Forbidden("only an admin can remove other members")
    _, target = member_named(session, organization, username)
    if target.role == Role.admin:
        _ensure_another_admin(session, organization, "remove")
    session.delete(target)
    session.merge(
        MembershipEnd(user_id=target.user_id, organization_id=organization.id, ended_at=utcnow())
    )
    session.flush()


def _invite_of(organization: Organization) -> schemas.InviteCode:
    return schemas.InviteCode(
        invite_code=organization.invite_code,
        role=organization.invite_role,
        expires_at=organization.invite_expires_at,
    )


def _ensure_another_admin(session: Session, organization: Organization, action: str) -> None:
    admins = session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.organization_id == organization.id, Membership.role == Role.admin.value)
    )
    if (admins or 0) <= 1:
        raise Conflict(f"cannot {action} the last admin of '{organization.name}'")
