"""The stored state as plain data, what SPEC §5 says a step does to it, and its invariants.

`load` reads every cluster, deployment, dependency and event straight from the tables.
`violations` lists what breaks SPEC §5 in a stored state: over-allocation, states and
events that disagree, unsettled dependents, and any decision a full `scheduler.run_pass`
over a cluster's whole stored queue would still take. `predict` says what one service call
must do, deciding every pass with `scheduler.run_pass` over the whole queue (never the
incremental shortcuts the service takes), so a shortcut that decides otherwise shows.
`LockProbe` watches, on PostgreSQL, which clusters' rows each committing transaction holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session

import scheduler
import services
from models import Cluster, Deployment, DeploymentDependency, DeploymentEvent
from scheduler import Resources

PENDING, RUNNING = "pending", "running"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
FINISHED = (COMPLETED, FAILED, CANCELLED)
STATUSES = (PENDING, RUNNING, *FINISHED)


# --- the stored state -------------------------------------------------------------------


@dataclass(frozen=True)
class StoredCluster:
    id: int
    name: str
    total: Resources
    reserved: Resources


@dataclass(frozen=True)
class StoredDeployment:
    id: int
    cluster_id: int
    priority: int
    request: Resources
    status: str
    eligible: bool
    created_at: datetime
    waiting_since: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: int | None
    preemption_count: int
    depends_on: tuple[int, ...]
    events: tuple[str, ...]


@dataclass(frozen=True)
class Stored:
    clusters: dict[int, StoredCluster]
    deployments: dict[int, StoredDeployment]

    def in_cluster(self, cluster_id: int, status: str) -> list[StoredDeployment]:
        """The cluster's deployments in one state, by id."""
        return [
            d
            for d in self.deployments.values()
            if d.cluster_id == cluster_id and d.status == status
        ]


def load(session: Session) -> Stored:
    """Every cluster and deployment as the tables hold them."""
    clusters = {
        c.id: StoredCluster(
            id=c.id,
            name=c.name,
            total=Resources(c.total_cpu, c.total_ram, c.total_gpu),
            reserved=Resources(c.reserved_cpu, c.reserved_ram, c.reserved_gpu),
        )
        for c in session.scalars(select(Cluster).order_by(Cluster.id))
    }
    depends_on: dict[int, list[int]] = {}
    for edge in session.scalars(
        select(DeploymentDependency).order_by(
            DeploymentDependency.deployment_id, DeploymentDependency.depends_on_id
        )
    ):
        depends_on.setdefault(edge.deployment_id, []).append(edge.depends_on_id)
    events: dict[int, list[str]] = {}
    for row in session.scalars(select(DeploymentEvent).order_by(DeploymentEvent.id)):
        events.setdefault(row.deployment_id, []).append(row.type)
    deployments = {
        d.id: StoredDeployment(
            id=d.id,
            cluster_id=d.cluster_id,
            priority=d.priority,
            request=Resources(d.required_cpu, d.required_ram, d.required_gpu),
            status=d.status,
            eligible=d.eligible,
            created_at=d.created_at,
            waiting_since=d.waiting_since,
            started_at=d.started_at,
            finished_at=d.finished_at,
            duration_seconds=d.duration_seconds,
            preemption_count=d.preemption_count,
            depends_on=tuple(depends_on.get(d.id, ())),
            events=tuple(events.get(d.id, ())),
        )
        for d in session.scalars(select(Deployment).order_by(Deployment.id))
    }
    return Stored(clusters=clusters, deployments=deployments)


def job(d: StoredDeployment) -> scheduler.Job:
    """The deployment as the scheduler sees it."""
    return scheduler.Job(
        id=d.id,
        priority=d.priority,
        request=d.request,
        submitted_at=d.created_at.timestamp(),
        waiting_since=d.waiting_since.timestamp(),
        started_at=d.started_at.timestamp() if d.started_at is not None else None,
        duration_seconds=d.duration_seconds,
    )


def shape(c: StoredCluster) -> scheduler.Cluster:
    return scheduler.Cluster(total=c.total, reserved=c.reserved)


def full_pass(
    stored: Stored, cluster_id: int, now: datetime, policy: scheduler.Policy
) -> scheduler.Plan:
    """One `run_pass` over every running and every eligible pending deployment of a cluster."""
    running = [job(d) for d in stored.in_cluster(cluster_id, RUNNING)]
    pending = [job(d) for d in stored.in_cluster(cluster_id, PENDING) if d.eligible]
    return scheduler.run_pass(
        shape(stored.clusters[cluster_id]), running, pending, now.timestamp(), policy
    )


def due_clusters(stored: Stored, now: datetime) -> set[int]:
    """Clusters with a running timed deployment whose time is up at `now`."""
    return {
        d.cluster_id
        for d in stored.deployments.values()
        if d.status == RUNNING
        and d.duration_seconds is not None
        and d.started_at is not None
        and d.started_at.timestamp() + d.duration_seconds <= now.timestamp()
    }


# --- invariants -------------------------------------------------------------------------


def violations(stored: Stored, now: datetime, policy: scheduler.Policy) -> list[str]:
    """Everything in the stored state that SPEC §5 forbids after a change has been applied."""
    found: list[str] = []
    for c in stored.clusters.values():
        found += _capacity_violations(stored, c)
    for d in stored.deployments.values():
        found += _state_violations(d)
        found += _dependency_violations(stored, d)
    if found:
        return found  # a pass over a broken state proves nothing more
    for cluster_id in stored.clusters:
        plan = full_pass(stored, cluster_id, now, policy)
        if plan.completed or plan.started or plan.preempted:
            found.append(
                f"cluster {cluster_id} is not what a full pass decides: it would complete "
                f"{plan.completed}, start {plan.started} and preempt {plan.preempted} "
                f"(victim -> preemptor)"
            )
    return found


def _capacity_violations(stored: Stored, c: StoredCluster) -> list[str]:
    running = [d.request for d in stored.in_cluster(c.id, RUNNING)]
    allocated = c.reserved + sum(running, Resources())
    found = []
    for name in scheduler.RESOURCE_NAMES:
        if getattr(c.reserved, name) < 0:
            found.append(f"cluster {c.id}: negative reserved {name}")
        if getattr(allocated, name) > getattr(c.total, name):
            found.append(
                f"cluster {c.id}: reserved + running {name} = {getattr(allocated, name)} "
                f"exceeds the total {getattr(c.total, name)}"
            )
    return found


def _state_violations(d: StoredDeployment) -> list[str]:
    """A deployment's status against its timestamps and its whole history of events."""
    where = f"deployment {d.id} ({d.status}, events {list(d.events)})"
    if d.status not in STATUSES:
        return [f"{where}: not a valid status"]
    found = []
    if d.status == RUNNING and (d.started_at is None or d.finished_at is not None):
        found.append(f"{where}: running needs started_at and no finished_at")
    if d.status == PENDING and (d.started_at is not None or d.finished_at is not None):
        found.append(f"{where}: pending must have neither started_at nor finished_at")
    if d.status in FINISHED and d.finished_at is None:
        found.append(f"{where}: finished without finished_at")
    # Walk the events through the lifecycle: created, then runs (each started, maybe
    # preempted and requeued), then at most one terminal event, and nothing after it.
    state = "new"
    moves = {
        ("new", "created"): PENDING,
        (PENDING, "started"): RUNNING,
        (RUNNING, "preempted"): "preempted",
        ("preempted", "requeued"): PENDING,
        (PENDING, FAILED): FAILED,
        (PENDING, CANCELLED): CANCELLED,
        (RUNNING, COMPLETED): COMPLETED,
        (RUNNING, FAILED): FAILED,
        (RUNNING, CANCELLED): CANCELLED,
    }
    for kind in d.events:
        if kind == "checkpointed" and state == RUNNING:
            continue
        following = moves.get((state, kind))
        if following is None:
            found.append(f"{where}: event '{kind}' cannot follow state '{state}'")
            return found
        state = following
    if state != d.status:
        found.append(f"{where}: the events end in '{state}', the status says '{d.status}'")
    if d.events.count("preempted") != d.preemption_count:
        found.append(f"{where}: preemption_count {d.preemption_count} != preempted events")
    return found


def _dependency_violations(stored: Stored, d: StoredDeployment) -> list[str]:
    statuses = {i: stored.deployments[i].status for i in d.depends_on}
    dead = sorted(i for i, s in statuses.items() if s in (FAILED, CANCELLED))
    all_completed = all(s == COMPLETED for s in statuses.values())
    where = f"deployment {d.id} ({d.status}, eligible={d.eligible}, dependencies {statuses})"
    if d.status == PENDING and dead:
        return [f"{where}: still pending although dependencies {dead} died"]
    if d.status == PENDING and all_completed and not d.eligible:
        return [f"{where}: every dependency completed, yet it is not eligible"]
    if d.status == PENDING and d.eligible and not all_completed:
        return [f"{where}: eligible before its dependencies completed"]
    if d.status in (RUNNING, COMPLETED) and not all_completed:
        return [f"{where}: ran before its dependencies completed"]
    return []


# --- what a step must do ----------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    cluster_id: int
    request: Resources
    priority: int
    depends_on: tuple[int, ...]
    duration_seconds: int | None


@dataclass(frozen=True)
class Cancel:
    deployment_id: int


@dataclass(frozen=True)
class Report:
    deployment_id: int
    status: str


@dataclass(frozen=True)
class Reserve:
    cluster_id: int
    amount: Resources


@dataclass(frozen=True)
class Release:
    cluster_id: int
    amount: Resources


@dataclass(frozen=True)
class Resize:
    cluster_id: int
    total: Resources


Action = Create | Cancel | Report | Reserve | Release | Resize


def cluster_of(stored: Stored, action: Action) -> int:
    """The cluster whose lock the call takes."""
    if isinstance(action, Cancel | Report):
        return stored.deployments[action.deployment_id].cluster_id
    return action.cluster_id


@dataclass
class Prediction:
    """The refusal SPEC prescribes, else the deployments and clusters after the call."""

    refusal: type[services.DomainError] | None
    deployments: dict[int, StoredDeployment] = field(default_factory=dict)
    clusters: dict[int, StoredCluster] = field(default_factory=dict)


def predict(
    stored: Stored,
    action: Action,
    now: datetime,
    policy: scheduler.Policy,
    new_id: int | None = None,
    *,
    pass_on_waiting_create: bool = True,
) -> Prediction:
    """What one service call at `now` does to `stored` under SPEC §4 and §5.

    The call's cluster gets a full pass (ending its due timed deployments first), except a
    reservation, which starts nothing; then every other cluster holding a dependent whose
    dependencies all completed gets one, in ascending id. For a create the new deployment's
    id (`new_id`) is needed to say more than whether it is refused. With
    `pass_on_waiting_create=False` a create that waits for dependencies runs no pass.
    """
    world = _World(stored, now, policy)
    home = cluster_of(stored, action)
    if isinstance(action, Create):
        if not action.request.fits_in(world.clusters[home].total):
            return Prediction(services.Invalid)
        if any(world.deployments[i].status in (FAILED, CANCELLED) for i in action.depends_on):
            return Prediction(services.Invalid)
        if new_id is None:
            return Prediction(None)
        eligible = all(world.deployments[i].status == COMPLETED for i in action.depends_on)
        world.deployments[new_id] = StoredDeployment(
            id=new_id,
            cluster_id=home,
            priority=action.priority,
            request=action.request,
            status=PENDING,
            eligible=eligible,
            created_at=now,
            waiting_since=now,
            started_at=None,
            finished_at=None,
            duration_seconds=action.duration_seconds,
            preemption_count=0,
            depends_on=tuple(sorted(set(action.depends_on))),
            events=(),
        )
        if eligible or pass_on_waiting_create:
            world.run_pass(home)
    elif isinstance(action, Cancel | Report):
        world.finish_due(home)  # SPEC §4: one whose time is up answers 409 as completed
        status = world.deployments[action.deployment_id].status
        if isinstance(action, Cancel) and status in FINISHED:
            return Prediction(services.Conflict)
        if isinstance(action, Report) and status != RUNNING:
            return Prediction(services.Conflict)
        world.finish(
            [action.deployment_id], CANCELLED if isinstance(action, Cancel) else action.status
        )
        world.run_pass(home)
    elif isinstance(action, Reserve):
        available = world.clusters[home].total - world.allocated(home)
        if not action.amount.fits_in(available):
            return Prediction(services.Conflict)
        world.set_cluster(home, reserved=world.clusters[home].reserved + action.amount)
    elif isinstance(action, Release):
        if not action.amount.fits_in(world.clusters[home].reserved):
            return Prediction(services.Conflict)
        world.set_cluster(home, reserved=world.clusters[home].reserved - action.amount)
        world.run_pass(home)
    else:
        if not world.allocated(home).fits_in(action.total):
            return Prediction(services.Conflict)
        world.set_cluster(home, total=action.total)
        world.run_pass(home)
    world.run_owed_passes()
    return Prediction(None, world.deployments, world.clusters)


class _World:
    """A working copy of the stored state that passes are applied to."""

    def __init__(self, stored: Stored, now: datetime, policy: scheduler.Policy) -> None:
        self.clusters = dict(stored.clusters)
        self.deployments = dict(stored.deployments)
        self.now = now
        self.policy = policy
        self.owed: set[int] = set()  # clusters whose dependents became eligible

    def set(self, deployment_id: int, **changes: Any) -> None:
        self.deployments[deployment_id] = replace(self.deployments[deployment_id], **changes)

    def set_cluster(self, cluster_id: int, **changes: Any) -> None:
        self.clusters[cluster_id] = replace(self.clusters[cluster_id], **changes)

    def of(self, cluster_id: int, status: str) -> list[StoredDeployment]:
        return [
            d
            for d in self.deployments.values()
            if d.cluster_id == cluster_id and d.status == status
        ]

    def allocated(self, cluster_id: int) -> Resources:
        running = sum((d.request for d in self.of(cluster_id, RUNNING)), Resources())
        return self.clusters[cluster_id].reserved + running

    def finish(
        self, ids: Iterable[int], status: str, at: Mapping[int, float] | None = None
    ) -> None:
        """End deployments for good (a timed one at the instant its time was up, `at`), then
        settle every waiting dependent (SPEC §5 step 2)."""
        for deployment_id in ids:
            instant = (at or {}).get(deployment_id)
            ended = datetime.fromtimestamp(instant, UTC) if instant is not None else self.now
            self.set(deployment_id, status=status, finished_at=ended)
        self.settle()

    def settle(self) -> None:
        waiting = {
            d.id: d.depends_on
            for d in self.deployments.values()
            if d.status == PENDING and not d.eligible
        }
        statuses = {d.id: d.status for d in self.deployments.values()}
        resolution = scheduler.resolve_dependencies(waiting, statuses)
        for deployment_id in resolution.eligible:
            # Its wait counts from its last dependency completing.
            ends = [self.deployments[d].finished_at for d in waiting[deployment_id]]
            since = max((end for end in ends if end is not None), default=self.now)
            self.set(deployment_id, eligible=True, waiting_since=min(self.now, since))
            self.owed.add(self.deployments[deployment_id].cluster_id)
        for deployment_id in resolution.failed:
            self.set(deployment_id, status=FAILED, finished_at=self.now)

    def finish_due(self, cluster_id: int) -> None:
        """SPEC §5 step 1: complete the cluster's timed deployments whose time is up."""
        running = [job(d) for d in self.of(cluster_id, RUNNING)]
        plan = scheduler.run_pass(
            shape(self.clusters[cluster_id]), running, [], self.now.timestamp(), self.policy
        )
        self.finish(plan.completed, COMPLETED, plan.finished_at)

    def run_pass(self, cluster_id: int) -> None:
        """SPEC §5 steps 1-6 over the cluster's whole queue, decided by `run_pass`."""
        self.finish_due(cluster_id)
        self.settle()
        self.owed.discard(cluster_id)
        running = [job(d) for d in self.of(cluster_id, RUNNING)]
        pending = [job(d) for d in self.of(cluster_id, PENDING) if d.eligible]
        plan = scheduler.run_pass(
            shape(self.clusters[cluster_id]), running, pending, self.now.timestamp(), self.policy
        )
        for deployment_id in plan.started:
            self.set(deployment_id, status=RUNNING, started_at=self.now)
        for victim in plan.preempted:
            self.set(
                victim,
                status=PENDING,
                started_at=None,
                waiting_since=self.now,
                preemption_count=self.deployments[victim].preemption_count + 1,
            )

    def run_owed_passes(self) -> None:
        """The passes a commit owes other clusters, lowest id first (SPEC §5)."""
        while self.owed:
            self.run_pass(min(self.owed))


def differences(prediction: Prediction, actual: Stored) -> list[str]:
    """Where the stored state differs from the predicted one, in what a pass decides."""
    found = []
    if set(prediction.deployments) != set(actual.deployments):
        found.append(
            f"deployments {sorted(actual.deployments)} stored, "
            f"{sorted(prediction.deployments)} expected"
        )
    for deployment_id in sorted(set(prediction.deployments) & set(actual.deployments)):
        want, got = (
            _decided(prediction.deployments[deployment_id]),
            _decided(actual.deployments[deployment_id]),
        )
        if want != got:
            found.append(f"deployment {deployment_id}: stored {got}, expected {want}")
    for cluster_id, want_cluster in prediction.clusters.items():
        got_cluster = actual.clusters[cluster_id]
        if (want_cluster.total, want_cluster.reserved) != (got_cluster.total, got_cluster.reserved):
            found.append(f"cluster {cluster_id}: stored {got_cluster}, expected {want_cluster}")
    return found


def _decided(d: StoredDeployment) -> dict[str, Any]:
    """What passes decide about a deployment: its state, and the clocks they set."""
    decided: dict[str, Any] = {"status": d.status, "preemption_count": d.preemption_count}
    if d.status == PENDING:
        decided.update(eligible=d.eligible, waiting_since=d.waiting_since.isoformat())
    if d.status == RUNNING and d.started_at is not None:
        decided.update(started_at=d.started_at.isoformat())
    return decided


# --- row locks --------------------------------------------------------------------------


class LockProbe:
    """On PostgreSQL, just before each commit until closed: the clusters whose cluster row or
    deployment rows the committing transaction holds locked, by update or `FOR UPDATE`
    (SPEC §5: each cluster under its own lock, never two at once). Shared locks, such as
    those foreign-key checks take, do not count."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.enabled = engine.dialect.name == "postgresql"
        self.found: list[str] = []
        self._probing = False
        if self.enabled:
            event.listen(engine, "commit", self._before_commit)

    def close(self) -> None:
        if self.enabled:
            event.remove(self.engine, "commit", self._before_commit)

    def take(self) -> list[str]:
        """What was found since the last call."""
        found, self.found = self.found, []
        return found

    def _before_commit(self, connection: Any) -> None:
        if self._probing:
            return
        self._probing = True
        try:
            with self.engine.connect() as probe:
                probe.execute(text("SET LOCAL lock_timeout = '5s'"))
                locked = set(probe.scalars(select(Cluster.id))) - set(
                    probe.scalars(select(Cluster.id).with_for_update(read=True, skip_locked=True))
                )
                cluster_of_row = dict(
                    probe.execute(select(Deployment.id, Deployment.cluster_id)).all()
                )
                free = set(
                    probe.scalars(
                        select(Deployment.id).with_for_update(read=True, skip_locked=True)
                    )
                )
                locked |= {cluster_of_row[i] for i in set(cluster_of_row) - free}
                probe.rollback()
            if len(locked) > 1:
                self.found.append(
                    f"one transaction held rows of clusters {sorted(locked)} locked at once"
                )
        finally:
            self._probing = False
