"""SPEC §5 as a property of the whole service layer, on SQLite and on PostgreSQL.

Hypothesis walks random sequences of service calls (creates with dependencies across the
clusters of one organization, cancels, status reports, reservations, releases, resizes,
and clock advances each followed by one tick of the background loop). Every call runs in
its own `services.transaction` and is checked twice: its outcome (refusal, states, clocks)
against `state_model.predict`, which decides every pass with `scheduler.run_pass` over the
cluster's whole stored queue; then the stored state against SPEC §5's invariants, among
them that a full `run_pass` over every cluster completes, starts and preempts nothing.

`HYPERVISOR_STATEFUL_EXAMPLES` and `HYPERVISOR_STATEFUL_STEPS` make the walk longer;
`HYPERVISOR_STATEFUL_SHRINK=1` shrinks a failing walk (minutes) before reporting it.
The plain tests at the end reproduce known defects through the same checked calls.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import ManualClock, make_settings
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text
from state_model import (
    Action,
    Cancel,
    Create,
    LockProbe,
    Release,
    Report,
    Reserve,
    Resize,
    Stored,
    cluster_of,
    differences,
    due_clusters,
    load,
    predict,
    violations,
)

import scheduler
import schemas
import services
from database import make_engine, make_session_factory
from models import Base, User
from scheduler import Resources
from utils import use_clock, use_settings

STARVATION_SECONDS = 30
EXAMPLES = int(os.environ.get("HYPERVISOR_STATEFUL_EXAMPLES", "15"))
STEPS = int(os.environ.get("HYPERVISOR_STATEFUL_STEPS", "25"))
# Shrinking a failing walk replays it hundreds of times (minutes here); the failure message
# already holds the state before and after the step that went wrong.
SHRINK = os.environ.get("HYPERVISOR_STATEFUL_SHRINK", "") not in ("", "0")
PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + (
    [Phase.target, Phase.shrink, Phase.explain] if SHRINK else []
)
START = datetime(2030, 1, 1, tzinfo=UTC)
ORGANIZATION = "team"


def install_settings(tmp_path: Path) -> scheduler.Policy:
    """Settings with a short starvation limit; the policy a reference pass uses with them."""
    chosen = make_settings(
        tmp_path, starvation_seconds=STARVATION_SECONDS, preemption_grace_seconds=0
    )
    use_settings(chosen)
    return scheduler.Policy(
        starvation_seconds=chosen.starvation_seconds,
        preemption_grace_seconds=chosen.preemption_grace_seconds,
    )


class ErrorLog(logging.Handler):
    """Error records logged anywhere, such as a loop pass that failed and was skipped."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        found = [
            f"logged {record.levelname} {record.getMessage()!r}"
            + (f": {record.exc_info[1]!r}" if record.exc_info else "")
            for record in self.records
        ]
        self.records = []
        return found


class Service:
    """The service layer over one database, driven one unit of work at a time."""

    def __init__(self, engine: Engine, policy: scheduler.Policy) -> None:
        self.factory = make_session_factory(engine)
        self.policy = policy
        self.clock = ManualClock(START)
        use_clock(self.clock)
        self.cluster_names: dict[int, str] = {}
        self.last = Stored(clusters={}, deployments={})  # as of the latest check
        with services.transaction(self.factory) as session:
            body = schemas.UserRegister(username="admin", password="a long password")
            self.user_id = services.register_user(session, body).id
            user = session.get(User, self.user_id)
            services.create_organization(
                session, user, schemas.OrganizationCreate(name=ORGANIZATION)
            )
        self.errors = ErrorLog()
        logging.getLogger().addHandler(self.errors)
        self.locks = LockProbe(engine)

    def close(self) -> None:
        logging.getLogger().removeHandler(self.errors)
        self.locks.close()

    def load(self) -> Stored:
        with self.factory() as session:
            return load(session)

    def add_cluster(self, name: str, total: Resources) -> int:
        with services.transaction(self.factory) as session:
            body = schemas.ClusterCreate(
                name=name,
                organization_name=ORGANIZATION,
                total_cpu=total.cpu,
                total_ram=total.ram,
                total_gpu=total.gpu,
            )
            cluster_id = services.create_cluster(session, self._user(session), body).id
        self.cluster_names[cluster_id] = name
        self.check()
        return cluster_id

    def call(self, action: Action) -> Any:
        """The service call for `action`, in its own unit of work; a refusal is returned."""
        try:
            with services.transaction(self.factory) as session:
                return self._call(session, action)
        except services.DomainError as refusal:
            return refusal

    def step(self, action: Action, late_seconds: int = 0) -> Any:
        """`call`, its outcome checked against SPEC; with `late_seconds` the clock moves that
        far first and the loop only ticks after the call. The state is checked at the end."""
        if late_seconds:
            self.clock.advance(late_seconds)
        now = self.clock.now()
        before = self.load()
        answer = self.call(action)
        after = self.load()
        logged = self.errors.take()
        assert not logged, f"{action}: " + "\n".join(logged)
        due = due_clusters(before, now)
        # With due work in other clusters their passes could interleave in several valid
        # orders; the state after the tick is still checked.
        if due <= {cluster_of(before, action)}:
            self._expect(action, before, after, answer, now, due_ends=bool(due))
        if late_seconds:
            services.run_periodic_passes(self.factory)
        self.check()
        return answer

    def tick(self, seconds: int) -> None:
        """Time passes, then one tick of the background loop."""
        self.clock.advance(seconds)
        services.run_periodic_passes(self.factory)
        self.check()

    def check(self) -> None:
        """Every SPEC §5 invariant over the stored state, and nothing failed on the way."""
        stored = self.last = self.load()
        found = self.errors.take() + self.locks.take()
        found += violations(stored, self.clock.now(), self.policy)
        assert not found, "\n".join(found) + "\n" + describe(stored)

    def _user(self, session: Any) -> User:
        user = session.get(User, self.user_id)
        assert user is not None
        return user

    def _call(self, session: Any, action: Action) -> Any:
        user = self._user(session)
        if isinstance(action, Create):
            return services.create_deployment(
                session,
                user,
                schemas.DeploymentCreate(
                    cluster_name=self.cluster_names[action.cluster_id],
                    organization_name=ORGANIZATION,
                    docker_image="nginx",
                    required_cpu=action.request.cpu,
                    required_ram=action.request.ram,
                    required_gpu=action.request.gpu,
                    priority=action.priority,
                    depends_on=list(action.depends_on),
                    duration_seconds=action.duration_seconds,
                ),
            )
        if isinstance(action, Cancel):
            return services.cancel_deployment(session, user, action.deployment_id)
        if isinstance(action, Report):
            body = schemas.StatusReport(status=action.status)
            return services.report_status(session, user, action.deployment_id, body)
        where = {
            "cluster_name": self.cluster_names[action.cluster_id],
            "organization_name": ORGANIZATION,
        }
        if isinstance(action, Resize):
            total = action.total
            resize = schemas.ClusterResize(
                **where, total_cpu=total.cpu, total_ram=total.ram, total_gpu=total.gpu
            )
            return services.resize_cluster(session, user, resize)
        amount = action.amount
        body = schemas.Reservation(**where, cpu=amount.cpu, ram=amount.ram, gpu=amount.gpu)
        if isinstance(action, Reserve):
            return services.reserve_capacity(session, user, body)
        return services.release_capacity(session, user, body)

    def _expect(
        self,
        action: Action,
        before: Stored,
        after: Stored,
        answer: Any,
        now: datetime,
        due_ends: bool,
    ) -> None:
        """The call did what SPEC says: the prescribed refusal, or the predicted state."""
        refused = answer if isinstance(answer, services.DomainError) else None
        expected = predict(before, action, now, self.policy).refusal
        what = f"{action} at {now.isoformat()}"
        if expected is not None or refused is not None:
            assert expected is not None and isinstance(refused, expected), (
                f"{what}: answered {brief(answer)}, SPEC says "
                f"{expected.__name__ if expected else 'it succeeds'} (a cancel or report "
                f"first ends due timed deployments)\nbefore:\n{describe(before)}"
            )
            if not due_ends:  # a refusal changes nothing (due work may end on the way)
                assert after == before, f"{what} was refused yet changed the state"
            return
        new_id = answer.id if isinstance(action, Create) else None
        outcomes = [predict(before, action, now, self.policy, new_id)]
        if due_ends and isinstance(action, Create):
            # A create that waits for dependencies may leave due work to the loop.
            lazy = predict(before, action, now, self.policy, new_id, pass_on_waiting_create=False)
            if not lazy.deployments[answer.id].eligible:
                outcomes.append(lazy)
        if all(differences(outcome, after) for outcome in outcomes):
            found = differences(outcomes[0], after)
            raise AssertionError(
                f"{what} did not do what a full pass decides:\n"
                + "\n".join(found)
                + f"\nbefore:\n{describe(before)}\nafter:\n{describe(after)}"
            )
        if isinstance(action, Create | Cancel | Report):
            stored = after.deployments[answer.id].status
            allowed = {stored} | {outcome.deployments[answer.id].status for outcome in outcomes[1:]}
            assert answer.status in allowed, f"{what} answered {answer.status}, stored {stored}"


def describe(stored: Stored) -> str:
    """The stored state, a line per cluster and deployment, for failure messages."""
    lines = [
        f"  cluster {c.id} {c.name}: total {tuple_of(c.total)} reserved {tuple_of(c.reserved)}"
        for c in stored.clusters.values()
    ]
    for d in stored.deployments.values():
        started = d.started_at.isoformat(timespec="seconds") if d.started_at else None
        lines.append(
            f"  deployment {d.id} in {d.cluster_id}: {d.status} eligible={d.eligible} "
            f"p{d.priority} {tuple_of(d.request)} duration={d.duration_seconds} "
            f"depends_on={list(d.depends_on)} created={d.created_at.time()} "
            f"waiting_since={d.waiting_since.time()} started={started} "
            f"events={list(d.events)}"
        )
    return "\n".join(lines)


def brief(answer: Any) -> str:
    """A service answer in a few words."""
    if isinstance(answer, services.DomainError):
        return f"{type(answer).__name__}({answer.detail!r})"
    status = getattr(answer, "status", None)
    return f"{type(answer).__name__}(id={answer.id}{f', status={status}' if status else ''})"


def tuple_of(amount: Resources) -> tuple[int, int, int]:
    return (amount.cpu, amount.ram, amount.gpu)


# --- a fresh database per example -------------------------------------------------------


class Databases:
    """A fresh, migrated database per Hypothesis example: a copy of the migrated SQLite
    template, or the PostgreSQL test database with every table emptied."""

    def __init__(self, engine: Engine, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.engine = engine
        self.on_postgres = engine.dialect.name == "postgresql"
        self.template: Path | None = None
        if not self.on_postgres:
            self.template = request.getfixturevalue("sqlite_template")
        self.directory = tmp_path
        self.count = 0
        self.current: Engine | None = None

    def fresh(self) -> Engine:
        self.close()
        if self.on_postgres:
            tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
            with self.engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            return self.engine
        assert self.template is not None
        self.count += 1
        path = self.directory / f"example-{self.count}.db"
        shutil.copy(self.template, path)
        self.current = make_engine(f"sqlite:///{path}")
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.dispose()
            self.current = None
            for leftover in self.directory.glob(f"example-{self.count}.db*"):
                leftover.unlink()


# --- the state machine ------------------------------------------------------------------


def amounts(cpu: int, ram: int, gpu: int) -> st.SearchStrategy[Resources]:
    """Amounts up to the given bounds, at least one unit of something."""
    return st.builds(
        Resources, st.integers(0, cpu), st.integers(0, ram), st.integers(0, gpu)
    ).filter(lambda amount: not amount.is_zero())


TOTALS = st.builds(Resources, st.integers(2, 8), st.integers(1, 6), st.integers(1, 4))
# Mostly small requests, so that a cluster runs several and queues more; now and then one
# larger than what is free, or than the cluster itself.
SMALL = amounts(2, 2, 1)
LARGE = amounts(7, 5, 4)
REQUESTS = st.sampled_from([SMALL, SMALL, SMALL, SMALL, LARGE]).flatmap(lambda size: size)
PRIORITIES = st.integers(0, 5)
DURATIONS = st.none() | st.integers(1, 60)
# How far the clock moves just before a call, the loop ticking only after it (0: no move).
LATE = st.sampled_from([0, 0, 0, 1, 10, 45])
CLUSTER = st.sampled_from([0, 1])
CHANGE = st.tuples(*[st.sampled_from([0, 0, 1, -1, 2, -2, 3])] * 3).filter(any)


class ServiceMachine(RuleBasedStateMachine):
    """Random service calls on one organization with two clusters, each call checked.

    Few rules, so that creates are frequent and queues grow; targets are drawn from the
    state as of the latest check, mostly among deployments the call can still change.
    """

    def __init__(self, databases: Databases, policy: scheduler.Policy) -> None:
        super().__init__()
        self.service = Service(databases.fresh(), policy)
        self.cluster_ids: list[int] = []
        self.initial_totals: list[Resources] = []

    def teardown(self) -> None:
        self.service.close()

    def known(self, *statuses: str) -> list[int]:
        """Ids of deployments in these states (any state when none are named)."""
        return [
            d.id
            for d in self.service.last.deployments.values()
            if not statuses or d.status in statuses
        ]

    def pick(self, data: st.DataObject, preferred: list[int], label: str) -> int:
        """Mostly one of `preferred`, now and then any deployment."""
        return data.draw(st.sampled_from(preferred * 3 + self.known()), label=label)

    @initialize(
        first=TOTALS,
        second=TOTALS,
        workload=st.lists(
            st.tuples(CLUSTER, REQUESTS, PRIORITIES, DURATIONS, st.none() | st.integers(0, 7)),
            min_size=2,
            max_size=8,
        ),
    )
    def start(
        self,
        first: Resources,
        second: Resources,
        workload: list[tuple[int, Resources, int, int | None, int | None]],
    ) -> None:
        """Two clusters and a few creates to start from, some after an earlier one (by
        index, wrapping)."""
        self.initial_totals = [first, second]
        self.cluster_ids = [
            self.service.add_cluster("alpha", first),
            self.service.add_cluster("beta", second),
        ]
        created: list[int] = []
        for cluster, request, priority, duration, after in workload:
            depends_on = (created[after % len(created)],) if after is not None and created else ()
            action = Create(self.cluster_ids[cluster], request, priority, depends_on, duration)
            answer = self.service.step(action)
            if not isinstance(answer, services.DomainError):
                created.append(answer.id)

    @rule(
        cluster=CLUSTER,
        request=REQUESTS,
        priority=PRIORITIES,
        duration=DURATIONS,
        late=LATE,
    )
    def create(
        self, cluster: int, request: Resources, priority: int, duration: int | None, late: int
    ) -> None:
        action = Create(self.cluster_ids[cluster], request, priority, (), duration)
        self.service.step(action, late)

    @precondition(lambda self: bool(self.known()))
    @rule(
        data=st.data(),
        cluster=CLUSTER,
        request=REQUESTS,
        priority=PRIORITIES,
        dependencies=st.integers(1, 2),
        duration=DURATIONS,
        late=LATE,
    )
    def create_dependent(
        self,
        data: st.DataObject,
        cluster: int,
        request: Resources,
        priority: int,
        dependencies: int,
        duration: int | None,
        late: int,
    ) -> None:
        """A create after others (mostly unfinished ones, in either cluster)."""
        unfinished = self.known("pending", "running")
        depends_on = {self.pick(data, unfinished, "dependency") for _ in range(dependencies)}
        action = Create(
            self.cluster_ids[cluster], request, priority, tuple(sorted(depends_on)), duration
        )
        self.service.step(action, late)

    @precondition(lambda self: bool(self.known()))
    @rule(data=st.data(), how=st.sampled_from(["cancelled", "completed", "failed"]), late=LATE)
    def end(self, data: st.DataObject, how: str, late: int) -> None:
        """A cancel, or a status report from the runtime (mostly of running ones)."""
        if how == "cancelled":
            target = self.pick(data, self.known("pending", "running"), "deployment")
            self.service.step(Cancel(target), late)
        else:
            target = self.pick(data, self.known("running"), "deployment")
            self.service.step(Report(target, how), late)

    @rule(
        cluster=CLUSTER,
        how=st.sampled_from(["reserve", "release", "resize"]),
        change=CHANGE,
        late=LATE,
    )
    def capacity(self, cluster: int, how: str, change: tuple[int, int, int], late: int) -> None:
        """Reserve `abs(change)`; release that much of what is reserved (all of it when
        nothing is); or resize to the cluster's first totals plus `change`."""
        cluster_id = self.cluster_ids[cluster]
        current = self.service.last.clusters[cluster_id]
        amount = Resources(*(abs(delta) for delta in change))
        if how == "reserve":
            self.service.step(Reserve(cluster_id, amount))
        elif how == "release":
            held = tuple_of(current.reserved)
            within = Resources(*(min(have, abs(d)) for have, d in zip(held, change, strict=True)))
            self.service.step(Release(cluster_id, amount if within.is_zero() else within), late)
        else:
            total = tuple_of(self.initial_totals[cluster])
            grown = Resources(*(max(0, have + d) for have, d in zip(total, change, strict=True)))
            self.service.step(Resize(cluster_id, Resources(1) if grown.is_zero() else grown))

    @rule(seconds=st.integers(1, 60))
    def tick(self, seconds: int) -> None:
        self.service.tick(seconds)


def test_every_step_leaves_the_state_that_a_full_pass_would_keep(
    engine: Engine, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    policy = install_settings(tmp_path)
    databases = Databases(engine, request, tmp_path)
    try:
        run_state_machine_as_test(
            lambda: ServiceMachine(databases, policy),
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                phases=PHASES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        databases.close()


# --- reproductions, through the same service calls --------------------------------------


@pytest.fixture
def service(engine: Engine, tmp_path: Path) -> Iterator[Service]:
    checked = Service(engine, install_settings(tmp_path))
    yield checked
    checked.close()


def test_a_victim_that_preempts_in_turn_leaves_a_stable_queue(service: Service) -> None:
    alpha = service.add_cluster("alpha", Resources(8, 6, 4))
    beta = service.add_cluster("beta", Resources(1, 1, 1))
    dependency = service.step(Create(beta, Resources(1, 0, 0), 0, (), None)).id
    running = [
        service.step(Create(alpha, Resources(cpu, ram, gpu), priority, (), None)).id
        for priority, cpu, ram, gpu in [(2, 4, 3, 0), (2, 3, 2, 0), (0, 1, 0, 2), (2, 0, 0, 1)]
    ]
    urgent = [
        service.step(Create(alpha, request, 5, (dependency,), None)).id
        for request in [Resources(3, 0, 0), Resources(2, 3, 1)]
    ]
    before = service.load()
    assert [before.deployments[i].status for i in running] == ["running"] * 4
    assert [before.deployments[i].status for i in urgent] == ["pending"] * 2

    assert service.call(Report(dependency, "completed")).status == "completed"
    services.run_periodic_passes(service.factory)

    # SPEC §5: the pass that starts them (right after the commit, or this tick) succeeds:
    # both urgent ones start by preemption, and a victim may preempt lower work in turn.
    assert service.errors.take() == []
    stored = service.load()
    assert [stored.deployments[i].status for i in urgent] == ["running", "running"]
    service.check()


def test_a_create_does_not_jump_older_work_of_its_priority_to_room_a_due_end_frees(
    service: Service,
) -> None:
    alpha = service.add_cluster("alpha", Resources(1, 1, 1))
    timed = service.step(Create(alpha, Resources(0, 0, 1), 0, (), 10)).id
    older = service.step(Create(alpha, Resources(0, 0, 1), 0, (), None)).id
    service.clock.advance(10)  # `timed` is due; the loop has not ticked yet

    newer = service.call(Create(alpha, Resources(0, 0, 1), 0, (), None))

    stored = service.load()
    assert stored.deployments[timed].status == "completed"
    assert stored.deployments[older].status == "running"
    assert newer.status == stored.deployments[newer.id].status == "pending"
    service.check()


def test_a_deployment_whose_time_is_up_answers_a_report_or_cancel_as_completed(
    service: Service,
) -> None:
    alpha = service.add_cluster("alpha", Resources(1, 1, 1))
    timed = service.step(Create(alpha, Resources(0, 0, 1), 0, (), 10)).id
    service.clock.advance(10)  # its time is up; the loop has not ticked yet

    # SPEC §4: a cancel or status report first ends the cluster's due timed deployments.
    assert isinstance(service.call(Report(timed, "failed")), services.Conflict)
    assert isinstance(service.call(Cancel(timed)), services.Conflict)

    services.run_periodic_passes(service.factory)
    assert service.load().deployments[timed].events == ("created", "started", "completed")
    service.check()


def test_a_finished_dependency_passes_its_dependents_cluster_under_that_lock_alone(
    service: Service,
) -> None:
    alpha = service.add_cluster("alpha", Resources(1, 1, 1))
    beta = service.add_cluster("beta", Resources(1, 1, 1))
    train = service.step(Create(alpha, Resources(1, 0, 0), 0, (), None)).id
    evaluate = service.step(Create(beta, Resources(1, 0, 0), 0, (train,), None)).id
    publish = service.step(Create(alpha, Resources(0, 1, 0), 0, (evaluate,), None)).id

    service.call(Report(train, "completed"))  # no loop tick follows

    # SPEC §5: beta gets its pass right after the commit, under its own lock, and no
    # transaction holds rows of two clusters (the probe sees this on PostgreSQL).
    assert service.locks.take() == []
    assert service.load().deployments[evaluate].status == "running"

    service.call(Report(evaluate, "failed"))

    assert service.locks.take() == []
    assert service.load().deployments[publish].status == "failed"
    service.check()


def test_a_create_that_preempts_leaves_the_room_over_to_the_queue_in_its_order(
    service: Service,
) -> None:
    alpha = service.add_cluster("alpha", Resources(10, 1, 1))
    low = service.step(Create(alpha, Resources(2, 0, 0), 0, (), None)).id
    victim = service.step(Create(alpha, Resources(5, 0, 1), 3, (), None)).id
    # Waits (even preempting `low` leaves it short), and starves: the guard of later creates.
    starving = service.step(Create(alpha, Resources(6, 0, 0), 1, (), None)).id
    service.tick(STARVATION_SECONDS + 1)
    middle = service.step(Create(alpha, Resources(6, 0, 0), 2, (), None)).id

    # It takes the victim's GPU and leaves its CPU over. SPEC §5: the sweep goes on in queue
    # order, so `middle` (priority 2) takes that CPU before the starving one (priority 1)
    # gets a look; nobody starts only to be preempted again in the same pass.
    urgent = service.step(Create(alpha, Resources(0, 0, 1), 5, (), None)).id

    stored = service.load().deployments
    assert [stored[i].status for i in (urgent, middle, low)] == ["running"] * 3
    assert [stored[i].status for i in (victim, starving)] == ["pending"] * 2
    assert stored[starving].events == ("created",)
    assert stored[starving].preemption_count == 0
