"""Scheduling quality: replay a synthetic GPU-cluster trace through `scheduler.run_pass`.

No HTTP, no database, a virtual clock. The script

1. generates a seeded trace modelled on the Helios traces (Hu et al., SC'21): GPUs per GPU
   job median 1, mean about 3.7; run time median about 200 s, mean about 6,600 s, heavy
   tailed; four priority classes; bursty arrivals (a diurnal rate, and users submitting
   sweeps of similar jobs at once); some pipelines whose jobs depend on the previous one.
   Arrivals fill a window of `--days` so that the offered GPU work is `--load` times the
   cluster's GPU capacity over that window;
2. replays it, event by event, through the real scheduler under four policies: a pass at
   every arrival, every completion and whenever a waiting job passes its starvation guard.
   Jobs carry `duration_seconds`; the replay completes them at their end time, as the
   product does, and a preempted job restarts its full duration from its latest start;
3. bounds the GPU utilization any scheduler could reach with a time-indexed LP (below);
4. writes `simulate.json`, `simulate.md`, `utilization.png` and `wait_cdf.png` to `--out`.

What the LP bound means. Let T be the arrival window (`--days`), cut into K slots of
length L = T / K. Each GPU job j gets a release time r_j: its submission, or later if it
depends on other jobs, since a dependency d cannot complete before r_d + duration_d. A
variable x_jk in [0, 1] is the fraction of slot k during which j runs, at most the part of
the slot after r_j. Constraints: sum_k L x_jk <= duration_j (a job runs at most its
duration in total) and, per slot and per resource, sum_j request_j x_jk <= capacity. The
objective is sum_j gpus_j L x_jk: GPU-seconds of work processed inside the window. The
final run of every job under any policy is a feasible point (a run that ends in a
completion lies after the job's release, lasts its duration, and the runs in progress at
any moment fit the cluster), so the optimum is an upper bound on the *useful* GPU-seconds
(work not later discarded by preemption) that any scheduler can process inside the window,
with or without preemption, knowing the future or not. It relaxes gang scheduling (a job
may run on part of its GPUs), non-preemption and dependencies beyond their earliest
completion, so it is optimistic; a coarser slot only loosens it, never breaks it. CPU-only
jobs add nothing to the objective and are left out (which can only raise the bound).
Each policy's "share of the LP bound" is its useful GPU-seconds inside the window divided
by that optimum. The window, not the default policy's makespan, is the horizon: every job
completes within that makespan, so over it the bound would be the trace's total work,
which the default policy reaches by definition, and the share would say nothing.

Other metrics, per policy: utilization per resource (allocated / total, time-averaged from
0 to the policy's makespan, discarded work included); wait (from eligibility, i.e.
submission or dependencies done, to the start of the run that completed, so time lost to
preemption counts as waiting) per priority class; job completion time (submission to
completion); bounded slowdown (response from eligibility over max(duration, 10 s), at least
1); preemptions and the GPU-seconds they discarded; priority inversions (a start of job J
while an eligible job of higher priority that fitted in the capacity free just before J
started kept waiting); makespan.

Usage: `.venv/bin/python bench/simulate.py [--seed N] [--days D] [--gpus G] [--out DIR]
[--smoke]`.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import highspy
import matplotlib
import numpy as np
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scheduler import (  # noqa: E402
    Cluster,
    Job,
    Plan,
    Policy,
    Resources,
    resolve_dependencies,
    run_pass,
)

matplotlib.use("Agg")
logger = logging.getLogger(__name__)

DAY = 86_400.0
RESOURCES = ("cpu", "ram", "gpu")
CPU_PER_GPU = 16  # cores per GPU of the cluster: a DGX-like node, 8 GPUs and 128 cores
RAM_PER_GPU = 128  # GiB per GPU of the cluster
GUARD_EPSILON = 1e-3  # the guard holds once a job has waited *more* than the limit

POLICIES: dict[str, Policy] = {
    "hypervisor-default": Policy(),
    "fifo": Policy(priority_order=False, preemption=False, backfill=False),
    "priority-no-preemption": Policy(preemption=False),
    "priority-no-backfill": Policy(backfill=False),
    # The product's knob against wasted work: running jobs younger than an hour are safe.
    "hypervisor-grace-1h": Policy(preemption_grace_seconds=3600),
}
DEFAULT_POLICY_NAME = "hypervisor-default"

# Priority classes: (name, priority, share of submission sessions).
CLASSES = (("low", 0, 0.25), ("normal", 100, 0.50), ("high", 500, 0.17), ("urgent", 900, 0.08))
# GPUs per GPU job (Helios: median 1, mean about 3.7; most jobs small, a few very large).
GPU_SIZES = (1, 2, 4, 8, 16, 32)
GPU_WEIGHTS = (0.58, 0.10, 0.12, 0.13, 0.05, 0.02)
CPU_ONLY_SHARE = 0.10  # jobs that need no GPU (data preparation, evaluation on CPU)
# Run time: a mixture of short debugging runs and long training runs (Helios: median about
# 200 s, mean about 6,600 s), as lognormals (median seconds, sigma), capped at two days.
SHORT_SHARE = 0.70
SHORT_RUN = (85.0, 1.5)
LONG_RUN = (3 * 3600.0, 1.2)
MAX_RUN_SECONDS = 2 * DAY
# Arrivals: sessions of jobs submitted together, their start times following a daily cycle.
PIPELINE_SHARE = 0.15  # sessions that are a chain of 2-4 dependent jobs
SWEEP_MEAN_JOBS = 2.5  # other sessions: a sweep of similar jobs, geometric in size
SUBMIT_GAP_SECONDS = 20.0  # mean gap between the jobs of one session
DIURNAL_AMPLITUDE = 0.6

WAIT_BOUND_SECONDS = 10.0  # the bound of the bounded slowdown
TARGET_SHARE_OF_BOUND = 0.95


# --- Entry point -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Generate, replay, bound and report; return the exit status."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clock = time.perf_counter()
    trace = generate_trace(args.seed, args.days, args.gpus, args.load)
    logger.info("trace: %d jobs over %.2f days on %d GPUs", len(trace.jobs), args.days, args.gpus)

    replays: dict[str, Replay] = {}
    policies: dict[str, dict[str, Any]] = {}
    for name, policy in POLICIES.items():
        started = time.perf_counter()
        replays[name] = replay(trace, policy)
        policies[name] = summarize(trace, replays[name])
        logger.info("replayed %s in %.1f s", name, time.perf_counter() - started)
    bound = lp_bound(trace, args.slots)
    logger.info("LP bound solved in %.1f s (%d columns)", bound.solve_seconds, bound.columns)
    for metrics in policies.values():
        metrics["share_of_lp_bound"] = metrics["window_useful_gpu_seconds"] / bound.gpu_seconds
        metrics["allocated_share_of_lp_bound"] = (
            metrics["window_allocated_gpu_seconds"] / bound.gpu_seconds
        )

    report = {
        "config": {
            "seed": args.seed,
            "days": args.days,
            "gpus": args.gpus,
            "load": args.load,
            "slots": args.slots,
            "smoke": args.smoke,
            "policies": {name: asdict(policy) for name, policy in POLICIES.items()},
        },
        "trace": trace_stats(trace),
        "lp_bound": asdict(bound),
        "policies": policies,
        "targets": _targets(policies),
    }
    report["runtime_seconds"] = time.perf_counter() - clock
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulate.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "simulate.md").write_text(_markdown(report))
    _plot_utilization(trace, replays, out / "utilization.png")
    _plot_wait_cdf(replays, out / "wait_cdf.png")
    sys.stdout.write(_summary_table(report))
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=float, default=3.0, help="arrival window")
    parser.add_argument("--gpus", type=int, default=64, help="cluster size; CPU and RAM follow")
    parser.add_argument("--load", type=float, default=0.9, help="offered GPU work / capacity")
    parser.add_argument("--slots", type=int, default=288, help="time slots of the LP bound")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--smoke", action="store_true", help="a tiny trace, for the test")
    args = parser.parse_args(argv)
    if args.smoke:
        args.days, args.gpus, args.slots = 0.5, 16, 48
    return args


# --- Trace -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One submission of the trace."""

    id: int
    submitted_at: float
    priority: int
    request: Resources
    duration: int
    depends_on: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Submission:
    """A job of a session before it has a time and an id."""

    priority: int
    request: Resources
    duration: int
    chained: bool  # depends on the session's previous job


@dataclass(frozen=True, slots=True)
class Trace:
    """Jobs by id, in submission order, for one cluster over an arrival window."""

    cluster: Cluster
    jobs: list[TraceJob]
    window: float  # seconds of arrivals; the LP bound's horizon


def generate_trace(seed: int, days: float, gpus: int, load: float) -> Trace:
    """A seeded trace whose GPU work is `load` times the cluster's GPU-seconds over `days`."""
    rng = np.random.default_rng(seed)
    window = days * DAY
    cluster = Cluster(total=Resources(cpu=CPU_PER_GPU * gpus, ram=RAM_PER_GPU * gpus, gpu=gpus))
    target_work = load * gpus * window
    sessions: list[list[Submission]] = []
    work = 0.0
    while work < target_work:
        session = _session(rng, gpus)
        sessions.append(session)
        work += sum(job.request.gpu * job.duration for job in session)

    # Given their number, the starts of a Poisson process are independent draws from its rate.
    starts = _diurnal_times(rng, len(sessions), window)
    timed: list[tuple[float, int, Submission]] = []  # (submitted at, session, submission)
    for number, (start, session) in enumerate(zip(starts, sessions, strict=True)):
        offsets = np.cumsum(rng.exponential(SUBMIT_GAP_SECONDS, len(session)))
        timed.extend(
            (round(float(start + offset), 3), number, job)
            for offset, job in zip(offsets, session, strict=True)
        )
    timed.sort(key=lambda entry: (entry[0], entry[1]))

    jobs: list[TraceJob] = []
    last_of_session: dict[int, int] = {}
    for job_id, (at, number, job) in enumerate(timed, 1):
        previous = last_of_session.get(number)
        depends_on = (previous,) if job.chained and previous is not None else ()
        jobs.append(TraceJob(job_id, at, job.priority, job.request, job.duration, depends_on))
        last_of_session[number] = job_id
    return Trace(cluster=cluster, jobs=jobs, window=window)


def _session(rng: np.random.Generator, gpus: int) -> list[Submission]:
    """One user's submissions: a pipeline of dependent jobs, or a sweep of similar ones."""
    weights = [share for _, _, share in CLASSES]
    priority = CLASSES[rng.choice(len(CLASSES), p=weights)][1]
    if rng.random() < PIPELINE_SHARE:
        length = int(rng.integers(2, 5))
        return [
            Submission(priority, _request(rng, gpus), _duration(rng), chained=True)
            for _ in range(length)
        ]
    size = int(rng.geometric(1.0 / SWEEP_MEAN_JOBS))
    request = _request(rng, gpus)
    return [Submission(priority, request, _duration(rng), chained=False) for _ in range(size)]


def _request(rng: np.random.Generator, gpus: int) -> Resources:
    """A job's request: GPUs from the Helios-like mix with CPU and RAM in proportion."""
    if rng.random() < CPU_ONLY_SHARE:
        cpu = min(int(rng.choice([2, 4, 8, 16, 32])), CPU_PER_GPU * gpus)
        return Resources(cpu=cpu, ram=int(rng.choice([8, 32, 64])))
    gpu = min(int(rng.choice(GPU_SIZES, p=GPU_WEIGHTS)), max(1, gpus // 2))
    cpu = gpu * int(rng.choice([4, 8, 16]))
    ram = gpu * int(rng.choice([32, 64, 128]))
    return Resources(cpu=cpu, ram=ram, gpu=gpu)


def _duration(rng: np.random.Generator) -> int:
    """A run time in whole seconds from the short/long lognormal mixture."""
    median, sigma = SHORT_RUN if rng.random() < SHORT_SHARE else LONG_RUN
    seconds = median * math.exp(sigma * rng.standard_normal())
    return int(min(max(round(seconds), 1), MAX_RUN_SECONDS))


def _diurnal_times(rng: np.random.Generator, count: int, window: float) -> np.ndarray:
    """`count` sorted times in [0, window) with a rate that peaks once a day."""
    times: list[float] = []
    while len(times) < count:
        at = rng.uniform(0.0, window)
        rate = 1.0 + DIURNAL_AMPLITUDE * math.sin(2 * math.pi * at / DAY)
        if rng.uniform(0.0, 1.0 + DIURNAL_AMPLITUDE) < rate:
            times.append(at)
    return np.sort(np.array(times))


# --- Replay ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """One run of a job: from a start to its completion or preemption."""

    job_id: int
    start: float
    end: float
    request: Resources
    kept: bool  # False: preempted, the work was discarded


@dataclass
class Replay:
    """What one policy did with the trace."""

    eligible_at: dict[int, float] = field(default_factory=dict)
    completed_at: dict[int, float] = field(default_factory=dict)
    spans: list[Span] = field(default_factory=list)
    preemptions: int = 0
    inversions: int = 0
    passes: int = 0
    pass_seconds: float = 0.0


def replay(trace: Trace, policy: Policy) -> Replay:
    """Run the trace through `run_pass` on a virtual clock and record every decision."""
    result = Replay()
    by_id = {job.id: job for job in trace.jobs}
    arrivals = list(trace.jobs)  # in submission order
    next_arrival = 0
    wake_ups: list[float] = []  # completions and starvation guards
    guarded: set[tuple[int, float]] = set()
    status: dict[int, str] = {}
    blocked: dict[int, tuple[int, ...]] = {}  # pending, waiting for dependencies
    pending: dict[int, Job] = {}  # eligible pending
    running: dict[int, Job] = {}

    while next_arrival < len(arrivals) or wake_ups:
        now = min(
            arrivals[next_arrival].submitted_at if next_arrival < len(arrivals) else math.inf,
            wake_ups[0] if wake_ups else math.inf,
        )
        while wake_ups and wake_ups[0] <= now:
            heapq.heappop(wake_ups)
        while next_arrival < len(arrivals) and arrivals[next_arrival].submitted_at <= now:
            job = arrivals[next_arrival]
            next_arrival += 1
            status[job.id] = "pending"
            if job.depends_on:
                blocked[job.id] = job.depends_on
            else:
                pending[job.id] = _as_job(job, waiting_since=job.submitted_at)
                result.eligible_at[job.id] = job.submitted_at

        for job in [job for job in running.values() if _ends_at(job) <= now]:
            del running[job.id]
            status[job.id] = "completed"
            result.completed_at[job.id] = now
            result.spans.append(Span(job.id, _started(job), now, job.request, kept=True))
        if blocked:
            resolution = resolve_dependencies(blocked, status)
            if resolution.failed:
                raise RuntimeError(f"dependencies failed in a trace without failures: {resolution}")
            for job_id in resolution.eligible:
                del blocked[job_id]
                pending[job_id] = _as_job(by_id[job_id], waiting_since=now)
                result.eligible_at[job_id] = now

        clock = time.perf_counter()
        plan = run_pass(trace.cluster, list(running.values()), list(pending.values()), now, policy)
        result.pass_seconds += time.perf_counter() - clock
        result.passes += 1
        if plan.completed:
            raise RuntimeError(f"run_pass completed jobs the replay had not: {plan.completed}")

        result.inversions += _count_inversions(trace.cluster, running, pending, plan)
        for victim_id in plan.preempted:
            victim = running[victim_id]
            result.spans.append(Span(victim_id, _started(victim), now, victim.request, False))
            result.preemptions += 1
        running = {job.id: job for job in plan.running}
        pending = {job.id: job for job in plan.pending}
        for job_id in plan.started:
            heapq.heappush(wake_ups, _ends_at(running[job_id]))
        for job in pending.values():
            guard = (job.id, job.waiting_since)
            if guard not in guarded:
                guarded.add(guard)
                heapq.heappush(
                    wake_ups, job.waiting_since + policy.starvation_seconds + GUARD_EPSILON
                )
    if blocked or pending or running:
        raise RuntimeError("the replay ended with unfinished jobs")
    return result


def _as_job(job: TraceJob, waiting_since: float) -> Job:
    """The scheduler's view of a trace job that is pending."""
    return Job(
        id=job.id,
        priority=job.priority,
        request=job.request,
        submitted_at=job.submitted_at,
        waiting_since=waiting_since,
        duration_seconds=job.duration,
    )


def _started(job: Job) -> float:
    """A running job's latest start."""
    if job.started_at is None:
        raise ValueError(f"job {job.id} runs without a start time")
    return job.started_at


def _ends_at(job: Job) -> float:
    """When a running job completes, computed as the scheduler does."""
    if job.duration_seconds is None:
        raise ValueError(f"job {job.id} has no duration")
    return _started(job) + job.duration_seconds


def _count_inversions(
    cluster: Cluster,
    running_before: dict[int, Job],
    pending_before: dict[int, Job],
    plan: Plan,
) -> int:
    """Starts in this pass that left a higher-priority eligible job waiting that fitted."""
    if not plan.started:
        return 0
    still_waiting = {job.id for job in plan.pending} & set(pending_before)
    waiting = sorted(
        (pending_before[job_id] for job_id in still_waiting), key=lambda job: -job.priority
    )
    free = cluster.total - cluster.reserved
    for job in running_before.values():
        free = free - job.request
    victims_of: dict[int, list[int]] = {}
    for victim_id, by in plan.preempted.items():
        victims_of.setdefault(by, []).append(victim_id)
    inversions = 0
    for job_id in plan.started:
        started = pending_before[job_id]
        for other in waiting:
            if other.priority <= started.priority:
                break
            if other.request.fits_in(free):
                inversions += 1
                break
        for victim_id in victims_of.get(job_id, []):
            free = free + running_before[victim_id].request
        free = free - started.request
    return inversions


# --- Metrics -----------------------------------------------------------------------------


def summarize(trace: Trace, result: Replay) -> dict[str, Any]:
    """The per-policy numbers of the report, from one replay."""
    jobs = {job.id: job for job in trace.jobs}
    makespan = max(result.completed_at.values())
    total = trace.cluster.total
    utilization = {
        name: _busy_seconds(result.spans, name, 0.0, makespan) / (getattr(total, name) * makespan)
        for name in RESOURCES
        if getattr(total, name) > 0
    }
    window = trace.window
    kept = [span for span in result.spans if span.kept]
    useful_in_window = _busy_seconds(kept, "gpu", 0.0, window)
    allocated_in_window = _busy_seconds(result.spans, "gpu", 0.0, window)
    lost = [span for span in result.spans if not span.kept]

    waits: dict[int, float] = {}
    for span in kept:
        waits[span.job_id] = span.start - result.eligible_at[span.job_id]
    per_class: dict[str, dict[str, float | int | None]] = {}
    for name, priority, _ in CLASSES:
        values = np.array([waits[i] for i in waits if jobs[i].priority == priority])
        per_class[name] = _wait_stats(values, priority)
    completion = np.array([result.completed_at[i] - jobs[i].submitted_at for i in jobs])
    slowdown = np.array(
        [
            max(
                1.0,
                (result.completed_at[i] - result.eligible_at[i])
                / max(jobs[i].duration, WAIT_BOUND_SECONDS),
            )
            for i in jobs
        ]
    )
    return {
        "utilization": utilization,
        "window_gpu_utilization": allocated_in_window / (total.gpu * window),
        "window_allocated_gpu_seconds": allocated_in_window,
        "window_useful_gpu_seconds": useful_in_window,
        "wait_seconds": per_class,
        "mean_wait_seconds": float(np.mean(list(waits.values()))),
        "mean_completion_seconds": float(completion.mean()),
        "mean_bounded_slowdown": float(slowdown.mean()),
        "preemptions": result.preemptions,
        "gpu_seconds_lost_to_preemption": sum(
            span.request.gpu * (span.end - span.start) for span in lost
        ),
        "priority_inversions": result.inversions,
        "makespan_seconds": makespan,
        "passes": result.passes,
        "mean_pass_milliseconds": 1000 * result.pass_seconds / max(result.passes, 1),
    }


def _busy_seconds(spans: Sequence[Span], resource: str, start: float, end: float) -> float:
    """Resource-seconds allocated by `spans` within [start, end]."""
    busy = 0.0
    for span in spans:
        overlap = min(span.end, end) - max(span.start, start)
        if overlap > 0:
            busy += getattr(span.request, resource) * overlap
    return busy


def _wait_stats(values: np.ndarray, priority: int) -> dict[str, float | int | None]:
    """Count, mean, median and 99th percentile of one class's waits."""
    if values.size == 0:
        return {"priority": priority, "jobs": 0, "mean": None, "p50": None, "p99": None}
    p50, p99 = np.percentile(values, [50, 99])
    return {
        "priority": priority,
        "jobs": int(values.size),
        "mean": float(values.mean()),
        "p50": float(p50),
        "p99": float(p99),
    }


def trace_stats(trace: Trace) -> dict[str, Any]:
    """Shape of the trace, to compare with the published one."""
    gpu_jobs = [job for job in trace.jobs if job.request.gpu > 0]
    gpus = np.array([job.request.gpu for job in gpu_jobs])
    durations = np.array([job.duration for job in trace.jobs])
    work = sum(job.request.gpu * job.duration for job in trace.jobs)
    return {
        "jobs": len(trace.jobs),
        "gpu_jobs": len(gpu_jobs),
        "jobs_with_dependencies": sum(1 for job in trace.jobs if job.depends_on),
        "jobs_per_class": {
            name: sum(1 for job in trace.jobs if job.priority == priority)
            for name, priority, _ in CLASSES
        },
        "gpus_per_gpu_job": {"median": float(np.median(gpus)), "mean": float(gpus.mean())},
        "duration_seconds": {
            "median": float(np.median(durations)),
            "mean": float(durations.mean()),
            "p99": float(np.percentile(durations, 99)),
            "max": float(durations.max()),
        },
        "window_seconds": trace.window,
        "offered_gpu_load": work / (trace.cluster.total.gpu * trace.window),
        "cluster": {
            "cpu": trace.cluster.total.cpu,
            "ram": trace.cluster.total.ram,
            "gpu": trace.cluster.total.gpu,
        },
    }


# --- LP bound ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bound:
    """The LP optimum: GPU-seconds of useful work no schedule can exceed inside the window."""

    gpu_seconds: float
    window_gpu_utilization: float
    slots: int
    slot_seconds: float
    columns: int
    rows: int
    status: str
    solve_seconds: float


def lp_bound(trace: Trace, slots: int) -> Bound:
    """Solve the time-indexed LP relaxation of the module docstring with HiGHS."""
    window, slot = trace.window, trace.window / slots
    free = trace.cluster.total - trace.cluster.reserved
    capacity = [float(getattr(free, name)) for name in RESOURCES]
    releases = _releases(trace.jobs)
    lp_jobs = [job for job in trace.jobs if job.request.gpu > 0 and releases[job.id] < window]
    columns = [
        _job_columns(job, releases[job.id], row, len(lp_jobs), slot, slots)
        for row, job in enumerate(lp_jobs)
    ]

    lp = highspy.HighsLp()
    lp.num_col_ = sum(len(cost) for cost, _, _, _ in columns)
    lp.num_row_ = len(lp_jobs) + len(RESOURCES) * slots
    lp.sense_ = highspy.ObjSense.kMaximize
    lp.col_cost_ = np.concatenate([cost for cost, _, _, _ in columns])
    lp.col_lower_ = np.zeros(lp.num_col_)
    lp.col_upper_ = np.concatenate([upper for _, upper, _, _ in columns])
    lp.row_lower_ = np.full(lp.num_row_, -highspy.kHighsInf)
    lp.row_upper_ = np.concatenate(
        [[job.duration / slot for job in lp_jobs], np.tile(capacity, slots)]
    )
    # Column-wise: within one job every column has the same number of entries.
    starts, entries = [], 0
    for _, _, rows, _ in columns:
        starts.append(entries + np.arange(rows.shape[0]) * rows.shape[1])
        entries += rows.size
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.concatenate([*starts, [entries]]).astype(np.int32)
    lp.a_matrix_.index_ = np.concatenate([rows.ravel() for _, _, rows, _ in columns])
    lp.a_matrix_.value_ = np.concatenate([values.ravel() for _, _, _, values in columns])

    solver = highspy.Highs()
    solver.setOptionValue("output_flag", False)
    solver.passModel(lp)
    clock = time.perf_counter()
    solver.run()
    elapsed = time.perf_counter() - clock
    status = solver.modelStatusToString(solver.getModelStatus())
    if status != "Optimal":
        raise RuntimeError(f"the LP bound did not solve: {status}")
    optimum = float(solver.getInfo().objective_function_value)
    return Bound(
        gpu_seconds=optimum,
        window_gpu_utilization=optimum / (trace.cluster.total.gpu * window),
        slots=slots,
        slot_seconds=slot,
        columns=lp.num_col_,
        rows=lp.num_row_,
        status=status,
        solve_seconds=elapsed,
    )


def _job_columns(
    job: TraceJob, release: float, row: int, job_rows: int, slot: float, slots: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One job's columns, a slot each from its release: costs, upper bounds, rows, values.

    Column k is the fraction of slot k the job runs. It has an entry in the job's own row
    (run time, in slots) and one in the capacity row of each resource the job asks for.
    """
    first = int(release // slot)
    count = slots - first
    upper = np.ones(count)
    upper[0] = min(1.0, ((first + 1) * slot - release) / slot)
    cost = np.full(count, job.request.gpu * slot)
    used = [
        (r, getattr(job.request, name))
        for r, name in enumerate(RESOURCES)
        if getattr(job.request, name) > 0
    ]
    rows = np.empty((count, 1 + len(used)), dtype=np.int32)
    values = np.empty((count, 1 + len(used)))
    rows[:, 0], values[:, 0] = row, 1.0
    for position, (r, amount) in enumerate(used, 1):
        rows[:, position] = job_rows + np.arange(first, slots) * len(RESOURCES) + r
        values[:, position] = amount
    return cost, upper, rows, values


def _releases(jobs: Sequence[TraceJob]) -> dict[int, float]:
    """The earliest time each job could start: submission, or its dependencies' earliest end."""
    releases: dict[int, float] = {}
    ends: dict[int, float] = {}
    for job in jobs:  # dependencies have lower ids
        release = max([job.submitted_at, *(ends[dep] for dep in job.depends_on)])
        releases[job.id] = release
        ends[job.id] = release + job.duration
    return releases


# --- Report ------------------------------------------------------------------------------

TOP_CLASS = max(CLASSES, key=lambda spec: spec[1])[0]


def _targets(policies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets for the default policy, each with its value and whether it is met."""
    default = policies[DEFAULT_POLICY_NAME]
    share = default["share_of_lp_bound"]
    top_p99 = default["wait_seconds"][TOP_CLASS]["p99"]
    baselines = {
        name: metrics["wait_seconds"][TOP_CLASS]["p99"]
        for name, metrics in policies.items()
        if name != DEFAULT_POLICY_NAME
    }
    beats = {
        name: top_p99 is not None and p99 is not None and top_p99 < p99
        for name, p99 in baselines.items()
    }
    return {
        "share_of_lp_bound": {
            "target": TARGET_SHARE_OF_BOUND,
            "value": share,
            "met": share >= TARGET_SHARE_OF_BOUND,
        },
        "zero_priority_inversions": {
            "value": default["priority_inversions"],
            "met": default["priority_inversions"] == 0,
        },
        "best_top_priority_p99_wait": {
            "class": TOP_CLASS,
            "value": top_p99,
            "baselines": baselines,
            "beats": beats,
            "met": all(beats.values()),
        },
    }


def _markdown(report: dict[str, Any]) -> str:
    """The human-readable report: setup, the tables, and the targets with their reasons."""
    config, trace, bound = report["config"], report["trace"], report["lp_bound"]
    policies = report["policies"]
    lines = [
        "# Scheduling quality (bench/simulate.py)",
        "",
        f"Command: `.venv/bin/python bench/simulate.py --seed {config['seed']} "
        f"--days {config['days']:g} --gpus {config['gpus']}`"
        + (" --smoke" if config["smoke"] else "")
        + f" (load {config['load']:g}, {config['slots']} LP slots); "
        f"ran in {report['runtime_seconds']:.0f} s.",
        "",
        "## Trace",
        "",
        f"- Cluster: {trace['cluster']['gpu']} GPUs, {trace['cluster']['cpu']} cores, "
        f"{trace['cluster']['ram']} GiB RAM; "
        f"arrivals over {_duration_text(trace['window_seconds'])}.",
        f"- {trace['jobs']} jobs ({trace['gpu_jobs']} use GPUs, "
        f"{trace['jobs_with_dependencies']} wait for a dependency); per class: "
        + ", ".join(f"{name} {count}" for name, count in trace["jobs_per_class"].items())
        + ".",
        f"- GPUs per GPU job: median {trace['gpus_per_gpu_job']['median']:g}, "
        f"mean {trace['gpus_per_gpu_job']['mean']:.2f} (Helios: 1 and about 3.7).",
        f"- Run time: median {trace['duration_seconds']['median']:.0f} s, "
        f"mean {trace['duration_seconds']['mean']:.0f} s, "
        f"p99 {_duration_text(trace['duration_seconds']['p99'])}, "
        f"max {_duration_text(trace['duration_seconds']['max'])} "
        "(Helios: about 200 s and 6,600 s).",
        f"- Offered GPU load over the window: {trace['offered_gpu_load']:.2f}.",
        "",
        "## LP bound",
        "",
        f"Time-indexed LP relaxation, {bound['slots']} slots of "
        f"{bound['slot_seconds']:.0f} s over the arrival window, {bound['columns']} columns, "
        f"{bound['rows']} rows, solved by HiGHS in {bound['solve_seconds']:.1f} s: at most "
        f"{bound['gpu_seconds'] / 3600:,.0f} GPU-hours of useful work fit inside the window, "
        f"a GPU utilization of {bound['window_gpu_utilization']:.1%}. It relaxes gang "
        "scheduling, non-preemption and dependencies (see the script's docstring), so it is an "
        "upper bound, not a schedule.",
        "",
        "## Results",
        "",
        "Utilization is allocated over total from time 0 to the policy's makespan (discarded "
        "work included); *in window* is the same for GPUs inside the arrival window; "
        "*share of LP* is the useful (not later discarded) GPU work inside the window over the "
        "LP bound. Waits run from eligibility to the start of the run that completed.",
        "",
        "| policy | GPU util | CPU util | RAM util | GPU util in window | share of LP | "
        f"{TOP_CLASS} p99 wait | mean wait | mean JCT | mean bounded slowdown | preemptions | "
        "GPU-h lost | inversions | makespan |",
        "|---|" + "---:|" * 13,
    ]
    for name, metrics in policies.items():
        utilization = metrics["utilization"]
        lines.append(
            f"| {name} | {utilization['gpu']:.1%} | {utilization['cpu']:.1%} | "
            f"{utilization['ram']:.1%} | {metrics['window_gpu_utilization']:.1%} | "
            f"{metrics['share_of_lp_bound']:.1%} | "
            f"{_duration_text(metrics['wait_seconds'][TOP_CLASS]['p99'])} | "
            f"{_duration_text(metrics['mean_wait_seconds'])} | "
            f"{_duration_text(metrics['mean_completion_seconds'])} | "
            f"{metrics['mean_bounded_slowdown']:.1f} | {metrics['preemptions']} | "
            f"{metrics['gpu_seconds_lost_to_preemption'] / 3600:.1f} | "
            f"{metrics['priority_inversions']} | "
            f"{_duration_text(metrics['makespan_seconds'])} |"
        )
    lines += [
        "",
        "Wait per priority class (mean / p50 / p99):",
        "",
        "| policy | " + " | ".join(f"{name} ({priority})" for name, priority, _ in CLASSES) + " |",
        "|---|" + "---:|" * len(CLASSES),
    ]
    for name, metrics in policies.items():
        cells = []
        for class_name, _, _ in CLASSES:
            stats = metrics["wait_seconds"][class_name]
            cells.append(
                " / ".join(_duration_text(stats[key]) for key in ("mean", "p50", "p99"))
                + f" (n={stats['jobs']})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets for the default policy", "", *_target_lines(report), ""]
    lines += [
        "Plots: `utilization.png` (GPU utilization over time per policy), "
        "`wait_cdf.png` (wait-time CDF per policy).",
        "",
    ]
    return "\n".join(lines)


def _target_lines(report: dict[str, Any]) -> list[str]:
    """One bullet per target: met or missed, and why when missed."""
    targets = report["targets"]
    share = targets["share_of_lp_bound"]
    line = (
        f"- At least {share['target']:.0%} of the LP bound: **{_verdict(share['met'])}** "
        f"({share['value']:.1%})."
    )
    if not share["met"]:
        line += " " + _share_gap(report)
    lines = [line]

    inversions = targets["zero_priority_inversions"]
    line = f"- Zero priority inversions: **{_verdict(inversions['met'])}** ({inversions['value']})."
    if not inversions["met"]:
        line += (
            " A job started while a higher-priority eligible job that fitted the free capacity "
            "kept waiting; see the replay's inversion count per policy."
        )
    lines.append(line)

    top = targets["best_top_priority_p99_wait"]
    compared = ", ".join(f"{name} {_duration_text(p99)}" for name, p99 in top["baselines"].items())
    line = (
        f"- Best {top['class']} p99 wait: **{_verdict(top['met'])}** "
        f"(default {_duration_text(top['value'])}; {compared})."
    )
    if not top["met"]:
        line += " " + _top_wait_gap(report)
    lines.append(line)
    return lines


def _top_wait_gap(report: dict[str, Any]) -> str:
    """Why the default's top-class p99 wait does not beat every baseline."""
    top = report["targets"]["best_top_priority_p99_wait"]
    if top["value"] is None:
        return "The top class has no jobs in this trace."
    reasons = []
    for name, beaten in top["beats"].items():
        if beaten:
            continue
        policy = POLICIES[name]
        if top["baselines"][name] == top["value"] and policy.priority_order and policy.preemption:
            reasons.append(
                f"It ties with {name}: both sweep {top['class']} jobs first and preempt any "
                "lower work for them (no grace period), so a job of the "
                f"{top['class']} class waits only for capacity held by others of its class; "
                f"the two then differ only in whether a smaller {top['class']} job may start "
                "past a blocked one, which did not change the p99 here."
            )
        else:
            reasons.append(f"{name} gives the {top['class']} class a lower or equal p99 wait.")
    return " ".join(reasons)


def _share_gap(report: dict[str, Any]) -> str:
    """Split the default policy's shortfall from the bound into discarded and unallocated work."""
    bound = report["lp_bound"]["gpu_seconds"]
    default = report["policies"][DEFAULT_POLICY_NAME]
    useful, allocated = (
        default["window_useful_gpu_seconds"],
        default["window_allocated_gpu_seconds"],
    )
    discarded, unallocated = allocated - useful, bound - allocated
    best = max(
        (name for name in report["policies"] if name != DEFAULT_POLICY_NAME),
        key=lambda name: report["policies"][name]["share_of_lp_bound"],
    )
    return (
        f"The shortfall is {(bound - useful) / 3600:,.0f} GPU-hours: "
        f"{discarded / 3600:,.0f} GPU-hours inside the window were allocated to runs that "
        f"preemption later discarded ({default['preemptions']} preemptions; SPEC 5 restarts a "
        "preempted job's duration from its next start, and with heavy-tailed run times the "
        "victims are often hours into their run), and "
        f"{unallocated / 3600:,.0f} GPU-hours of the bound were never allocated at all. "
        f"Counting discarded work as utilization the default would reach "
        f"{default['allocated_share_of_lp_bound']:.1%}, but the bound caps each job at its "
        f"duration, so only useful work compares with it. {best} reaches "
        f"{report['policies'][best]['share_of_lp_bound']:.1%} of the bound: the difference is "
        "the price of preemption with restart; what it buys shows in the waits per class."
    )


def _verdict(met: bool) -> str:
    """'met' or 'missed'."""
    return "met" if met else "missed"


def _duration_text(seconds: float | None) -> str:
    """'45 s', '12.5 min', '3.2 h', '1.4 d'; '-' for no value."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < DAY:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY:.2f} d"


def _summary_table(report: dict[str, Any]) -> str:
    """A short fixed-width table for the terminal."""
    header = (
        f"{'policy':<24} {'GPU util':>9} {'% of LP':>8} {TOP_CLASS + ' p99':>11} "
        f"{'inversions':>10} {'preemptions':>11}\n"
    )
    rows = [header]
    for name, metrics in report["policies"].items():
        rows.append(
            f"{name:<24} {metrics['utilization']['gpu']:>9.1%} "
            f"{metrics['share_of_lp_bound']:>8.1%} "
            f"{_duration_text(metrics['wait_seconds'][TOP_CLASS]['p99']):>11} "
            f"{metrics['priority_inversions']:>10} {metrics['preemptions']:>11}\n"
        )
    bound = report["lp_bound"]
    rows.append(
        f"LP bound: {bound['window_gpu_utilization']:.1%} GPU utilization inside the window; "
        f"runtime {report['runtime_seconds']:.0f} s\n"
    )
    return "".join(rows)


# --- Plots -------------------------------------------------------------------------------


def _plot_utilization(trace: Trace, replays: dict[str, Replay], path: Path) -> None:
    """GPU utilization over time per policy, averaged per bin, with the LP bound's mean."""
    end = max(max(result.completed_at.values()) for result in replays.values())
    width = 3600.0 if trace.window >= DAY else trace.window / 24
    edges = np.arange(0.0, end + width, width)
    figure = Figure(figsize=(11, 4.5))
    axes = figure.add_subplot()
    for name, result in replays.items():
        starts = np.array([span.start for span in result.spans])
        ends = np.array([span.end for span in result.spans])
        gpus = np.array([span.request.gpu for span in result.spans], dtype=float)
        busy = (np.clip(edges[:, None] - starts, 0.0, ends - starts) * gpus).sum(axis=1)
        share = np.diff(busy) / (width * trace.cluster.total.gpu)
        axes.step(edges[:-1] / 3600, share, where="post", label=name, linewidth=1)
    axes.axvline(trace.window / 3600, color="grey", linestyle="--", linewidth=1)
    axes.text(trace.window / 3600, 1.02, " end of arrivals", color="grey", fontsize=8)
    axes.set_xlabel("hours")
    axes.set_ylabel(f"GPUs allocated / {trace.cluster.total.gpu}")
    axes.set_ylim(0, 1.08)
    axes.set_title(f"GPU utilization over time ({width / 60:.0f}-minute averages)")
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _plot_wait_cdf(replays: dict[str, Replay], path: Path) -> None:
    """The CDF of every job's wait, per policy, on a log axis."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for name, result in replays.items():
        waits = np.sort(
            [span.start - result.eligible_at[span.job_id] for span in result.spans if span.kept]
        )
        fractions = np.arange(1, waits.size + 1) / waits.size
        axes.step(waits + 1.0, fractions, where="post", label=name, linewidth=1)
    axes.set_xscale("log")
    axes.set_xlabel("wait + 1 s (seconds, log scale)")
    axes.set_ylabel("fraction of jobs")
    axes.set_title("Wait-time CDF (eligibility to the start of the run that completed)")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
