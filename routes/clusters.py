"""Clusters: fixed capacity, reservations and resizing."""

from __future__ import annotations

from fastapi import APIRouter

import schemas
import services
from routes import CONFLICT, MEMBER, ROLE_CHECKED, CurrentUser, OrgName, SessionDep

router = APIRouter(prefix="/cluster", tags=["clusters"])


@router.post("/create", status_code=201, responses={**ROLE_CHECKED, 409: CONFLICT})
def create_cluster(
    body: schemas.ClusterCreate, user: CurrentUser, session: SessionDep
) -> schemas.ClusterRead:
    """Create a cluster with fixed capacity in an organization you administer."""
    return services.create_cluster(session, user, body)


@router.get("/list/{org_name}", responses=MEMBER)
def list_clusters(org_name: OrgName, user: CurrentUser, session: SessionDep) -> schemas.ClusterList:
    """List an organization's clusters with their derived allocation."""
    return services.list_clusters(session, user, org_name)


@router.post("/allocate", responses={**ROLE_CHECKED, 409: CONFLICT})
def allocate(
    body: schemas.Reservation, user: CurrentUser, session: SessionDep
) -> schemas.ClusterRead:
    """Reserve capacity outside any deployment (maintenance, a team's hold); admins."""
    return services.reserve_capacity(session, user, body)


@router.post("/release", responses={**ROLE_CHECKED, 409: CONFLICT})
def release(
    body: schemas.Reservation, user: CurrentUser, session: SessionDep
) -> schemas.ClusterRead:
    """Free reserved capacity and schedule the queue; admins."""
    return services.release_capacity(session, user, body)


@router.patch("/resize", responses={**ROLE_CHECKED, 409: CONFLICT})
def resize(
    body: schemas.ClusterResize, user: CurrentUser, session: SessionDep
) -> schemas.ClusterRead:
    """Change a cluster's totals; never below what is allocated. Growth schedules the queue."""
    return services.resize_cluster(session, user, body)
