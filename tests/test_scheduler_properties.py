"""Properties of a scheduling pass over random clusters and workloads (SPEC section 5)."""

from __future__ import annotations

from dataclasses import replace
from itertools import count

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import (
    NAMED_PER_LEVEL,
    PRIORITY_MAX,
    PRIORITY_MIN,
    Cluster,
    Job,
    Plan,
    Policy,
    PrioritySums,
    Resources,
    RunningSummary,
    candidate_bounds,
    ends_at_of,
    explain_wait,
    needs_loading,
    order_key,
    run_pass,
    run_pass_incrementally,
    running_levels,
)

NOW = 10_000.0
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Scenario = tuple[Cluster, list[Job], list[Job], Policy]


def requests(max_cpu: int, max_ram: int, max_gpu: int) -> st.SearchStrategy[Resources]:
    return st.builds(
        Resources, st.integers(0, max_cpu), st.integers(0, max_ram), st.integers(0, max_gpu)
    )


@st.composite
def scenarios(draw: st.DrawFn, priority_order: bool | None = None) -> Scenario:
    """A cluster, running work that fits it, a pending queue with ties, and a policy."""
    total = draw(requests(12, 32, 6))
    reserved = draw(requests(total.cpu // 3, total.ram // 3, total.gpu // 3))
    cluster = Cluster(total=total, reserved=reserved)
    # Few priorities, so that levels hold several jobs and ties are common.
    priorities = st.sampled_from([0, 1, 2, 5, 500, 999, 1000])
    ids = count(1)

    room = total - reserved
    running: list[Job] = []
    for _ in range(draw(st.integers(0, 8))):
        request = draw(requests(6, 16, 3))
        if not request.fits_in(room):
            continue
        room -= request
        started_at = NOW - draw(st.sampled_from([0, 10, 30, 100, 1000]))
        duration = draw(st.none() | st.sampled_from([5, 50, 500, 5000]))
        # Some have work saved from earlier runs, some checkpointed during this one.
        checkpoint_age = draw(st.none() | st.sampled_from([0.0, 5.0, 20.0]))
        checkpointed_at = (
            NOW - checkpoint_age
            if checkpoint_age is not None and NOW - checkpoint_age >= started_at
            else None
        )
        saved = float(draw(st.sampled_from([0, 0, 3, 40])))
        if duration is not None:
            saved = min(saved, float(duration))
        running.append(
            Job(
                id=next(ids),
                priority=draw(priorities),
                request=request,
                submitted_at=float(draw(st.integers(0, 20))),
                started_at=started_at,
                duration_seconds=duration,
                saved_seconds=saved,
                checkpointed_at=checkpointed_at,
            )
        )
    pending = [
        Job(
            id=next(ids),
            priority=draw(priorities),
            request=draw(requests(8, 24, 4)),  # sometimes larger than the cluster
            submitted_at=float(draw(st.integers(0, 20))),
            waiting_since=NOW - draw(st.sampled_from([0, 100, 299, 301, 1000])),
            duration_seconds=draw(st.none() | st.sampled_from([5, 500])),
        )
        for _ in range(draw(st.integers(0, 12)))
    ]
    draw(st.randoms()).shuffle(pending)
    policy = Policy(
        starvation_seconds=300.0,
        preemption_grace_seconds=draw(st.sampled_from([0.0, 30.0])),
        preemption=draw(st.booleans()),
        backfill=draw(st.booleans()),
        priority_order=draw(st.booleans()) if priority_order is None else priority_order,
    )
    return cluster, running, pending, policy


def total(jobs: list[Job]) -> Resources:
    result = Resources()
    for job in jobs:
        result += job.request
    return result


def preemptible_below(job: Job, running: list[Job], policy: Policy) -> Resources:
    """What preempting every strictly-lower-priority candidate would free for `job`."""
    return total(
        [
            other
            for other in running
            if other.priority < job.priority
            and other.started_at is not None
            and NOW - other.started_at >= policy.preemption_grace_seconds
        ]
    )


@FAST
@given(scenarios())
def test_a_pass_leaves_the_cluster_consistent(scenario: Scenario) -> None:
    cluster, running, pending, policy = scenario

    plan = run_pass(cluster, running, pending, NOW, policy)

    used = total(plan.running)
    assert (cluster.reserved + used).fits_in(cluster.total)
    assert plan.available == cluster.total - cluster.reserved - used

    everyone = {job.id: job for job in running + pending}
    states = [job.id for job in plan.running] + [job.id for job in plan.pending] + plan.completed
    assert sorted(states) == sorted(everyone)

    running_ids = {job.id for job in plan.running}
    assert set(plan.started) <= running_ids
    assert all(everyone[job_id] in pending for job_id in plan.started)
    for victim, preemptor in plan.preempted.items():
        assert everyone[victim].priority < everyone[preemptor].priority
        assert victim not in running_ids
    assert plan.pending == sorted(plan.pending, key=lambda job: order_key(job, policy))


@FAST
@given(scenarios())
def test_nothing_left_pending_could_start(scenario: Scenario) -> None:
    cluster, running, pending, policy = scenario

    plan = run_pass(cluster, running, pending, NOW, policy)

    holder = next((job for job in plan.pending if job.id == plan.held_back_by), None)
    # Without backfill the sweep stops at the first job that could ever fit: only that one
    # must be unable to start; those behind it wait by rule.
    blocker = next((job for job in plan.pending if job.request.fits_in(cluster.total)), None)
    for job in plan.pending:
        if not policy.backfill and job is not blocker:
            continue
        if holder is not None and order_key(job, policy) > order_key(holder, policy):
            continue
        assert not job.request.fits_in(plan.available)
        if policy.preemption:
            ceiling = plan.available + preemptible_below(job, plan.running, policy)
            assert not job.request.fits_in(ceiling)


@FAST
@given(scenarios())
def test_a_second_pass_changes_nothing(scenario: Scenario) -> None:
    cluster, running, pending, policy = scenario
    plan = run_pass(cluster, running, pending, NOW, policy)

    again = run_pass(cluster, plan.running, plan.pending, NOW, policy)

    assert (again.started, again.preempted, again.completed) == ([], {}, [])
    assert again.held_back_by == plan.held_back_by
    assert again.running == plan.running
    assert again.pending == plan.pending


@FAST
@given(scenarios())
def test_loading_only_the_candidate_slice_decides_the_same(scenario: Scenario) -> None:
    cluster, running, pending, policy = scenario
    bounds = candidate_bounds(cluster, running, NOW, policy)
    slice_ = [job for job in pending if needs_loading(job, bounds, cluster, NOW, policy)]

    whole = run_pass(cluster, running, pending, NOW, policy)
    partial = run_pass(cluster, running, slice_, NOW, policy)

    assert partial.started == whole.started
    assert partial.preempted == whole.preempted
    assert partial.held_back_by == whole.held_back_by
    assert partial.running == whole.running
    # The bands cover every priority, each once.
    assert bounds[0][0] == 0 and bounds[-1][1] == 1000
    assert all(a[1] + 1 == b[0] for a, b in zip(bounds, bounds[1:], strict=False))


@FAST
@given(scenarios(priority_order=True))
def test_a_pass_matches_a_literal_reading_of_the_rules(scenario: Scenario) -> None:
    cluster, running, pending, policy = scenario

    plan = run_pass(cluster, running, pending, NOW, policy)

    expected = literal_pass(cluster, running, pending, policy)
    assert plan.completed == expected.completed
    assert plan.started == expected.started
    assert plan.preempted == expected.preempted
    assert plan.held_back_by == expected.held_back_by
    assert sorted(plan.running, key=lambda j: j.id) == sorted(expected.running, key=lambda j: j.id)
    assert plan.pending == expected.pending


def literal_pass(cluster: Cluster, running: list[Job], pending: list[Job], policy: Policy) -> Plan:
    """SPEC 5 read word by word, in priority order, with no care for speed."""

    def unsaved(job: Job) -> float:
        assert job.started_at is not None
        return NOW - max(job.started_at, job.checkpointed_at or job.started_at)

    def share(job: Job) -> float:
        fractions = [
            getattr(job.request, name) / getattr(cluster.total, name)
            for name in ("cpu", "ram", "gpu")
            if getattr(cluster.total, name) > 0
        ]
        return max(fractions, default=0.0)

    completed = [
        job.id
        for job in running
        if job.duration_seconds is not None
        and job.saved_seconds + unsaved(job) >= job.duration_seconds
    ]
    was_running = {job.id: job for job in running if job.id not in completed}
    now_running = dict(was_running)
    now_pending = {job.id: job for job in pending}
    started: list[int] = []
    preempted: dict[int, int] = {}
    held_back_by: int | None = None

    def available() -> Resources:
        return cluster.total - cluster.reserved - total(list(now_running.values()))

    def start(job: Job) -> None:
        del now_pending[job.id]
        if job.id in was_running:
            del preempted[job.id]
            now_running[job.id] = was_running[job.id]
        else:
            started.append(job.id)
            now_running[job.id] = replace(job, started_at=NOW, checkpointed_at=None)

    last_key: tuple[float, ...] | None = None
    while True:
        # The next job in order after the last one looked at; requeued victims rank below
        # their preemptor, so they come up at their place.
        later = [
            job
            for job in now_pending.values()
            if last_key is None or order_key(job, policy) > last_key
        ]
        if not later:
            break
        job = min(later, key=lambda j: order_key(j, policy))
        last_key = order_key(job, policy)
        if job.request.fits_in(available()):
            start(job)
            continue
        lower = [
            other
            for other in now_running.values()
            if other.priority < job.priority
            and other.started_at is not None
            and NOW - other.started_at >= policy.preemption_grace_seconds
        ]
        if policy.preemption and job.request.fits_in(available() + total(lower)):
            for level in sorted({other.priority for other in lower}):
                released = [other for other in lower if other.priority <= level]
                if job.request.fits_in(available() + total(released)):
                    break
            kept: list[Job] = []
            victims: list[Job] = []

            # Highest level first; within one, the most unsaved work (seconds x dominant
            # share) first, then the earliest started, then the lowest id.
            def put_back_order(o: Job) -> tuple[float, ...]:
                return (-o.priority, -unsaved(o) * share(o), o.started_at or 0.0, o.id)

            for other in sorted(released, key=put_back_order):
                room = available() + total(released) - total(kept) - other.request
                (kept if job.request.fits_in(room) else victims).append(other)
            for victim in victims:
                del now_running[victim.id]
                now_pending[victim.id] = replace(victim, waiting_since=NOW, started_at=None)
                preempted[victim.id] = job.id
            start(job)
            continue
        if job.request.fits_in(cluster.total):
            starving = NOW - job.waiting_since > policy.starvation_seconds
            if starving or not policy.backfill:
                held_back_by = job.id if starving else None
                break
    return Plan(
        completed=completed,
        started=started,
        preempted=preempted,
        held_back_by=held_back_by,
        running=list(now_running.values()),
        pending=sorted(now_pending.values(), key=lambda j: order_key(j, policy)),
        available=available(),
    )


def list_fetch(pending: list[Job], cluster: Cluster, policy: Policy):  # type: ignore[no-untyped-def]
    """A `Fetch` over a plain list, like the database: it never sees the pass's own changes."""

    def fetch(bounds, starving_before, after, limit):  # type: ignore[no-untyped-def]
        ordered = sorted(pending, key=lambda job: order_key(job, policy))
        chosen = [
            job
            for job in ordered
            if (after is None or order_key(job, policy) > order_key(after, policy))
            and needs_loading(
                job, bounds, cluster, starving_before + policy.starvation_seconds, policy
            )
        ]
        return chosen if limit is None else chosen[:limit]

    return fetch


@FAST
@given(scenarios(), st.integers(1, 4))
def test_the_incremental_pass_decides_exactly_as_a_pass_over_the_whole_queue(
    scenario: Scenario, batch_size: int
) -> None:
    cluster, running, pending, policy = scenario
    whole = run_pass(cluster, running, pending, NOW, policy)

    incremental = run_pass_incrementally(
        cluster, running, NOW, list_fetch(pending, cluster, policy), policy, batch_size
    )

    assert sorted(incremental.started) == sorted(whole.started)
    assert incremental.preempted == whole.preempted
    assert incremental.completed == whole.completed
    assert incremental.held_back_by == whole.held_back_by
    assert sorted(incremental.running, key=lambda job: job.id) == sorted(
        whole.running, key=lambda job: job.id
    )


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.integers(PRIORITY_MIN, PRIORITY_MAX),
        st.builds(Resources, st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)),
        max_size=150,  # both builds: one by one up to 64 levels, the linear one above
    ),
    st.lists(st.integers(PRIORITY_MIN - 2, PRIORITY_MAX + 2), min_size=1, max_size=20),
)
def test_priority_sums_answer_the_sum_of_every_level_below(
    sums: dict[int, Resources], asked: list[int]
) -> None:
    tree = PrioritySums(sums)
    grown = PrioritySums()
    for priority, amount in sums.items():
        grown.add(priority, amount + amount, sign=1)
        grown.add(priority, amount, sign=-1)

    for priority in asked:
        below = [amount for level, amount in sums.items() if level < priority]
        expected = Resources(
            sum(a.cpu for a in below), sum(a.ram for a in below), sum(a.gpu for a in below)
        )
        assert tree.below(priority) == grown.below(priority) == expected
        assert tree.below_parts(priority) == (expected.cpu, expected.ram, expected.gpu)


@FAST
@given(scenarios(priority_order=True), st.integers(1, 4))
def test_running_work_no_pending_job_outranks_decides_as_held_room(
    scenario: Scenario, batch_size: int
) -> None:
    # What `services.loading.running_below` hands a pass: running work at or above the top
    # pending priority can never be a victim, so it enters as reserved capacity instead.
    cluster, running, pending, policy = scenario
    policy = replace(policy, backfill=True)
    still_running = [job for job in running if (ends_at_of(job) or NOW + 1) > NOW]
    whole = run_pass(cluster, still_running, pending, NOW, policy)
    top = max((job.priority for job in pending), default=PRIORITY_MAX + 1)
    held = [job for job in still_running if job.priority >= top]
    folded = Cluster(total=cluster.total, reserved=cluster.reserved + total(held))
    below = [job for job in still_running if job.priority < top]

    incremental = run_pass_incrementally(
        folded, below, NOW, list_fetch(pending, folded, policy), policy, batch_size
    )

    assert sorted(incremental.started) == sorted(whole.started)
    assert incremental.preempted == whole.preempted
    assert incremental.held_back_by == whole.held_back_by
    assert sorted(incremental.running + held, key=lambda job: job.id) == sorted(
        whole.running, key=lambda job: job.id
    )


@st.composite
def crowded_levels(draw: st.DrawFn) -> tuple[Cluster, list[Job], Job]:
    """Running jobs on many priority levels (more than a reason names), some holding none
    of a resource, and a pending job that does not fit."""
    running = [
        Job(
            id=i,
            priority=draw(st.sampled_from([0, 1, 2, 3, 5, 8, 9])),
            request=draw(requests(2, 2, 1)),
            submitted_at=0.0,
            waiting_since=0.0,
            started_at=NOW - 10,
        )
        for i in range(1, draw(st.integers(1, 40)) + 1)
    ]
    held = Resources()
    for job in running:
        held += job.request
    cluster = Cluster(total=held, reserved=Resources())
    priority = draw(st.sampled_from([0, 1, 4, 9, 10]))
    request = draw(requests(2, 2, 1).filter(lambda r: not r.is_zero()))
    waiting = Job(id=1000, priority=priority, request=request, submitted_at=1.0, waiting_since=1.0)
    return cluster, running, waiting


@FAST
@given(crowded_levels())
def test_naming_only_the_levels_a_reason_can_name_changes_no_reason(
    scenario: tuple[Cluster, list[Job], Job],
) -> None:
    cluster, running, waiting = scenario
    policy = Policy()
    levels = running_levels(running, NOW, policy)
    # Every level named, as if the database had sent every level's holders.
    by_level: dict[int, list[Job]] = {}
    for job in sorted(running, key=lambda j: j.id):
        by_level.setdefault(job.priority, []).append(job)
    everything = [
        replace(level, named=_lowest_holders(by_level[level.priority])) for level in levels
    ]

    def reason(summary: RunningSummary) -> str:
        return explain_wait(waiting, cluster, summary, now=NOW, policy=policy, name_blockers=True)

    assert reason(RunningSummary.of_levels(levels)) == reason(RunningSummary.of_levels(everything))
    assert reason(RunningSummary(running, NOW, policy)) == reason(RunningSummary.of_levels(levels))


def _lowest_holders(jobs: list[Job]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    cpu, ram, gpu = (
        tuple([job.id for job in jobs if getattr(job.request, name) > 0][:NAMED_PER_LEVEL])
        for name in ("cpu", "ram", "gpu")
    )
    return cpu, ram, gpu
