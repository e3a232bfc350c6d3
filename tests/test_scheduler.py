"""The placement algorithm, rule by rule (SPEC section 5), on plain lists of jobs."""

from __future__ import annotations

import pytest

from scheduler import (
    Cluster,
    Job,
    Plan,
    Policy,
    Resources,
    candidate_bounds,
    explain_wait,
    needs_loading,
    order_key,
    resolve_dependencies,
    run_pass,
    run_pass_incrementally,
    startable_bounds,
)

NOW = 100_000.0


def job(
    id: int,
    priority: int = 0,
    *,
    cpu: int = 0,
    ram: int = 0,
    gpu: int = 0,
    submitted: float = 0.0,
    waiting_since: float | None = None,
    started: float | None = None,
    duration: int | None = None,
) -> Job:
    """A job; pending unless `started` is given, waiting since its submission by default."""
    return Job(
        id=id,
        priority=priority,
        request=Resources(cpu, ram, gpu),
        submitted_at=submitted,
        waiting_since=submitted if waiting_since is None else waiting_since,
        started_at=started,
        duration_seconds=duration,
    )


def running(id: int, priority: int = 0, *, started: float = NOW - 1000, **request: int) -> Job:
    """A job that has been running since `started`."""
    return job(id, priority, started=started, **request)


def cluster(cpu: int = 0, ram: int = 0, gpu: int = 0, reserved: Resources | None = None) -> Cluster:
    return Cluster(total=Resources(cpu, ram, gpu), reserved=reserved or Resources())


def ids(jobs: list[Job]) -> list[int]:
    return [j.id for j in jobs]


def running_ids(plan: Plan) -> set[int]:
    return {j.id for j in plan.running}


# --- Resources ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "fits", "shortfall"),
    [
        (Resources(1, 2, 3), Resources(1, 2, 3), True, Resources()),
        (Resources(2, 2, 3), Resources(1, 2, 3), False, Resources(1, 0, 0)),
        (Resources(0, 5, 0), Resources(9, 4, 9), False, Resources(0, 1, 0)),
        (Resources(0, 0, 4), Resources(0, 0, 1), False, Resources(0, 0, 3)),
        (Resources(), Resources(), True, Resources()),
    ],
)
def test_resources_fit_and_shortfall(
    a: Resources, b: Resources, fits: bool, shortfall: Resources
) -> None:
    assert a.fits_in(b) is fits
    assert a.shortfall(b) == shortfall


def test_resources_add_subtract_and_zero() -> None:
    assert Resources(1, 2, 3) + Resources(4, 5, 6) == Resources(5, 7, 9)
    assert Resources(4, 5, 6) - Resources(1, 2, 3) == Resources(3, 3, 3)
    assert Resources().is_zero()
    assert not Resources(gpu=1).is_zero()


# --- Order -------------------------------------------------------------------------------


def test_order_key_is_priority_then_submission_then_id() -> None:
    a = job(7, 5, submitted=10.0)
    assert order_key(a) == (-5, 10.0, 7)
    assert order_key(a, Policy(priority_order=False)) == (10.0, 7)


def test_admission_order_is_priority_desc_then_submission_then_id() -> None:
    pending = [
        job(1, 1, gpu=1, submitted=1.0),
        job(2, 9, gpu=1, submitted=5.0),
        job(3, 9, gpu=1, submitted=2.0),
        job(5, 9, gpu=1, submitted=5.0),
        job(4, 1, gpu=1, submitted=0.5),
    ]

    plan = run_pass(cluster(gpu=3), [], pending, NOW)

    assert plan.started == [3, 2, 5]
    assert ids(plan.pending) == [4, 1]


def test_fifo_policy_ignores_priority_for_ordering() -> None:
    pending = [job(1, 9, gpu=1, submitted=3.0), job(2, 0, gpu=1, submitted=1.0)]

    plan = run_pass(
        cluster(gpu=1), [], pending, NOW, Policy(priority_order=False, preemption=False)
    )

    assert plan.started == [2]
    assert ids(plan.pending) == [1]


def test_fifo_policy_still_preempts_by_priority() -> None:
    pending = [job(1, 9, gpu=1, submitted=3.0), job(2, 0, gpu=1, submitted=1.0)]

    plan = run_pass(cluster(gpu=1), [], pending, NOW, Policy(priority_order=False))

    # Job 2 started first and was displaced within the same pass: it never ran.
    assert plan.started == [1]
    assert plan.preempted == {}
    assert plan.pending == [pending[1]]


def test_a_preempted_job_keeps_its_place_within_its_priority() -> None:
    old = running(1, 1, gpu=1)
    newer = job(2, 1, gpu=1, submitted=50.0)
    urgent = job(3, 9, gpu=1, submitted=60.0)

    plan = run_pass(cluster(gpu=1), [old], [newer, urgent], NOW)

    assert plan.preempted == {1: 3}
    assert ids(plan.pending) == [1, 2]  # first submitted first, although requeued last
    requeued = plan.pending[0]
    assert requeued.submitted_at == 0.0
    assert requeued.waiting_since == NOW
    assert requeued.started_at is None

    # Once the urgent job is gone, the preempted one starts before the newer one.
    later = run_pass(cluster(gpu=1), [], plan.pending, NOW + 10)
    assert later.started == [1]


# --- Preemption --------------------------------------------------------------------------


def test_no_victims_when_all_lower_priority_work_together_would_not_make_room() -> None:
    low = running(1, 1, gpu=1)
    peer = running(2, 5, gpu=3)
    wants = job(3, 5, gpu=2)

    plan = run_pass(cluster(gpu=4), [low, peer], [wants], NOW)

    assert plan.preempted == {}
    assert plan.started == []
    assert running_ids(plan) == {1, 2}


@pytest.mark.parametrize("priority", [5, 6])
def test_equal_or_higher_priority_work_is_never_preempted(priority: int) -> None:
    holder = running(1, priority, gpu=2)

    plan = run_pass(cluster(gpu=2), [holder], [job(2, 5, gpu=2)], NOW)

    assert plan.preempted == {}
    assert running_ids(plan) == {1}


def test_victims_come_from_the_lowest_level_that_makes_room() -> None:
    lowest = running(1, 0, gpu=1)
    middle = running(2, 3, gpu=1)

    plan = run_pass(cluster(gpu=2), [lowest, middle], [job(3, 9, gpu=1)], NOW)

    assert plan.preempted == {1: 3}
    assert running_ids(plan) == {2, 3}


def test_the_lowest_level_is_raised_until_the_job_fits_and_what_is_not_needed_stays() -> None:
    # Priority 0 holds only gpus; the job needs cpus, which only priority 2 can give.
    gpu_only = running(1, 0, gpu=2)
    cpu_holder = running(2, 2, cpu=2)
    untouched = running(3, 4, cpu=2)

    plan = run_pass(
        cluster(cpu=4, gpu=2), [gpu_only, cpu_holder, untouched], [job(4, 9, cpu=2)], NOW
    )

    assert plan.preempted == {2: 4}
    assert running_ids(plan) == {1, 3, 4}


def test_put_back_keeps_lower_priority_work_the_job_can_do_without() -> None:
    # Level 0 alone (1 gpu) is not enough, so L = 1 and both levels are released. Going
    # from the highest down, job 2 (level 1) cannot be put back, job 1 (level 0) can.
    # Without the put-back step both would be preempted.
    level0 = running(1, 0, gpu=1)
    level1 = running(2, 1, gpu=2)
    above = running(3, 2, gpu=1)

    plan = run_pass(cluster(gpu=4), [level0, level1, above], [job(4, 5, gpu=2)], NOW)

    assert plan.preempted == {2: 4}
    assert running_ids(plan) == {1, 3, 4}


def test_put_back_goes_from_the_highest_released_level_down() -> None:
    # Level 0 (only cpu) is not enough, so L = 1 and both levels are released; 1 cpu is
    # spare. Going down from level 1, job 2 keeps the spare cpu and job 3 (level 0) goes.
    # Going up instead would have kept job 3 and preempted job 2.
    needs_gpu = running(1, 1, gpu=1, started=NOW - 900)
    level1_cpu = running(2, 1, cpu=1, started=NOW - 800)
    level0_cpu = running(3, 0, cpu=1)

    plan = run_pass(
        cluster(cpu=2, gpu=1), [needs_gpu, level1_cpu, level0_cpu], [job(4, 5, cpu=1, gpu=1)], NOW
    )

    assert plan.preempted == {1: 4, 3: 4}
    assert running_ids(plan) == {2, 4}


@pytest.mark.parametrize(
    ("starts", "victim"),
    [
        ({1: 100.0, 2: 200.0, 3: 300.0}, 3),  # the latest started goes
        ({1: 300.0, 2: 200.0, 3: 100.0}, 1),
        ({1: 100.0, 2: 200.0, 3: 200.0}, 3),  # equal start: the highest id goes
        ({1: 200.0, 2: 200.0, 3: 100.0}, 2),
    ],
)
def test_within_a_priority_the_earliest_started_are_put_back_first(
    starts: dict[int, float], victim: int
) -> None:
    level = [running(i, 1, gpu=1, started=at) for i, at in starts.items()]

    plan = run_pass(cluster(gpu=3), level, [job(9, 5, gpu=1)], NOW)

    assert plan.preempted == {victim: 9}


@pytest.mark.parametrize(("age", "preempted"), [(59.0, False), (60.0, True), (600.0, True)])
def test_work_inside_the_grace_period_is_not_preempted(age: float, preempted: bool) -> None:
    young = running(1, 0, gpu=1, started=NOW - age)

    plan = run_pass(
        cluster(gpu=1), [young], [job(2, 9, gpu=1)], NOW, Policy(preemption_grace_seconds=60)
    )

    assert plan.preempted == ({1: 2} if preempted else {})


def test_a_victim_rejoins_the_sweep_and_may_preempt_lower_work_itself() -> None:
    # D (9) needs both gpus of V (5). E (7) needs the cpus of V2 (6), which also frees a
    # gpu. V, back in the sweep, finds 1 gpu free and takes W's (1) for its second.
    v = running(1, 5, gpu=2, started=NOW - 500)
    v2 = running(2, 6, cpu=2, gpu=1)
    w = running(3, 1, gpu=1)
    d = job(4, 9, gpu=2)
    e = job(5, 7, cpu=2)

    plan = run_pass(cluster(cpu=2, gpu=4), [v, v2, w], [d, e], NOW)

    assert plan.started == [4, 5]
    assert plan.preempted == {2: 5, 3: 1}
    # V ran again within the same pass: as far as anyone outside sees, it never stopped.
    assert [j for j in plan.running if j.id == 1] == [v]
    assert ids(plan.pending) == [2, 3]


def test_in_fifo_order_a_preemption_can_give_room_to_a_job_passed_over_earlier() -> None:
    # J (first in line, priority 1) finds no room; D preempts R for its gpu, which also
    # frees R's cpus. R cannot come back (D holds the gpu), so J must start after all.
    r = running(1, 5, cpu=2, gpu=1)
    j = job(2, 1, cpu=2, submitted=1.0)
    d = job(3, 9, gpu=1, submitted=2.0)

    plan = run_pass(cluster(cpu=2, gpu=1), [r], [j, d], NOW, Policy(priority_order=False))

    assert plan.started == [3, 2]
    assert plan.preempted == {1: 3}


def test_no_preemption_policy_makes_the_job_wait() -> None:
    plan = run_pass(
        cluster(gpu=1), [running(1, 0, gpu=1)], [job(2, 9, gpu=1)], NOW, Policy(preemption=False)
    )

    assert (plan.started, plan.preempted) == ([], {})


# --- Backfill and the starvation guard ---------------------------------------------------


def blocked_queue(waited: float) -> tuple[Cluster, list[Job], list[Job]]:
    """A cluster with 1 free gpu, a big job that needs 2 and waited `waited`, a small one."""
    big = job(1, 5, gpu=2, submitted=NOW - waited)
    small = job(2, 1, gpu=1, submitted=NOW - 10)
    return cluster(gpu=4), [running(3, 9, gpu=3)], [big, small]


def test_a_lower_priority_job_backfills_past_a_blocked_one() -> None:
    plan = run_pass(*blocked_queue(waited=100), NOW)

    assert plan.started == [2]
    assert plan.held_back_by is None


def test_without_backfill_the_first_blocked_job_stops_the_sweep() -> None:
    plan = run_pass(*blocked_queue(waited=100), NOW, Policy(backfill=False))

    assert plan.started == []
    assert plan.held_back_by is None


@pytest.mark.parametrize(("waited", "held"), [(300.0, False), (300.5, True), (5000.0, True)])
def test_a_starving_job_holds_back_everything_of_its_priority_or_lower(
    waited: float, held: bool
) -> None:
    plan = run_pass(*blocked_queue(waited), NOW)

    assert plan.started == ([] if held else [2])
    assert plan.held_back_by == (1 if held else None)


def test_the_starvation_clock_counts_from_waiting_since_not_submission() -> None:
    c, run, (big, small) = blocked_queue(waited=5000)
    recently_preempted = job(1, 5, gpu=2, submitted=big.submitted_at, waiting_since=NOW - 5)

    plan = run_pass(c, run, [recently_preempted, small], NOW)

    assert plan.started == [2]


def test_a_job_larger_than_the_cluster_never_holds_the_guard() -> None:
    huge = job(1, 5, gpu=8, submitted=NOW - 5000)
    small = job(2, 1, gpu=1)

    plan = run_pass(cluster(gpu=4), [running(3, 9, gpu=3)], [huge, small], NOW)

    assert plan.started == [2]
    assert plan.held_back_by is None


def test_in_fifo_order_the_guard_blocks_only_its_priority_or_lower() -> None:
    starving = job(1, 5, gpu=2, submitted=NOW - 5000)
    higher = job(2, 7, cpu=1, submitted=NOW - 20)
    lower = job(3, 5, gpu=1, submitted=NOW - 10)  # would fit: 1 gpu is free
    policy = Policy(priority_order=False, preemption=False)

    plan = run_pass(
        cluster(cpu=1, gpu=3), [running(4, 9, gpu=2)], [starving, higher, lower], NOW, policy
    )

    assert plan.started == [2]
    assert plan.held_back_by == 1


# --- Timed completion --------------------------------------------------------------------


@pytest.mark.parametrize(("duration", "done"), [(999, True), (1000, True), (1001, False)])
def test_timed_jobs_complete_when_their_duration_has_elapsed(duration: int, done: bool) -> None:
    timed = job(1, 9, gpu=1, started=NOW - 1000, duration=duration)

    plan = run_pass(cluster(gpu=1), [timed], [job(2, 0, gpu=1)], NOW)

    assert plan.completed == ([1] if done else [])
    assert plan.started == ([2] if done else [])
    assert plan.available == Resources()


def test_jobs_without_duration_run_until_stopped() -> None:
    plan = run_pass(cluster(gpu=1), [running(1, 0, gpu=1, started=0.0)], [], NOW)

    assert plan.completed == []


# --- Plan bookkeeping --------------------------------------------------------------------


def test_started_jobs_carry_the_start_time_and_available_is_derived() -> None:
    plan = run_pass(
        cluster(cpu=8, ram=32, gpu=2, reserved=Resources(1, 2, 0)),
        [running(1, 0, cpu=2)],
        [job(2, 0, cpu=1, ram=4, gpu=1)],
        NOW,
    )

    started = next(j for j in plan.running if j.id == 2)
    assert started.started_at == NOW
    assert plan.available == Resources(8 - 1 - 2 - 1, 32 - 2 - 4, 1)


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        run_pass(cluster(gpu=1), [running(1)], [job(1)], NOW)


def test_running_jobs_must_have_started() -> None:
    with pytest.raises(ValueError, match="started_at"):
        run_pass(cluster(gpu=1), [job(1)], [], NOW)


# --- Which pending jobs to load ----------------------------------------------------------


def test_bounds_without_preemption_are_the_available_capacity() -> None:
    bounds = candidate_bounds(
        cluster(cpu=8, gpu=4), [running(1, 5, cpu=2, gpu=1)], NOW, Policy(preemption=False)
    )

    assert bounds == [(0, 1000, Resources(6, 0, 3))]


def test_bounds_without_backfill_are_the_cluster_total() -> None:
    bounds = candidate_bounds(
        cluster(cpu=8, gpu=4), [running(1, 5, cpu=8)], NOW, Policy(backfill=False)
    )

    assert bounds == [(0, 1000, Resources(8, 0, 4))]


def test_bounds_count_everything_preemptible_and_what_completes() -> None:
    work = [
        running(1, 5, cpu=2),  # preemptible
        running(2, 1000, cpu=1),  # nothing outranks it
        running(3, 0, gpu=1, started=NOW - 10),  # inside the grace period
        job(4, 0, gpu=2, started=NOW - 100, duration=50),  # completes in this pass
    ]

    bounds = candidate_bounds(cluster(cpu=4, gpu=4), work, NOW, Policy(preemption_grace_seconds=30))

    assert bounds == [(0, 1000, Resources(cpu=1 + 2, gpu=3))]


def test_needs_loading_takes_fitting_and_starving_jobs() -> None:
    c = cluster(gpu=4)
    bounds = [(0, 1000, Resources(gpu=1))]

    assert needs_loading(job(1, gpu=1, submitted=NOW), bounds, c, NOW)
    assert not needs_loading(job(2, gpu=2, submitted=NOW), bounds, c, NOW)
    assert needs_loading(job(3, gpu=2, submitted=NOW - 301), bounds, c, NOW)
    assert not needs_loading(job(4, gpu=8, submitted=NOW - 301), bounds, c, NOW)


def test_a_victims_leftover_room_can_start_a_job_below_the_victims_priority() -> None:
    # Why the bound counts work above the job's own priority: D (9) takes V's (5) cpu and
    # leaves V's gpu free, which the priority-0 job uses.
    v = running(1, 5, cpu=1, gpu=1)
    d = job(2, 9, cpu=1)
    small = job(3, 0, gpu=1)
    c = cluster(cpu=1, gpu=1)

    plan = run_pass(c, [v], [d, small], NOW)

    assert plan.started == [2, 3]
    assert needs_loading(small, candidate_bounds(c, [v], NOW), c, NOW)


# --- Dependencies ------------------------------------------------------------------------


def test_dependencies_sort_jobs_into_eligible_failed_and_unfinished() -> None:
    waiting = {20: [1, 2], 21: [1, 3], 22: [4], 23: [5], 24: [2, 6], 25: []}
    statuses = {
        1: "completed",
        2: "completed",
        3: "running",
        4: "failed",
        5: "cancelled",
        6: "pending",
    }

    result = resolve_dependencies(waiting, statuses)

    assert result.eligible == [20, 25]
    assert result.failed == {22: "dependency 4 failed", 23: "dependency 5 was cancelled"}
    assert result.unfinished == {21: [3], 24: [6]}


def test_failure_runs_down_a_long_chain() -> None:
    # 1000 <- 1001 <- ... <- 1200, and 1000 depends on a cancelled job.
    waiting = {1000 + i: [999 + i] for i in range(1, 201)}
    waiting[1000] = [7]

    result = resolve_dependencies(waiting, {7: "cancelled"})

    assert result.failed[1000] == "dependency 7 was cancelled"
    assert result.failed[1001] == "dependency 1000 failed"
    assert result.failed[1200] == "dependency 1199 failed"
    assert len(result.failed) == 201
    assert result.eligible == [] and result.unfinished == {}


def test_a_long_chain_of_unfinished_work_waits_link_by_link() -> None:
    waiting = {i: [i - 1] for i in range(1, 201)}

    result = resolve_dependencies(waiting, {0: "completed"})

    assert result.eligible == [1]
    assert result.unfinished[200] == [199]
    assert len(result.unfinished) == 199


def test_mixed_failed_and_cancelled_dependencies_name_the_lowest_id() -> None:
    waiting = {30: [12, 9, 11], 31: [30], 32: [31, 10]}
    statuses = {9: "completed", 10: "completed", 11: "cancelled", 12: "failed"}

    result = resolve_dependencies(waiting, statuses)

    assert result.failed == {
        30: "dependency 11 was cancelled",
        31: "dependency 30 failed",
        32: "dependency 31 failed",
    }


def test_unknown_ids_count_as_pending_and_cycles_stay_unfinished() -> None:
    result = resolve_dependencies({1: [2], 2: [1], 3: [99, 98]}, {})

    assert result.unfinished == {1: [2], 2: [1], 3: [98, 99]}
    assert result.eligible == [] and result.failed == {}


# --- Why a job waits ---------------------------------------------------------------------


def test_explain_unfinished_dependencies() -> None:
    text = explain_wait(job(1, gpu=1), cluster(gpu=4), [], unfinished_dependencies=[15, 12])

    assert text == "waiting for dependencies 12, 15"


def test_explain_a_single_unfinished_dependency() -> None:
    assert explain_wait(job(1), cluster(), [], unfinished_dependencies=[3]) == (
        "waiting for dependency 3"
    )


def test_explain_a_job_larger_than_the_cluster() -> None:
    text = explain_wait(job(1, gpu=8), cluster(gpu=4), [])

    assert text == (
        "needs 8 gpu but the cluster has only 4 in total; it cannot run unless the cluster grows"
    )


def test_explain_a_job_larger_than_the_cluster_in_two_resources() -> None:
    text = explain_wait(job(1, ram=600, gpu=8), cluster(ram=512, gpu=4), [])

    assert text == (
        "needs 600 GiB ram and 8 gpu but the cluster has only 512 GiB ram and 4 gpu in "
        "total; it cannot run unless the cluster grows"
    )


def test_explain_a_job_that_fits_only_without_the_reservations() -> None:
    text = explain_wait(job(1, gpu=4), cluster(gpu=4, reserved=Resources(gpu=2)), [])

    assert text == (
        "needs 4 gpu but 2 of the cluster's 4 are reserved; "
        "it cannot run until reserved capacity is released"
    )


def test_explain_held_back_by_a_starving_job() -> None:
    text = explain_wait(job(2, gpu=1), cluster(gpu=4), [], held_back_by=job(7, 5))

    assert text == (
        "held back behind deployment 7, which has waited longer than the starvation limit "
        "(300 s) and starts first"
    )


def test_explain_a_shortage_held_by_higher_priority_work() -> None:
    work = [running(1, 5, gpu=2), running(2, 9, gpu=1), running(3, 7, cpu=4)]

    text = explain_wait(job(4, 5, gpu=4), cluster(cpu=8, gpu=4), work)

    assert text == "needs 4 gpu, 1 available (3 used by 2 deployments of priority >= 5, 0 reserved)"


def test_explain_every_short_resource() -> None:
    work = [running(1, 5, cpu=6, ram=60)]

    text = explain_wait(
        job(2, 5, cpu=4, ram=8), cluster(cpu=8, ram=64, reserved=Resources(ram=2)), work
    )

    assert text == (
        "needs 4 cpu, 2 available (6 used by 1 deployment of priority >= 5, 0 reserved); "
        "needs 8 GiB ram, 2 available (60 used by 1 deployment of priority >= 5, 2 reserved)"
    )


def test_explain_lower_priority_work_that_cannot_free_enough() -> None:
    work = [running(1, 9, gpu=2), running(2, 1, gpu=1), running(3, 1, gpu=1, started=NOW - 5)]

    text = explain_wait(
        job(4, 5, gpu=3, submitted=NOW),
        cluster(gpu=4),
        work,
        now=NOW,
        policy=Policy(preemption_grace_seconds=60),
    )

    assert text == (
        "needs 3 gpu, 0 available (2 used by 1 deployment of priority >= 5, 2 by 2 of lower "
        "priority, 0 reserved); even preempting all it may (1 deployment) would leave it 2 gpu "
        "short; 1 more started less than 60 s ago and cannot be preempted yet"
    )


def test_explain_when_preemption_is_off() -> None:
    text = explain_wait(
        job(2, 5, gpu=1), cluster(gpu=1), [running(1, 0, gpu=1)], policy=Policy(preemption=False)
    )

    assert text.endswith("; preemption is off, so lower-priority work keeps running")


def test_explain_the_starving_job_itself() -> None:
    starving = job(1, 5, gpu=2, submitted=NOW - 400)

    text = explain_wait(starving, cluster(gpu=2), [running(2, 9, gpu=1)], now=NOW)

    assert text.endswith(
        "it has waited longer than the starvation limit (300 s), so no work of its priority "
        "or lower starts before it"
    )


def test_explain_next_in_line() -> None:
    text = explain_wait(job(1, gpu=1), cluster(gpu=4), [running(2, 9, gpu=1)])

    assert text == "next in line; starts at the next scheduling pass"


def test_explain_prefixes_the_preemption() -> None:
    text = explain_wait(job(1, gpu=1), cluster(gpu=4), [], preempted_by=31)

    assert text == "preempted by deployment 31; next in line; starts at the next scheduling pass"


# --- Incremental passes ------------------------------------------------------------------


def test_startable_bounds_give_each_priority_band_what_it_could_get_now() -> None:
    shape = cluster(gpu=8)
    work = [running(1, 2, gpu=2), running(2, 5, gpu=3), running(3, 7, gpu=0, cpu=0)]

    bands = startable_bounds(shape, work, NOW)

    assert bands == [
        (0, 2, Resources(gpu=3)),  # nothing strictly below: only what is free
        (3, 5, Resources(gpu=5)),  # may preempt the priority-2 job
        (6, 7, Resources(gpu=8)),  # may preempt both
        (8, 1000, Resources(gpu=8)),
    ]


def test_startable_bounds_leave_out_work_inside_the_grace_period() -> None:
    shape = cluster(gpu=4)
    work = [running(1, 1, gpu=2, started=NOW - 10), running(2, 1, gpu=1, started=NOW - 100)]

    bands = startable_bounds(shape, work, NOW, Policy(preemption_grace_seconds=60))

    assert bands == [(0, 1, Resources(gpu=1)), (2, 1000, Resources(gpu=2))]


def test_a_pass_with_stop_after_leaves_later_jobs_for_the_next_call() -> None:
    first, second = job(1, 5, gpu=1), job(2, 1, gpu=1)

    plan = run_pass(cluster(gpu=4), [], [first, second], NOW, stop_after=order_key(first))

    assert plan.started == [1]
    assert ids(plan.pending) == [2]


def test_a_preempting_start_is_reported_even_when_its_victim_gets_room_again() -> None:
    # As in the rejoin test above: D (4) preempts V (1), which takes W's (3) gpu and runs
    # again in the same pass, so `preempted` names no victim of D; D still preempted.
    v = running(1, 5, gpu=2, started=NOW - 500)
    v2 = running(2, 6, cpu=2, gpu=1)
    w = running(3, 1, gpu=1)

    plan = run_pass(cluster(cpu=2, gpu=4), [v, v2, w], [job(4, 9, gpu=2), job(5, 7, cpu=2)], NOW)

    assert plan.preempted == {2: 5, 3: 1}
    assert plan.preempting == [4, 5, 1]


def test_a_preempting_start_is_reported_with_its_victim() -> None:
    plan = run_pass(cluster(gpu=2), [running(1, 0, gpu=2)], [job(2, 9, gpu=1)], NOW)

    assert plan.preempting == [2]
    assert plan.started == [2] and plan.preempted == {1: 2}


def test_the_incremental_pass_cuts_after_a_preemption_so_leftover_room_goes_in_order() -> None:
    # Preempting the priority-5 job for `urgent` frees cpu that `small` (priority 3, loaded
    # only after the cut because it could not start before) uses ahead of `later`.
    victim = running(1, 5, cpu=20, gpu=1)
    urgent = job(2, 9, cpu=1, gpu=1, submitted=1, waiting_since=NOW)
    small = job(3, 3, cpu=10, submitted=2, waiting_since=NOW)
    later = job(4, 2, cpu=10, submitted=3, waiting_since=NOW)
    queue = [urgent, small, later]
    shape = cluster(cpu=20, gpu=1)

    def fetch(bounds, starving_before, after, limit):  # type: ignore[no-untyped-def]
        after_key = order_key(after) if after else None
        fits = [
            j
            for j in sorted(queue, key=order_key)
            if (after_key is None or order_key(j) > after_key)
            and needs_loading(j, bounds, shape, NOW)
        ]
        return fits[:limit]

    plan = run_pass_incrementally(shape, [victim], NOW, fetch, batch_size=64)

    assert plan.started == run_pass(shape, [victim], queue, NOW).started == [2, 3]
    assert plan.preempted == {1: 2}
