"""The placement algorithm: what runs, what waits and why (SPEC section 5).

Plain dataclasses in, decisions out. Nothing here touches the database, HTTP or the clock:
the caller loads one cluster's running and eligible pending jobs, calls `run_pass` with the
current time as `now` (float seconds since the epoch) and applies the returned `Plan` in the
same transaction. Standard library only, so a simulator can reuse it as is.

Reading order: the data types, `order_key`, `run_pass` (the pass itself, then the two
helpers it is built on: `_Pass` for the sweep and `_RunningSet` for fit and preemption),
`candidate_bounds`, `needs_loading`, `startable_bounds` and `run_pass_incrementally` (the
same decisions while loading only the part of a long queue that can matter),
`resolve_dependencies`, `explain_wait`.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter

RESOURCE_NAMES = ("cpu", "ram", "gpu")
PRIORITY_MIN = 0
PRIORITY_MAX = 1000

# How amounts read in messages; ram is counted in GiB.
_UNITS = {"cpu": "cpu", "ram": "GiB ram", "gpu": "gpu"}


# --- Data --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of every resource: cpu cores, GiB of ram, gpus."""

    cpu: int = 0
    ram: int = 0
    gpu: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.ram + other.ram, self.gpu + other.gpu)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.ram - other.ram, self.gpu - other.gpu)

    def fits_in(self, other: Resources) -> bool:
        """True if every component is at most the other's."""
        return self.cpu <= other.cpu and self.ram <= other.ram and self.gpu <= other.gpu

    def shortfall(self, available: Resources) -> Resources:
        """How much of each resource is missing for this amount to fit in `available`."""
        return Resources(
            max(0, self.cpu - available.cpu),
            max(0, self.ram - available.ram),
            max(0, self.gpu - available.gpu),
        )

    def is_zero(self) -> bool:
        """True if every component is zero."""
        return self.cpu == 0 and self.ram == 0 and self.gpu == 0


def _total(amounts: Iterable[Resources]) -> Resources:
    """The component-wise sum of `amounts`."""
    cpu = ram = gpu = 0
    for amount in amounts:
        cpu += amount.cpu
        ram += amount.ram
        gpu += amount.gpu
    return Resources(cpu, ram, gpu)


@dataclass(frozen=True, slots=True)
class Job:
    """A deployment as the scheduler sees it."""

    id: int
    priority: int  # PRIORITY_MIN..PRIORITY_MAX, higher is more important
    request: Resources
    submitted_at: float  # first submission: the order key, kept across preemption
    # Pending jobs: the latest of submission, dependencies completing and last preemption.
    # The starvation guard measures the wait from here.
    waiting_since: float = 0.0
    started_at: float | None = None  # running jobs: the latest start
    duration_seconds: int | None = None  # None: runs until cancelled or reported finished
    # Work kept across preemptions: at the latest start, or at the latest checkpoint of
    # the current run when there is one (SPEC 5, "Checkpoints").
    saved_seconds: float = 0.0
    checkpointed_at: float | None = None  # the latest checkpoint of the current run


def progress_mark(job: Job) -> float:
    """Since when a running job's work is unsaved: its latest start or checkpoint."""
    assert job.started_at is not None  # only running jobs make progress
    if job.checkpointed_at is not None and job.checkpointed_at > job.started_at:
        return job.checkpointed_at
    return job.started_at


def unsaved_seconds(job: Job, now: float) -> float:
    """The work a running job would lose if preempted at `now`."""
    return max(0.0, now - progress_mark(job))


def dominant_share(request: Resources, total: Resources) -> float:
    """The largest of the request's fractions of the cluster's totals (a resource the
    cluster has none of counts 0)."""
    return max(
        (
            _get(request, name) / _get(total, name)
            for name in RESOURCE_NAMES
            if _get(total, name) > 0
        ),
        default=0.0,
    )


@dataclass(frozen=True, slots=True)
class Cluster:
    """A cluster's fixed capacity and the part of it held outside any deployment."""

    total: Resources
    reserved: Resources = Resources()


@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs of a pass; the defaults are the product's behaviour (SPEC 5)."""

    starvation_seconds: float = 300.0
    preemption_grace_seconds: float = 0.0
    preemption: bool = True  # False: a job that does not fit just waits
    # False: the first eligible job that can neither start nor preempt stops the sweep.
    backfill: bool = True
    # False: strict submission order (the FIFO baseline); priority is ignored for ordering.
    priority_order: bool = True
    # False: within a level, put back the earliest started first whatever it would lose
    # (the rule before checkpoints; kept as a baseline for the simulator).
    cost_aware_victims: bool = True


DEFAULT_POLICY = Policy()


@dataclass
class Plan:
    """The decisions of one pass and the cluster's state after it."""

    completed: list[int]  # running jobs whose duration elapsed
    started: list[int]  # pending jobs started, in start order
    preempted: dict[int, int]  # victim id -> id of the job whose start preempted it
    held_back_by: int | None  # the starving job that stopped the sweep, if any
    running: list[Job]  # started jobs carry started_at=now
    pending: list[Job]  # in scheduling order; requeued victims carry waiting_since=now
    available: Resources  # total - reserved - sum(running requests)
    # Jobs whose start preempted others, in sweep order, even where the net result hides it
    # (a victim that got room again in the same pass): where an incremental pass must cut.
    preempting: list[int] = field(default_factory=list)
    # Completed job id -> the instant its saved work plus its run reached its duration.
    finished_at: dict[int, float] = field(default_factory=dict)
    # Victim id -> the unsaved seconds its preemption discarded.
    lost_seconds: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DependencyResolution:
    """Which waiting jobs may be scheduled, which must fail, and which still wait."""

    eligible: list[int]
    failed: dict[int, str]  # job id -> reason naming the dependency
    unfinished: dict[int, list[int]]  # job id -> its unfinished dependency ids, sorted


# --- Order -------------------------------------------------------------------------------

OrderKey = tuple[float, ...]


def order_key(job: Job, policy: Policy = DEFAULT_POLICY) -> OrderKey:
    """The job's place in the queue: (-priority, submitted_at, id), or (submitted_at, id) FIFO."""
    if policy.priority_order:
        return (-job.priority, job.submitted_at, job.id)
    return (job.submitted_at, job.id)


def _in_scheduling_order(jobs: Iterable[Job], policy: Policy) -> list[Job]:
    """`jobs` sorted by `order_key`."""
    # Stable sorts on one attribute each, least significant first, instead of a key tuple
    # per job: several times faster on a 10,000-job queue. `reverse=True` keeps equal
    # priorities in submission order.
    ordered = sorted(jobs, key=_by_id)
    ordered.sort(key=_by_submission)
    if policy.priority_order:
        ordered.sort(key=_by_priority, reverse=True)
    return ordered


_by_id = attrgetter("id")
_by_submission = attrgetter("submitted_at")
_by_priority = attrgetter("priority")


# --- The pass ----------------------------------------------------------------------------


def run_pass(
    cluster: Cluster,
    running: Sequence[Job],
    pending: Sequence[Job],
    now: float,
    policy: Policy = DEFAULT_POLICY,
    stop_after: OrderKey | None = None,
) -> Plan:
    """One scheduling pass over one cluster (SPEC 5, steps 1 and 3 to 6).

    `pending` holds the eligible pending jobs only (the caller resolves dependencies
    first), in any order; it may be a slice of the queue chosen with `candidate_bounds`.
    With `stop_after`, the sweep ends before the first job ranked after that order key
    (`run_pass_incrementally` uses it to go no further than what it has loaded).
    """
    _check_input(running, pending)
    still_running, finished_at = _finish(running, now)
    state = _Pass(cluster, still_running, pending, now, policy, stop_after)
    outcome = state.sweep()
    # In priority order a sweep leaves nothing startable behind it: victims rank below their
    # preemptor, so nobody already passed over gains room. In FIFO order a victim may rank
    # above jobs passed over earlier and its release may give them room, so sweep again
    # until a sweep preempts nothing. This ends: every start makes the multiset of running
    # priorities grow (in lexicographic order, highest first) and that cannot grow forever.
    while outcome.preempted_any and not policy.priority_order:
        outcome = state.sweep()

    running_after = list(state.running.jobs.values())
    return Plan(
        completed=list(finished_at),
        started=list(state.started),
        preempted=state.preempted,
        held_back_by=outcome.held_back_by,
        running=running_after,
        pending=_in_scheduling_order(state.pending.values(), policy),
        available=_available(cluster, running_after),
        preempting=state.preempting,
        finished_at=finished_at,
        lost_seconds=state.lost_seconds,
    )


def _check_input(running: Sequence[Job], pending: Sequence[Job]) -> None:
    """Raise ValueError unless ids are unique, priorities in range and running jobs started."""
    ids = {job.id for job in running}
    ids.update(job.id for job in pending)
    if len(ids) != len(running) + len(pending):
        raise ValueError("a job id appears twice among running and pending jobs")
    for job in running:  # pending priorities outside the range do no harm
        if not PRIORITY_MIN <= job.priority <= PRIORITY_MAX:
            raise ValueError(f"job {job.id}: priority not within {PRIORITY_MIN}..{PRIORITY_MAX}")
    for job in running:
        if job.started_at is None:
            raise ValueError(f"running job {job.id} has no started_at")


def _finish(running: Sequence[Job], now: float) -> tuple[list[Job], dict[int, float]]:
    """Split running jobs into those still running and those whose time is up (id -> the
    instant it was)."""
    still_running: list[Job] = []
    finished_at: dict[int, float] = {}
    for job in running:
        ends_at = ends_at_of(job)
        if ends_at is not None and ends_at <= now:
            finished_at[job.id] = ends_at
        else:
            still_running.append(job)
    return still_running, finished_at


def ends_at_of(job: Job) -> float | None:
    """When a running timed job completes: once its saved work plus the time since its
    latest start or checkpoint reaches its duration; None if it runs until stopped."""
    if job.duration_seconds is None or job.started_at is None:
        return None
    return progress_mark(job) + job.duration_seconds - job.saved_seconds


def _available(cluster: Cluster, running: Iterable[Job]) -> Resources:
    """Capacity left once reservations and running requests are taken out."""
    return cluster.total - cluster.reserved - _total(job.request for job in running)


@dataclass(frozen=True, slots=True)
class _SweepOutcome:
    preempted_any: bool
    held_back_by: int | None


class _Pass:
    """The state of one pass: who runs, who waits, and what changed so far."""

    def __init__(
        self,
        cluster: Cluster,
        running: list[Job],
        pending: Sequence[Job],
        now: float,
        policy: Policy,
        stop_after: OrderKey | None = None,
    ) -> None:
        self.cluster = cluster
        self.now = now
        self.policy = policy
        self.stop_after = stop_after
        self.preempting: list[int] = []
        self.running = _RunningSet(cluster, running, now, policy)
        self.lost_seconds: dict[int, float] = {}
        self.pending = {job.id: job for job in pending}
        # What the pass started from: the Plan reports net changes, so a job started and
        # preempted again within the pass (or the reverse) is reported as never touched.
        self._was_running = {job.id: job for job in running}
        self._was_pending = dict(self.pending)
        self.started: dict[int, None] = {}  # an insertion-ordered set: start order
        self.preempted: dict[int, int] = {}

    def sweep(self) -> _SweepOutcome:
        """Go once through the pending jobs in order: start, preempt, or wait (SPEC 5, 4-6)."""
        policy, running, now = self.policy, self.running, self.now
        requeued: list[tuple[OrderKey, Job]] = []  # a heap of this sweep's victims
        # Jobs that stopped the sweep: (their order key, the highest priority they block).
        holders: list[tuple[OrderKey, int]] = []
        starving_holders: list[tuple[OrderKey, int]] = []  # (order key, id)
        preempted_any = False

        queue = _in_scheduling_order(self.pending.values(), policy)
        for job in _merge_requeued(queue, requeued, policy):
            if self.stop_after is not None and order_key(job, policy) > self.stop_after:
                break
            if holders and _is_held_back(job, holders, policy):
                continue
            request = job.request
            if request.fits_in(running.available):
                self._start(job)
                continue
            # Preempt only if all lower-priority candidates together would make room.
            if policy.preemption and request.fits_in(running.ceiling(job.priority)):
                for victim in running.victims_for(job):
                    back = self._requeue(victim, preempted_by=job)
                    heapq.heappush(requeued, (order_key(back, policy), back))
                self._start(job)
                self.preempting.append(job.id)
                preempted_any = True
                continue
            # The job waits. It may stop the sweep for the jobs after it (SPEC 5, step 6),
            # unless it could never fit the cluster: then it simply waits.
            starving = now - job.waiting_since > policy.starvation_seconds
            if (starving or not policy.backfill) and request.fits_in(self.cluster.total):
                key = order_key(job, policy)
                holders.append((key, job.priority if policy.backfill else PRIORITY_MAX))
                if starving:
                    starving_holders.append((key, job.id))
                if policy.priority_order:
                    break  # everything after it in priority order is of its priority or lower
        held_back_by = min(starving_holders)[1] if starving_holders else None
        return _SweepOutcome(preempted_any=preempted_any, held_back_by=held_back_by)

    def _start(self, job: Job) -> None:
        """Move a pending job to running."""
        del self.pending[job.id]
        original = self._was_running.get(job.id)
        if original is not None:
            # Preempted earlier in this pass and back already: it never stopped.
            del self.preempted[job.id]
            del self.lost_seconds[job.id]
            self.running.add(original)
        else:
            self.started[job.id] = None
            self.running.add(replace(job, started_at=self.now, checkpointed_at=None))

    def _requeue(self, victim: Job, preempted_by: Job) -> Job:
        """Move a running job back to pending because `preempted_by` needs its room."""
        self.running.remove(victim)
        original = self._was_pending.get(victim.id)
        if original is not None:
            # Started earlier in this very pass (FIFO order only): it never ran.
            del self.started[victim.id]
            back = original
        else:
            # It keeps its saved work (and its last checkpoint's time) and loses the rest.
            back = replace(victim, waiting_since=self.now, started_at=None)
            self.preempted[victim.id] = preempted_by.id
            self.lost_seconds[victim.id] = unsaved_seconds(victim, self.now)
        self.pending[back.id] = back
        return back


def _merge_requeued(
    queue: list[Job], requeued: list[tuple[OrderKey, Job]], policy: Policy
) -> Iterator[Job]:
    """Yield `queue` in order, slotting in jobs pushed onto the `requeued` heap meanwhile."""
    for job in queue:
        if requeued:
            key = order_key(job, policy)
            while requeued and requeued[0][0] < key:
                yield heapq.heappop(requeued)[1]
        yield job
    while requeued:
        yield heapq.heappop(requeued)[1]


def _is_held_back(job: Job, holders: list[tuple[OrderKey, int]], policy: Policy) -> bool:
    """True if a job that stopped the sweep ranks before `job` and blocks its priority."""
    key = order_key(job, policy)
    return any(key > holder_key and job.priority <= limit for holder_key, limit in holders)


class _RunningSet:
    """The running jobs during a pass, indexed for the fit test and for preemption."""

    def __init__(self, cluster: Cluster, jobs: list[Job], now: float, policy: Policy):
        self.jobs = {job.id: job for job in jobs}
        self.available = _available(cluster, jobs)
        self._now = now
        self._grace = policy.preemption_grace_seconds
        # Preemption candidates (past the grace period) by priority level, each level in
        # put-back order (the costliest to preempt first, then earliest started, then lowest
        # id), with a sum per level, the sorted list of levels, and a tree answering "sum of
        # all levels below p".
        self._total = cluster.total
        self._cost_aware = policy.cost_aware_victims
        self._levels: dict[int, list[_PutBack]] = {}
        for job in jobs:
            if self._is_candidate(job):
                self._levels.setdefault(job.priority, []).append(self._entry(job))
        self._level_sums: dict[int, Resources] = {}
        for level, entries in self._levels.items():
            entries.sort()
            self._level_sums[level] = _total(job.request for *_, job in entries)
        self._level_order = sorted(self._levels)
        self._sums_below = PrioritySums(self._level_sums)
        # "available + candidates below p" is asked for once per pending job that does not
        # fit, and many share a priority: remember the answers until the next change.
        self._ceilings: dict[int, Resources] = {}

    def add(self, job: Job) -> None:
        """Count `job` as running."""
        self.jobs[job.id] = job
        self.available -= job.request
        self._ceilings.clear()
        if not self._is_candidate(job):
            return
        level = self._levels.get(job.priority)
        if level is None:
            level = self._levels[job.priority] = []
            self._level_sums[job.priority] = Resources()
            insort(self._level_order, job.priority)
        insort(level, self._entry(job))
        self._level_sums[job.priority] += job.request
        self._sums_below.add(job.priority, job.request, sign=1)

    def remove(self, job: Job) -> None:
        """Stop counting `job` as running."""
        del self.jobs[job.id]
        self.available += job.request
        self._ceilings.clear()
        if not self._is_candidate(job):
            return
        level = self._levels[job.priority]
        del level[bisect_left(level, self._entry(job))]
        self._level_sums[job.priority] -= job.request
        self._sums_below.add(job.priority, job.request, sign=-1)
        if not level:
            del self._levels[job.priority]
            del self._level_sums[job.priority]
            self._level_order.remove(job.priority)

    def _entry(self, job: Job) -> _PutBack:
        """A candidate's place in its level's put-back order (SPEC 5 step 5): the most
        unsaved work (seconds times dominant share) first, then earliest started, lowest id."""
        assert job.started_at is not None  # only running jobs are candidates
        cost = 0.0
        if self._cost_aware:
            cost = unsaved_seconds(job, self._now) * dominant_share(job.request, self._total)
        return (-cost, job.started_at, job.id, job)

    def _is_candidate(self, job: Job) -> bool:
        """True if `job` has run for the grace period and may be preempted."""
        return job.started_at is not None and self._now - job.started_at >= self._grace

    def ceiling(self, priority: int) -> Resources:
        """What a job of `priority` could get now: available plus every candidate below it."""
        ceiling = self._ceilings.get(priority)
        if ceiling is None:
            ceiling = self.available + self._sums_below.below(priority)
            self._ceilings[priority] = ceiling
        return ceiling

    def victims_for(self, job: Job) -> list[Job]:
        """The running jobs to preempt so that `job` fits (SPEC 5, step 5).

        Only call it when the job fits in `ceiling(job.priority)` but not in `available`.
        """
        # The lowest level L: release whole levels from the bottom up until the job fits.
        # As the job fits its ceiling, this stops below the job's own priority.
        # Plain ints rather than Resources here and below: a preemption can visit hundreds
        # of levels and candidates, and each Resources sum would allocate.
        need = job.request
        room_cpu, room_ram, room_gpu = self.available.cpu, self.available.ram, self.available.gpu
        released: list[int] = []
        for level in self._level_order:
            released.append(level)
            freed = self._level_sums[level]
            room_cpu, room_ram, room_gpu = (
                room_cpu + freed.cpu,
                room_ram + freed.ram,
                room_gpu + freed.gpu,
            )
            if need.cpu <= room_cpu and need.ram <= room_ram and need.gpu <= room_gpu:
                break
        # Put back what the job can do without, from the highest of those levels down, in
        # each the earliest started first (then the lowest id): the rest are the victims.
        # `spare` is what would be left over once the job starts.
        spare_cpu, spare_ram, spare_gpu = (
            room_cpu - need.cpu,
            room_ram - need.ram,
            room_gpu - need.gpu,
        )
        victims: list[Job] = []
        for level in reversed(released):
            for *_, candidate in self._levels[level]:
                taken = candidate.request
                if taken.cpu <= spare_cpu and taken.ram <= spare_ram and taken.gpu <= spare_gpu:
                    spare_cpu -= taken.cpu
                    spare_ram -= taken.ram
                    spare_gpu -= taken.gpu
                else:
                    victims.append(candidate)
        return victims


# (minus the unsaved cost, started_at, id, job): ids are unique, so jobs never compare.
_PutBack = tuple[float, float, int, Job]


class PrioritySums:
    """Resource sums per priority, answering "total of all priorities below p" in O(log n).

    A Fenwick tree: a pass asks this for most pending jobs that do not fit, and the set of
    candidates changes with every start, so neither rescanning the levels nor caching a
    prefix array would keep a 10,000-job pass fast. The forecast keeps one too.
    """

    _SIZE = PRIORITY_MAX - PRIORITY_MIN + 1
    # Up to this many levels, adding them one by one (O(levels * log size)) beats the
    # O(size) build: the forecast calls the pass on a few condensed levels, many times.
    _SPARSE_LEVELS = 64

    def __init__(self, sums: Mapping[int, Resources] | None = None) -> None:
        """Start from `sums` (priority -> amount), or from nothing."""
        self._cpu = [0] * (self._SIZE + 1)
        self._ram = [0] * (self._SIZE + 1)
        self._gpu = [0] * (self._SIZE + 1)
        if not sums:
            return
        if len(sums) <= self._SPARSE_LEVELS:
            for priority, amount in sums.items():
                self.add(priority, amount, sign=1)
            return
        for priority, amount in sums.items():
            index = priority - PRIORITY_MIN + 1
            self._cpu[index] = amount.cpu
            self._ram[index] = amount.ram
            self._gpu[index] = amount.gpu
        for index in range(1, self._SIZE + 1):
            parent = index + (index & -index)
            if parent <= self._SIZE:
                self._cpu[parent] += self._cpu[index]
                self._ram[parent] += self._ram[index]
                self._gpu[parent] += self._gpu[index]

    def add(self, priority: int, amount: Resources, sign: int) -> None:
        """Add (sign 1) or subtract (sign -1) `amount` at `priority`."""
        index = priority - PRIORITY_MIN + 1
        while index <= self._SIZE:
            self._cpu[index] += sign * amount.cpu
            self._ram[index] += sign * amount.ram
            self._gpu[index] += sign * amount.gpu
            index += index & -index

    def below(self, priority: int) -> Resources:
        """The sum over all priorities strictly below `priority`."""
        return Resources(*self.below_parts(priority))

    def below_parts(self, priority: int) -> tuple[int, int, int]:
        """`below` as (cpu, ram, gpu), without building a `Resources` (a hot path)."""
        index = min(max(priority - PRIORITY_MIN, 0), self._SIZE)
        cpu = ram = gpu = 0
        while index > 0:
            cpu += self._cpu[index]
            ram += self._ram[index]
            gpu += self._gpu[index]
            index -= index & -index
        return cpu, ram, gpu


# --- Which pending jobs to load ----------------------------------------------------------

Band = tuple[int, int, Resources]  # lowest priority, highest priority, max_request


def candidate_bounds(
    cluster: Cluster,
    running: Sequence[Job],
    now: float,
    policy: Policy = DEFAULT_POLICY,
) -> list[Band]:
    """Bands (lowest, highest priority, max_request) covering 0..1000: a pending job whose
    request does not fit its band's max_request cannot start in a pass at `now`.

    Together with the starvation clause of `needs_loading` this is the filter for loading
    only part of a long queue: the pass then starts and preempts exactly what it would with
    the whole queue.
    """
    still_running, _ = _finish(running, now)
    if not policy.backfill:
        # Any job that fits the cluster at all may be the one that stops the sweep.
        return [(PRIORITY_MIN, PRIORITY_MAX, cluster.total)]
    available = _available(cluster, still_running)
    if not policy.preemption:
        return [(PRIORITY_MIN, PRIORITY_MAX, available)]
    # A job can use more than what lies below its own priority: when a higher job preempts
    # work of the job's priority or above, the room the victims leave over goes to whoever
    # fits next. So every candidate that anyone could preempt counts, for every band; only
    # jobs inside the grace period and jobs of the top priority are safe.
    preemptible = _total(
        job.request
        for job in still_running
        if job.priority < PRIORITY_MAX
        and job.started_at is not None
        and now - job.started_at >= policy.preemption_grace_seconds
    )
    return [(PRIORITY_MIN, PRIORITY_MAX, available + preemptible)]


def needs_loading(
    job: Job,
    bounds: Sequence[Band],
    cluster: Cluster,
    now: float,
    policy: Policy = DEFAULT_POLICY,
) -> bool:
    """True if a pass at `now` could start this pending job or be held back by it."""
    for lowest, highest, max_request in bounds:
        if lowest <= job.priority <= highest and job.request.fits_in(max_request):
            return True
    # A starving job that cannot start still matters: it stops the sweep behind it.
    starving = now - job.waiting_since > policy.starvation_seconds
    return starving and job.request.fits_in(cluster.total)


def startable_bounds(
    cluster: Cluster,
    running: Sequence[Job],
    now: float,
    policy: Policy = DEFAULT_POLICY,
) -> list[Band]:
    """Bands covering 0..1000 whose max_request is exactly what a job of that priority
    could get right now: available capacity plus every preemption candidate of strictly
    lower priority (SPEC 5, the preemption gate). A job within its band starts at once,
    by fitting or by preempting; one outside it cannot start before something changes.

    Tighter than `candidate_bounds`, which must also allow for room that later
    preemptions may leave over; `run_pass_incrementally` handles that by re-asking after
    each preemption.
    """
    still_running, _ = _finish(running, now)
    available = _available(cluster, still_running)
    if not policy.preemption:
        return [(PRIORITY_MIN, PRIORITY_MAX, available)]
    per_level: dict[int, Resources] = {}
    for job in still_running:
        if job.started_at is not None and now - job.started_at >= policy.preemption_grace_seconds:
            per_level[job.priority] = per_level.get(job.priority, Resources()) + job.request
    bands: list[Band] = []
    lowest, reachable = PRIORITY_MIN, available
    for level in sorted(per_level):
        # Priorities up to `level` cannot preempt `level`; those above it can.
        if lowest <= level:
            bands.append((lowest, level, reachable))
        lowest, reachable = level + 1, reachable + per_level[level]
    if lowest <= PRIORITY_MAX:
        bands.append((lowest, PRIORITY_MAX, reachable))
    return bands


# Loads eligible pending jobs, in scheduling order, ranked after `after` (all when None),
# that fit their band in `bounds` or have waited since before `starving_before` and fit the
# cluster; at most `limit` of them (all when None).
Fetch = Callable[[list[Band], float, "Job | None", "int | None"], list[Job]]


def run_pass_incrementally(
    cluster: Cluster,
    running: Sequence[Job],
    now: float,
    fetch: Fetch,
    policy: Policy = DEFAULT_POLICY,
    batch_size: int = 64,
) -> Plan:
    """The same decisions as `run_pass` over the whole queue, loading only the part of it
    that matters: after a pass the queue is stable, so few jobs can start.

    It asks `fetch` for the next `batch_size` jobs that could start now (or hold the
    starvation guard), sweeps up to the last of them, and asks again from there. A
    preemption can leave room a job outside the batch could use, so after one the sweep is
    cut just after the preempting job and the next batch is asked for with the new room.
    `Plan.pending` holds only the requeued victims. Policies other than priority order
    with backfill load every job that might matter in one go.
    """
    starving_before = now - policy.starvation_seconds
    if not (policy.priority_order and policy.backfill):
        bounds = candidate_bounds(cluster, running, now, policy)
        return run_pass(cluster, running, fetch(bounds, starving_before, None, None), now, policy)

    finishing = run_pass(cluster, running, [], now, policy)
    originally_running = {job.id: job for job in finishing.running}
    current = finishing.running
    started: dict[int, None] = {}
    preempted: dict[int, int] = {}
    lost_seconds: dict[int, float] = {}
    requeued: dict[int, Job] = {}
    preempting: list[int] = []
    held_back_by: int | None = None
    cursor: Job | None = None
    while True:
        bounds = startable_bounds(cluster, current, now, policy)
        fetched = fetch(bounds, starving_before, cursor, batch_size)
        stop = order_key(fetched[-1]) if len(fetched) >= batch_size else None
        # Victims are pending now but not yet in the caller's store: offer them as well.
        victims = [
            victim
            for victim in requeued.values()
            if (cursor is None or order_key(victim) > order_key(cursor))
            and (stop is None or order_key(victim) <= stop)
            and needs_loading(victim, bounds, cluster, now, policy)
        ]
        batch = fetched + victims
        if not batch:
            break
        plan = run_pass(cluster, current, batch, now, policy, stop_after=stop)
        if plan.preempting:
            by_id = {job.id: job for job in batch}
            stop = order_key(by_id[plan.preempting[0]])
            plan = run_pass(cluster, current, batch, now, policy, stop_after=stop)
        for job_id in plan.started:
            if job_id in requeued:  # a victim back within the same pass: it never stopped
                del requeued[job_id]
                del preempted[job_id]
                del lost_seconds[job_id]
            else:
                started[job_id] = None
        pending_after = {job.id: job for job in plan.pending}
        for victim, preemptor in plan.preempted.items():
            preempted[victim] = preemptor
            lost_seconds[victim] = plan.lost_seconds[victim]
            requeued[victim] = pending_after[victim]
        preempting.extend(plan.preempting)
        current = [originally_running.get(job.id, job) for job in plan.running]
        held_back_by = plan.held_back_by
        if held_back_by is not None or stop is None:
            break
        cursor = next(job for job in batch if order_key(job) == stop)
    return Plan(
        completed=finishing.completed,
        started=list(started),
        preempted=preempted,
        held_back_by=held_back_by,
        running=current,
        pending=_in_scheduling_order(requeued.values(), policy),
        available=_available(cluster, current),
        preempting=preempting,
        finished_at=finishing.finished_at,
        lost_seconds=lost_seconds,
    )


# --- Dependencies ------------------------------------------------------------------------


def resolve_dependencies(
    waiting: Mapping[int, Sequence[int]], statuses: Mapping[int, str]
) -> DependencyResolution:
    """Sort waiting jobs into eligible, failed (with the dependency to blame) and unfinished.

    `waiting` maps a pending job id to its depends_on ids; `statuses` maps job ids to
    'pending', 'running', 'completed', 'failed' or 'cancelled'. Ids missing from `statuses`
    count as 'pending'. Failure runs down chains within `waiting`: if 12 failed, 13 depends
    on 12 and 14 on 13, then 13 fails ('dependency 12 failed') and so does 14 ('dependency
    13 failed'). Jobs in a dependency cycle stay unfinished.
    """
    dependents: dict[int, list[int]] = {}
    for job_id, dependencies in waiting.items():
        for dependency in dependencies:
            dependents.setdefault(dependency, []).append(job_id)

    failed: dict[int, str] = {}
    to_propagate: deque[int] = deque()
    for job_id in sorted(waiting):
        reason = _broken_dependency(waiting[job_id], statuses)
        if reason is not None:
            failed[job_id] = reason
            to_propagate.append(job_id)
    # A worklist rather than recursion: chains can be thousands of jobs long.
    while to_propagate:
        failed_id = to_propagate.popleft()
        for job_id in dependents.get(failed_id, ()):
            if job_id in waiting and job_id not in failed:
                failed[job_id] = f"dependency {failed_id} failed"
                to_propagate.append(job_id)

    eligible: list[int] = []
    unfinished: dict[int, list[int]] = {}
    for job_id in sorted(waiting):
        if job_id in failed:
            continue
        open_ids = sorted(
            {dep for dep in waiting[job_id] if statuses.get(dep, "pending") != "completed"}
        )
        if open_ids:
            unfinished[job_id] = open_ids
        else:
            eligible.append(job_id)
    return DependencyResolution(
        eligible=eligible, failed=dict(sorted(failed.items())), unfinished=unfinished
    )


def _broken_dependency(dependencies: Sequence[int], statuses: Mapping[int, str]) -> str | None:
    """The reason naming the lowest dependency that failed or was cancelled, if any."""
    for dependency in sorted(dependencies):
        status = statuses.get(dependency)
        if status == "failed":
            return f"dependency {dependency} failed"
        if status == "cancelled":
            return f"dependency {dependency} was cancelled"
    return None


# --- Why a job waits ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunningLevel:
    """What a cluster's running jobs of one priority hold, as `RunningSummary` keeps it: a
    database can sum these without handing over a row per job (`RunningSummary.of_levels`)."""

    priority: int
    count: int
    held: Resources
    holding: tuple[int, int, int]  # how many jobs hold some cpu, ram, gpu
    in_grace: int  # jobs still within the preemption grace period
    grace_held: Resources  # what those hold
    # The lowest ids holding some cpu, ram, gpu: at most NAMED_PER_LEVEL each, to name
    # (empty on levels no reason names: `levels_to_name`).
    named: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


NAMED_PER_LEVEL = 5  # holders named per priority level in a reason
NAMED_LEVELS = 3  # priority levels named in a reason


def running_levels(running: Sequence[Job], now: float | None, policy: Policy) -> list[RunningLevel]:
    """The running jobs summed per priority level, lowest level first. Holders are named
    only on the levels a reason can name (`levels_to_name`)."""
    by_level: dict[int, list[Job]] = {}
    for job in sorted(running, key=_by_id):
        by_level.setdefault(job.priority, []).append(job)
    levels = []
    for priority in sorted(by_level):
        jobs = by_level[priority]
        in_grace = [
            job
            for job in jobs
            if now is not None
            and job.started_at is not None
            and now - job.started_at < policy.preemption_grace_seconds
        ]
        holders = [
            [job.id for job in jobs if _get(job.request, name) > 0] for name in RESOURCE_NAMES
        ]
        levels.append(
            RunningLevel(
                priority=priority,
                count=len(jobs),
                held=_total(job.request for job in jobs),
                holding=(len(holders[0]), len(holders[1]), len(holders[2])),
                in_grace=len(in_grace),
                grace_held=_total(job.request for job in in_grace),
                named=(
                    tuple(holders[0][:NAMED_PER_LEVEL]),
                    tuple(holders[1][:NAMED_PER_LEVEL]),
                    tuple(holders[2][:NAMED_PER_LEVEL]),
                ),
            )
        )
    named = levels_to_name(levels)
    return [
        level if level.priority in named else replace(level, named=((), (), ())) for level in levels
    ]


def levels_to_name(levels: Sequence[RunningLevel]) -> set[int]:
    """The priority levels whose holders a reason may name: for each resource the
    `NAMED_LEVELS` highest levels holding some of it. A reason names holders of the
    resources a job is short of on the highest levels at or above its priority that hold
    any of them, at most `NAMED_LEVELS`; each of those is among the highest holding one of
    the resources, and is named with all of its holders."""
    chosen: set[int] = set()
    for r in range(len(RESOURCE_NAMES)):
        holding = [level.priority for level in levels if level.holding[r] > 0]
        chosen.update(sorted(holding, reverse=True)[:NAMED_LEVELS])
    return chosen


class RunningSummary:
    """The running jobs of a cluster as `explain_wait` needs them, summarized once: per
    priority level, what they hold and how many hold each resource, and which are still in
    their grace period. Explaining a whole queue page then costs O(log levels) per job
    instead of O(running); built from levels a database summed, it never sees the jobs."""

    def __init__(self, running: Sequence[Job], now: float | None, policy: Policy) -> None:
        self._summarize(running_levels(running, now, policy))

    @classmethod
    def of_levels(cls, levels: Sequence[RunningLevel]) -> RunningSummary:
        """The summary of running jobs already summed per level (`running_levels`)."""
        summary = cls.__new__(cls)
        summary._summarize(sorted(levels, key=attrgetter("priority")))
        return summary

    def _summarize(self, levels: list[RunningLevel]) -> None:
        self.levels = levels
        self._levels = [level.priority for level in levels]
        self._named = [[list(ids) for ids in level.named] for level in levels]
        self._users_per_level = [list(level.holding) for level in levels]
        # Prefix sums: entry k covers levels[0:k].
        self._held = _prefix([_amounts_row(level.held) for level in levels])
        self._users = _prefix(self._users_per_level)
        self._count = _prefix([[level.count] for level in levels])
        self._grace_held = _prefix([_amounts_row(level.grace_held) for level in levels])
        self._grace_count = _prefix([[level.in_grace] for level in levels])

    def _below(self, priority: int) -> int:
        return bisect_left(self._levels, priority)

    def held_below(self, priority: int) -> Resources:
        """What running jobs of priority strictly below `priority` hold."""
        return Resources(*self._held[self._below(priority)])

    def held_total(self) -> Resources:
        """What all running jobs hold."""
        return Resources(*self._held[-1])

    def users(self, name: str, priority: int) -> tuple[int, int, int, int]:
        """(amount, jobs) of resource `name` held at or above `priority`, then below it."""
        r, k = RESOURCE_NAMES.index(name), self._below(priority)
        below_amount, below_users = self._held[k][r], self._users[k][r]
        return (
            self._held[-1][r] - below_amount,
            self._users[-1][r] - below_users,
            below_amount,
            below_users,
        )

    def holders(self, names: Sequence[str], priority: int) -> str:
        """Who holds these resources at `priority` or above, highest priority first, a few
        per level: 'deployments 3, 5 (priority 5) and 7 (priority 1)'."""
        parts: list[str] = []
        columns = [RESOURCE_NAMES.index(name) for name in names]
        for k in range(len(self._levels) - 1, self._below(priority) - 1, -1):
            ids = sorted({i for r in columns for i in self._named[k][r]})
            if not ids:
                continue
            users = max(self._users_per_level[k][r] for r in columns)
            more = f" and {users - len(ids)} more" if users > len(ids) else ""
            parts.append(f"{', '.join(map(str, ids))}{more} (priority {self._levels[k]})")
            if len(parts) == NAMED_LEVELS:
                break
        if not parts:
            return ""
        single = len(parts) == 1 and "," not in parts[0] and "more" not in parts[0]
        return f"{'deployment' if single else 'deployments'} {' and '.join(parts)}"

    def count_below(self, priority: int) -> int:
        """How many running jobs have a priority strictly below `priority`."""
        return self._count[self._below(priority)][0]

    def grace_below(self, priority: int) -> tuple[int, Resources]:
        """How many strictly lower jobs are still in their grace period, and what they hold."""
        k = self._below(priority)
        return self._grace_count[k][0], Resources(*self._grace_held[k])


def _amounts_row(amount: Resources) -> list[int]:
    return [amount.cpu, amount.ram, amount.gpu]


def _prefix(rows: list[list[int]]) -> list[list[int]]:
    """Running sums of the rows, with a row of zeros first."""
    width = len(rows[0]) if rows else 3
    sums = [[0] * width]
    for row in rows:
        sums.append([a + b for a, b in zip(sums[-1], row, strict=True)])
    return sums


def explain_wait(
    job: Job,
    cluster: Cluster,
    running: Sequence[Job] | RunningSummary,
    *,
    unfinished_dependencies: Sequence[int] = (),
    held_back_by: Job | None = None,
    preempted_by: int | None = None,
    now: float | None = None,
    policy: Policy = DEFAULT_POLICY,
    name_blockers: bool = False,
) -> str:
    """A sentence a person can act on, saying why a pending job waits. `running` may be a
    `RunningSummary` built once for many jobs of the same cluster, `now` and `policy`.
    With `name_blockers`, a job short of room also hears which deployments hold it."""
    summary = (
        running if isinstance(running, RunningSummary) else RunningSummary(running, now, policy)
    )
    reason = _wait_reason(job, cluster, summary, unfinished_dependencies, held_back_by, now, policy)
    if name_blockers:
        blockers = _blockers(job, cluster, summary, unfinished_dependencies, held_back_by)
        if blockers:
            reason = f"{reason}; the room it needs is held by {blockers}"
    if preempted_by is not None:
        return f"preempted by deployment {preempted_by}; {reason}"
    return reason


def _wait_reason(
    job: Job,
    cluster: Cluster,
    running: RunningSummary,
    unfinished_dependencies: Sequence[int],
    held_back_by: Job | None,
    now: float | None,
    policy: Policy,
) -> str:
    """The reason a job waits, most fundamental first."""
    if unfinished_dependencies:
        ids = ", ".join(str(dep) for dep in sorted(set(unfinished_dependencies)))
        noun = "dependency" if len(set(unfinished_dependencies)) == 1 else "dependencies"
        return f"waiting for {noun} {ids}"

    request = job.request
    too_large = [name for name in RESOURCE_NAMES if _get(request, name) > _get(cluster.total, name)]
    if too_large:
        return _too_large_for_cluster(request, cluster, too_large)
    unreserved = cluster.total - cluster.reserved
    held_by_reservation = [
        name for name in RESOURCE_NAMES if _get(request, name) > _get(unreserved, name)
    ]
    if held_by_reservation:
        return _short_because_of_reservations(request, cluster, held_by_reservation)

    if held_back_by is not None and held_back_by.id != job.id:
        return (
            f"held back behind deployment {held_back_by.id}, which has waited longer than "
            f"the starvation limit ({_seconds(policy.starvation_seconds)}) and starts first"
        )

    available = cluster.total - cluster.reserved - running.held_total()
    short = [name for name in RESOURCE_NAMES if _get(request, name) > _get(available, name)]
    if not short:
        return "next in line; starts at the next scheduling pass"
    sentences = ["; ".join(_shortage(job, cluster, running, available, name) for name in short)]
    preemption = _preemption_outlook(job, running, available, policy)
    if preemption:
        sentences.append(preemption)
    if now is not None and now - job.waiting_since > policy.starvation_seconds:
        sentences.append(
            f"it has waited longer than the starvation limit "
            f"({_seconds(policy.starvation_seconds)}), so no work of its priority or lower "
            f"starts before it"
        )
    return "; ".join(sentences)


def _blockers(
    job: Job,
    cluster: Cluster,
    running: RunningSummary,
    unfinished_dependencies: Sequence[int],
    held_back_by: Job | None,
) -> str:
    """The running deployments of its priority or above holding what a job is short of
    (empty when it waits for something else)."""
    if unfinished_dependencies or (held_back_by is not None and held_back_by.id != job.id):
        return ""
    if not job.request.fits_in(cluster.total - cluster.reserved):
        return ""
    available = cluster.total - cluster.reserved - running.held_total()
    short = [name for name in RESOURCE_NAMES if _get(job.request, name) > _get(available, name)]
    return running.holders(short, job.priority) if short else ""


def _too_large_for_cluster(request: Resources, cluster: Cluster, names: list[str]) -> str:
    """Reason for a request that exceeds the cluster's total capacity."""
    if len(names) == 1:
        name = names[0]
        has = f"only {_get(cluster.total, name)} in total"
    else:
        has = f"only {_amounts(cluster.total, names)} in total"
    return (
        f"needs {_amounts(request, names)} but the cluster has {has}; "
        f"it cannot run unless the cluster grows"
    )


def _short_because_of_reservations(request: Resources, cluster: Cluster, names: list[str]) -> str:
    """Reason for a request that fits the cluster but not what reservations leave of it."""
    parts = [
        f"{_amount(name, _get(request, name))} but {_get(cluster.reserved, name)} "
        f"of the cluster's {_get(cluster.total, name)} are reserved"
        for name in names
    ]
    return f"needs {' and '.join(parts)}; it cannot run until reserved capacity is released"


def _shortage(
    job: Job, cluster: Cluster, running: RunningSummary, available: Resources, name: str
) -> str:
    """One short resource: need, available, and who holds the rest."""
    higher_amount, higher_users, lower_amount, lower_users = running.users(name, job.priority)
    held = (
        f"{higher_amount} used by {_count(higher_users, 'deployment')} of priority >= "
        f"{job.priority}"
    )
    if lower_users:
        held += f", {lower_amount} by {lower_users} of lower priority"
    return (
        f"needs {_amount(name, _get(job.request, name))}, {_get(available, name)} available "
        f"({held}, {_get(cluster.reserved, name)} reserved)"
    )


def _preemption_outlook(
    job: Job, running: RunningSummary, available: Resources, policy: Policy
) -> str | None:
    """Why lower-priority work does not make room, or None if there is none to speak of."""
    lower = running.count_below(job.priority)
    if not lower:
        return None
    if not policy.preemption:
        return "preemption is off, so lower-priority work keeps running"
    # Without `now` the grace period cannot be judged: the summary counts none in grace.
    in_grace, held_in_grace = running.grace_below(job.priority)
    ceiling = available + running.held_below(job.priority) - held_in_grace
    if job.request.fits_in(ceiling):
        return "lower-priority work will be preempted for it at the next scheduling pass"
    missing = job.request.shortfall(ceiling)
    names = [name for name in RESOURCE_NAMES if _get(missing, name) > 0]
    outlook = (
        f"even preempting all it may ({_count(lower - in_grace, 'deployment')}) "
        f"would leave it {_amounts(missing, names)} short"
    )
    if in_grace:
        outlook += (
            f"; {in_grace} more started less than "
            f"{_seconds(policy.preemption_grace_seconds)} ago and cannot be preempted yet"
        )
    return outlook


def _get(amount: Resources, name: str) -> int:
    """One component of `amount` by resource name."""
    value: int = getattr(amount, name)
    return value


def _amount(name: str, value: int) -> str:
    """'4 gpu', '64 GiB ram'."""
    return f"{value} {_UNITS[name]}"


def _amounts(amount: Resources, names: list[str]) -> str:
    """'8 gpu and 600 GiB ram'."""
    return " and ".join(_amount(name, _get(amount, name)) for name in names)


def _count(number: int, noun: str) -> str:
    """'1 deployment', '2 deployments'."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _seconds(value: float) -> str:
    """'300 s', '2.5 s'."""
    return f"{value:g} s"
