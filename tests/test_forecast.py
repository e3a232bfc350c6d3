"""The forecast (SPEC section 5, "Forecast"): hand-built clusters, then properties checked
against `scheduler.run_pass` replayed over the forecast's own timeline."""

from __future__ import annotations

import heapq
import math
from dataclasses import replace
from itertools import count
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import forecast as forecast_module
from forecast import (
    Estimate,
    Waiting,
    forecast,
    forecast_start,
    image_repository,
    later_than,
    median_run_time,
)
from scheduler import Cluster, Job, Policy, Resources, ends_at_of, order_key, run_pass

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
POLICY = Policy()


def gpus(count: int) -> Cluster:
    return Cluster(total=Resources(gpu=count))


def running(
    id: int,
    priority: int = 0,
    *,
    gpu: int = 1,
    started: float = NOW,
    duration: int | None = None,
    saved: float = 0.0,
    checkpointed: float | None = None,
) -> Job:
    return Job(
        id=id,
        priority=priority,
        request=Resources(gpu=gpu),
        submitted_at=started - 1,
        started_at=started,
        duration_seconds=duration,
        saved_seconds=saved,
        checkpointed_at=checkpointed,
    )


def queued(
    id: int,
    priority: int = 0,
    *,
    gpu: int = 1,
    duration: int | None = None,
    since: float = NOW,
    after: frozenset[int] = frozenset(),
    external: dict[int, Estimate] | None = None,
) -> Waiting:
    job = Job(
        id=id,
        priority=priority,
        request=Resources(gpu=gpu),
        submitted_at=NOW - 1000 + id,
        waiting_since=since,
        duration_seconds=duration,
    )
    return Waiting(job, after, external or {})


def at(start: float | None, end: float | None, basis: str = "declared") -> Estimate:
    return Estimate(start, end, basis, None)  # type: ignore[arg-type]


# --- Hand-built clusters -----------------------------------------------------------------


def test_a_chain_of_timed_jobs_starts_each_when_the_previous_ends() -> None:
    estimates = forecast(
        gpus(1),
        [running(1, started=NOW - 5, duration=10)],
        [
            queued(2, duration=20),
            queued(3, duration=30),
            queued(4, duration=5, after=frozenset({3})),
        ],
        NOW,
        POLICY,
        history={},
    )

    assert estimates == {
        1: at(NOW - 5, NOW + 5),
        2: at(NOW + 5, NOW + 25),
        3: at(NOW + 25, NOW + 55),
        4: at(NOW + 55, NOW + 60),
    }


def test_saved_work_shortens_a_pending_run() -> None:
    preempted_before = replace(queued(2, duration=100).job, saved_seconds=40.0)

    estimates = forecast(gpus(1), [], [Waiting(preempted_before)], NOW, POLICY, history={})

    assert estimates[2] == at(NOW, NOW + 60)


def test_a_preemption_expected_later_moves_the_victims_end_by_its_wait_and_lost_work() -> None:
    dependency = running(1, priority=5, started=NOW - 10, duration=60)  # ends at NOW + 50
    # Ran 60 s before a checkpoint at NOW - 40: without preemption it ends at NOW + 900.
    victim = running(
        2, priority=1, started=NOW - 100, duration=1000, saved=60.0, checkpointed=NOW - 40
    )
    urgent = queued(3, priority=9, gpu=2, duration=100, after=frozenset({1}))
    assert ends_at_of(victim) == NOW + 900

    estimates = forecast(gpus(2), [dependency, victim], [urgent], NOW, POLICY, history={})

    assert estimates[1] == at(NOW - 10, NOW + 50)
    # Eligible when its dependency completes, it preempts the victim at once.
    assert estimates[3] == at(NOW + 50, NOW + 150)
    # The victim waits 100 s and loses the 90 s since its checkpoint; its 60 s saved stay.
    assert estimates[2] == at(NOW - 100, NOW + 150 + 1000 - 60)
    assert estimates[2].end_at == ends_at_of(victim) + 100 + 90


def test_a_starving_job_holds_back_a_small_one_that_would_fit() -> None:
    cluster = gpus(4)
    busy = [running(1, 5, gpu=2, duration=100), running(2, 5, gpu=1, duration=50)]
    big = queued(3, priority=3, gpu=4, duration=60, since=NOW - 400)  # waited past 300 s
    small = queued(4, priority=1, gpu=1, duration=10)

    estimates = forecast(cluster, busy, [big, small], NOW, POLICY, history={})

    assert estimates[3] == at(NOW + 100, NOW + 160)
    assert estimates[4] == at(NOW + 160, NOW + 170)  # not at NOW, beside the others
    patient = forecast(cluster, busy, [big, small], NOW, Policy(starvation_seconds=1e9), history={})
    assert patient[4] == at(NOW, NOW + 10)
    assert patient[3] == at(NOW + 100, NOW + 160)


def test_an_unknown_duration_stops_the_estimates_that_wait_for_it() -> None:
    endless = running(1, priority=5, duration=None)
    beside = queued(2, priority=1, duration=10)
    after_it = queued(3, priority=1, gpu=2, duration=10)
    chained = queued(4, priority=1, duration=10, after=frozenset({3}))
    on_endless = queued(5, priority=1, duration=10, after=frozenset({1}))

    estimates = forecast(
        gpus(2),
        [endless],
        [beside, after_it, chained, on_endless],
        NOW,
        POLICY,
        history={},
        images={1: "GHCR.io/Acme/Train:1.0"},
    )

    unknown = "deployment 1 has no duration and fewer than 3 completed runs of ghcr.io/acme/train"
    assert estimates[1] == Estimate(None, None, "unknown", unknown)
    assert estimates[2] == at(NOW, NOW + 10)  # beside it: nothing unknown in the way
    assert estimates[3] == Estimate(
        None,
        None,
        "unknown",
        "waits for room held by deployment 1, which has no duration and fewer than 3 "
        "completed runs of ghcr.io/acme/train",
    )
    assert estimates[4] == Estimate(
        None, None, "unknown", f"waits for dependency 3, whose end is unknown: {unknown}"
    )
    assert estimates[5] == Estimate(
        None, None, "unknown", f"waits for dependency 1, whose end is unknown: {unknown}"
    )


def test_a_pending_job_without_a_duration_is_unknown_even_once_it_could_start() -> None:
    estimates = forecast(gpus(1), [], [queued(1)], NOW, POLICY, history={})

    assert estimates[1].basis == "unknown"
    assert estimates[1].reason == (
        "deployment 1 has no duration and fewer than 3 completed runs of its image"
    )


def test_history_stands_in_for_a_missing_duration_and_marks_what_follows_it() -> None:
    from_history = running(1, priority=5, started=NOW - 30, saved=0.0)  # 100 s in all
    short = running(2, priority=5, duration=20)
    top = running(3, priority=9, duration=500)  # nothing pending outranks it
    first = queued(4, duration=10)  # starts when 2 ends
    second = queued(5, duration=100)  # starts when 4 ends
    third = queued(6, duration=10)  # starts when 1 ends
    # Outranks 4, 5 and 6 but never finds room to preempt them: it waits for 3 to end.
    large = queued(7, priority=3, gpu=3, duration=10)

    estimates = forecast(
        Cluster(total=Resources(gpu=3)),
        [from_history, short, top],
        [first, second, third, large],
        NOW,
        POLICY,
        history={1: 100.0},
    )

    assert estimates[1] == at(NOW - 30, NOW + 70, "history")
    assert estimates[2] == at(NOW, NOW + 20)
    assert estimates[4] == at(NOW + 20, NOW + 30)
    # 7 could preempt it had 1 ended sooner: its end rests on the history end at NOW + 70.
    assert estimates[5] == at(NOW + 30, NOW + 130, "history")
    assert estimates[6] == at(NOW + 70, NOW + 80, "history")
    assert estimates[7] == at(NOW + 500, NOW + 510, "history")
    assert estimates[3] == at(NOW, NOW + 500)  # nothing pending outranks it: never cut short


def test_the_end_of_a_run_nothing_pending_outranks_rests_only_on_its_start() -> None:
    from_history = running(1, priority=5, started=NOW - 30)  # ends at NOW + 70
    later = queued(2, priority=1, duration=100)  # starts at NOW + 70, nothing outranks it

    estimates = forecast(gpus(1), [from_history], [later], NOW, POLICY, history={1: 100.0})

    assert estimates[2] == at(NOW + 70, NOW + 170, "history")  # its start rests on history


def test_a_pending_job_with_history_lasts_the_estimate_minus_its_saved_work() -> None:
    job = replace(queued(1).job, saved_seconds=15.0)

    estimates = forecast(gpus(1), [], [Waiting(job)], NOW, POLICY, history={1: 60.0})

    assert estimates[1] == at(NOW, NOW + 45, "history")


def test_dependencies_in_other_clusters_complete_at_their_estimated_end() -> None:
    declared = queued(1, duration=10, after=frozenset({71}), external={71: at(None, NOW + 40)})
    historic = queued(
        2, duration=10, after=frozenset({72}), external={72: at(None, NOW + 100, "history")}
    )
    unknown = queued(3, duration=10, after=frozenset({73}))

    estimates = forecast(gpus(3), [], [declared, historic, unknown], NOW, POLICY, history={})

    assert estimates[1] == at(NOW + 40, NOW + 50)
    assert estimates[2] == at(NOW + 100, NOW + 110, "history")
    assert estimates[3] == Estimate(
        None,
        None,
        "unknown",
        "waits for dependency 73, whose end is unknown: "
        "deployment 73 in another cluster has no estimated end",
    )


def test_a_running_job_past_its_end_ends_now() -> None:
    overdue = running(1, started=NOW - 100, duration=10)

    assert forecast(gpus(1), [overdue], [], NOW, POLICY, history={})[1] == at(NOW - 100, NOW)


def test_beyond_the_horizon_the_estimate_says_so() -> None:
    cluster = gpus(2)
    safe = running(1, priority=9, duration=100)  # nothing pending outranks it
    exposed = running(2, priority=1, duration=200)  # the pending job outranks it
    waiting = queued(3, priority=5, gpu=2, duration=10)

    estimates = forecast(
        cluster, [safe, exposed], [waiting], NOW, POLICY, history={}, horizon_seconds=50
    )

    beyond = "later than 2023-11-14T22:14:10Z"
    assert later_than(NOW + 50) == beyond
    assert estimates[1] == at(NOW, NOW + 100)
    assert estimates[2] == Estimate(None, None, "unknown", beyond)
    assert estimates[3] == Estimate(None, None, "unknown", beyond)


def test_max_events_stops_after_that_many_instants() -> None:
    chain = [queued(id, duration=10) for id in range(1, 6)]

    estimates = forecast(gpus(1), [], chain, NOW, POLICY, history={}, max_events=3)

    # Instants NOW, NOW + 10 and NOW + 20: the third job starts, and as nothing pending
    # outranks it its end is settled too; what comes after is not.
    assert estimates[1] == at(NOW, NOW + 10)
    assert estimates[2] == at(NOW + 10, NOW + 20)
    assert estimates[3] == at(NOW + 20, NOW + 30)
    assert estimates[4] == Estimate(None, None, "unknown", later_than(NOW + 20))
    assert estimates[5].reason == later_than(NOW + 20)


def test_a_job_too_large_for_the_cluster_is_unknown_and_says_why() -> None:
    estimates = forecast(gpus(1), [], [queued(1, gpu=2, duration=10)], NOW, POLICY, history={})

    assert estimates[1].basis == "unknown"
    assert estimates[1].reason is not None and "unless the cluster grows" in estimates[1].reason


def test_what_can_never_start_says_so_even_past_the_horizon() -> None:
    too_large = queued(2, gpu=3, duration=10)
    after_it = queued(3, duration=10, after=frozenset({2}))

    estimates = forecast(
        gpus(2),
        [running(1, duration=100)],
        [too_large, after_it],
        NOW,
        POLICY,
        history={},
        horizon_seconds=10,
    )

    assert estimates[2].reason is not None and "unless the cluster grows" in estimates[2].reason
    assert estimates[3].reason == (
        "waits for dependency 2, whose end is unknown: "
        "deployment 2 cannot start unless the cluster grows"
    )


def test_an_endless_job_preempted_leaves_the_preemptors_estimate_known() -> None:
    endless = running(1, priority=1, started=NOW - 50)
    urgent = queued(2, priority=9, duration=10)

    estimates = forecast(gpus(1), [endless], [urgent], NOW, POLICY, history={})

    assert estimates[2] == at(NOW, NOW + 10)
    assert estimates[1].basis == "unknown"


def test_a_starving_job_held_by_reservations_holds_back_the_rest() -> None:
    cluster = Cluster(total=Resources(gpu=4), reserved=Resources(gpu=2))
    starving = queued(1, priority=5, gpu=3, duration=10, since=NOW - 1000)
    behind = queued(2, priority=1, gpu=1, duration=10)

    estimates = forecast(cluster, [], [starving, behind], NOW, POLICY, history={})

    assert estimates[1].reason is not None and "reserved capacity" in estimates[1].reason
    assert estimates[2].reason == (
        "held back behind deployment 1, which has waited longer than the starvation limit "
        "and starts first: deployment 1 cannot start until reserved capacity is released"
    )


def test_preemption_grace_delays_a_preemption_to_when_it_ends() -> None:
    young = running(1, priority=1, started=NOW - 10, duration=1000)
    urgent = queued(2, priority=9, duration=10)

    estimates = forecast(
        gpus(1), [young], [urgent], NOW, Policy(preemption_grace_seconds=60), history={}
    )

    assert estimates[2] == at(NOW + 50, NOW + 60)
    assert estimates[1] == at(NOW - 10, NOW + 60 + 1000)


# --- Tables ------------------------------------------------------------------------------


# --- One start, for a preview ------------------------------------------------------------


def test_the_start_of_one_job_is_the_forecasts_and_the_simulation_stops_there() -> None:
    chain = [queued(id, duration=10) for id in range(2, 40)]
    holder = running(1, started=NOW - 5, duration=10)
    calls: list[float] = []
    real = forecast_module.run_pass

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1.0)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    with mock.patch.object(forecast_module, "run_pass", counted):
        start = forecast_start(gpus(1), [holder], chain, NOW, POLICY, target=4, history={})
        to_target = len(calls)
        full = forecast(gpus(1), [holder], chain, NOW, POLICY, history={})

    assert start == Estimate(NOW + 25, None, "declared", None)
    assert full[4].start_at == start.start_at
    # A call of the pass per start: at NOW + 5, + 15 and + 25, then it stops; the whole
    # forecast goes on through all 38 starts.
    assert to_target == 3
    assert len(calls) - to_target == 38


def test_the_start_of_one_job_behind_history_says_history() -> None:
    from_history = running(1, started=NOW - 30)  # 100 s in all: ends at NOW + 70
    later = queued(2, duration=100)

    start = forecast_start(
        gpus(1), [from_history], [later], NOW, POLICY, target=2, history={1: 100.0}
    )

    assert start == Estimate(NOW + 70, None, "history", None)


def test_the_start_of_one_job_is_unknown_for_the_forecasts_reasons() -> None:
    endless = running(1, duration=None)
    behind = queued(2, duration=10)
    untimed = queued(3, gpu=0)
    cluster = gpus(1)

    def start_of(target: int, **options: float) -> Estimate:
        return forecast_start(
            cluster,
            [endless],
            [behind, untimed],
            NOW,
            POLICY,
            target=target,
            history={},
            **options,  # type: ignore[arg-type]
        )

    full = forecast(cluster, [endless], [behind, untimed], NOW, POLICY, history={})
    assert (
        start_of(2)
        == full[2]
        == Estimate(
            None,
            None,
            "unknown",
            "waits for room held by deployment 1, which has no duration and fewer than 3 "
            "completed runs of its image",
        )
    )
    # Without a duration of its own, its start is not given even though it could start.
    assert start_of(3) == full[3]
    assert (
        full[3].reason
        == "deployment 3 has no duration and fewer than 3 completed runs of its image"
    )
    with pytest.raises(ValueError):
        start_of(1)  # running, not pending


def test_the_start_of_one_job_past_the_horizon_is_later_than_it() -> None:
    chain = [queued(id, duration=10) for id in range(1, 6)]

    start = forecast_start(gpus(1), [], chain, NOW, POLICY, target=5, history={}, max_events=3)

    assert start == Estimate(None, None, "unknown", later_than(NOW + 20))


@pytest.mark.parametrize(
    ("reference", "repository"),
    [
        ("GHCR.io/Acme/Train:1.0", "ghcr.io/acme/train"),
        ("nginx", "nginx"),
        ("nginx:1.27", "nginx"),
        ("docker.io/library/nginx:latest", "docker.io/library/nginx"),
        ("registry:5000/team/img", "registry:5000/team/img"),
        ("registry:5000/team/img:2.1", "registry:5000/team/img"),
        ("registry:5000/team/img@sha256:" + "a" * 64, "registry:5000/team/img"),
        ("ghcr.io/acme/model:1.0@sha256:" + "B" * 64, "ghcr.io/acme/model"),
        ("localhost:5000/x", "localhost:5000/x"),
    ],
)
def test_image_repository(reference: str, repository: str) -> None:
    assert image_repository(reference) == repository


@pytest.mark.parametrize(
    ("runs", "median"),
    [
        ([], None),
        ([5.0], None),
        ([5.0, 7.0], None),
        ([3.0, 1.0, 2.0], 2.0),
        ([1.0, 2.0, 3.0, 10.0], 2.5),
        ([4.5, 4.5, 4.5], 4.5),
    ],
)
def test_median_run_time(runs: list[float], median: float | None) -> None:
    assert median_run_time(runs) == median


# --- Properties --------------------------------------------------------------------------

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Scenario = tuple[Cluster, list[Job], list[Waiting], Policy]


def small_requests(most: int) -> st.SearchStrategy[Resources]:
    return st.builds(Resources, st.integers(0, most), st.integers(0, most), st.integers(0, most))


@st.composite
def scenarios(
    draw: st.DrawFn, same_requests: bool = False, dependencies: bool = True, crowded: bool = False
) -> Scenario:
    """A small cluster with declared durations only: running work that fits it, a queue
    with ties, old waits and dependencies (here and in other clusters), and a policy.
    Crowded: more of everything, and priorities anywhere in the range."""
    total = draw(small_requests(12 if crowded else 6))
    reserved = draw(small_requests(1))
    if not reserved.fits_in(total):
        reserved = Resources()
    cluster = Cluster(total=total, reserved=reserved)
    priorities = st.sampled_from([0, 1, 5, 9, 1000])
    if crowded:
        priorities = priorities | st.integers(0, 1000)
    shared = draw(small_requests(3))
    request = st.just(shared) if same_requests else small_requests(3)
    durations = st.sampled_from([1, 7, 10, 30, 100])
    ids = count(1)

    room = total - reserved
    jobs_running: list[Job] = []
    for _ in range(draw(st.integers(0, 14 if crowded else 5))):
        asked = draw(request)
        if not asked.fits_in(room):
            continue
        room -= asked
        duration = draw(durations)
        started = NOW - draw(st.sampled_from([0, 3, 20, 50]))
        saved = draw(st.sampled_from([0.0, 0.5, 2.0]))
        checkpoint = draw(st.none() | st.sampled_from([0.0, 1.0]))
        jobs_running.append(
            Job(
                id=next(ids),
                priority=draw(priorities),
                request=asked,
                submitted_at=started - draw(st.sampled_from([0, 100])),
                started_at=started,
                duration_seconds=duration,
                saved_seconds=min(saved, duration - 0.5),
                checkpointed_at=started + checkpoint if checkpoint is not None else None,
            )
        )
        if ends_at_of(jobs_running[-1]) <= NOW:  # due already: keep scenarios exact
            jobs_running.pop()

    queue: list[Waiting] = []
    for _ in range(draw(st.integers(0, 20 if crowded else 9))):
        job_id = next(ids)
        duration = draw(durations)
        earlier = list(range(1, job_id))
        depends: set[int] = set()
        external: dict[int, Estimate] = {}
        if dependencies and earlier and draw(st.booleans()):
            depends.add(draw(st.sampled_from(earlier)))
        if dependencies and draw(st.integers(0, 4)) == 0:
            outside = 100 + job_id
            depends.add(outside)
            external[outside] = at(None, NOW + draw(st.sampled_from([0, 5, 40])))
        job = Job(
            id=job_id,
            priority=draw(priorities),
            request=draw(request),
            submitted_at=NOW - draw(st.sampled_from([0, 10, 500])),
            waiting_since=NOW - draw(st.sampled_from([0, 100, 400])),
            duration_seconds=duration,
            saved_seconds=draw(st.sampled_from([0.0, 0.5])),
        )
        queue.append(Waiting(job, frozenset(depends), external))
    # Dependencies only on jobs of this scenario that do not wait themselves in a cycle:
    # ids only point back, so there is none.
    policy = Policy(
        starvation_seconds=draw(st.sampled_from([30.0, 300.0, math.inf])),
        preemption_grace_seconds=draw(st.sampled_from([0.0, 0.0, 15.0])),
        preemption=draw(st.booleans()) or draw(st.booleans()),
        backfill=draw(st.booleans()) or draw(st.booleans()),
        priority_order=draw(st.booleans()) or draw(st.booleans()),
        cost_aware_victims=draw(st.booleans()),
    )
    return cluster, jobs_running, queue, policy


def replay(
    cluster: Cluster,
    jobs_running: list[Job],
    queue: list[Waiting],
    policy: Policy,
    estimates: dict[int, Estimate],
) -> tuple[dict[int, float], dict[int, float]]:
    """(first start, end) per job, from `run_pass` at every instant the forecast names and
    every one the replay finds itself (ends, grace periods, outside dependencies): at each,
    finish what is due, release dependents, then one whole pass over the eligible queue."""
    instants = [NOW]
    for estimate in estimates.values():
        instants.extend(
            t for t in (estimate.start_at, estimate.end_at) if t is not None and t >= NOW
        )
    ready_at = {
        dependency: max(estimate.end_at, NOW)
        for entry in queue
        for dependency, estimate in entry.external_ends.items()
        if estimate.end_at is not None
    }
    instants.extend(ready_at.values())
    heapq.heapify(instants)
    current = list(jobs_running)
    eligible = [entry.job for entry in queue if not entry.depends_on]
    waiting = {entry.job.id: entry for entry in queue if entry.depends_on}
    done_at: dict[int, float] = dict(ready_at)
    first_start: dict[int, float] = {}
    seen: set[float] = set()

    def plan_for(instant: float) -> None:
        for job in current:
            end = ends_at_of(job)
            if end is not None:
                heapq.heappush(instants, max(end, instant))
            assert job.started_at is not None
            grace_over = job.started_at + policy.preemption_grace_seconds
            while grace_over - job.started_at < policy.preemption_grace_seconds:
                grace_over = math.nextafter(grace_over, math.inf)
            if grace_over > instant:
                heapq.heappush(instants, grace_over)

    plan_for(NOW)
    while instants:
        instant = heapq.heappop(instants)
        if instant in seen or instant > NOW + 10**6:
            continue
        seen.add(instant)
        finishing = run_pass(cluster, current, [], instant, policy)
        for job_id in finishing.completed:
            done_at[job_id] = max(finishing.finished_at[job_id], NOW)
        current = finishing.running
        for job_id, entry in list(waiting.items()):
            if all(done_at.get(dep, math.inf) <= instant for dep in entry.depends_on):
                since = max(done_at[dep] for dep in entry.depends_on)
                eligible.append(replace(entry.job, waiting_since=since))
                del waiting[job_id]
        plan = run_pass(cluster, current, eligible, instant, policy)
        for job_id in plan.started:
            first_start.setdefault(job_id, instant)
        current, eligible = plan.running, plan.pending
        plan_for(instant)
    return first_start, done_at


@FAST
@given(scenarios() | scenarios(crowded=True), st.sampled_from([1, 2, 3, 64]))
def test_every_estimate_is_now_or_later_and_replaying_it_gives_the_same_times(
    scenario: Scenario, batch_size: int
) -> None:
    cluster, jobs_running, queue, policy = scenario

    # Small batches take the paths of a long queue: several calls, cursors, cuts.
    with mock.patch.object(forecast_module, "BATCH_SIZE", batch_size):
        estimates = forecast(cluster, jobs_running, queue, NOW, policy, history={})

    assert set(estimates) == {job.id for job in jobs_running} | {e.job.id for e in queue}
    first_start, ended = replay(cluster, jobs_running, queue, policy, estimates)
    running_ids = {job.id for job in jobs_running}
    for job_id, estimate in estimates.items():
        if estimate.basis == "unknown":
            # Declared durations only: just what capacity can never give is unknown.
            assert estimate.start_at is None and estimate.end_at is None
            assert estimate.reason is not None
            assert "cannot start" in estimate.reason or "whose end is unknown" in estimate.reason
            assert job_id not in ended
            continue
        assert estimate.basis == "declared" and estimate.reason is None
        assert estimate.end_at is not None and estimate.end_at >= NOW
        assert estimate.end_at == ended[job_id]
        if job_id in running_ids:
            assert estimate.start_at == next(j.started_at for j in jobs_running if j.id == job_id)
        else:
            assert estimate.start_at is not None and estimate.start_at >= NOW
            assert estimate.start_at == first_start[job_id]


@FAST
@given(scenarios(same_requests=True, dependencies=False))
def test_among_equal_requests_jobs_start_in_queue_order(scenario: Scenario) -> None:
    cluster, jobs_running, queue, policy = scenario
    policy = replace(policy, priority_order=True)

    estimates = forecast(cluster, jobs_running, queue, NOW, policy, history={})

    in_order = sorted((entry.job for entry in queue), key=order_key)
    starts = [estimates[job.id].start_at for job in in_order]
    known = [start for start in starts if start is not None]
    assert known == sorted(known)
    # And once one cannot start, nobody ranked after it (asking just as much) does.
    if None in starts:
        assert all(start is None for start in starts[starts.index(None) :])


@FAST
@given(scenarios(), st.integers(1, 6))
def test_a_shorter_horizon_keeps_the_estimates_it_reaches(scenario: Scenario, cap: int) -> None:
    cluster, jobs_running, queue, policy = scenario
    full = forecast(cluster, jobs_running, queue, NOW, policy, history={})

    capped = forecast(cluster, jobs_running, queue, NOW, policy, history={}, max_events=cap)

    for job_id, estimate in capped.items():
        if estimate.basis != "unknown":
            assert estimate == full[job_id]
        else:
            assert estimate.reason is not None


@FAST
@given(scenarios() | scenarios(crowded=True), st.sampled_from([1, 3, 64]), st.integers(1, 8))
def test_the_start_of_one_job_is_what_the_whole_forecast_says(
    scenario: Scenario, batch_size: int, cap: int
) -> None:
    cluster, jobs_running, queue, policy = scenario

    with mock.patch.object(forecast_module, "BATCH_SIZE", batch_size):
        for events in (forecast_module.DEFAULT_MAX_EVENTS, cap):
            full = forecast(
                cluster, jobs_running, queue, NOW, policy, history={}, max_events=events
            )
            for entry in queue:
                target = entry.job.id
                alone = forecast_start(
                    cluster,
                    jobs_running,
                    queue,
                    NOW,
                    policy,
                    target=target,
                    history={},
                    max_events=events,
                )
                whole = full[target]
                if whole.basis != "unknown":
                    assert alone == replace(whole, end_at=None)
                elif alone.basis == "unknown":
                    assert alone == whole
                else:
                    # Started within the horizon, but its run's end lies past it.
                    assert whole.reason is not None and whole.reason.startswith("later than")
                    assert alone.start_at is not None and alone.start_at >= NOW
