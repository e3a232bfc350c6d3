"""Read models of the dashboard (`ui/`): a person's organizations with their clusters, one
cluster's page (capacity, queue, running list, the timeline of its recent runs) and one
deployment's page, each with whether the caller may change things there.

A module of its own because these pages combine several read models in one transaction and
add one the API does not have: the timeline, rebuilt from a cluster's deployment events.
Every read goes through the same services and access checks as the API, so a page can show
nothing the API would refuse (another tenant's names are NotFound here as well).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import schemas
from models import Deployment, DeploymentEvent, Role, User
from services.access import cluster_in, has_role, organization_as_member
from services.clusters import list_clusters
from services.deployments import list_deployments, read_deployment
from services.loading import FINISHED_VALUES, RUNNING
from services.users import describe_me
from services.views import cluster_view, queue_of

# A page shows at most this many queued and running deployments (with the totals).
PAGE_ROWS = 200
# The timeline is rebuilt from at most this many of the cluster's latest events, and shows
# the runs of at most this many deployments, those active most recently.
TIMELINE_EVENTS = 2000
TIMELINE_DEPLOYMENTS = 20
# A run ends with one of these events (a preemption puts it back in the queue).
RUN_ENDS = ("preempted", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class OrganizationSummary:
    """One of the caller's organizations, the caller's role in it and its clusters."""

    name: str
    role: str
    clusters: list[schemas.ClusterRead]


def organizations_of(session: Session, user: User) -> list[OrganizationSummary]:
    """Every organization the caller belongs to, by name, with its clusters."""
    return [
        OrganizationSummary(
            name=membership.name,
            role=membership.role,
            clusters=list_clusters(session, user, membership.name).clusters,
        )
        for membership in describe_me(session, user).organizations
    ]


def organization_summary(session: Session, user: User, org_name: str) -> OrganizationSummary:
    """One organization of the caller's, with its clusters; NotFound for anyone else's."""
    organization, membership = organization_as_member(session, user, org_name, Role.viewer)
    clusters = list_clusters(session, user, organization.name).clusters
    return OrganizationSummary(organization.name, membership.role, clusters)


@dataclass(frozen=True)
class Run:
    """One run of a deployment: from a start to the event that ended it (None: running)."""

    deployment_id: int
    name: str | None
    priority: int
    started_at: datetime
    ended_at: datetime | None
    outcome: str  # "running", or the type of the event that ended it (RUN_ENDS)
    message: str


@dataclass(frozen=True)
class Timeline:
    """The recent runs of a cluster's deployments between `start` and `end` (now)."""

    start: datetime
    end: datetime
    runs: list[Run]

    def deployment_ids(self) -> list[int]:
        """The deployments shown, one row each, in the order they first started."""
        return list(dict.fromkeys(run.deployment_id for run in self.runs))


@dataclass(frozen=True)
class ClusterPage:
    """What the cluster page shows, and whether the caller may submit there."""

    organization: str
    role: str
    may_deploy: bool
    cluster: schemas.ClusterRead
    queue: schemas.Queue
    running: list[schemas.DeploymentRead]
    running_total: int
    timeline: Timeline
    last_event_id: int  # a live stream of the page continues after this event


def cluster_page(
    session: Session, user: User, org_name: str, cluster_name: str, now: datetime
) -> ClusterPage:
    """One cluster of the caller's organization as the dashboard shows it."""
    organization, membership = organization_as_member(session, user, org_name, Role.viewer)
    cluster = cluster_in(session, organization, cluster_name)
    queue = queue_of(session, cluster, now, limit=PAGE_ROWS)
    running = list_deployments(
        session,
        user,
        cluster.name,
        organization.name,
        RUNNING,
        schemas.Page(limit=PAGE_ROWS),
    ).deployments
    view = cluster_view(session, cluster)
    last_event_id = session.scalar(
        select(func.max(DeploymentEvent.id)).where(DeploymentEvent.cluster_id == cluster.id)
    )
    return ClusterPage(
        organization=organization.name,
        role=membership.role,
        may_deploy=has_role(membership.role, Role.developer),
        cluster=view,
        queue=queue,
        running=running,
        running_total=view.running,
        timeline=_timeline(session, cluster.id, now),
        last_event_id=last_event_id or 0,
    )


def _timeline(session: Session, cluster_id: int, now: datetime) -> Timeline:
    """The cluster's recent runs, rebuilt from its latest start and end events (one index
    range read, newest first), plus the current run of every running deployment whose start
    is older than those events."""
    events = list(
        session.execute(
            select(DeploymentEvent.deployment_id, DeploymentEvent.at, DeploymentEvent.type)
            .add_columns(DeploymentEvent.message)
            .where(
                DeploymentEvent.cluster_id == cluster_id,
                DeploymentEvent.type.in_(("started", *RUN_ENDS)),
            )
            .order_by(DeploymentEvent.id.desc())
            .limit(TIMELINE_EVENTS)
        ).all()
    )
    events.reverse()
    open_runs: dict[int, datetime] = {}
    closed: list[tuple[int, datetime, datetime, str, str]] = []
    for deployment_id, at, kind, message in events:
        if kind == "started":
            open_runs[deployment_id] = at
        elif deployment_id in open_runs:  # an end without its start in range is not shown
            closed.append((deployment_id, open_runs.pop(deployment_id), at, kind, message))
    # Running deployments are the most recently active (now), newest id first among them, so
    # at most TIMELINE_DEPLOYMENTS of them can be shown: read no more, whatever the cluster runs.
    running = session.execute(
        select(Deployment.id, Deployment.started_at)
        .where(Deployment.cluster_id == cluster_id, Deployment.status == RUNNING)
        .order_by(Deployment.id.desc())
        .limit(TIMELINE_DEPLOYMENTS)
    )
    for deployment_id, started_at in running:
        if started_at is not None:
            open_runs[deployment_id] = started_at
    # The deployments active most recently: the latest end or start of each.
    latest: dict[int, datetime] = {}
    for deployment_id, _, ended, _, _ in closed:
        latest[deployment_id] = max(latest.get(deployment_id, ended), ended)
    for deployment_id in open_runs:
        latest[deployment_id] = now
    shown = set(sorted(latest, key=lambda i: (latest[i], i), reverse=True)[:TIMELINE_DEPLOYMENTS])
    details = {d.id: d for d in session.scalars(select(Deployment).where(Deployment.id.in_(shown)))}
    runs = [
        Run(i, details[i].name, details[i].priority, start, end, kind, message)
        for i, start, end, kind, message in closed
        if i in shown
    ]
    runs.extend(
        Run(i, details[i].name, details[i].priority, start, None, "running", "running")
        for i, start in open_runs.items()
        if i in shown
    )
    runs.sort(key=lambda run: (run.started_at, run.deployment_id))
    start = min((run.started_at for run in runs), default=now)
    return Timeline(start=min(start, now), end=now, runs=runs)


@dataclass(frozen=True)
class DeploymentPage:
    """What the deployment page shows, and whether the caller may cancel it."""

    deployment: schemas.DeploymentDetail
    role: str
    may_cancel: bool


def deployment_page(session: Session, user: User, deployment_id: int) -> DeploymentPage:
    """One deployment of the caller's organizations with its events."""
    detail = read_deployment(session, user, deployment_id)
    _, membership = organization_as_member(session, user, detail.organization_name, Role.viewer)
    # The button is shown where the service would accept a cancel; it still decides.
    may_cancel = has_role(membership.role, Role.developer) and detail.status not in FINISHED_VALUES
    return DeploymentPage(deployment=detail, role=membership.role, may_cancel=may_cancel)
