"""Clusters: fixed capacity, reservations and resizing."""

from __future__ import annotations

from fastapi import APIRouter

import schemas
import services
from routes import INVALID, MEMBER, ROLE_CHECKED, CurrentUser, OrgName, SessionDep, conflict

router = APIRouter(prefix="/cluster", tags=["clusters"])


@router.post(
    "/create",
    status_code=201,
    summary="Create a cluster",
    responses={
        **ROLE_CHECKED,
        409: conflict("cluster 'gpu-a' already exists in 'acme-ml'"),
        422: INVALID,
    },
)
def create_cluster(
    body: schemas.ClusterCreate, user: CurrentUser, session: SessionDep
) -> schemas.ClusterRead:
    """Create a cluster with fixed capacity in an organization you administer."""
    return services.create_cluster(session, user, body)


@router.get(
    "/list/{org_name}",
    summary="List the clusters and their capacity",
    responses={**MEMBER, 422: INVALID},
)
def list_clusters(org_name: OrgName, user: CurrentUser, session: SessionDep) -> schemas.ClusterList:
    """List an organization's clusters with their derived allocation."""
    return services.list_clusters(session, user, org_name)


@router.post(
    "/allocate",
    summary="Reserve capacity",
    responses={
        **ROLE_CHECKED,
        409: conflict("cannot reserve more than is available: 2 gpu requested, 0 available"),
        422: INVALID,
    },
)
def allocate(
    body: schemas.Reservation, user: CurrentUser, session: SessionDep
) -> schemas.ClusterRead:
    """Reserve capacity outside any deployment (maintenance, a team's hold); admins.
    Reserved capacity counts as allocated until it is released."""
    return services.reserve_capacity(session, user, body)


@router.post(
    "/release",
    summary="Release reserved capacity",
    responses={
        **ROLE_CHECKED,
        409: conflict("cannot release more than is reserved: 4 cpu to release, 0 reserved"),
        422: INVALID,
    },
)
def release(
    body: schemas.Reservation, user: CurrentUser, session: SessionDep
) -> schemas.ClusterRead:
    """Free reserved capacity and schedule the queue; admins."""
    return services.release_capacity(session, user, body)


@router.patch(
    "/resize",
    summary="Resize a cluster",
    responses={
        **ROLE_CHECKED,
        409: conflict("the new total is below what is allocated: gpu 2 < 4 allocated"),
        422: INVALID,
    },
)
def resize(
    body: schemas.ClusterResize, user: CurrentUser, session: SessionDep
) -> schemas.ClusterRead:
    """Change a cluster's totals; never below what is allocated. Growth schedules the queue."""
    return services.resize_cluster(session, user, body)
