"""The forecast as the service keeps it (SPEC §5 "Forecast"): a cluster and its history
loaded into `forecast.py`'s types, the estimates written back onto its deployments.

Off the request path: the background loop forecasts again each cluster whose `revision`
moved past its `forecast_revision`, or whose `forecast_valid_until` has passed (the moment
of a history estimate came: if nothing changed, a run outlived its median or a start did
not come); requests only read the stored estimates, which are at most one loop interval (plus the
forecast's own run time) old. A preview (`start_question`) simulates one would-be
deployment's cluster until it starts, within the forecast's horizon and event cap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

import forecast
import scheduler
from database import read_only, try_lock_cluster
from metrics import FORECAST_SECONDS
from models import Cluster, Deployment, DeploymentDependency
from models import DeploymentStatus as Status
from services.loading import (
    JOB_COLUMNS,
    PENDING,
    RUNNING,
    UNFINISHED,
    job_of,
    policy,
    shape_of,
)
from utils import get_settings, utcnow

logger = logging.getLogger(__name__)

# How many of an organization's latest completed runs history looks at.
HISTORY_RUNS = 2000


def refresh_forecasts(session_factory: sessionmaker[Session]) -> int:
    """Forecast every cluster whose state changed since its last forecast; returns how many.
    A failing cluster is logged and skipped, like a failing pass."""
    now = utcnow()
    with session_factory() as session:
        read_only(session)
        cluster_ids = list(
            session.scalars(
                select(Cluster.id)
                .where(
                    or_(
                        Cluster.revision != Cluster.forecast_revision,
                        Cluster.forecast_valid_until <= now,
                    )
                )
                .order_by(Cluster.id)
            )
        )
    done = 0
    for cluster_id in cluster_ids:
        try:
            done += _refresh(session_factory, cluster_id)
        except Exception:
            logger.exception("forecast failed cluster_id=%s", cluster_id)
    return done


def _refresh(session_factory: sessionmaker[Session], cluster_id: int) -> int:
    """Read the cluster, simulate it without any lock, write the estimates back under the
    cluster's lock unless its state moved meanwhile (the next tick forecasts that)."""
    started = time.perf_counter()
    now = utcnow()
    with session_factory() as session:
        read_only(session)
        cluster = session.get(Cluster, cluster_id)
        if cluster is None:
            return 0
        revision = cluster.revision
        estimates, running_ids = _simulate(session, cluster, now)
    floor = get_settings().scheduler_interval_seconds
    valid_until = recheck_at(estimates, running_ids, now.timestamp(), floor)
    with session_factory.begin() as session:
        locked = try_lock_cluster(session, cluster_id)
        if locked is None or locked.revision != revision:
            return 0
        if estimates:
            session.execute(update(Deployment), [_row(i, e) for i, e in estimates.items()])
        locked.forecast_revision = revision
        locked.forecast_valid_until = moment_of(valid_until)
    FORECAST_SECONDS.observe(time.perf_counter() - started)
    return 1


def recheck_at(
    estimates: dict[int, forecast.Estimate], running_ids: set[int], now: float, floor: float
) -> float | None:
    """When a forecast made at `now` is to be made again although nothing changed: at its
    earliest history-based end of a running deployment or start of a pending one (None if
    it has none). Declared times come true by themselves (the loop ends timed runs then).

    A run already past its history estimate is forecast to end now; it is looked at again
    after a tenth of its run so far, and at least `floor` (the loop interval) later, so an
    overrun costs a forecast per tenth of its length, not one per tick. Pending starts at
    `now` rest on such an overrun (or another cluster's), rechecked with it.
    """
    times: list[float] = []
    for deployment_id, estimate in estimates.items():
        if estimate.basis != "history":
            continue
        if deployment_id in running_ids:
            end, start = estimate.end_at, estimate.start_at
            if end is None:
                continue
            if end > now:
                times.append(end)
            else:
                run_so_far = now - start if start is not None else 0.0
                times.append(now + max(floor, run_so_far / 10))
        elif estimate.start_at is not None and estimate.start_at > now:
            times.append(estimate.start_at)
    return min(times, default=None)


def _simulate(
    session: Session, cluster: Cluster, now: datetime
) -> tuple[dict[int, forecast.Estimate], set[int]]:
    """The cluster's estimates, and which of its deployments run."""
    state = _state(session, cluster)
    if state is None:
        return {}, set()
    running, pending, history, images = state
    estimates = forecast.forecast(
        shape_of(cluster),
        running,
        pending,
        now.timestamp(),
        policy(),
        history=history,
        images=images,
    )
    return estimates, {job.id for job in running}


@dataclass(frozen=True)
class StartQuestion:
    """When would one pending deployment start: its cluster as a transaction saw it, in
    plain data, so that it can be answered once that transaction (and its lock) is gone."""

    cluster: scheduler.Cluster
    running: list[scheduler.Job]
    pending: list[forecast.Waiting]
    history: dict[int, float]
    images: dict[int, str]
    now: float
    policy: scheduler.Policy
    deployment_id: int

    def answer(self) -> forecast.Estimate:
        """The forecast's start of that deployment, simulated only until it starts (within
        the forecast's horizon and event cap)."""
        return forecast.forecast_start(
            self.cluster,
            self.running,
            self.pending,
            self.now,
            self.policy,
            target=self.deployment_id,
            history=self.history,
            images=self.images,
        )


def start_question(
    session: Session, cluster: Cluster, deployment_id: int, now: datetime
) -> StartQuestion:
    """The question of a pending deployment's start, from the cluster the session sees (a
    preview's, with the would-be deployment in it: SPEC §4)."""
    state = _state(session, cluster)
    if state is None:
        raise ValueError(f"deployment {deployment_id} is not pending in cluster {cluster.id}")
    running, pending, history, images = state
    return StartQuestion(
        shape_of(cluster),
        running,
        pending,
        history,
        images,
        now.timestamp(),
        policy(),
        deployment_id,
    )


# What `job_of`, the dependencies, history and images read of a deployment.
_COLUMNS = (*JOB_COLUMNS, Deployment.status, Deployment.eligible, Deployment.docker_image)

_State = tuple[list[scheduler.Job], list[forecast.Waiting], dict[int, float], dict[int, str]]


def _state(session: Session, cluster: Cluster) -> _State | None:
    """The cluster's unfinished deployments as the forecast takes them: running jobs,
    pending ones with their unfinished dependencies, history and images (None: nothing
    unfinished)."""
    # Columns, not ORM objects: a 10,000-deployment cluster loads in a third of the time.
    rows = session.execute(
        select(*_COLUMNS).where(
            Deployment.cluster_id == cluster.id, Deployment.status.in_(UNFINISHED)
        )
    ).all()
    if not rows:
        return None
    ids = {row.id for row in rows}
    waiting_on: dict[int, set[int]] = {}
    external: dict[int, forecast.Estimate] = {}
    # Driven from the cluster's deployments still waiting for dependencies (by index), not
    # from a list of every id: SQLite plans `IN (<10,000 ids>)` as a scan per id.
    dependent = aliased(Deployment)
    for dependent_id, dependency, end, basis, reason in session.execute(
        select(
            DeploymentDependency.deployment_id,
            Deployment.id,
            Deployment.estimated_end_at,
            Deployment.estimate_basis,
            Deployment.estimate_reason,
        )
        .join(dependent, dependent.id == DeploymentDependency.deployment_id)
        .join(Deployment, Deployment.id == DeploymentDependency.depends_on_id)
        .where(
            dependent.cluster_id == cluster.id,
            dependent.status == PENDING,
            dependent.eligible.is_(False),
            Deployment.status.in_(UNFINISHED),
        )
    ):
        waiting_on.setdefault(dependent_id, set()).add(dependency)
        if dependency not in ids:  # another cluster's: its own latest forecast
            external[dependency] = forecast.Estimate(
                start_at=None,
                end_at=end.timestamp() if end is not None and basis != "unknown" else None,
                basis="history"
                if basis == "history"
                else "declared"
                if basis == "declared"
                else "unknown",
                reason=reason,
            )
    running = [job_of(row) for row in rows if row.status == RUNNING]
    pending = [
        forecast.Waiting(
            job_of(row),
            depends_on=frozenset(waiting_on.get(row.id, ())) if not row.eligible else frozenset(),
            external_ends={d: external[d] for d in waiting_on.get(row.id, ()) if d in external},
        )
        for row in rows
        if row.status == PENDING
    ]
    images = {row.id: row.docker_image for row in rows}
    untimed = [row for row in rows if row.duration_seconds is None]
    history = _history(session, cluster.organization_id, untimed) if untimed else {}
    return running, pending, history, images


def _history(session: Session, organization_id: int, untimed: Sequence[Any]) -> dict[int, float]:
    """Estimated run times of deployments without a duration: the median run of the
    organization's completed deployments of the same image repository, with at least 3."""
    wanted = {forecast.image_repository(row.docker_image) for row in untimed}
    runs: dict[str, list[float]] = {}
    for image, started, finished, saved, checkpointed in session.execute(
        select(
            Deployment.docker_image,
            Deployment.started_at,
            Deployment.finished_at,
            Deployment.saved_seconds,
            Deployment.checkpointed_at,
        )
        .where(
            Deployment.organization_id == organization_id,
            Deployment.status == Status.completed.value,
            Deployment.started_at.is_not(None),
            Deployment.finished_at.is_not(None),
        )
        .order_by(Deployment.id.desc())
        .limit(HISTORY_RUNS)
    ):
        repository = forecast.image_repository(image)
        if repository not in wanted or started is None or finished is None:
            continue
        # Saved work at its latest start: what a checkpoint of the last run added comes off.
        saved_at_start = saved or 0.0
        if checkpointed is not None and checkpointed >= started:
            saved_at_start -= (checkpointed - started).total_seconds()
        run = max(0.0, saved_at_start) + (finished - started).total_seconds()
        runs.setdefault(repository, []).append(run)
    history: dict[int, float] = {}
    for row in untimed:
        median = forecast.median_run_time(runs.get(forecast.image_repository(row.docker_image), []))
        if median is not None:
            history[row.id] = median
    return history


def moment_of(instant: float | None) -> datetime | None:
    """A forecast's instant (seconds since the epoch) as a UTC datetime."""
    return datetime.fromtimestamp(instant, UTC) if instant is not None else None


def _row(deployment_id: int, estimate: forecast.Estimate) -> dict[str, object]:
    return {
        "id": deployment_id,
        "estimated_start_at": moment_of(estimate.start_at),
        "estimated_end_at": moment_of(estimate.end_at),
        "estimate_basis": estimate.basis,
        "estimate_reason": estimate.reason[:1024] if estimate.reason else None,
    }
