"""Organizations: creation, invite codes, members and their roles."""

from __future__ import annotations

from fastapi import APIRouter, Response

import schemas
import services
from routes import (
    AUTHENTICATED,
    INVALID,
    MEMBER,
    ROLE_CHECKED,
    CurrentUser,
    OrgName,
    SessionDep,
    UsernamePath,
    conflict,
)

router = APIRouter(prefix="/organization", tags=["organizations"])


@router.post(
    "/create",
    status_code=201,
    summary="Create an organization",
    responses={
        **AUTHENTICATED,
        409: conflict("organization 'acme-ml' already exists"),
        422: INVALID,
    },
)
def create_organization(
    body: schemas.OrganizationCreate, user: CurrentUser, session: SessionDep
) -> schemas.OrganizationCreated:
    """Create an organization; you become its admin and get its first invite code."""
    return services.create_organization(session, user, body)


@router.get(
    "/get-invite-code/{org_name}",
    summary="Read the invite code",
    responses={**ROLE_CHECKED, 422: INVALID},
)
def get_invite_code(
    org_name: OrgName, user: CurrentUser, session: SessionDep
) -> schemas.InviteCode:
    """Read the organization's active invite code (admins)."""
    return services.read_invite_code(session, user, org_name)


@router.post(
    "/{org_name}/invite-code/rotate",
    summary="Issue a new invite code",
    responses={**ROLE_CHECKED, 422: INVALID},
)
def rotate_invite_code(
    org_name: OrgName,
    user: CurrentUser,
    session: SessionDep,
    body: schemas.InviteRotate | None = None,
) -> schemas.InviteCode:
    """Issue a new invite code with a role and lifetime; the old code stops working at once."""
    return services.rotate_invite_code(session, user, org_name, body or schemas.InviteRotate())


@router.get(
    "/list-users/{org_name}",
    summary="List the members and their roles",
    responses={**MEMBER, 422: INVALID},
)
def list_users(org_name: OrgName, user: CurrentUser, session: SessionDep) -> schemas.MemberList:
    """List the organization's members with their roles."""
    return services.list_members(session, user, org_name)


@router.put(
    "/{org_name}/members/{username}",
    summary="Change a member's role",
    responses={
        **ROLE_CHECKED,
        409: conflict("cannot demote the last admin of 'acme-ml'"),
        422: INVALID,
    },
)
def change_role(
    org_name: OrgName,
    username: UsernamePath,
    body: schemas.RoleUpdate,
    user: CurrentUser,
    session: SessionDep,
) -> schemas.Member:
    """Change a member's role (admins). The last admin cannot be demoted."""
    return services.change_role(session, user, org_name, username, body)


@router.delete(
    "/{org_name}/members/{username}",
    status_code=204,
    summary="Remove a member, or leave",
    responses={
        **ROLE_CHECKED,
        409: conflict("cannot remove the last admin of 'acme-ml'"),
        422: INVALID,
    },
)
def remove_member(
    org_name: OrgName, username: UsernamePath, user: CurrentUser, session: SessionDep
) -> Response:
    """Remove a member (admins), or leave yourself. The last admin cannot leave."""
    services.remove_member(session, user, org_name, username)
    return Response(status_code=204)
