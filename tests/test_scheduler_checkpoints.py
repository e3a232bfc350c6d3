"""Checkpoints and cost-aware victims in the pure scheduler (SPEC 5 step 5, "Checkpoints")."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import Cluster, Job, Resources, dominant_share, ends_at_of, run_pass

NOW = 100_000.0


def running(
    id: int,
    priority: int = 0,
    *,
    started: float,
    checkpointed: float | None = None,
    saved: float = 0.0,
    duration: int | None = None,
    cpu: int = 0,
    gpu: int = 0,
) -> Job:
    return Job(
        id=id,
        priority=priority,
        request=Resources(cpu, 0, gpu),
        submitted_at=0.0,
        started_at=started,
        duration_seconds=duration,
        saved_seconds=saved,
        checkpointed_at=checkpointed,
    )


def urgent(id: int, **request: int) -> Job:
    return Job(id=id, priority=9, request=Resources(**request), submitted_at=1.0)


GPU4 = Cluster(total=Resources(0, 0, 4))


def test_the_victim_is_the_one_whose_work_was_saved_most_recently() -> None:
    # Both started an hour ago; 1 checkpointed a minute ago, so preempting it loses a
    # minute, while 2 would lose the hour. Started-first would have picked 2.
    old_but_saved = running(1, started=NOW - 3600, checkpointed=NOW - 60, gpu=2)
    unsaved = running(2, started=NOW - 3500, gpu=2)

    plan = run_pass(GPU4, [old_but_saved, unsaved], [urgent(3, gpu=2)], NOW)

    assert plan.preempted == {1: 3}
    assert plan.lost_seconds == {1: pytest.approx(60.0)}


def test_within_a_level_the_larger_share_of_the_same_unsaved_time_is_kept() -> None:
    # Both ran 100 s unsaved; 2 holds half the gpus, 1 a quarter: losing 2 costs twice as
    # much. One gpu is free and the urgent job needs 2, so either can go; 1 does.
    small = running(1, started=NOW - 100, gpu=1)
    big = running(2, started=NOW - 100, gpu=2)

    plan = run_pass(GPU4, [small, big], [urgent(3, gpu=2)], NOW)

    assert plan.preempted == {1: 3}
    assert sorted(j.id for j in plan.running) == [2, 3]


def test_with_equal_costs_the_earliest_started_is_kept() -> None:
    first = running(1, started=NOW - 50, checkpointed=NOW - 10, gpu=2)
    second = running(2, started=NOW - 20, checkpointed=NOW - 10, gpu=2)

    plan = run_pass(GPU4, [first, second], [urgent(3, gpu=2)], NOW)

    assert plan.preempted == {2: 3}


def test_a_victim_keeps_its_saved_work_and_a_restart_clears_the_checkpoint_time() -> None:
    victim = running(1, started=NOW - 100, checkpointed=NOW - 30, saved=70.0, gpu=4)

    plan = run_pass(GPU4, [victim], [urgent(2, gpu=4)], NOW)
    (back,) = plan.pending
    again = run_pass(GPU4, [], [back], NOW + 5)

    assert (back.saved_seconds, back.checkpointed_at, back.started_at) == (70.0, NOW - 30, None)
    (restarted,) = again.running
    assert (restarted.started_at, restarted.checkpointed_at) == (NOW + 5, None)
    assert restarted.saved_seconds == 70.0


@pytest.mark.parametrize(
    ("started", "checkpointed", "saved", "expected_end"),
    [
        (NOW - 20, None, 30.0, NOW + 10),  # 30 s kept from earlier runs, 20 run: 10 to go
        (NOW - 20, NOW - 5, 45.0, NOW + 10),  # checkpoint at NOW-5 saved 45 s: 15 more to go
        (NOW - 100, None, 0.0, NOW - 40),  # due since NOW-40
    ],
)
def test_a_timed_job_ends_when_saved_plus_unsaved_work_reaches_its_duration(
    started: float, checkpointed: float | None, saved: float, expected_end: float
) -> None:
    job = running(1, started=started, checkpointed=checkpointed, saved=saved, duration=60, gpu=1)

    plan = run_pass(GPU4, [job], [], NOW)

    assert ends_at_of(job) == pytest.approx(expected_end)
    if expected_end <= NOW:
        assert plan.completed == [1]
        assert plan.finished_at == {1: pytest.approx(expected_end)}
    else:
        assert plan.completed == []


def test_dominant_share_ignores_resources_the_cluster_has_none_of() -> None:
    assert dominant_share(Resources(2, 8, 1), Resources(8, 64, 0)) == 0.25
    assert dominant_share(Resources(0, 0, 1), Resources(8, 64, 0)) == 0.0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 3000), st.floats(0, 1)), min_size=1, max_size=8),
    st.integers(1, 8),
)
def test_among_equal_candidates_the_victims_are_the_ones_losing_least(
    runs: list[tuple[float, float]], needed: int
) -> None:
    # Equal requests on one level: any `needed` of them make room, so the cheapest choice is
    # the `needed` with the least unsaved work; the greedy put-back must find exactly that.
    candidates = []
    for i, (age, saved_fraction) in enumerate(runs, start=1):
        started = NOW - age
        checkpointed = started + age * saved_fraction
        candidates.append(running(i, started=started, checkpointed=checkpointed, gpu=1))
    needed = min(needed, len(candidates))
    cluster = Cluster(total=Resources(0, 0, len(candidates)))

    plan = run_pass(cluster, candidates, [urgent(99, gpu=needed)], NOW)

    lost = sorted(plan.lost_seconds.values())
    unsaved = sorted(NOW - max(c.started_at or 0, c.checkpointed_at or 0) for c in candidates)
    assert len(plan.preempted) == needed
    assert lost == pytest.approx(unsaved[:needed])
    assert all(job.priority < 9 for job in candidates if job.id in plan.preempted)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["run", "checkpoint", "preempt"]), max_size=30))
def test_saved_work_never_decreases_and_a_run_never_exceeds_its_duration_plus_its_losses(
    steps: list[str],
) -> None:
    # One timed job through a random life of runs, checkpoints and preemptions, 7 s apart.
    duration, now = 60, NOW
    job = running(1, priority=0, started=now, duration=duration, gpu=4)
    ran = lost = 0.0
    saved_history = [0.0]
    finished = False
    for step in steps:
        now += 7
        if job.started_at is not None:
            plan = run_pass(GPU4, [job], [], now)
            if plan.completed:
                ran += plan.finished_at[1] - job.started_at
                finished = True
                break
        if step == "checkpoint" and job.started_at is not None:
            job = replace(
                job, saved_seconds=job.saved_seconds + now - _mark(job), checkpointed_at=now
            )
        elif step == "preempt" and job.started_at is not None:
            plan = run_pass(GPU4, [job], [urgent(2, gpu=4)], now)
            lost += plan.lost_seconds[1]
            ran += now - job.started_at
            (job,) = (j for j in plan.pending if j.id == 1)
        elif step == "run" and job.started_at is None:
            (job,) = run_pass(GPU4, [], [job], now).running
        saved_history.append(job.saved_seconds)

    assert saved_history == sorted(saved_history)
    assert job.saved_seconds <= duration
    assert ran <= duration + lost + 1e-6
    if finished:
        assert ran == pytest.approx(duration + lost)


def _mark(job: Job) -> float:
    assert job.started_at is not None
    return max(job.started_at, job.checkpointed_at or job.started_at)
