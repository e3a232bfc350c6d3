"""Clusters: creation, listing, reservations (allocate / release) and resizing."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import scheduler
import schemas
from models import Cluster, Role, User
from services.access import locked_cluster, organization_as_member
from services.errors import Conflict, flush_or_conflict
from services.loading import Usage, cluster_usage, reserved_of
from services.scheduling import changed, schedule_locked_cluster
from services.views import cluster_read, cluster_view
from utils import get_settings


def exceeding(wanted: scheduler.Resources, limit: scheduler.Resources, template: str) -> str:
    """`template` filled in for every resource where `wanted` exceeds `limit`, joined by
    "; " (empty when nothing exceeds): the detail of a refusal, naming each shortfall."""
    return "; ".join(
        template.format(name=name, wanted=getattr(wanted, name), limit=getattr(limit, name))
        for name in scheduler.RESOURCE_NAMES
        if getattr(wanted, name) > getattr(limit, name)
    )


def create_cluster(
    session: Session, user: User, body: schemas.ClusterCreate
) -> schemas.ClusterRead:
    """Create a cluster of fixed capacity in an organization the caller administers."""
    # The organization's row lock makes the limit exact when admins create at once.
    organization, _ = organization_as_member(
        session, user, body.organization_name, Role.admin, lock=True
    )
    limit = get_settings().max_clusters_per_organization
    count = session.scalar(
        select(func.count()).select_from(Cluster).where(Cluster.organization_id == organization.id)
    )
    if (count or 0) >= limit:
        raise Conflict(
            f"'{organization.name}' has {count} clusters, the limit per organization "
            f"(HYPERVISOR_MAX_CLUSTERS_PER_ORGANIZATION={limit})"
        )
    message = f"cluster '{body.name}' already exists in '{organization.name}'"
    taken = session.scalar(
        select(Cluster.id).where(
            Cluster.organization_id == organization.id,
            func.lower(Cluster.name) == body.name.lower(),
        )
    )
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
    flush_or_conflict(session, message)
    return cluster_view(session, cluster)


def list_clusters(session: Session, user: User, org_name: str) -> schemas.ClusterList:
    """Every cluster of an organization the caller belongs to, by id."""
    organization, _ = organization_as_member(session, user, org_name, Role.viewer)
    clusters = session.scalars(
        select(Cluster).where(Cluster.organization_id == organization.id).order_by(Cluster.id)
    ).all()
    usage = cluster_usage(session, [cluster.id for cluster in clusters])
    views = [cluster_read(cluster, usage.get(cluster.id, Usage())) for cluster in clusters]
    return schemas.ClusterList(organization_name=organization.name, clusters=views)


def reserve_capacity(
    session: Session, user: User, body: schemas.Reservation
) -> schemas.ClusterRead:
    """Hold capacity outside any deployment; refused beyond what is available."""
    cluster = locked_cluster(session, user, body.organization_name, body.cluster_name, Role.admin)
    view = cluster_view(session, cluster)
    available = scheduler.Resources(view.available_cpu, view.available_ram, view.available_gpu)
    short = exceeding(_amount(body), available, "{wanted} {name} requested, {limit} available")
    if short:
        raise Conflict(f"cannot reserve more than is available: {short}")
    changed(cluster)
    cluster.reserved_cpu += body.cpu
    cluster.reserved_ram += body.ram
    cluster.reserved_gpu += body.gpu
    session.flush()
    return cluster_view(session, cluster)


def release_capacity(
    session: Session, user: User, body: schemas.Reservation
) -> schemas.ClusterRead:
    """Free reserved capacity and let waiting deployments use it."""
    cluster = locked_cluster(session, user, body.organization_name, body.cluster_name, Role.admin)
    over = exceeding(
        _amount(body), reserved_of(cluster), "{wanted} {name} to release, {limit} reserved"
    )
    if over:
        raise Conflict(f"cannot release more than is reserved: {over}")
    changed(cluster)
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
    cluster = locked_cluster(session, user, body.organization_name, body.cluster_name, Role.admin)
    view = cluster_view(session, cluster)
    allocated = scheduler.Resources(view.allocated_cpu, view.allocated_ram, view.allocated_gpu)
    new_total = scheduler.Resources(body.total_cpu, body.total_ram, body.total_gpu)
    below = exceeding(allocated, new_total, "{name} {limit} < {wanted} allocated")
    if below:
        raise Conflict(f"the new total is below what is allocated: {below}")
    changed(cluster)
    cluster.total_cpu = body.total_cpu
    cluster.total_ram = body.total_ram
    cluster.total_gpu = body.total_gpu
    session.flush()
    schedule_locked_cluster(session, cluster)
    return cluster_view(session, cluster)


def _amount(body: schemas.Reservation) -> scheduler.Resources:
    return scheduler.Resources(body.cpu, body.ram, body.gpu)
