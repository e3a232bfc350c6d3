"""The forecast: when each deployment of one cluster would start and end if nothing new were
submitted, cancelled or reported (SPEC section 5, "Forecast").

Plain data in, plain data out, like `scheduler`: no database, no HTTP, no clock (`now` is a
parameter), the standard library only. The caller loads one cluster as the scheduler sees it
(running jobs; pending jobs with their unfinished dependencies), adds run-time estimates
from history, and stores the returned `Estimate`s.

How. The cluster is simulated forward with the real scheduler, one instant at a time. At
each instant where something happens (a running deployment's end, a dependency in another
cluster completing, a grace period running out) the ended deployments complete, their
dependents here become eligible with their wait counted from that instant, and the same
pass as the service's runs: `scheduler.run_pass`, a batch at a time as
`run_pass_incrementally` does it, preemption, backfill and the starvation guard included.

Durations. A running deployment ends at its progress mark plus its duration minus its saved
work (`scheduler.ends_at_of`); without a declared duration, the history estimate stands in
for the duration. A pending one, once started, lasts its duration (or estimate) minus its
saved work. No estimate is earlier than `now` (a running deployment's `start_at` is its
latest start, a fact rather than an estimate).

Basis. An estimate is "history" when the deployment's own duration comes from history, or
when it lies at or after the first end from history the simulation went through (in this
cluster, or of a dependency in another cluster); the end of a run that nothing pending
outranks cannot be cut short by preemption, so it rests only on its own start and duration.
Otherwise it is "declared".

Unknown, in two sentences. A deployment with no duration and no estimate from history is
taken to keep running (nothing is reported in a forecast), so its own estimate is unknown
and it never frees its room. Whatever the simulation has not reached once no known end is
left (a start waiting for such room, behind a starving deployment that waits for it, or for
a dependency that never completes) is unknown, with a reason naming the deployment it rests
on.

Horizon. The simulation stops at `now + horizon_seconds` or after `max_events` instants:
every start or end not reached by then is unknown, "later than <that instant>", except the
end of a running deployment that nothing pending outranks.

Reading order: the data types, `forecast`, `forecast_start` (one job's start, for a
preview), `image_repository` and `median_run_time` (what the caller needs to build
`history`), `later_than`; then `_Simulation` (the event loop, the pass and the estimates),
`_Unknowns` (the reasons), and the indexes the pass is fed from: `_RunningIndex` (room and
preemption candidates per level, summed in a `scheduler.PrioritySums`, and the condensed
running set each call of the pass is given), `_Priorities` and `_Queue` (the eligible
pending jobs in queue order, searchable by fit).
"""

from __future__ import annotations

import heapq
import math
import statistics
from bisect import insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from scheduler import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    Band,
    Cluster,
    Fetch,
    Job,
    Plan,
    Policy,
    PrioritySums,
    Resources,
    ends_at_of,
    order_key,
    progress_mark,
    run_pass,
    run_pass_incrementally,
)

Basis = Literal["declared", "history", "unknown"]

# A year of simulated time, and as many instants as fit the budget of SPEC section 5 (a
# 10,000-deployment queue on a 1,000-deployment cluster in well under a second).
DEFAULT_HORIZON_SECONDS = 365 * 24 * 3600.0
DEFAULT_MAX_EVENTS = 2_000
MIN_HISTORY_RUNS = 3
BATCH_SIZE = 64  # pending jobs offered to one call of the pass, as `run_pass_incrementally`


# --- Data --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Estimate:
    """When a deployment starts and ends, and what that rests on."""

    # Pending: the simulated start. Running: its latest start (a fact).
    start_at: float | None
    end_at: float | None
    basis: Basis
    reason: str | None  # for "unknown": what is unknown, in words; else None


@dataclass(frozen=True, slots=True)
class Waiting:
    """A pending deployment, with what it still waits for."""

    job: Job
    # Its unfinished dependencies: in this cluster (they complete in the simulation) or in
    # another one (see `external_ends`). Empty: it is eligible.
    depends_on: frozenset[int] = frozenset()
    # For a dependency in another cluster, that cluster's latest estimate of it: its
    # `end_at` is when it completes (unknown when None or basis "unknown"). A dependency
    # neither in this cluster nor here counts as unknown.
    external_ends: Mapping[int, Estimate] = field(default_factory=dict)


# --- The forecast ------------------------------------------------------------------------


def forecast(
    cluster: Cluster,
    running: Sequence[Job],
    pending: Sequence[Waiting],
    now: float,
    policy: Policy,
    *,
    history: Mapping[int, float],
    images: Mapping[int, str] | None = None,
    horizon_seconds: float = DEFAULT_HORIZON_SECONDS,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> dict[int, Estimate]:
    """An `Estimate` for every running and pending job, by id (rules: the module docstring).

    `history` maps the id of a job without a declared duration to its estimated run time
    (the `median_run_time` of its organization's completed runs of the same image
    repository, when there are enough); `images` maps job ids to image references, used
    only to name the repository in reasons.
    """
    if horizon_seconds < 0 or max_events < 1:
        raise ValueError("horizon_seconds must be >= 0 and max_events >= 1")
    simulation = _Simulation(cluster, running, pending, now, policy, history, images or {})
    simulation.run(now + horizon_seconds, max_events)
    return simulation.estimates()


def forecast_start(
    cluster: Cluster,
    running: Sequence[Job],
    pending: Sequence[Waiting],
    now: float,
    policy: Policy,
    *,
    target: int,
    history: Mapping[int, float],
    images: Mapping[int, str] | None = None,
    horizon_seconds: float = DEFAULT_HORIZON_SECONDS,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> Estimate:
    """The estimated start of the pending job `target`, as `forecast` would give it, with
    the simulation stopped as soon as that job starts: what a preview can afford.

    `end_at` is always None (the end would need the rest of the simulation). The start
    and basis are `forecast`'s, except that a start reached within the horizon is given
    even when that run's end lies past it (where `forecast` says "later than T" for both).
    """
    if horizon_seconds < 0 or max_events < 1:
        raise ValueError("horizon_seconds must be >= 0 and max_events >= 1")
    simulation = _Simulation(cluster, running, pending, now, policy, history, images or {})
    if target in simulation.running_at_now or target not in simulation.durations:
        raise ValueError(f"job {target} is not among the pending jobs")
    if simulation.durations[target].basis == "unknown":
        # Its start is never reported without a duration (as in `forecast`): nothing to run.
        reason = _Unknowns(simulation, {})._no_duration(target)
        return Estimate(None, None, "unknown", reason)
    simulation.run(now + horizon_seconds, max_events, target=target)
    return simulation.start_of(target)


def image_repository(reference: str) -> str:
    """The reference lowercased, without tag or digest: "GHCR.io/Acme/Train:1.0" ->
    "ghcr.io/acme/train"; a registry's ":port" stays; no normalization ("nginx" stays)."""
    name = reference.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:  # a colon after the last slash starts the tag
        name = name[:colon]
    return name.lower()


def median_run_time(runs: Sequence[float]) -> float | None:
    """The median of completed run times, or None with fewer than 3 of them."""
    if len(runs) < MIN_HISTORY_RUNS:
        return None
    return float(statistics.median(runs))


def later_than(instant: float) -> str:
    """'later than 2026-05-09T07:35:25Z': the reason past the horizon (UTC, whole seconds,
    rounded down so that it stays true)."""
    moment = datetime.fromtimestamp(math.floor(instant), UTC)
    return f"later than {moment.strftime('%Y-%m-%dT%H:%M:%SZ')}"


# --- The simulation ----------------------------------------------------------------------

_END, _READY, _GRACE = 0, 1, 2  # event kinds, in the order they are handled at one instant
_INF = math.inf


@dataclass(frozen=True, slots=True)
class _Duration:
    """How long a job runs in all (before saved work), and where that comes from."""

    seconds: float | None
    basis: Basis


@dataclass(slots=True)
class _Ended:
    """A run whose end the estimate reports, and the instant up to which ends elsewhere can
    still have changed it (-inf: none can)."""

    end_at: float
    anchor: float


class _Simulation:
    """One cluster going forward: running jobs, the eligible queue, jobs waiting for
    dependencies, and the instants still to come."""

    def __init__(
        self,
        cluster: Cluster,
        running: Sequence[Job],
        pending: Sequence[Waiting],
        now: float,
        policy: Policy,
        history: Mapping[int, float],
        images: Mapping[int, str],
    ) -> None:
        self.cluster, self.now, self.policy, self.images = cluster, now, policy, images
        jobs = [*running, *(waiting.job for waiting in pending)]
        if len({job.id for job in jobs}) != len(jobs):
            raise ValueError("a job id appears twice among running and pending jobs")
        self.ids = [job.id for job in jobs]
        self.durations = {job.id: _duration_of(job, history) for job in jobs}
        self.queue = _Queue(jobs, cluster.total)
        self.running = _RunningIndex(cluster, policy, min(self.ids, default=0))
        self.events: list[tuple[float, int, int]] = []  # (instant, kind, job id)
        self.end_of: dict[int, float] = {}  # running job -> its known end
        self.grace_at: dict[int, float] = {}  # running job -> when it becomes preemptible
        self.run_anchor: dict[int, float] = {}  # running job safe from preemption -> anchor
        self.running_at_now = {job.id: job for job in running}
        self.first_start: dict[int, float] = {}  # pending jobs: first simulated start
        self.ended: dict[int, _Ended] = {}
        self.first_history_end = _INF
        self.pending_priorities = _Priorities()
        # Jobs waiting for dependencies: what they wait for, and who waits for what.
        self.waiting: dict[int, set[int]] = {}
        self.waiting_jobs: dict[int, Job] = {}
        self.dependents: dict[int, list[int]] = {}
        self.external: dict[int, Estimate | None] = {}  # outside dependency -> its estimate
        self.cut: float | None = None  # where the horizon stopped the simulation
        self.last_instant = now
        # Runs started at the current instant -> the anchor of their end if nothing pending
        # outranks them once the instant's pass is done (see `_note_safe_runs`).
        self._new_runs: dict[int, float] = {}

        for job in running:
            self._run(job, now, anchor=-_INF)
        in_cluster = set(self.ids)
        self.queue.fill(entry.job for entry in pending if not entry.depends_on)
        for entry in pending:
            job = entry.job
            self.pending_priorities.add(job.priority)
            if not entry.depends_on:
                continue
            self.waiting[job.id] = set(entry.depends_on)
            self.waiting_jobs[job.id] = job
            for dependency in entry.depends_on:
                self.dependents.setdefault(dependency, []).append(job.id)
                if dependency not in in_cluster and dependency not in self.external:
                    self._expect_external(dependency, entry.external_ends.get(dependency))

    # The event loop ----------------------------------------------------------------------

    def run(self, horizon_end: float, max_events: int, target: int | None = None) -> None:
        """Simulate instant by instant until nothing known is left or the horizon is hit,
        or, given a `target`, until that job first starts."""
        instant, instants = self.now, 0
        while True:
            self._handle_events_at(instant)
            self._pass(instant)
            self._note_safe_runs(instant)
            self.last_instant = instant
            instants += 1
            if target is not None and target in self.first_start:
                return
            upcoming = self._next_instant()
            if upcoming is None:
                return
            if upcoming > horizon_end:
                self.cut = horizon_end
                return
            if instants >= max_events:
                self.cut = instant
                return
            instant = upcoming

    def _next_instant(self) -> float | None:
        """The next instant where something happens, dropping events that no longer apply."""
        while self.events:
            instant, kind, job_id = self.events[0]
            if self._applies(instant, kind, job_id):
                return instant
            heapq.heappop(self.events)
        return None

    def _applies(self, instant: float, kind: int, job_id: int) -> bool:
        if kind == _END:
            return self.end_of.get(job_id) == instant
        if kind == _GRACE:
            return self.grace_at.get(job_id) == instant
        return True

    def _handle_events_at(self, instant: float) -> None:
        """Complete what ends now, release dependents, make grace-expired runs preemptible."""
        while self.events and self.events[0][0] <= instant:
            at, kind, job_id = heapq.heappop(self.events)
            if not self._applies(at, kind, job_id):
                continue
            if kind == _END:
                self._complete(job_id, instant)
            elif kind == _READY:
                estimate = self.external[job_id]
                if estimate is not None and estimate.basis == "history":
                    self.first_history_end = min(self.first_history_end, instant)
                self._dependency_done(job_id, instant)
            else:
                del self.grace_at[job_id]
                self.running.make_candidate(job_id)

    def _complete(self, job_id: int, instant: float) -> None:
        job = self.running.remove(job_id)
        del self.end_of[job_id]
        self.grace_at.pop(job_id, None)
        anchor = self.run_anchor.pop(job_id, instant)
        self.ended[job.id] = _Ended(instant, anchor)
        if self.durations[job_id].basis == "history":
            self.first_history_end = min(self.first_history_end, instant)
        self._dependency_done(job_id, instant)

    def _dependency_done(self, dependency: int, instant: float) -> None:
        """Jobs whose last unfinished dependency this was become eligible now."""
        for job_id in self.dependents.get(dependency, ()):
            unfinished = self.waiting.get(job_id)
            if unfinished is None:
                continue
            unfinished.discard(dependency)
            if not unfinished:
                del self.waiting[job_id]
                self.queue.add(replace(self.waiting_jobs.pop(job_id), waiting_since=instant))

    def _expect_external(self, dependency: int, estimate: Estimate | None) -> None:
        self.external[dependency] = estimate
        if estimate is not None and estimate.end_at is not None and estimate.basis != "unknown":
            self._push(max(estimate.end_at, self.now), _READY, dependency)

    def _push(self, instant: float, kind: int, job_id: int) -> None:
        heapq.heappush(self.events, (instant, kind, job_id))

    def _note_safe_runs(self, instant: float) -> None:
        """Runs started at this instant that nothing pending outranks cannot be preempted
        any more (the highest pending priority never rises): their end is settled."""
        top = self.pending_priorities.highest()
        for job_id, anchor in list(self._new_runs.items()):
            job = self.running.jobs.get(job_id)
            if job is not None and (not self.policy.preemption or job.priority >= top):
                self.run_anchor[job_id] = anchor
        self._new_runs.clear()

    # The pass ----------------------------------------------------------------------------

    def _pass(self, instant: float) -> None:
        """The scheduling pass at `instant`, as the service would run it."""
        if self.policy.priority_order and self.policy.backfill:
            self._incremental_pass(instant)
            return
        # The baseline policies: `run_pass_incrementally` loads all that may matter at once.
        plan = run_pass_incrementally(
            self.cluster,
            list(self.running.jobs.values()),
            instant,
            self._fetch(instant),
            self.policy,
        )
        self._apply(plan, instant, {})

    def _incremental_pass(self, instant: float) -> None:
        """`run_pass_incrementally`'s loop, with two savings that keep the decisions.

        Each call of `run_pass` gets the next batch of jobs that could start now (or hold
        the starvation guard), cut just after the first one that preempts, so at most one
        preemption happens per call. And instead of every running job it gets a condensed
        set (`_RunningIndex.condensed`): the only ones that preemption could pick, and
        stand-ins for the rest that keep each batch job's preemption gate exact.
        """
        preempted_now: dict[int, Job] = {}  # victims of this instant, as they ran
        after = -1  # the slot of the last job swept
        while True:
            batch, within = self.queue.fetch(
                self.running.ceiling, instant, self.policy.starvation_seconds, after, BATCH_SIZE
            )
            if not within:
                return  # nothing can start: the rest only waits or is held back
            stop = order_key(batch[-1]) if len(batch) >= BATCH_SIZE else None
            shape, condensed = self.running.condensed(within, instant)
            plan = run_pass(shape, condensed, batch, instant, self.policy, stop_after=stop)
            if plan.preempting:
                first = next(job for job in batch if job.id == plan.preempting[0])
                stop = order_key(first)
                plan = run_pass(shape, condensed, batch, instant, self.policy, stop_after=stop)
            self._apply(plan, instant, preempted_now)
            if plan.held_back_by is not None or stop is None:
                return
            after = self.queue.slot_of[next(job.id for job in batch if order_key(job) == stop)]

    def _fetch(self, instant: float) -> Fetch:
        """`scheduler.Fetch` over the in-memory queue, for `run_pass_incrementally`."""

        def fetch(
            bounds: list[Band], starving_before: float, after: Job | None, limit: int | None
        ) -> list[Job]:
            def ceiling(priority: int) -> tuple[int, int, int]:
                for lowest, highest, most in bounds:
                    if lowest <= priority <= highest:
                        return most.cpu, most.ram, most.gpu
                return -1, -1, -1

            start = -1 if after is None else self.queue.slot_of[after.id]
            found, _ = self.queue.fetch(
                ceiling,
                instant,
                self.policy.starvation_seconds,
                start,
                limit,
                stop_at_holder=False,
            )
            return found

        return fetch

    def _apply(self, plan: Plan, instant: float, preempted_now: dict[int, Job]) -> None:
        """Carry a pass's decisions into the simulation."""
        for job_id in plan.completed:  # only a run with nothing left to do, started just now
            self._complete(job_id, instant)
        requeued = {job.id: job for job in plan.pending}
        for victim in plan.preempted:
            preempted_now[victim] = self._preempt(victim, requeued[victim], instant)
        started = {job.id: job for job in plan.running}
        for job_id in plan.started:
            # A victim back within the same instant never stopped (as in one whole pass).
            original = preempted_now.pop(job_id, None)
            self._start(original or started[job_id], instant)

    def _start(self, job: Job, instant: float) -> None:
        self.queue.remove(job.id)
        self.pending_priorities.remove(job.priority)
        self.first_start.setdefault(job.id, instant)
        self._run(job, instant, anchor=instant)

    def _run(self, job: Job, instant: float, anchor: float) -> None:
        """Count a job as running from `instant` on, and schedule its end and grace."""
        assert job.started_at is not None
        grace = self.policy.preemption_grace_seconds
        preemptible = instant - job.started_at >= grace
        self.running.add(job, candidate=preemptible)
        if not preemptible:
            self.grace_at[job.id] = _first_instant_past(job.started_at, grace)
            self._push(self.grace_at[job.id], _GRACE, job.id)
        end = self._end_of_run(job)
        if end is not None:
            self.end_of[job.id] = max(end, self.now)
            self._push(self.end_of[job.id], _END, job.id)
        self._new_runs[job.id] = anchor

    def _end_of_run(self, job: Job) -> float | None:
        duration = self.durations[job.id]
        if duration.seconds is None:
            return None
        if duration.basis == "declared":
            return ends_at_of(job)
        return progress_mark(job) + max(0.0, duration.seconds - job.saved_seconds)

    def _preempt(self, job_id: int, requeued: Job, instant: float) -> Job:
        """Move a running job back to the queue; returns it as it ran."""
        job = self.running.remove(job_id)
        self.end_of.pop(job_id, None)
        self.grace_at.pop(job_id, None)
        self.run_anchor.pop(job_id, None)
        self.queue.add(requeued)
        self.pending_priorities.add(job.priority)
        return job

    # Estimates ---------------------------------------------------------------------------

    def estimates(self) -> dict[int, Estimate]:
        """The outcome per job id (rules: the module docstring)."""
        settled = dict(self.ended)
        if self.cut is not None:
            # Runs nothing pending outranks keep their known end past the horizon.
            top = self.pending_priorities.highest()
            for job_id, end in self.end_of.items():
                job = self.running.jobs[job_id]
                if job_id in self.run_anchor or not self.policy.preemption or job.priority >= top:
                    settled[job_id] = _Ended(end, self.run_anchor.get(job_id, self.cut))
        unknown = _Unknowns(self, settled).reasons()
        result: dict[int, Estimate] = {}
        for job_id in self.ids:
            if job_id in unknown:
                result[job_id] = Estimate(None, None, "unknown", unknown[job_id])
                continue
            ran = self.running_at_now.get(job_id)
            start = ran.started_at if ran is not None else self.first_start[job_id]
            assert start is not None
            outcome = settled[job_id]
            rests_on_history = (
                self.durations[job_id].basis == "history"
                or (ran is None and self.first_history_end <= start)
                or self.first_history_end <= outcome.anchor
            )
            basis: Basis = "history" if rests_on_history else "declared"
            result[job_id] = Estimate(start, outcome.end_at, basis, None)
        return result

    def start_of(self, target: int) -> Estimate:
        """The target's start as `estimates` words it, once `run` stopped at that start or
        without reaching it."""
        start = self.first_start.get(target)
        if start is None:
            return Estimate(None, None, "unknown", _Unknowns(self, self.ended).reasons()[target])
        rests_on_history = (
            self.durations[target].basis == "history" or self.first_history_end <= start
        )
        return Estimate(start, None, "history" if rests_on_history else "declared", None)


def _duration_of(job: Job, history: Mapping[int, float]) -> _Duration:
    if job.duration_seconds is not None:
        return _Duration(float(job.duration_seconds), "declared")
    estimate = history.get(job.id)
    if estimate is not None:
        return _Duration(estimate, "history")
    return _Duration(None, "unknown")


def _first_instant_past(started_at: float, grace: float) -> float:
    """The first float instant at which `instant - started_at >= grace` holds."""
    instant = started_at + grace
    while instant - started_at < grace:
        instant = math.nextafter(instant, _INF)
    return instant


# --- Why an estimate is unknown ----------------------------------------------------------

_NAMED = 3  # blocking deployments named in a reason before "and N more"


class _Unknowns:
    """The reasons for the estimates the simulation did not settle.

    Each unknown job gets a reason in its own words and a cause: one sentence naming the
    deployment everything rests on, which its dependents repeat (so chains stay short).
    """

    def __init__(self, simulation: _Simulation, settled: Mapping[int, _Ended]) -> None:
        self.sim = simulation
        self.settled = settled
        self.reason: dict[int, str] = {}
        self.cause: dict[int, str] = {}

    def reasons(self) -> dict[int, str]:
        sim = self.sim
        # Durations nobody knows, and dependencies in other clusters nobody can date: these
        # never complete, whatever the horizon, and neither does anything waiting for them.
        roots: list[int] = []
        for job_id in sorted(sim.ids):
            if sim.durations[job_id].basis == "unknown":
                self._set(job_id, self._no_duration(job_id))
                roots.append(job_id)
        # Jobs that could never start as the cluster stands, and so never end.
        unreserved = sim.cluster.total - sim.cluster.reserved
        for job in [*sim.queue.jobs_in_order(), *sim.waiting_jobs.values()]:
            if job.id not in self.reason and not job.request.fits_in(unreserved):
                self._set(job.id, *self._too_large(job))
                roots.append(job.id)
        for dependency in sorted(sim.external):
            estimate = sim.external[dependency]
            if estimate is None or estimate.end_at is None or estimate.basis == "unknown":
                self.cause[dependency] = (
                    f"deployment {dependency} in another cluster has no estimated end"
                )
                roots.append(dependency)
        self._spread_to_dependents(roots)

        if sim.cut is not None:
            beyond = later_than(sim.cut)
            for job_id in sim.ids:
                if job_id not in self.reason and job_id not in self.settled:
                    self.reason[job_id] = beyond
            return self.reason

        # Nothing known is left: the eligible jobs still queued wait for room that only an
        # endless run could free (or behind a starving job that does).
        stuck: list[int] = []
        holder: Job | None = None
        for job in sorted(sim.queue.jobs_in_order(), key=lambda job: order_key(job, sim.policy)):
            if job.id not in self.reason:
                self._set(job.id, *self._why_stuck(job, holder))
                stuck.append(job.id)
            if holder is None and self._holds(job):
                holder = job
        self._spread_to_dependents(stuck)
        for job_id in sim.waiting:
            self.reason.setdefault(job_id, "waits for dependencies that wait for one another")
        return self.reason

    def _set(self, job_id: int, reason: str, cause: str | None = None) -> None:
        self.reason[job_id] = reason
        self.cause[job_id] = cause if cause is not None else reason

    def _spread_to_dependents(self, sources: Iterable[int]) -> None:
        """Jobs still waiting for one of `sources` wait for what it waits for."""
        frontier = list(sources)
        while frontier:
            following: list[int] = []
            for source in frontier:
                for job_id in self.sim.dependents.get(source, ()):
                    unfinished = self.sim.waiting.get(job_id)
                    if job_id in self.reason or unfinished is None or source not in unfinished:
                        continue
                    cause = self._cause_of(source)
                    self._set(
                        job_id,
                        f"waits for dependency {source}, whose end is unknown: {cause}",
                        cause,
                    )
                    following.append(job_id)
            frontier = following

    def _starves(self, job: Job) -> bool:
        sim = self.sim
        return sim.last_instant - job.waiting_since > sim.policy.starvation_seconds

    def _holds(self, job: Job) -> bool:
        """True if `job` stops the sweep for those after it: it starves (or backfill is
        off), fits the cluster and cannot start (SPEC 5, step 6)."""
        sim = self.sim
        return (
            (self._starves(job) or not sim.policy.backfill)
            and job.request.fits_in(sim.cluster.total)
            and not _fits(job.request, sim.running.ceiling(job.priority))
        )

    def _too_large(self, job: Job) -> tuple[str, str]:
        """(reason, cause) for a job larger than what reservations leave of the cluster."""
        if not job.request.fits_in(self.sim.cluster.total):
            return (
                "it needs more than the cluster has in total and cannot start unless the "
                "cluster grows",
                f"deployment {job.id} cannot start unless the cluster grows",
            )
        return (
            "it needs more than the cluster's unreserved capacity and cannot start until "
            "reserved capacity is released",
            f"deployment {job.id} cannot start until reserved capacity is released",
        )

    def _why_stuck(self, job: Job, holder: Job | None) -> tuple[str, str]:
        """(reason, cause) for an eligible job that fits the cluster but that no known end
        lets start."""
        sim, request = self.sim, job.request
        if holder is not None and _fits(request, sim.running.ceiling(job.priority)):
            cause = self._cause_of(holder.id)
            why = (
                "has waited longer than the starvation limit and starts first"
                if self._starves(holder)
                else "is ahead of it and starts first (backfill is off)"
            )
            return f"held back behind deployment {holder.id}, which {why}: {cause}", cause
        running = sim.running
        short = [
            name
            for name, need, free in zip(
                ("cpu", "ram", "gpu"),
                (request.cpu, request.ram, request.gpu),
                (running.cpu, running.ram, running.gpu),
                strict=True,
            )
            if need > free
        ]
        blockers = sorted(
            job_id
            for job_id, other in running.jobs.items()
            if any(getattr(other.request, name) > 0 for name in short)
        ) or sorted(running.jobs)
        if not blockers:  # an empty cluster lets every job that fits it start
            return "nothing known frees room for it", f"deployment {job.id} cannot start"
        return self._room_held_by(blockers), self._cause_of(blockers[0])

    def _cause_of(self, job_id: int) -> str:
        return self.cause.get(job_id, f"the end of deployment {job_id} is unknown")

    def _room_held_by(self, blockers: Sequence[int]) -> str:
        named = ", ".join(str(job_id) for job_id in blockers[:_NAMED])
        if len(blockers) == 1:
            return f"waits for room held by {self._no_duration(blockers[0], relative=True)}"
        more = f" (and {len(blockers) - _NAMED} more)" if len(blockers) > _NAMED else ""
        repositories = {self._repository(job_id) for job_id in blockers}
        of = repositories.pop() if len(repositories) == 1 else "their images"
        return (
            f"waits for room held by deployments {named}{more}, which have no duration and "
            f"fewer than {MIN_HISTORY_RUNS} completed runs of {of}"
        )

    def _no_duration(self, job_id: int, relative: bool = False) -> str:
        """'deployment 12 has no duration and fewer than 3 completed runs of X', or
        relative: 'deployment 12, which has no duration ...'."""
        link = ", which has" if relative else " has"
        return (
            f"deployment {job_id}{link} no duration and fewer than {MIN_HISTORY_RUNS} "
            f"completed runs of {self._repository(job_id)}"
        )

    def _repository(self, job_id: int) -> str:
        reference = self.sim.images.get(job_id)
        return image_repository(reference) if reference is not None else "its image"


def _fits(request: Resources, room: tuple[int, int, int]) -> bool:
    return request.cpu <= room[0] and request.ram <= room[1] and request.gpu <= room[2]


# --- The running jobs --------------------------------------------------------------------


class _RunningIndex:
    """The running jobs, with what a pass's preemption gate reads: the room left, and the
    requests of the preemption candidates (past their grace period) summed per priority."""

    def __init__(self, cluster: Cluster, policy: Policy, lowest_id: int) -> None:
        self.cluster, self.policy = cluster, policy
        self.jobs: dict[int, Job] = {}
        free = cluster.total - cluster.reserved
        self.cpu, self.ram, self.gpu = free.cpu, free.ram, free.gpu
        self.candidates: set[int] = set()
        self.levels: dict[int, dict[int, Job]] = {}  # candidates by priority
        self.level_order: list[int] = []  # the priorities in `levels`, ascending
        self.sums = PrioritySums()
        self._stand_in_id = min(lowest_id, 1) - 1  # stand-ins get ids below every real one

    def add(self, job: Job, candidate: bool) -> None:
        self.jobs[job.id] = job
        self.cpu -= job.request.cpu
        self.ram -= job.request.ram
        self.gpu -= job.request.gpu
        if candidate:
            self.make_candidate(job.id)

    def make_candidate(self, job_id: int) -> None:
        job = self.jobs[job_id]
        self.candidates.add(job_id)
        level = self.levels.get(job.priority)
        if level is None:
            level = self.levels[job.priority] = {}
            insort(self.level_order, job.priority)
        level[job_id] = job
        self.sums.add(job.priority, job.request, 1)

    def remove(self, job_id: int) -> Job:
        job = self.jobs.pop(job_id)
        self.cpu += job.request.cpu
        self.ram += job.request.ram
        self.gpu += job.request.gpu
        if job_id in self.candidates:
            self.candidates.remove(job_id)
            level = self.levels[job.priority]
            del level[job_id]
            if not level:
                del self.levels[job.priority]
                self.level_order.remove(job.priority)
            self.sums.add(job.priority, job.request, -1)
        return job

    def ceiling(self, priority: int) -> tuple[int, int, int]:
        """What a job of `priority` could get now: the room left plus every candidate of
        strictly lower priority (`scheduler.startable_bounds`)."""
        if not self.policy.preemption:
            return self.cpu, self.ram, self.gpu
        cpu, ram, gpu = self.sums.below_parts(priority)
        return self.cpu + cpu, self.ram + ram, self.gpu + gpu

    def condensed(self, within: Sequence[Job], instant: float) -> tuple[Cluster, list[Job]]:
        """The cluster and running set a pass over a batch is given: the same decisions as
        with every running job, for a call that preempts at most once, as its last step.

        `within` holds the batch jobs that fit their ceiling, in queue order; only they can
        start (the others can only hold the starvation guard), and the one that preempts is
        one of them. Its victims come from the lowest levels: releasing levels from the
        bottom stops once the room covers its request, so the levels up to where they cover
        the largest request in `within` are kept as they are. Above them, each batch job's
        gate needs only the sum of what lies below its priority: one stand-in per stretch
        between batch priorities, at the top of the stretch, keeps every gate exact (and
        errs low elsewhere, where no job can start). Everything else, and what cannot be
        preempted yet, counts as reserved.
        """
        chosen: list[Job] = []
        if self.policy.preemption:
            top = within[0].priority
            need = (
                max(job.request.cpu for job in within),
                max(job.request.ram for job in within),
                max(job.request.gpu for job in within),
            )
            room = [min(self.cpu, 0), min(self.ram, 0), min(self.gpu, 0)]
            kept_up_to = PRIORITY_MIN - 1
            for level in self.level_order:
                if level >= top:
                    break
                for job in self.levels[level].values():
                    chosen.append(job)
                    room[0] += job.request.cpu
                    room[1] += job.request.ram
                    room[2] += job.request.gpu
                kept_up_to = level
                if room[0] >= need[0] and room[1] >= need[1] and room[2] >= need[2]:
                    break
            previous = kept_up_to + 1
            below_previous = self.sums.below(previous)
            stand_in_id = self._stand_in_id
            for cut in sorted({job.priority for job in within if job.priority > previous}):
                below_cut = self.sums.below(cut)
                group = below_cut - below_previous
                if not group.is_zero():
                    chosen.append(
                        Job(
                            id=stand_in_id,
                            priority=cut - 1,
                            request=group,
                            submitted_at=instant,
                            started_at=instant - self.policy.preemption_grace_seconds - 1.0,
                        )
                    )
                    stand_in_id -= 1
                previous, below_previous = cut, below_cut
        total = self.cluster.total
        held = Resources(
            sum(job.request.cpu for job in chosen),
            sum(job.request.ram for job in chosen),
            sum(job.request.gpu for job in chosen),
        )
        reserved = Resources(
            total.cpu - self.cpu - held.cpu,
            total.ram - self.ram - held.ram,
            total.gpu - self.gpu - held.gpu,
        )
        return Cluster(total=total, reserved=reserved), chosen


class _Priorities:
    """The priorities of the pending jobs (waiting ones included), answering "the highest"."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._heap: list[int] = []  # negated priorities; stale entries dropped lazily

    def add(self, priority: int) -> None:
        self._counts[priority] = self._counts.get(priority, 0) + 1
        if self._counts[priority] == 1:
            heapq.heappush(self._heap, -priority)

    def remove(self, priority: int) -> None:
        self._counts[priority] -= 1

    def highest(self) -> float:
        while self._heap and self._counts.get(-self._heap[0], 0) == 0:
            heapq.heappop(self._heap)
        return -self._heap[0] if self._heap else -_INF


# --- The queue ---------------------------------------------------------------------------


class _Queue:
    """The eligible pending jobs in queue order, searchable by fit.

    Every job that may ever wait here (pending now, or running and so a possible victim)
    has a fixed slot in `order_key` order, which a preempted job keeps. Over the slots, a
    tree of minima of cpu, ram, gpu and wait start (of jobs that fit the cluster) lets a
    search skip every range where no job fits its priority's ceiling nor starves: ceilings
    only grow with priority, and slots run from the highest priority down, so a range's
    first slot gives its most generous ceiling.
    """

    def __init__(self, jobs: Iterable[Job], total: Resources) -> None:
        ordered = sorted(jobs, key=order_key)
        self.total = total
        self.slot_of = {job.id: slot for slot, job in enumerate(ordered)}
        self._priorities = [job.priority for job in ordered]
        self._jobs: list[Job | None] = [None] * len(ordered)
        size = 1
        while size < len(ordered):
            size *= 2
        self._size = size
        self._cpu = [_INF] * (2 * size)
        self._ram = [_INF] * (2 * size)
        self._gpu = [_INF] * (2 * size)
        self._wait = [_INF] * (2 * size)
        self._first = [0] * (2 * size)  # each node's slots: first .. end - 1
        self._end = [0] * (2 * size)
        for slot in range(size):
            self._first[size + slot], self._end[size + slot] = slot, slot + 1
        for node in range(size - 1, 0, -1):
            self._first[node], self._end[node] = self._first[2 * node], self._end[2 * node + 1]

    def fill(self, jobs: Iterable[Job]) -> None:
        """Queue many jobs at once, building the tree in one sweep up."""
        size = self._size
        for job in jobs:
            slot = self.slot_of[job.id]
            self._jobs[slot] = job
            node = size + slot
            self._cpu[node], self._ram[node], self._gpu[node] = (
                job.request.cpu,
                job.request.ram,
                job.request.gpu,
            )
            self._wait[node] = self._wait_of(job)
        for node in range(size - 1, 0, -1):
            self._pull(node)

    def add(self, job: Job) -> None:
        slot = self.slot_of[job.id]
        self._jobs[slot] = job
        self._set(slot, job.request.cpu, job.request.ram, job.request.gpu, self._wait_of(job))

    def _wait_of(self, job: Job) -> float:
        """Since when it waits, for the starvation test; never, for a job too large to run."""
        return job.waiting_since if job.request.fits_in(self.total) else _INF

    def remove(self, job_id: int) -> None:
        slot = self.slot_of[job_id]
        self._jobs[slot] = None
        self._set(slot, _INF, _INF, _INF, _INF)

    def jobs_in_order(self) -> list[Job]:
        return [job for job in self._jobs if job is not None]

    def _set(self, slot: int, cpu: float, ram: float, gpu: float, wait: float) -> None:
        node = self._size + slot
        self._cpu[node], self._ram[node], self._gpu[node], self._wait[node] = cpu, ram, gpu, wait
        node //= 2
        while node:
            self._pull(node)
            node //= 2

    def _pull(self, node: int) -> None:
        """Recompute a node's minima from its children (comparisons: faster than min())."""
        left, right = 2 * node, 2 * node + 1
        cpu, ram, gpu, wait = self._cpu, self._ram, self._gpu, self._wait
        cpu[node] = cpu[left] if cpu[left] < cpu[right] else cpu[right]
        ram[node] = ram[left] if ram[left] < ram[right] else ram[right]
        gpu[node] = gpu[left] if gpu[left] < gpu[right] else gpu[right]
        wait[node] = wait[left] if wait[left] < wait[right] else wait[right]

    def fetch(
        self,
        ceiling: Callable[[int], tuple[int, int, int]],
        now: float,
        starvation_seconds: float,
        after: int,
        limit: int | None,
        stop_at_holder: bool = True,
    ) -> tuple[list[Job], list[Job]]:
        """The queued jobs in slots after `after`, in order, that fit `ceiling` of their
        priority or starve and fit the cluster (`scheduler.needs_loading`), at most `limit`;
        and those of them that fit. With `stop_at_holder`, it ends at the first that only
        starves: in priority order the sweep stops there (SPEC 5, step 6).
        """
        found: list[Job] = []
        fitting: list[Job] = []
        ceilings: dict[int, tuple[int, int, int]] = {}
        most = _INF if limit is None else limit
        start = after + 1
        stack = [1] if start < len(self._jobs) else []
        while stack:
            node = stack.pop()
            if self._end[node] <= start or self._cpu[node] == _INF:
                continue
            # The most generous ceiling in the node's range: that of its first slot searched.
            priority = self._priorities[max(self._first[node], start)]
            priority = min(max(priority, PRIORITY_MIN), PRIORITY_MAX)
            room = ceilings.get(priority)
            if room is None:
                room = ceilings[priority] = ceiling(priority)
            fits = (
                self._cpu[node] <= room[0]
                and self._ram[node] <= room[1]
                and self._gpu[node] <= room[2]
            )
            if not fits and not now - self._wait[node] > starvation_seconds:
                continue
            if node < self._size:
                stack.append(2 * node + 1)
                stack.append(2 * node)
                continue
            job = self._jobs[node - self._size]
            assert job is not None
            found.append(job)
            if fits:
                fitting.append(job)
            elif stop_at_holder:
                break
            if len(found) >= most:
                break
        return found, fitting
