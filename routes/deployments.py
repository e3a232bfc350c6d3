"""Deployments: submit, inspect, cancel, report their end, and read a cluster's queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

import schemas
import services
from routes import (
    INVALID,
    MEMBER,
    ROLE_CHECKED,
    ClusterNamePath,
    CurrentUser,
    IdPath,
    SessionDep,
    conflict,
    invalid_or_refused,
)
from schemas import MAX_ID, NAME_PATTERN

router = APIRouter(prefix="/deployment", tags=["deployments"])

PENDING_LIMIT = conflict(
    "'acme-ml' has 10000 pending deployments, the limit per organization "
    "(HYPERVISOR_MAX_PENDING_PER_ORGANIZATION=10000)"
)
PageLimit = Annotated[int, Query(ge=1, le=1000, description="At most this many in the page")]

AMBIGUOUS_CLUSTER = invalid_or_refused(
    "several of your organizations have a cluster 'gpu-a': pass ?organization_name= to choose one"
)

OrganizationQuery = Annotated[
    str | None,
    Query(
        min_length=3,
        max_length=63,
        pattern=NAME_PATTERN,
        description="Required when several of your organizations have a cluster of this name",
    ),
]


@router.post(
    "/create",
    status_code=201,
    summary="Submit a deployment",
    responses={
        **ROLE_CHECKED,
        409: PENDING_LIMIT,
        422: invalid_or_refused(
            "the request exceeds the cluster's total capacity and could never run: "
            "8 gpu requested, 4 in total"
        ),
    },
)
def create_deployment(
    body: schemas.DeploymentCreate, user: CurrentUser, session: SessionDep
) -> schemas.DeploymentRead:
    """Submit a deployment. It is scheduled at once: `running`, or `pending` with a reason.

    422 when it could never fit the cluster or a dependency is unknown, foreign, failed or
    cancelled."""
    return services.create_deployment(session, user, body)


@router.post(
    "/preview",
    summary="Preview a deployment: would it start, whom would it preempt",
    responses={
        **ROLE_CHECKED,
        409: PENDING_LIMIT,
        422: invalid_or_refused(
            "the request exceeds the cluster's total capacity and could never run: "
            "8 gpu requested, 4 in total"
        ),
    },
)
def preview_deployment(
    body: schemas.DeploymentCreate, user: CurrentUser, session: SessionDep
) -> schemas.Preview:
    """What a create with this body would do now (start or wait, which running deployments
    it would preempt, its place and reason, and its estimated start from the forecast),
    decided by the same code as create. Nothing is stored."""
    return services.preview_deployment(session, user, body)


@router.get(
    "/list/{cluster_name}",
    summary="List a cluster's deployments",
    responses={**MEMBER, 422: AMBIGUOUS_CLUSTER},
)
def list_deployments(
    cluster_name: ClusterNamePath,
    user: CurrentUser,
    session: SessionDep,
    organization_name: OrganizationQuery = None,
    status: schemas.DeploymentStatusName | None = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="Ids after this one")] = 0,
    limit: PageLimit = 1000,
) -> schemas.DeploymentList:
    """A cluster's deployments by id, a page at a time, optionally only those with `status`."""
    page = schemas.Page(after=after, limit=limit)
    return services.list_deployments(session, user, cluster_name, organization_name, status, page)


@router.get(
    "/queue/{cluster_name}",
    summary="Show a cluster's queue: who waits, and why",
    responses={**MEMBER, 422: AMBIGUOUS_CLUSTER},
)
def queue(
    cluster_name: ClusterNamePath,
    user: CurrentUser,
    session: SessionDep,
    organization_name: OrganizationQuery = None,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Entries to skip")] = 0,
    limit: PageLimit = 1000,
) -> schemas.Queue:
    """The pending deployments in scheduling order, a page at a time, each with its place
    in the whole queue and why it waits."""
    page = schemas.Page(after=offset, limit=limit)
    return services.read_queue(session, user, cluster_name, organization_name, page)


@router.get(
    "/{deployment_id}",
    summary="Show a deployment and its history",
    responses={**MEMBER, 422: INVALID},
)
def read_deployment(
    deployment_id: IdPath, user: CurrentUser, session: SessionDep
) -> schemas.DeploymentDetail:
    """One deployment with its events (created, started, preempted, requeued, ended)."""
    return services.read_deployment(session, user, deployment_id)


@router.delete(
    "/delete/{deployment_id}",
    summary="Cancel a deployment",
    responses={**ROLE_CHECKED, 409: conflict("deployment 3 is already cancelled"), 422: INVALID},
)
def cancel_deployment(
    deployment_id: IdPath, user: CurrentUser, session: SessionDep
) -> schemas.DeploymentRead:
    """Cancel a pending or running deployment; frees its resources and schedules the queue."""
    return services.cancel_deployment(session, user, deployment_id)


@router.post(
    "/{deployment_id}/checkpoint",
    summary="Report that a deployment's work so far is saved",
    responses={
        **ROLE_CHECKED,
        409: conflict("deployment 3 is pending; only a running one can checkpoint"),
        422: INVALID,
    },
)
def checkpoint(
    deployment_id: IdPath,
    user: CurrentUser,
    session: SessionDep,
    body: schemas.CheckpointReport | None = None,
) -> schemas.DeploymentRead:
    """Report that a running deployment's work so far is saved (the body may be omitted):
    a later preemption loses only the work after this moment."""
    return services.checkpoint_deployment(
        session, user, deployment_id, body or schemas.CheckpointReport()
    )


@router.post(
    "/{deployment_id}/status",
    summary="Report that a deployment completed or failed",
    responses={
        **ROLE_CHECKED,
        409: conflict("deployment 3 is pending; only a running one can finish"),
        422: INVALID,
    },
)
def report_status(
    deployment_id: IdPath, body: schemas.StatusReport, user: CurrentUser, session: SessionDep
) -> schemas.DeploymentRead:
    """Report that a running deployment completed or failed (for an external runtime)."""
    return services.report_status(session, user, deployment_id, body)
