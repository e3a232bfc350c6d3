"""Scheduling quality: replay a synthetic GPU-cluster trace through `scheduler.run_pass`.

No HTTP, no database, a virtual clock. The script

1. generates a seeded trace modelled on the Helios traces (Hu et al., SC'21): GPUs per GPU
   job median 1, mean about 3.7; run time median about 200 s, mean about 6,600 s, heavy
   tailed; four priority classes; bursty arrivals (a diurnal rate, and users submitting
   sweeps of similar jobs at once); some pipelines whose jobs depend on the previous one.
   Arrivals fill a window of `--days` so that the offered GPU work is `--load` times the
   cluster's GPU capacity over that window;
2. draws a checkpoint model (seeded, its own stream): every job longer than 30 min saves
   its work every k minutes of each run, k uniform in 10..60; three scenarios: no job
   checkpoints, half of the long ones do (a coin per job), all of them do;
3. replays the trace, event by event, through the real scheduler under every policy of
   `POLICIES` in every scenario: a pass at every arrival, every completion and whenever a
   waiting job passes its starvation guard. Checkpoints trigger no pass: they set the
   running job's `saved_seconds` and `checkpointed_at` (SPEC 5, "Checkpoints"). A job
   completes at `scheduler.ends_at_of`; a preempted one keeps its saved work and loses the
   rest (`Plan.lost_seconds`). The `spec-before-checkpoints` baseline ignores checkpoints
   and puts back by start time: the default as it was. The extra policies are wrappers
   around `run_pass` (`holding_pass`), not part of the product;
4. bounds the useful GPU work any scheduler could do with a time-indexed LP (below);
5. writes `simulate.json`, `simulate.md`, `utilization.png`, `wait_cdf.png` and
   `lost_work.png` to `--out`.

What the LP bound means. Let T be the arrival window (`--days`), cut into K slots of
length L = T / K. Each GPU job j gets a release time r_j: its submission, or later if it
depends on other jobs, since a dependency d cannot complete before r_d + duration_d. A
variable x_jk in [0, 1] is the fraction of slot k during which j runs, at most the part of
the slot after r_j. Constraints: sum_k L x_jk <= duration_j (a job runs at most its
duration in total) and, per slot and per resource, sum_j request_j x_jk <= capacity. The
objective is sum_j gpus_j L x_jk: GPU-seconds of work processed inside the window. The
kept pieces of every job's runs under any policy are a feasible point: its completed run
and each preempted run up to that run's latest checkpoint lie after the job's release and
add up to its duration (the saved work it restarted with plus its final run), and the runs
in progress at any moment fit the cluster. So the optimum is an upper bound on the
*useful* GPU-seconds (work not discarded by preemption) that any scheduler can process
inside the window, with or without preemption or checkpoints, knowing the future or not.
It relaxes gang scheduling (a job may run on part of its GPUs), non-preemption and
dependencies beyond their earliest completion, so it is optimistic; a coarser slot only
loosens it, never breaks it. CPU-only jobs add nothing to the objective and are left out
(which can only raise the bound). Each policy's "share of the LP bound" is its useful
GPU-seconds inside the window divided by that optimum. The window, not the default
policy's makespan, is the horizon: every job completes within that makespan, so over it
the bound would be the trace's total work, which the default policy reaches by
definition, and the share would say nothing.

Other metrics, per policy and scenario: GPU-hours lost (over every preemption, the
victim's unsaved seconds times its GPUs); utilization per resource (allocated / total,
time-averaged from 0 to the policy's makespan, discarded work included); wait (time spent
pending once eligible, i.e. after submission or dependencies done, before the first start
and after each preemption) per priority class; job completion time (submission to
completion); bounded slowdown (response from eligibility over max(duration, 10 s), at least
1); preemptions; priority inversions (a start of job J while an eligible job of higher
priority that fitted in the capacity free just before J started kept waiting; room an
extra policy holds for a job ranked before J is not free); makespan.

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
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
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
    dominant_share,
    ends_at_of,
    order_key,
    progress_mark,
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


@dataclass(frozen=True, slots=True)
class Holding:
    """When a job about to preempt waits instead: the extra policies, in this script only.

    Either rule makes it wait only if the known ends of running jobs free its room at some
    instant `frees_at`; each pass asks again.
    """

    # The window rule: wait while `frees_at` comes within this long of `waiting_since`.
    window_seconds: float = 0.0
    # The waste rule: wait while the unsaved work the preemption would discard (seconds
    # times dominant share, summed over its victims) exceeds this ratio times the wait it
    # would save (seconds until `frees_at`, times the job's own dominant share).
    waste_ratio: float = 0.0
    # Jobs of this priority or above never wait (None: every job may).
    always_preempt_priority: int | None = None

    def waits(
        self, job: Job, frees_at: float | None, lost: float, now: float, total: Resources
    ) -> bool:
        """True if `job` should wait rather than preempt work that would lose `lost`."""
        if frees_at is None:
            return False
        if (
            self.always_preempt_priority is not None
            and job.priority >= self.always_preempt_priority
        ):
            return False
        if self.window_seconds > 0 and frees_at < job.waiting_since + self.window_seconds:
            return True
        saved = (frees_at - now) * dominant_share(job.request, total)
        return self.waste_ratio > 0 and lost > self.waste_ratio * saved


@dataclass(frozen=True, slots=True)
class Simulated:
    """A policy as the replay runs it: the scheduler's knobs and what the runtime does."""

    policy: Policy
    # False: the jobs' checkpoints are ignored (saved work stays 0), so every preempted run
    # restarts from zero, as before SPEC 5 had checkpoints.
    checkpoints: bool = True
    # An extra policy: when a job about to preempt waits instead (`holding_pass`).
    holding: Holding | None = None


# Priority classes: (name, priority, share of submission sessions).
CLASSES = (("low", 0, 0.25), ("normal", 100, 0.50), ("high", 500, 0.17), ("urgent", 900, 0.08))
URGENT_PRIORITY = max(priority for _, priority, _ in CLASSES)
HIGH_PRIORITY = sorted(priority for _, priority, _ in CLASSES)[-2]

POLICIES: dict[str, Simulated] = {
    "hypervisor-default": Simulated(Policy()),
    # SPEC 5 before checkpoints: put-back by start time, every preempted run lost whole.
    "spec-before-checkpoints": Simulated(Policy(cost_aware_victims=False), checkpoints=False),
    "fifo": Simulated(Policy(priority_order=False, preemption=False, backfill=False)),
    "priority-no-preemption": Simulated(Policy(preemption=False)),
    "priority-no-backfill": Simulated(Policy(backfill=False)),
    # The product's knob against wasted work: running jobs younger than an hour are safe.
    "hypervisor-grace-1h": Simulated(Policy(preemption_grace_seconds=3600)),
    # Extra policies (wrappers around run_pass, not the product): a job about to preempt
    # waits if known ends free its room within a minute of its wait ...
    "hold-window-60s": Simulated(Policy(), holding=Holding(window_seconds=60)),
    # ... or while preempting would discard more work than the wait it saves, except urgent
    # jobs (or, in the second, high and urgent ones).
    "waste-check": Simulated(
        Policy(), holding=Holding(waste_ratio=1.0, always_preempt_priority=URGENT_PRIORITY)
    ),
    "waste-check-500": Simulated(
        Policy(), holding=Holding(waste_ratio=1.0, always_preempt_priority=HIGH_PRIORITY)
    ),
}
DEFAULT_POLICY_NAME = "hypervisor-default"

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

# Checkpoints, the runtime's side of SPEC 5: a job longer than half an hour saves its work
# every k minutes of each run, k a whole number drawn per job uniformly from 10 to 60;
# shorter jobs never do. Scenarios: the share of those long jobs that checkpoint at all.
CHECKPOINT_MIN_RUN_SECONDS = 1800
CHECKPOINT_MINUTES = (10, 60)
CHECKPOINT_STREAM = 1  # the checkpoint draws have their own stream: the trace is unchanged
SCENARIOS = {"none": 0.0, "half": 0.5, "all": 1.0}
SCENARIO_TITLES = {
    "none": "no job checkpoints",
    "half": "half of the long jobs checkpoint",
    "all": "every long job checkpoints",
}

WAIT_BOUND_SECONDS = 10.0  # the bound of the bounded slowdown


# --- Entry point -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Generate, replay, bound and report; return the exit status."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clock = time.perf_counter()
    trace = generate_trace(args.seed, args.days, args.gpus, args.load)
    logger.info("trace: %d jobs over %.2f days on %d GPUs", len(trace.jobs), args.days, args.gpus)
    bound = lp_bound(trace, args.slots)
    logger.info("LP bound solved in %.1f s (%d columns)", bound.solve_seconds, bound.columns)
    scenarios, replays = run_scenarios(trace, args.seed, bound, POLICIES)

    other_seeds: dict[str, Any] = {}
    for seed in args.other_seeds:
        started = time.perf_counter()
        other = generate_trace(seed, args.days, args.gpus, args.load)
        other_bound = lp_bound(other, args.slots)
        chosen = {name: POLICIES[name] for name in SEED_CHECK_POLICIES}
        other_scenarios, _ = run_scenarios(other, seed, other_bound, chosen)
        other_seeds[str(seed)] = {
            "jobs": len(other.jobs),
            "lp_bound_gpu_seconds": other_bound.gpu_seconds,
            "scenarios": other_scenarios,
            "targets": _targets(other_scenarios),
        }
        logger.info("seed %d checked in %.1f s", seed, time.perf_counter() - started)

    report = {
        "config": {
            "seed": args.seed,
            "other_seeds": args.other_seeds,
            "days": args.days,
            "gpus": args.gpus,
            "load": args.load,
            "slots": args.slots,
            "smoke": args.smoke,
            "checkpoint_min_run_seconds": CHECKPOINT_MIN_RUN_SECONDS,
            "checkpoint_minutes": list(CHECKPOINT_MINUTES),
            "policies": {name: asdict(simulated) for name, simulated in POLICIES.items()},
        },
        "trace": trace_stats(trace),
        "lp_bound": asdict(bound),
        "scenarios": scenarios,
        "targets": _targets(scenarios),
        "other_seeds": other_seeds,
    }
    report["runtime_seconds"] = time.perf_counter() - clock
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulate.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "simulate.md").write_text(_markdown(report))
    _plot_utilization(trace, replays, out / "utilization.png")
    _plot_wait_cdf(replays, out / "wait_cdf.png")
    _plot_lost_work(report, out / "lost_work.png")
    sys.stdout.write(_summary_table(report))
    return 0


def run_scenarios(
    trace: Trace, seed: int, bound: Bound, policies: Mapping[str, Simulated]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Replay]]]:
    """Replay the trace under every policy in every checkpoint scenario; summarize each."""
    replays: dict[str, dict[str, Replay]] = {}
    scenarios: dict[str, dict[str, Any]] = {}
    for scenario, intervals in checkpoint_intervals(trace, seed).items():
        started = time.perf_counter()
        replays[scenario] = {}
        summaries: dict[str, dict[str, Any]] = {}
        for name, simulated in policies.items():
            result = replay(trace, simulated, intervals)
            replays[scenario][name] = result
            metrics = summarize(trace, result)
            metrics["share_of_lp_bound"] = metrics["window_useful_gpu_seconds"] / bound.gpu_seconds
            metrics["allocated_share_of_lp_bound"] = (
                metrics["window_allocated_gpu_seconds"] / bound.gpu_seconds
            )
            summaries[name] = metrics
        scenarios[scenario] = {
            "title": SCENARIO_TITLES[scenario],
            "share_of_long_jobs": SCENARIOS[scenario],
            "jobs_checkpointing": len(intervals),
            "mean_checkpoint_interval_seconds": (
                float(np.mean(list(intervals.values()))) if intervals else None
            ),
            "policies": summaries,
        }
        logger.info(
            "seed %d, scenario %s replayed in %.1f s", seed, scenario, time.perf_counter() - started
        )
    return scenarios, replays


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=float, default=3.0, help="arrival window")
    parser.add_argument("--gpus", type=int, default=64, help="cluster size; CPU and RAM follow")
    parser.add_argument("--load", type=float, default=0.9, help="offered GPU work / capacity")
    parser.add_argument("--slots", type=int, default=288, help="time slots of the LP bound")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument(
        "--other-seeds",
        type=int,
        nargs="*",
        default=[2, 3],
        help="seeds whose traces check the main policies and the targets (none: skip)",
    )
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


def checkpoint_intervals(trace: Trace, seed: int) -> dict[str, dict[int, float]]:
    """Per scenario, the checkpoint interval in seconds of every job that checkpoints.

    Each long job draws its interval and a uniform number u once, so the scenarios nest:
    the job checkpoints in a scenario whose share is above u ("half" is a coin per job).
    """
    rng = np.random.default_rng([seed, CHECKPOINT_STREAM])
    low, high = CHECKPOINT_MINUTES
    draws: list[tuple[int, float, float]] = []  # (job id, interval, u)
    for job in trace.jobs:
        if job.duration > CHECKPOINT_MIN_RUN_SECONDS:
            minutes = int(rng.integers(low, high + 1))
            draws.append((job.id, 60.0 * minutes, float(rng.random())))
    return {
        name: {job_id: interval for job_id, interval, u in draws if u < share}
        for name, share in SCENARIOS.items()
    }


# --- Replay ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """One run of a job: from a start to its completion or preemption."""

    job_id: int
    start: float
    end: float
    request: Resources
    # Work up to here is kept: the end of a completed run, else the run's latest checkpoint
    # (its start when it has none); from here to `end` preemption discarded it.
    saved_until: float
    completed: bool


@dataclass
class Replay:
    """What one policy did with the trace."""

    eligible_at: dict[int, float] = field(default_factory=dict)
    completed_at: dict[int, float] = field(default_factory=dict)
    waited: dict[int, float] = field(default_factory=dict)  # seconds pending once eligible
    spans: list[Span] = field(default_factory=list)
    preemptions: int = 0
    lost_gpu_seconds: float = 0.0  # sum over preemptions of Plan.lost_seconds x gpus
    # The part of it lost to starts whose victims lost more GPU-seconds than the starting
    # job's whole run (its GPUs times its duration).
    wasteful_lost_gpu_seconds: float = 0.0
    checkpoints: int = 0
    inversions: int = 0
    passes: int = 0
    pass_seconds: float = 0.0


def replay(trace: Trace, simulated: Simulated, checkpoints: Mapping[int, float]) -> Replay:
    """Run the trace through `run_pass` on a virtual clock and record every decision.

    `checkpoints` maps a job id to its checkpoint interval in seconds: during every run,
    that job saves its work each interval after the run's start (never at or after its
    end). A checkpoint triggers no pass; it only updates the running job, as SPEC 5 says.
    """
    policy = simulated.policy
    intervals = checkpoints if simulated.checkpoints else {}
    result = Replay()
    by_id = {job.id: job for job in trace.jobs}
    arrivals = list(trace.jobs)  # in submission order
    next_arrival = 0
    wake_ups: list[float] = []  # completions and starvation guards: each one is a pass
    saves: list[tuple[float, int, float]] = []  # checkpoints: (at, job id, the run's start)
    guarded: set[tuple[int, float]] = set()
    hold_ends: set[float] = set()
    status: dict[int, str] = {}
    blocked: dict[int, tuple[int, ...]] = {}  # pending, waiting for dependencies
    pending: dict[int, Job] = {}  # eligible pending
    queued_at: dict[int, float] = {}  # eligible pending: since when, this time
    running: dict[int, Job] = {}

    while next_arrival < len(arrivals) or wake_ups:
        now = min(
            arrivals[next_arrival].submitted_at if next_arrival < len(arrivals) else math.inf,
            wake_ups[0] if wake_ups else math.inf,
        )
        while wake_ups and wake_ups[0] <= now:
            heapq.heappop(wake_ups)
        while saves and saves[0][0] <= now:
            at, job_id, run_start = heapq.heappop(saves)
            job = running.get(job_id)
            if job is None or job.started_at != run_start:
                continue  # that run was preempted: its schedule of checkpoints ended with it
            saved = _checkpointed(job, at)
            running[job_id] = saved
            result.checkpoints += 1
            ends_at = _ends_at(saved)
            if ends_at != _ends_at(job):  # rounding only: the new end is the one that counts
                heapq.heappush(wake_ups, ends_at)
            if at + intervals[job_id] < ends_at:
                heapq.heappush(saves, (at + intervals[job_id], job_id, run_start))
        while next_arrival < len(arrivals) and arrivals[next_arrival].submitted_at <= now:
            job = arrivals[next_arrival]
            next_arrival += 1
            status[job.id] = "pending"
            if job.depends_on:
                blocked[job.id] = job.depends_on
            else:
                pending[job.id] = _as_job(job, waiting_since=job.submitted_at)
                result.eligible_at[job.id] = queued_at[job.id] = job.submitted_at
                result.waited[job.id] = 0.0

        for job in [job for job in running.values() if _ends_at(job) <= now]:
            del running[job.id]
            status[job.id] = "completed"
            finished_at = _ends_at(job)
            result.completed_at[job.id] = finished_at
            result.spans.append(
                Span(job.id, _started(job), finished_at, job.request, finished_at, True)
            )
        if blocked:
            resolution = resolve_dependencies(blocked, status)
            if resolution.failed:
                raise RuntimeError(f"dependencies failed in a trace without failures: {resolution}")
            for job_id in resolution.eligible:
                del blocked[job_id]
                pending[job_id] = _as_job(by_id[job_id], waiting_since=now)
                result.eligible_at[job_id] = queued_at[job_id] = now
                result.waited[job_id] = 0.0

        clock = time.perf_counter()
        plan, room_held, deadlines = holding_pass(
            trace.cluster,
            list(running.values()),
            list(pending.values()),
            now,
            policy,
            simulated.holding,
        )
        result.pass_seconds += time.perf_counter() - clock
        for deadline in deadlines:
            if deadline not in hold_ends:
                hold_ends.add(deadline)
                heapq.heappush(wake_ups, deadline)
        result.passes += 1
        if plan.completed:
            raise RuntimeError(f"run_pass completed jobs the replay had not: {plan.completed}")

        result.inversions += _count_inversions(trace.cluster, running, pending, plan, room_held)
        for victim_id in plan.preempted:
            victim = running[victim_id]
            lost = plan.lost_seconds[victim_id]
            saved_until = progress_mark(victim)
            if not math.isclose(lost, now - saved_until, abs_tol=1e-6):
                raise RuntimeError(f"job {victim_id}: the plan's lost seconds disagree")
            result.spans.append(
                Span(victim_id, _started(victim), now, victim.request, saved_until, False)
            )
            result.preemptions += 1
            result.lost_gpu_seconds += lost * victim.request.gpu
            queued_at[victim_id] = now
        lost_for: Counter[int] = Counter()
        for victim_id, preemptor_id in plan.preempted.items():
            lost_for[preemptor_id] += plan.lost_seconds[victim_id] * running[victim_id].request.gpu
        for preemptor_id, lost in lost_for.items():
            preemptor = by_id[preemptor_id]
            if lost > preemptor.request.gpu * preemptor.duration:
                result.wasteful_lost_gpu_seconds += lost
        running = {job.id: job for job in plan.running}
        pending = {job.id: job for job in plan.pending}
        for job_id in plan.started:
            job = running[job_id]
            result.waited[job_id] += now - queued_at.pop(job_id)
            heapq.heappush(wake_ups, _ends_at(job))
            interval = intervals.get(job_id)
            if interval is not None and now + interval < _ends_at(job):
                heapq.heappush(saves, (now + interval, job_id, now))
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


def holding_pass(
    cluster: Cluster,
    running: Sequence[Job],
    pending: Sequence[Job],
    now: float,
    policy: Policy,
    holding: Holding | None,
) -> tuple[Plan, Resources, list[float]]:
    """`run_pass`, except that a job about to preempt may wait instead (`Holding`), with the
    room already free at its turn in the sweep held for it, so nothing ranked after it
    takes that room. A wrapper, not a change to the scheduler: each pass re-derives the
    holds from scratch, as a reservation that lasts one pass.

    Returns the plan (held jobs among its pending ones), the room held, and the instants
    a pass must look again (where a hold window ends).
    """
    if holding is None or not policy.preemption:
        return run_pass(cluster, running, pending, now, policy), Resources(), []
    if not policy.priority_order or holding.window_seconds >= policy.starvation_seconds:
        raise ValueError("holding needs priority order and a window below the starvation limit")
    by_id = {job.id: job for job in pending}
    was_running = {job.id: job for job in running}
    held: dict[int, Job] = {}
    checked: set[int] = set()  # preempting jobs already asked
    room_held = lacking = Resources()  # room held for the held jobs, and what they still lack
    while True:
        effective = Cluster(cluster.total, cluster.reserved + room_held)
        candidates = [job for job in pending if job.id not in held]
        plan = run_pass(effective, running, candidates, now, policy)
        preemptor = next(
            (by_id[job_id] for job_id in plan.preempting if job_id not in checked), None
        )
        if preemptor is None:
            break
        checked.add(preemptor.id)
        # The sweep's state when it reaches the preemptor: the pass over the jobs before it.
        # (Holding room for it cannot change whether those start: it is what they left.)
        key = order_key(preemptor, policy)
        before = [job for job in candidates if order_key(job, policy) < key]
        just_before = (*key[:-1], key[-1] - 0.5)  # ids are integers
        prefix = run_pass(effective, running, before, now, policy, stop_after=just_before)
        room = prefix.available - lacking
        frees_at = _room_at(preemptor.request, room, prefix.running, now)
        lost = sum(
            plan.lost_seconds[victim] * dominant_share(was_running[victim].request, cluster.total)
            for victim, by in plan.preempted.items()
            if by == preemptor.id
        )
        # A job ranked after a held one may not jump it by preempting: it waits as well.
        behind_held = any(order_key(job, policy) < key for job in held.values())
        if not behind_held and not holding.waits(preemptor, frees_at, lost, now, cluster.total):
            continue
        held[preemptor.id] = preemptor
        kept = _least(preemptor.request, _at_least_zero(room))
        room_held += kept
        lacking += preemptor.request - kept
    if not held:
        return plan, Resources(), []
    plan = replace(
        plan, pending=[*plan.pending, *held.values()], available=plan.available + room_held
    )
    deadlines = [
        job.waiting_since + holding.window_seconds
        for job in held.values()
        if holding.window_seconds > 0
    ]
    return plan, room_held, deadlines


def _room_at(
    request: Resources, room: Resources, running: Sequence[Job], now: float
) -> float | None:
    """The earliest instant the running jobs' known ends make `request` fit, if any."""
    if request.fits_in(room):
        return now
    for ends_at, job in sorted(
        ((ends_at, job) for job in running if (ends_at := ends_at_of(job)) is not None),
        key=lambda entry: entry[0],
    ):
        room += job.request
        if request.fits_in(room):
            return ends_at
    return None


def _least(one: Resources, other: Resources) -> Resources:
    """The component-wise minimum."""
    return Resources(min(one.cpu, other.cpu), min(one.ram, other.ram), min(one.gpu, other.gpu))


def _at_least_zero(amount: Resources) -> Resources:
    """`amount` with negative components raised to 0."""
    return Resources(max(amount.cpu, 0), max(amount.ram, 0), max(amount.gpu, 0))


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


def _checkpointed(job: Job, at: float) -> Job:
    """A running job after a checkpoint at `at`: its unsaved work becomes saved."""
    return replace(
        job, saved_seconds=job.saved_seconds + (at - progress_mark(job)), checkpointed_at=at
    )


def _started(job: Job) -> float:
    """A running job's latest start."""
    if job.started_at is None:
        raise ValueError(f"job {job.id} runs without a start time")
    return job.started_at


def _ends_at(job: Job) -> float:
    """When a running job completes, computed as the scheduler does."""
    ends_at = ends_at_of(job)
    if ends_at is None:
        raise ValueError(f"job {job.id} has no duration or is not running")
    return ends_at


def _count_inversions(
    cluster: Cluster,
    running_before: dict[int, Job],
    pending_before: dict[int, Job],
    plan: Plan,
    room_held: Resources,
) -> int:
    """Starts in this pass that left a higher-priority eligible job waiting that fitted.

    Room an extra policy held for a job ranked before it does not count as free."""
    if not plan.started:
        return 0
    still_waiting = {job.id for job in plan.pending} & set(pending_before)
    waiting = sorted(
        (pending_before[job_id] for job_id in still_waiting), key=lambda job: -job.priority
    )
    free = cluster.total - cluster.reserved - room_held
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
    useful_in_window = _busy_seconds(result.spans, "gpu", 0.0, window, saved_only=True)
    allocated_in_window = _busy_seconds(result.spans, "gpu", 0.0, window)
    lost = [span for span in result.spans if not span.completed]
    preempted = Counter(span.job_id for span in lost)

    per_class: dict[str, dict[str, float | int | None]] = {}
    for name, priority, _ in CLASSES:
        values = np.array([result.waited[i] for i in jobs if jobs[i].priority == priority])
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
        "mean_wait_seconds": float(np.mean(list(result.waited.values()))),
        "mean_completion_seconds": float(completion.mean()),
        "mean_bounded_slowdown": float(slowdown.mean()),
        "preemptions": result.preemptions,
        "gpu_seconds_lost_to_preemption": result.lost_gpu_seconds,
        "gpu_seconds_lost_by_wasteful_preemptions": result.wasteful_lost_gpu_seconds,
        "jobs_preempted": len(preempted),
        "most_preemptions_of_one_job": max(preempted.values(), default=0),
        "preemptions_of_one_gpu_jobs": sum(1 for span in lost if span.request.gpu == 1),
        "checkpoints": result.checkpoints,
        "priority_inversions": result.inversions,
        "makespan_seconds": makespan,
        "passes": result.passes,
        "mean_pass_milliseconds": 1000 * result.pass_seconds / max(result.passes, 1),
    }


def _busy_seconds(
    spans: Sequence[Span], resource: str, start: float, end: float, saved_only: bool = False
) -> float:
    """Resource-seconds allocated by `spans` within [start, end]; with `saved_only`, only
    the part of each run whose work was kept (the useful work)."""
    busy = 0.0
    for span in spans:
        span_end = span.saved_until if saved_only else span.end
        overlap = min(span_end, end) - max(span.start, start)
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
BEFORE_POLICY_NAME = "spec-before-checkpoints"
JCT_BASELINE_NAME = "priority-no-preemption"
WINDOW_POLICY_NAME = "hold-window-60s"
EXTRA_POLICY_NAME = "waste-check"
EXTRA_POLICIES = (WINDOW_POLICY_NAME, EXTRA_POLICY_NAME, "waste-check-500")
SEED_CHECK_POLICIES = (
    DEFAULT_POLICY_NAME,
    BEFORE_POLICY_NAME,
    JCT_BASELINE_NAME,
    EXTRA_POLICY_NAME,
)
EARNS_MIN_SAVING = 0.25  # an extra policy must cut the GPU-hours lost without checkpoints
TARGET_SHARE_OF_BOUND = 0.97  # with every long job checkpointing
TARGET_TOP_P99_SECONDS = 60.0
# The policies drawn in the plots: the rest sit on top of these or clutter them.
PLOTTED = (DEFAULT_POLICY_NAME, BEFORE_POLICY_NAME, "fifo", JCT_BASELINE_NAME, EXTRA_POLICY_NAME)
POLICY_NOTES = {
    DEFAULT_POLICY_NAME: "SPEC 5 as it stands: checkpoints honoured, put-back by unsaved "
    "work x dominant share",
    BEFORE_POLICY_NAME: "the default before checkpoints: put-back by start time, every "
    "preempted run restarts from zero (checkpoints ignored, so the same in every scenario)",
    "fifo": "submission order, no preemption, no backfill (the original service)",
    "priority-no-preemption": "priority order with backfill, never preempts",
    "priority-no-backfill": "the default, but the first job that cannot start stops the sweep",
    "hypervisor-grace-1h": "the default with HYPERVISOR_PREEMPTION_GRACE_SECONDS=3600",
    WINDOW_POLICY_NAME: "extra (a wrapper around run_pass): a job about to preempt waits "
    "instead if the known ends of running jobs free its room within 60 s of its wait, the "
    "room already free held for it",
    EXTRA_POLICY_NAME: "extra (a wrapper around run_pass): a job about to preempt waits "
    "instead while its victims' unsaved work x dominant share exceeds the wait it would "
    "save x its own dominant share (the wait until known ends free its room), the room "
    f"already free held for it; {TOP_CLASS} jobs (priority {URGENT_PRIORITY}) always preempt",
    "waste-check-500": f"extra: the waste check, but jobs of priority {HIGH_PRIORITY} and "
    "above always preempt",
}


def _targets(scenarios: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets for the default policy, each with its value and whether it is met."""
    full = scenarios["all"]["policies"]
    none = scenarios["none"]["policies"]
    default = full[DEFAULT_POLICY_NAME]
    share = default["share_of_lp_bound"]
    top_p99 = default["wait_seconds"][TOP_CLASS]["p99"]
    jct = default["mean_completion_seconds"]
    baseline_jct = full[JCT_BASELINE_NAME]["mean_completion_seconds"]
    plain, before = none[DEFAULT_POLICY_NAME], none[BEFORE_POLICY_NAME]
    return {
        "all_share_of_lp_bound": {
            "scenario": "all",
            "target": TARGET_SHARE_OF_BOUND,
            "value": share,
            "met": share >= TARGET_SHARE_OF_BOUND,
        },
        "all_top_class_p99_wait": {
            "scenario": "all",
            "class": TOP_CLASS,
            "target": TARGET_TOP_P99_SECONDS,
            "value": top_p99,
            "met": top_p99 is not None and top_p99 <= TARGET_TOP_P99_SECONDS,
        },
        "all_mean_jct_vs_no_preemption": {
            "scenario": "all",
            "baseline": JCT_BASELINE_NAME,
            "target": baseline_jct,
            "value": jct,
            "met": jct <= baseline_jct,
        },
        "all_zero_priority_inversions": {
            "scenario": "all",
            "target": 0,
            "value": default["priority_inversions"],
            "met": default["priority_inversions"] == 0,
        },
        "none_share_beats_before": {
            "scenario": "none",
            "baseline": BEFORE_POLICY_NAME,
            "target": before["share_of_lp_bound"],
            "value": plain["share_of_lp_bound"],
            "met": plain["share_of_lp_bound"] > before["share_of_lp_bound"],
        },
        "none_lost_beats_before": {
            "scenario": "none",
            "baseline": BEFORE_POLICY_NAME,
            "target": before["gpu_seconds_lost_to_preemption"],
            "value": plain["gpu_seconds_lost_to_preemption"],
            "met": plain["gpu_seconds_lost_to_preemption"]
            < before["gpu_seconds_lost_to_preemption"],
        },
    }


def _markdown(report: dict[str, Any]) -> str:
    """The human-readable report: setup, the tables, the targets, the extra policies."""
    config, trace, bound = report["config"], report["trace"], report["lp_bound"]
    lines = [
        "# Scheduling quality (bench/simulate.py)",
        "",
        f"Command: `.venv/bin/python bench/simulate.py --seed {config['seed']} "
        f"--days {config['days']:g} --gpus {config['gpus']}"
        + (" --smoke" if config["smoke"] else "")
        + f"` (load {config['load']:g}, {config['slots']} LP slots); "
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
        "## Checkpoints: three scenarios",
        "",
        f"Each job longer than {config['checkpoint_min_run_seconds'] / 60:.0f} min saves its "
        f"work every k minutes of each run, k drawn per job uniformly from "
        f"{config['checkpoint_minutes'][0]} to {config['checkpoint_minutes'][1]} (seeded); "
        "shorter jobs never do. A checkpoint triggers no pass: the replay sets the running "
        "job's `saved_seconds` and `checkpointed_at` as SPEC 5 says, a preempted job restarts "
        "with its saved work, and a job completes at `scheduler.ends_at_of`.",
        "",
    ]
    for name, scenario in report["scenarios"].items():
        interval = scenario["mean_checkpoint_interval_seconds"]
        lines.append(
            f"- **{name}** ({scenario['title']}): {scenario['jobs_checkpointing']} jobs "
            "checkpoint" + (f", every {_duration_text(interval)} on average." if interval else ".")
        )
    lines += [
        "",
        "## LP bound",
        "",
        f"Time-indexed LP relaxation, {bound['slots']} slots of "
        f"{bound['slot_seconds']:.0f} s over the arrival window, {bound['columns']} columns, "
        f"{bound['rows']} rows, solved by HiGHS in {bound['solve_seconds']:.1f} s: at most "
        f"{bound['gpu_seconds'] / 3600:,.0f} GPU-hours of useful work fit inside the window, "
        f"a GPU utilization of {bound['window_gpu_utilization']:.1%}. It relaxes gang "
        "scheduling, non-preemption and dependencies (see the script's docstring), so it is an "
        "upper bound, not a schedule. Checkpoints do not change it: the useful pieces of a "
        "job's runs always add up to its duration.",
        "",
        "## Policies",
        "",
        *(f"- `{name}`: {POLICY_NOTES[name]}." for name in POLICIES),
        "",
        "## Results",
        "",
        "*Useful work* is the GPU work inside the arrival window that was kept (completed "
        "runs, and preempted runs up to their latest checkpoint) over the LP bound. *GPU-h "
        "lost* sums, over every preemption, the victim's unsaved seconds (`Plan.lost_seconds`) "
        "times its GPUs. JCT runs from submission to completion; bounded slowdown is the time "
        "from eligibility to completion over max(duration, 10 s). Waits are the time spent "
        "pending once eligible (before the first start and after each preemption). *GPU util* "
        "is allocated over total from time 0 to the makespan, discarded work included.",
        "",
    ]
    for name, scenario in report["scenarios"].items():
        lines += [f"### {name}: {scenario['title']}", "", *_scenario_table(scenario), ""]
        lines += [
            "Wait per priority class (mean / p50 / p99):",
            "",
            *_class_wait_table(scenario),
            "",
        ]
    lines += ["## Targets for the default policy", "", *_target_lines(report), ""]
    if report["other_seeds"]:
        lines += ["## Other seeds", "", *_other_seed_lines(report), ""]
    lines += ["## One step further: wait instead of preempting", "", *_extra_lines(report), ""]
    lines += [
        "Plots: `utilization.png` (GPU utilization over time), `wait_cdf.png` (wait CDF), "
        "per scenario for " + ", ".join(PLOTTED) + "; `lost_work.png` (GPU-hours lost and "
        "useful work per policy and scenario).",
        "",
    ]
    return "\n".join(lines)


def _scenario_table(scenario: dict[str, Any]) -> list[str]:
    """One row per policy: the headline numbers of one scenario."""
    lines = [
        "| policy | useful work, % of LP | GPU-h lost | preemptions | mean JCT | "
        f"mean bounded slowdown | {TOP_CLASS} p99 wait | inversions | GPU util | makespan |",
        "|---|" + "---:|" * 9,
    ]
    for name, metrics in scenario["policies"].items():
        lines.append(
            f"| {name} | {metrics['share_of_lp_bound']:.1%} | "
            f"{metrics['gpu_seconds_lost_to_preemption'] / 3600:.1f} | "
            f"{metrics['preemptions']} | "
            f"{_duration_text(metrics['mean_completion_seconds'])} | "
            f"{metrics['mean_bounded_slowdown']:.1f} | "
            f"{_duration_text(metrics['wait_seconds'][TOP_CLASS]['p99'])} | "
            f"{metrics['priority_inversions']} | {metrics['utilization']['gpu']:.1%} | "
            f"{_duration_text(metrics['makespan_seconds'])} |"
        )
    return lines


def _class_wait_table(scenario: dict[str, Any]) -> list[str]:
    """One row per policy: mean / p50 / p99 wait of each priority class."""
    lines = [
        "| policy | " + " | ".join(f"{name} ({priority})" for name, priority, _ in CLASSES) + " |",
        "|---|" + "---:|" * len(CLASSES),
    ]
    for name, metrics in scenario["policies"].items():
        cells = []
        for class_name, _, _ in CLASSES:
            stats = metrics["wait_seconds"][class_name]
            cells.append(
                " / ".join(_duration_text(stats[key]) for key in ("mean", "p50", "p99"))
                + f" (n={stats['jobs']})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _target_lines(report: dict[str, Any]) -> list[str]:
    """One bullet per target: met or missed, and when missed why and what to do next."""
    targets = report["targets"]
    share = targets["all_share_of_lp_bound"]
    top = targets["all_top_class_p99_wait"]
    jct = targets["all_mean_jct_vs_no_preemption"]
    inversions = targets["all_zero_priority_inversions"]
    none_share = targets["none_share_beats_before"]
    none_lost = targets["none_lost_beats_before"]
    bullets = [
        (
            "all_share_of_lp_bound",
            f"Every long job checkpointing, useful work at least {share['target']:.0%} of the "
            f"LP bound: **{_verdict(share['met'])}** ({share['value']:.1%}).",
            _share_gap,
        ),
        (
            "all_top_class_p99_wait",
            f"Every long job checkpointing, {top['class']} p99 wait at most "
            f"{_duration_text(top['target'])}: **{_verdict(top['met'])}** "
            f"({_duration_text(top['value'])}).",
            _top_wait_gap,
        ),
        (
            "all_mean_jct_vs_no_preemption",
            f"Every long job checkpointing, mean JCT no worse than {jct['baseline']}: "
            f"**{_verdict(jct['met'])}** ({_duration_text(jct['value'])} against "
            f"{_duration_text(jct['target'])}).",
            _jct_gap,
        ),
        (
            "all_zero_priority_inversions",
            f"Every long job checkpointing, zero priority inversions: "
            f"**{_verdict(inversions['met'])}** ({inversions['value']}).",
            _inversion_gap,
        ),
        (
            "none_share_beats_before",
            f"No checkpoints, useful work above {none_share['baseline']} (victim choice alone): "
            f"**{_verdict(none_share['met'])}** ({none_share['value']:.1%} against "
            f"{none_share['target']:.1%}).",
            _victim_choice_gap,
        ),
        (
            "none_lost_beats_before",
            f"No checkpoints, fewer GPU-hours lost than {none_lost['baseline']} (victim choice "
            f"alone): **{_verdict(none_lost['met'])}** ({none_lost['value'] / 3600:,.1f} "
            f"against {none_lost['target'] / 3600:,.1f}).",
            _victim_choice_gap,
        ),
    ]
    lines, explained = [], set()
    for key, text, reason in bullets:
        target = targets[key]
        others = report["other_seeds"]
        if others:
            text += (
                " Other seeds: "
                + ", ".join(
                    f"seed {seed} {_verdict(other['targets'][key]['met'])}"
                    for seed, other in others.items()
                )
                + "."
            )
        if not target["met"]:
            text += " " + ("The same cause as above." if reason in explained else reason(report))
            explained.add(reason)
        lines.append(f"- {text}")
    return lines


def _other_seed_lines(report: dict[str, Any]) -> list[str]:
    """The main policies on traces of other seeds: are the conclusions the trace's own?"""
    lines = [
        "The same generator and checkpoint model with other seeds (same size and load), for "
        "the default, the old default, priority without preemption and the waste check:",
        "",
        "| seed | scenario | policy | useful work, % of LP | GPU-h lost | preemptions | "
        f"mean JCT | high p99 wait | {TOP_CLASS} p99 wait | inversions |",
        "|---|---|---|" + "---:|" * 7,
    ]
    for seed, other in report["other_seeds"].items():
        for scenario_name, scenario in other["scenarios"].items():
            for name, metrics in scenario["policies"].items():
                lines.append(
                    f"| {seed} | {scenario_name} | {name} | {metrics['share_of_lp_bound']:.1%} | "
                    f"{metrics['gpu_seconds_lost_to_preemption'] / 3600:.1f} | "
                    f"{metrics['preemptions']} | "
                    f"{_duration_text(metrics['mean_completion_seconds'])} | "
                    f"{_duration_text(metrics['wait_seconds']['high']['p99'])} | "
                    f"{_duration_text(metrics['wait_seconds'][TOP_CLASS]['p99'])} | "
                    f"{metrics['priority_inversions']} |"
                )
    return lines


def _share_gap(report: dict[str, Any]) -> str:
    """Split the default's shortfall from the bound (all checkpointing) into its parts."""
    bound = report["lp_bound"]["gpu_seconds"]
    policies = report["scenarios"]["all"]["policies"]
    default = policies[DEFAULT_POLICY_NAME]
    useful = default["window_useful_gpu_seconds"]
    allocated = default["window_allocated_gpu_seconds"]
    extra = policies[EXTRA_POLICY_NAME]
    return (
        f"The shortfall is {(bound - useful) / 3600:,.0f} GPU-hours: "
        f"{(allocated - useful) / 3600:,.0f} inside the window went to work that preemption "
        f"discarded after the victims' latest checkpoints, "
        f"{(bound - allocated) / 3600:,.0f} were never allocated. "
        + (
            f"Next step: the waste check below reaches {extra['share_of_lp_bound']:.1%} on the "
            "same trace."
            if extra["share_of_lp_bound"] > default["share_of_lp_bound"]
            else "The waste check below does not close it; the next step is the unallocated "
            "part: backfill that respects the room a blocked job is waiting for."
        )
    )


def _top_wait_gap(report: dict[str, Any]) -> str:
    """Why the top class waits longer than the target."""
    return (
        f"{TOP_CLASS} jobs preempt any lower work at once (no grace period), so one waits "
        f"only for capacity held by other {TOP_CLASS} jobs, or for a size that lower work "
        "cannot free. Next step: a quota or a reserve for the class."
    )


def _jct_gap(report: dict[str, Any]) -> str:
    """Why the default's mean JCT is above the baseline's."""
    default = report["scenarios"]["all"]["policies"][DEFAULT_POLICY_NAME]
    extra = report["scenarios"]["all"]["policies"][EXTRA_POLICY_NAME]
    return (
        f"Preemption still discards "
        f"{default['gpu_seconds_lost_to_preemption'] / 3600:,.0f} GPU-hours of work done since "
        "the victims' latest checkpoints, and the redone work delays everyone. Next step: "
        f"the waste check below ({_duration_text(extra['mean_completion_seconds'])})."
    )


def _inversion_gap(report: dict[str, Any]) -> str:
    """What an inversion is and where to look."""
    return (
        "A job started while a higher-priority eligible job that fitted the free capacity "
        "kept waiting; `_count_inversions` in the script counts them per pass."
    )


def _victim_choice_gap(report: dict[str, Any]) -> str:
    """Why the cost-aware put-back alone loses more work than the start-time order."""
    policies = report["scenarios"]["none"]["policies"]
    default, before = policies[DEFAULT_POLICY_NAME], policies[BEFORE_POLICY_NAME]
    extra = policies[EXTRA_POLICY_NAME]

    def per_preemption(metrics: dict[str, Any]) -> float:
        return metrics["gpu_seconds_lost_to_preemption"] / 3600 / max(metrics["preemptions"], 1)

    return (
        "Without checkpoints the unsaved work is the time since the latest start, so the new "
        "put-back differs from the old one only by weighing it by dominant share: it keeps "
        "large jobs and preempts small ones. Each preemption loses less "
        f"({per_preemption(default):.1f} GPU-h on average, against "
        f"{per_preemption(before):.1f}), but there are {default['preemptions']} instead of "
        f"{before['preemptions']}: {default['preemptions_of_one_gpu_jobs']} of them hit "
        f"1-GPU jobs (before: {before['preemptions_of_one_gpu_jobs']}), which restart in the "
        f"room left over and are preempted again — {default['jobs_preempted']} jobs took "
        f"every preemption, one of them {default['most_preemptions_of_one_job']} times "
        f"(before: {before['jobs_preempted']} jobs, at most "
        f"{before['most_preemptions_of_one_job']}). The rule minimizes each preemption's "
        "loss, not the sum over a day. Next step: count in a candidate's cost the work its "
        "earlier preemptions already discarded, or the waste check below, which loses "
        f"{extra['gpu_seconds_lost_to_preemption'] / 3600:,.0f} GPU-hours here."
    )


def _extra_lines(report: dict[str, Any]) -> list[str]:
    """Where most is left, the two wrappers tried, their numbers, and the verdict."""
    scenarios = report["scenarios"]
    none = scenarios["none"]["policies"][DEFAULT_POLICY_NAME]
    full = scenarios["all"]["policies"][DEFAULT_POLICY_NAME]
    lines = [
        f"With every long job checkpointing the default reaches {full['share_of_lp_bound']:.1%} "
        f"of the bound and loses {full['gpu_seconds_lost_to_preemption'] / 3600:,.0f} "
        f"GPU-hours; where jobs do not checkpoint it reaches {none['share_of_lp_bound']:.1%} "
        f"and loses {none['gpu_seconds_lost_to_preemption'] / 3600:,.0f}, of which "
        f"{none['gpu_seconds_lost_by_wasteful_preemptions'] / 3600:,.0f} went to preemptions "
        "whose victims lost more GPU work than the preempting job itself would do (its GPUs "
        "times its duration). Durations are known (timed deployments), so a pass can tell "
        "how long a job would wait without preempting. Two rules, as wrappers around "
        "`run_pass` in this script (not in `scheduler.py`), each holding the room already "
        "free for the job that waits and letting no job ranked after it preempt:",
        "",
        *(f"- `{name}`: {POLICY_NOTES[name]}." for name in EXTRA_POLICIES),
        "",
        "| scenario | policy | useful work, % of LP | GPU-h lost | preemptions | mean JCT | "
        "high p99 wait | "
        f"{TOP_CLASS} p99 wait | inversions |",
        "|---|---|" + "---:|" * 7,
    ]
    for scenario_name, scenario in scenarios.items():
        for name in (DEFAULT_POLICY_NAME, *EXTRA_POLICIES):
            metrics = scenario["policies"][name]
            lines.append(
                f"| {scenario_name} | {name} | {metrics['share_of_lp_bound']:.1%} | "
                f"{metrics['gpu_seconds_lost_to_preemption'] / 3600:.1f} | "
                f"{metrics['preemptions']} | "
                f"{_duration_text(metrics['mean_completion_seconds'])} | "
                f"{_duration_text(metrics['wait_seconds']['high']['p99'])} | "
                f"{_duration_text(metrics['wait_seconds'][TOP_CLASS]['p99'])} | "
                f"{metrics['priority_inversions']} |"
            )
    verdicts = _extra_verdict(report)
    lines += ["", *verdicts]
    if any("**earns" in line for line in verdicts):
        lines += [
            "",
            "What the SPEC change would say (SPEC 5, step 5, before the put-back): compare the "
            "unsaved work the victims would lose (seconds x dominant share, summed) with the "
            "wait the preemption saves D (seconds until the known ends of running deployments "
            "free D's room, times D's dominant share; no saving is known when a duration is "
            "unknown, and then D preempts). If the loss is above "
            "`HYPERVISOR_PREEMPTION_WASTE_RATIO` (1) times that wait and D's priority is below "
            "`HYPERVISOR_PREEMPTION_ALWAYS_PRIORITY`, D waits instead: the capacity free at its "
            "turn is held for it and no deployment after it in the order preempts in that "
            'pass. The invariant "no eligible pending deployment could be made to fit by '
            'preempting" gains the same exception. The always-preempt priority is the '
            "operator's trade: at 900 the waste check saves the most and high-priority jobs "
            "wait for known ends; at 500 they keep their instant start and it saves less.",
        ]
    return lines


def _extra_verdict(report: dict[str, Any]) -> list[str]:
    """Whether each extra policy earns a SPEC change, from the numbers.

    It does if, in every scenario, it is at least as good as the default on useful work
    (within 0.1 point), GPU-hours lost, mean JCT and inversions, keeps the top class's p99
    wait within the target, and without checkpoints cuts the GPU-hours lost by at least
    `EARNS_MIN_SAVING`. Its price, the wait of the class that now waits, is stated with it.
    """
    scenarios = report["scenarios"]
    lines = []
    for name in EXTRA_POLICIES:
        failures = []
        for scenario_name, scenario in scenarios.items():
            default, extra = scenario["policies"][DEFAULT_POLICY_NAME], scenario["policies"][name]
            worse = [
                label
                for label, is_worse in (
                    (
                        "useful work",
                        extra["share_of_lp_bound"] < default["share_of_lp_bound"] - 0.001,
                    ),
                    (
                        "GPU-hours lost",
                        extra["gpu_seconds_lost_to_preemption"]
                        > default["gpu_seconds_lost_to_preemption"],
                    ),
                    (
                        "mean JCT",
                        extra["mean_completion_seconds"] > default["mean_completion_seconds"],
                    ),
                    ("inversions", extra["priority_inversions"] > 0),
                    (
                        f"{TOP_CLASS} p99 wait",
                        (extra["wait_seconds"][TOP_CLASS]["p99"] or 0.0) > TARGET_TOP_P99_SECONDS,
                    ),
                )
                if is_worse
            ]
            if worse:
                failures.append(f"{', '.join(worse)} worse in {scenario_name}")
        before = scenarios["none"]["policies"][DEFAULT_POLICY_NAME]
        after = scenarios["none"]["policies"][name]
        saving = 1 - after["gpu_seconds_lost_to_preemption"] / max(
            before["gpu_seconds_lost_to_preemption"], 1e-9
        )
        if saving < EARNS_MIN_SAVING:
            failures.append(
                f"without checkpoints it changes the GPU-hours lost by {-saving:+.0%}, where "
                f"{-EARNS_MIN_SAVING:+.0%} or better is asked"
            )
        high = ", ".join(
            f"{scenario_name} {_duration_text(_high_p99(scenario, name))}"
            for scenario_name, scenario in scenarios.items()
        )
        lines.append(
            f"- `{name}`: **{'does not earn' if failures else 'earns'} a SPEC change**"
            + (f" ({'; '.join(failures)})." if failures else ".")
            + " Without checkpoints: GPU-hours lost "
            f"{before['gpu_seconds_lost_to_preemption'] / 3600:,.0f} -> "
            f"{after['gpu_seconds_lost_to_preemption'] / 3600:,.0f} ({-saving:+.0%}), useful "
            f"work {before['share_of_lp_bound']:.1%} -> {after['share_of_lp_bound']:.1%}, mean "
            f"JCT {_duration_text(before['mean_completion_seconds'])} -> "
            f"{_duration_text(after['mean_completion_seconds'])}. The price is paid by the jobs "
            f"that now wait instead of preempting: high p99 wait {high}."
        )
    return lines


def _high_p99(scenario: dict[str, Any], name: str) -> float | None:
    """The p99 wait of the high class under one policy in one scenario."""
    value: float | None = scenario["policies"][name]["wait_seconds"]["high"]["p99"]
    return value


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
        f"{'scenario':<8} {'policy':<24} {'% of LP':>8} {'GPU-h lost':>10} "
        f"{'mean JCT':>9} {TOP_CLASS + ' p99':>11} {'inversions':>10} {'preemptions':>11}\n"
    )
    rows = [header]
    for scenario_name, scenario in report["scenarios"].items():
        for name, metrics in scenario["policies"].items():
            rows.append(
                f"{scenario_name:<8} {name:<24} {metrics['share_of_lp_bound']:>8.1%} "
                f"{metrics['gpu_seconds_lost_to_preemption'] / 3600:>10.1f} "
                f"{_duration_text(metrics['mean_completion_seconds']):>9} "
                f"{_duration_text(metrics['wait_seconds'][TOP_CLASS]['p99']):>11} "
                f"{metrics['priority_inversions']:>10} {metrics['preemptions']:>11}\n"
            )
    met = sum(1 for target in report["targets"].values() if target["met"])
    bound = report["lp_bound"]
    rows.append(
        f"LP bound: {bound['window_gpu_utilization']:.1%} GPU utilization inside the window; "
        f"targets met: {met} of {len(report['targets'])}; "
        f"runtime {report['runtime_seconds']:.0f} s\n"
    )
    return "".join(rows)


# --- Plots -------------------------------------------------------------------------------


def _plot_utilization(trace: Trace, replays: dict[str, dict[str, Replay]], path: Path) -> None:
    """GPU utilization over time per plotted policy, one panel per scenario."""
    end = max(
        max(result.completed_at.values())
        for by_policy in replays.values()
        for result in by_policy.values()
    )
    width = 3600.0 if trace.window >= DAY else trace.window / 24
    edges = np.arange(0.0, end + width, width)
    figure = Figure(figsize=(11, 3.2 * len(replays)))
    for row, (scenario, by_policy) in enumerate(replays.items(), 1):
        axes = figure.add_subplot(len(replays), 1, row)
        for name in PLOTTED:
            spans = by_policy[name].spans
            starts = np.array([span.start for span in spans])
            ends = np.array([span.end for span in spans])
            gpus = np.array([span.request.gpu for span in spans], dtype=float)
            busy = (np.clip(edges[:, None] - starts, 0.0, ends - starts) * gpus).sum(axis=1)
            share = np.diff(busy) / (width * trace.cluster.total.gpu)
            axes.step(edges[:-1] / 3600, share, where="post", label=name, linewidth=1)
        axes.axvline(trace.window / 3600, color="grey", linestyle="--", linewidth=1)
        axes.set_ylabel(f"GPUs allocated / {trace.cluster.total.gpu}")
        axes.set_ylim(0, 1.08)
        axes.set_title(f"{scenario}: {SCENARIO_TITLES[scenario]}", fontsize=10)
        if row == 1:
            axes.legend(fontsize=7, loc="lower left")
    axes.set_xlabel(f"hours ({width / 60:.0f}-minute averages; dashed: end of arrivals)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _plot_wait_cdf(replays: dict[str, dict[str, Replay]], path: Path) -> None:
    """The CDF of every job's wait per plotted policy, one panel per scenario, log axis."""
    figure = Figure(figsize=(5 * len(replays), 4.2))
    for column, (scenario, by_policy) in enumerate(replays.items(), 1):
        axes = figure.add_subplot(1, len(replays), column)
        for name in PLOTTED:
            waits = np.sort(list(by_policy[name].waited.values()))
            fractions = np.arange(1, waits.size + 1) / waits.size
            axes.step(waits + 1.0, fractions, where="post", label=name, linewidth=1)
        axes.set_xscale("log")
        axes.set_xlabel("wait + 1 s (log scale)")
        axes.set_title(f"{scenario}: {SCENARIO_TITLES[scenario]}", fontsize=10)
        if column == 1:
            axes.set_ylabel("fraction of jobs")
            axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _plot_lost_work(report: dict[str, Any], path: Path) -> None:
    """GPU-hours lost and useful work (% of the LP bound) per policy, bars per scenario."""
    scenarios = report["scenarios"]
    names = list(POLICIES)
    positions = np.arange(len(names))
    width = 0.8 / len(scenarios)
    figure = Figure(figsize=(12, 7))
    lost_axes = figure.add_subplot(2, 1, 1)
    share_axes = figure.add_subplot(2, 1, 2)
    for index, (scenario_name, scenario) in enumerate(scenarios.items()):
        policies = scenario["policies"]
        offset = positions + (index - (len(scenarios) - 1) / 2) * width
        lost = [policies[name]["gpu_seconds_lost_to_preemption"] / 3600 for name in names]
        share = [100 * policies[name]["share_of_lp_bound"] for name in names]
        label = f"{scenario_name}: {SCENARIO_TITLES[scenario_name]}"
        lost_axes.bar(offset, lost, width, label=label)
        share_axes.bar(offset, share, width, label=label)
    lost_axes.set_ylabel("GPU-hours lost to preemption")
    lost_axes.legend(fontsize=8)
    share_axes.axhline(100 * TARGET_SHARE_OF_BOUND, color="grey", linestyle="--", linewidth=1)
    share_axes.set_ylabel("useful work, % of LP bound")
    share_axes.set_ylim(50, 101)
    for axes in (lost_axes, share_axes):
        axes.set_xticks(positions, names, fontsize=8, rotation=15)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
