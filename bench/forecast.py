"""Forecast accuracy: the service's estimated starts against the actual ones, on a live server.

    .venv/bin/python bench/forecast.py                        # about 3.5 minutes here
    .venv/bin/python bench/forecast.py --smoke --out /tmp/f   # seconds, for the test suite

One real server (`python main.py`, SQLite, the loop every 0.5 s) and three scenarios
replayed at once, each on two clusters of 8 GPUs (`copies`, each with its own seeded trace
and organization), with jobs of 1-4 GPUs at three priorities (0, 5, 9):

1. `declared-burst`: every job submitted at once with its declared duration; nothing is
   submitted, cancelled or reported after, so the forecast knows all it needs. The
   estimates on show at the first poll after the burst that shows a forecast of the current
   state are checked against a bound (below).
2. `declared-arrivals`: Poisson arrivals over a window, durations declared.
3. `history`: three runs per image without a duration, reported completed by this script
   once their (hidden) run time is up; then a burst of jobs of the same images without
   durations, reported the same way, so the forecast rests on the median of past runs
   (basis "history").

What is recorded. Each cluster's queue (`GET /deployment/queue/{cluster}`) is polled every
`poll` seconds and every change of a deployment's `estimated_start_at` (or basis) is kept,
with the wall time at which the poll that first showed it was sent (`seen`). Starts come
from each deployment's events once the run is over (`GET /deployment/{id}`). A deployment
may start several times (preemption): an estimate seen while it was pending after its k-th
preemption (`preemption_count` k in the queue entry) is compared with its (k+1)-th start,
the first start after the estimate. Error = actual start - estimated start (positive:
later than said); lead = actual start - seen.

Current and stale. Whether the forecast on show was made from the cluster's current state
is read from the database file (`clusters.revision` equal to `forecast_revision`, before
and after the poll). The error statistics count the estimates of current forecasts: how
good the forecast is. Those a poll showed before the loop had forecast a change again (at
most a tick) are reported apart as "stale", and so are, flagged `previous_start`, the
values a preempted deployment shows until then: the start of the run that just ended.

The bound of scenario 1. Nothing wakes the loop at a known end: a timed deployment is
completed at its exact instant, but what it frees is started by the next tick, up to one
tick period (`interval` plus the tick's own work) later; the forecast assumes the start at
the instant itself. An estimate resting on h such hand-offs in a row (a deployment behind
another one still waiting) can therefore be late by h tick periods. The bound checked for
an estimate seen at `seen`, with h the number of distinct instants at which this cluster
started something after `seen` up to and including the deployment's own start, is
h x the slowest pick-up observed (a start made by a tick, minus the end before it; at most
`interval` plus a tick's work) + the forecast's age (at most the time since the cluster's
last change before `seen`). The plain one-interval bound (interval + age) is reported next
to it.

`--smoke`: one cluster per scenario, 4 GPUs, durations of 1-3 s, the loop every 0.25 s.

Writes forecast.json, forecast.md and forecast_error_vs_lead.png to `--out`, and includes
bench/results/forecast_cost.json (the forecast's cost per cluster at 1k / 10k pending,
measured by bench/forecast_cost.py) in the markdown.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("bench.forecast")
PASSWORD = "benchmark password"
PRIORITIES = (0, 5, 9)  # low, normal, urgent
PRIORITY_WEIGHTS = (3, 5, 2)
BUCKETS = ((">60 s", 60.0, float("inf")), ("30-60 s", 30.0, 60.0), ("10-30 s", 10.0, 30.0))
BUCKETS += (("<10 s", 0.0, 10.0),)
SCENARIOS = ("declared-burst", "declared-arrivals", "history")


@dataclass(frozen=True)
class Config:
    """The sizes of one run."""

    interval: float  # HYPERVISOR_SCHEDULER_INTERVAL_SECONDS
    poll: float  # seconds between two polls of one cluster
    gpus: int  # per cluster
    shortest: int  # declared durations, seconds, uniform
    longest: int
    burst_jobs: int  # scenario 1
    arrival_rate: float  # scenario 2: Poisson arrivals per second ...
    arrival_window: float  # ... over this many seconds
    images: tuple[tuple[str, float], ...]  # scenario 3: repository, typical run time
    history_runs: int  # scenario 3: completed runs per image before the measured burst
    history_jobs: int  # scenario 3: the measured burst
    limit_seconds: float  # a scenario stops waiting after this
    copies: int  # clusters per scenario, each with its own seeded trace, all at once


FULL = Config(
    interval=0.5,
    poll=0.2,
    gpus=8,
    shortest=5,
    longest=60,
    burst_jobs=12,
    arrival_rate=0.14,
    arrival_window=70.0,
    images=(("ghcr.io/acme/train", 40.0), ("ghcr.io/acme/eval", 15.0), ("ghcr.io/acme/tune", 25.0)),
    history_runs=3,
    history_jobs=12,
    limit_seconds=420.0,
    copies=2,
)
SMOKE = Config(
    interval=0.25,
    poll=0.1,
    gpus=4,
    shortest=1,
    longest=3,
    burst_jobs=5,
    arrival_rate=1.5,
    arrival_window=3.0,
    images=(("ghcr.io/acme/train", 1.5),),
    history_runs=3,
    history_jobs=4,
    limit_seconds=60.0,
    copies=1,
)


# --- The trace ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceJob:
    """One job to submit: when (seconds after its scenario began), what, for how long."""

    at: float
    priority: int
    gpu: int
    seconds: float  # declared duration, or the hidden run time this script reports
    image: str
    declared: bool
    measured: bool = True  # False: a history run, only there to feed the median


def _declared(rng: random.Random, config: Config, at: float) -> TraceJob:
    return TraceJob(
        at=at,
        priority=rng.choices(PRIORITIES, PRIORITY_WEIGHTS)[0],
        gpu=rng.randint(1, 4),
        seconds=float(rng.randint(config.shortest, config.longest)),
        image="ghcr.io/acme/train:1.0",
        declared=True,
    )


def burst_trace(rng: random.Random, config: Config) -> list[TraceJob]:
    return [_declared(rng, config, 0.0) for _ in range(config.burst_jobs)]


def arrivals_trace(rng: random.Random, config: Config) -> list[TraceJob]:
    """Poisson arrivals (exponential gaps) over the window; the first at 0."""
    jobs, at = [], 0.0
    while at < config.arrival_window:
        jobs.append(_declared(rng, config, at))
        at += rng.expovariate(config.arrival_rate)
    return jobs


def history_trace(rng: random.Random, config: Config) -> tuple[list[TraceJob], list[TraceJob]]:
    """The runs that build each image's history (1 GPU each), then the measured burst; a
    run takes its image's typical time, +-25%."""

    def untimed(image: str, typical: float, measured: bool) -> TraceJob:
        return TraceJob(
            at=0.0,
            priority=rng.choices(PRIORITIES, PRIORITY_WEIGHTS)[0] if measured else 0,
            gpu=rng.randint(1, 4) if measured else 1,
            seconds=round(typical * rng.uniform(0.75, 1.25), 3),
            image=f"{image}:{rng.randint(1, 3)}.0",
            declared=False,
            measured=measured,
        )

    warm = [untimed(i, t, False) for i, t in config.images for _ in range(config.history_runs)]
    measured = [untimed(*rng.choice(config.images), True) for _ in range(config.history_jobs)]
    return warm, measured


# --- The server --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One `python main.py` on a SQLite file in `workdir`, its loop every `interval`."""

    def __init__(self, workdir: Path, interval: float) -> None:
        self.database = workdir / "forecast.db"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "HYPERVISOR_DATABASE_URL": f"sqlite:///{self.database}",
            "HYPERVISOR_PORT": str(self.port),
            "HYPERVISOR_RATE_LIMIT": "0",
            "HYPERVISOR_SECRET_KEY": secrets.token_urlsafe(32),
            "HYPERVISOR_SCHEDULER_INTERVAL_SECONDS": str(interval),
            "HYPERVISOR_LOG_LEVEL": "warning",
            "HYPERVISOR_BCRYPT_ROUNDS": "4",
        }
        self._log = (workdir / "server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py")],
            cwd=workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


def _login(url: str) -> dict[str, str]:
    with httpx.Client(base_url=url, timeout=30) as client:
        client.post("/user/register", json={"username": "bench", "password": PASSWORD})
        answer = client.post("/user/login", data={"username": "bench", "password": PASSWORD})
        answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


# --- One scenario on the live server -----------------------------------------------------


@dataclass
class Sighting:
    """An estimated start as first shown by a poll."""

    deployment_id: int
    phase: int  # preemption_count when seen: compared with start number phase + 1
    seen: float  # wall time the poll was sent
    estimate: float
    basis: str
    current: bool  # the forecast on show was made from the cluster's current state
    first_forecast: bool = False  # scenario 1: on show right after the burst


@dataclass
class Tally:
    """What the polls saw besides estimates."""

    polls: int = 0
    current_polls: int = 0
    unknown: int = 0  # queue entries shown with basis "unknown"
    not_yet: int = 0  # entries with no forecast yet (basis null)
    in_the_past: int = 0  # entries shown with an estimated start before the poll
    most_in_the_past: float = 0.0  # by how much, at most (seconds)
    reports: int = 0  # completions reported by this script
    report_lag: list[float] = field(default_factory=list)  # report sent - hidden end


@dataclass
class Timeline:
    """What happened in one cluster, read from its deployments' events after the run."""

    starts: dict[int, list[float]] = field(default_factory=dict)  # each start, in order
    completions: list[float] = field(default_factory=list)
    creations: set[float] = field(default_factory=set)
    changes: list[float] = field(default_factory=list)  # creations, starts, preemptions, ends


def _instant(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


class Replay:
    """A scenario's organization and cluster: it submits, polls, reports untimed ends, and
    at the end reads every deployment's starts."""

    def __init__(self, name: str, server: Server, headers: dict[str, str], config: Config):
        self.name, self.config = name, config
        self.org, self.cluster = f"{name}-org", f"{name}-gpu"
        self.client = httpx.Client(base_url=server.url, headers=headers, timeout=60)
        self.database = server.database
        self.jobs: dict[int, TraceJob] = {}
        self.sightings: list[Sighting] = []
        self.on_show: dict[int, Sighting] = {}  # deployment -> its estimate last on show
        self.ends: dict[int, tuple[float, float]] = {}  # running untimed: started, hidden end
        self.tally = Tally()
        self.history_reports = 0  # scenario 3: runs reported before the measured burst
        self.stop_at = time.monotonic() + config.limit_seconds
        self._db: sqlite3.Connection | None = None

    def setup(self) -> None:
        self.client.post("/organization/create", json={"name": self.org}).raise_for_status()
        body = {"name": self.cluster, "organization_name": self.org, "total_cpu": 64}
        body |= {"total_ram": 512, "total_gpu": self.config.gpus}
        self.client.post("/cluster/create", json=body).raise_for_status()

    def submit(self, job: TraceJob) -> None:
        body: dict[str, Any] = {
            "cluster_name": self.cluster,
            "organization_name": self.org,
            "docker_image": job.image,
            "required_cpu": 2 * job.gpu,
            "required_ram": 8 * job.gpu,
            "required_gpu": job.gpu,
            "priority": job.priority,
            "duration_seconds": int(job.seconds) if job.declared else None,
        }
        answer = self.client.post("/deployment/create", json=body)
        answer.raise_for_status()
        self.jobs[answer.json()["id"]] = job

    # Polling -----------------------------------------------------------------------------

    def _revision(self) -> tuple[int, int]:
        """The cluster's revision and that of its latest stored forecast, from the file."""
        if self._db is None:  # opened by the thread that polls
            self._db = sqlite3.connect(
                f"file:{self.database}?mode=ro", uri=True, timeout=30, check_same_thread=False
            )
        row = self._db.execute(
            "SELECT revision, forecast_revision FROM clusters WHERE name = ?", (self.cluster,)
        ).fetchone()
        return int(row[0]), int(row[1])

    def poll(self) -> tuple[list[Sighting], int, int]:
        """One look at the queue; returns the estimates on show (when made from the current
        state), how many wait and how many run (-1: not asked, while work waits and every
        job has a declared duration)."""
        before = self._revision()
        seen = time.time()
        queue = self.client.get(f"/deployment/queue/{self.cluster}").json()
        current = before[0] == before[1] and self._revision() == before
        self.tally.polls += 1
        self.tally.current_polls += current
        shown = []
        for entry in queue["queue"]:
            deployment, basis = entry["deployment_id"], entry["estimate_basis"]
            estimate = _instant(entry["estimated_start_at"])
            if basis is None:
                self.tally.not_yet += 1
            if basis == "unknown":
                self.tally.unknown += 1
            if estimate is None or basis is None:
                continue
            if estimate < seen:
                self.tally.in_the_past += 1
                self.tally.most_in_the_past = max(self.tally.most_in_the_past, seen - estimate)
            last = self.on_show.get(deployment)
            phase = entry["preemption_count"]
            if last is None or (last.estimate, last.basis, last.phase) != (estimate, basis, phase):
                last = Sighting(deployment, phase, seen, estimate, basis, current)
                self.sightings.append(last)
                self.on_show[deployment] = last
            shown.append(last)
        if queue["total"] and all(job.declared for job in self.jobs.values()):
            return (shown if current else []), queue["total"], -1  # running: not needed yet
        running = self.client.get(
            f"/deployment/list/{self.cluster}", params={"status": "running"}
        ).json()["deployments"]
        for row in running:
            job = self.jobs.get(row["id"])
            started = _instant(row["started_at"])
            if job is None or job.declared or started is None:
                continue
            if self.ends.get(row["id"], (None,))[0] != started:  # a new run: its own end
                self.ends[row["id"]] = (started, started + job.seconds)
        return (shown if current else []), queue["total"], len(running)

    def report_due(self) -> None:
        """Report completed every untimed run whose hidden run time is up."""
        now = time.time()
        for deployment, (_, end) in list(self.ends.items()):
            if end > now:
                continue
            answer = self.client.post(
                f"/deployment/{deployment}/status", json={"status": "completed"}
            )
            del self.ends[deployment]
            if answer.status_code == 200:
                self.tally.reports += 1
                self.tally.report_lag.append(now - end)
            elif answer.status_code != 409:  # 409: preempted meanwhile, a new run follows
                answer.raise_for_status()

    def drive(self, arrivals: Sequence[TraceJob] = (), first_forecast: bool = False) -> None:
        """Submit `arrivals` at their times, poll and report until every job has finished
        (or the scenario's time is up). With `first_forecast`, mark the estimates on show at
        the first poll that shows a forecast of the current state."""
        began = time.time()
        waiting = sorted(arrivals, key=lambda job: job.at)
        while time.monotonic() < self.stop_at:
            cycle = time.monotonic()
            while waiting and time.time() - began >= waiting[0].at:
                self.submit(waiting.pop(0))
            shown, pending, running = self.poll()
            self.report_due()
            if first_forecast and shown:
                for sighting in shown:
                    sighting.first_forecast = True
                first_forecast = False
            if not waiting and pending == 0 and running == 0:
                return
            pause = self.config.poll - (time.monotonic() - cycle)
            if self.ends:
                pause = min(pause, min(end for _, end in self.ends.values()) - time.time())
            time.sleep(max(0.0, pause))
        log.warning("%s: time is up with work left", self.name)

    def timeline(self) -> Timeline:
        """Every deployment's starts and the cluster's changes, from the events."""
        timeline = Timeline()
        for deployment in self.jobs:
            for event in self.client.get(f"/deployment/{deployment}").json()["events"]:
                at = _instant(event["at"])
                assert at is not None
                kind = event["type"]
                if kind == "started":
                    timeline.starts.setdefault(deployment, []).append(at)
                elif kind == "completed":
                    timeline.completions.append(at)
                elif kind == "created":
                    timeline.creations.add(at)
                if kind in ("created", "started", "preempted", "completed"):
                    timeline.changes.append(at)
        timeline.completions.sort()
        timeline.changes.sort()
        return timeline

    def close(self) -> None:
        self.client.close()
        if self._db is not None:
            self._db.close()


# --- The scenarios -----------------------------------------------------------------------


def run_burst(replay: Replay, rng: random.Random) -> None:
    for job in burst_trace(rng, replay.config):
        replay.submit(job)
    replay.drive(first_forecast=True)


def run_arrivals(replay: Replay, rng: random.Random) -> None:
    replay.drive(arrivals_trace(rng, replay.config))


def run_history(replay: Replay, rng: random.Random) -> None:
    warm, measured = history_trace(rng, replay.config)
    for job in warm:
        replay.submit(job)
    replay.drive()
    replay.sightings.clear()  # the history runs had no estimate to check
    replay.history_reports, replay.tally = replay.tally.reports, Tally()
    for job in measured:
        replay.submit(job)
    replay.drive()


RUNNERS = {"declared-burst": run_burst, "declared-arrivals": run_arrivals, "history": run_history}


# --- From sightings to errors ------------------------------------------------------------


def records(replay: Replay, timeline: Timeline, origin: float) -> list[dict[str, Any]]:
    """Each measured sighting with its actual start (the first one after it), its error and
    lead, and the inputs of scenario 1's bound; times in seconds from `origin`.

    `previous_start` marks a sighting right after a preemption that shows the run just
    ended's start as the estimated start (the last forecast's value for it while it ran):
    not an estimate of anything to come, so the error statistics leave it out."""
    start_instants = sorted({at for runs in timeline.starts.values() for at in runs})
    creations = sorted(timeline.creations)
    rows = []
    for sighting in replay.sightings:
        job = replay.jobs[sighting.deployment_id]
        if not job.measured:
            continue
        runs = timeline.starts.get(sighting.deployment_id, [])
        actual = runs[sighting.phase] if sighting.phase < len(runs) else None
        previous = runs[sighting.phase - 1] if 0 < sighting.phase <= len(runs) else None
        changed = [at for at in timeline.changes if at <= sighting.seen]
        row: dict[str, Any] = {
            "deployment_id": sighting.deployment_id,
            "priority": job.priority,
            "gpu": job.gpu,
            "phase": sighting.phase,
            "basis": sighting.basis,
            "current": sighting.current,
            "first_forecast": sighting.first_forecast,
            "previous_start": previous is not None and abs(sighting.estimate - previous) < 0.002,
            "seen": round(sighting.seen - origin, 3),
            "estimated_start": round(sighting.estimate - origin, 3),
            "actual_start": None,
            "error_seconds": None,
            "lead_seconds": None,
            "age_bound_seconds": round(sighting.seen - changed[-1], 3) if changed else None,
            "handoffs": None,
            "arrivals_before_start": None,
        }
        if actual is not None:
            row["actual_start"] = round(actual - origin, 3)
            row["error_seconds"] = round(actual - sighting.estimate, 3)
            row["lead_seconds"] = round(actual - sighting.seen, 3)
            row["handoffs"] = sum(1 for at in start_instants if sighting.seen < at <= actual)
            row["arrivals_before_start"] = sum(1 for at in creations if sighting.seen < at < actual)
        rows.append(row)
    return rows


def handoff_lags(timeline: Timeline) -> list[float]:
    """For each start that a loop tick made after an end: the seconds since that end (the
    loop's pick-up delay). Starts made by a create, or by a reported end, are left out
    (they happen at the request's own instant)."""
    lags = []
    for runs in timeline.starts.values():
        for at in runs:
            if at in timeline.creations:
                continue
            before = [end for end in timeline.completions if end <= at]
            if before:
                lags.append(at - before[-1])
    return lags


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def error_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [row["error_seconds"] for row in rows]
    absolute = [abs(e) for e in errors]
    return {
        "estimates": len(rows),
        "deployments": len({row["deployment_id"] for row in rows}),
        "p50_abs_error_seconds": _percentile(absolute, 50),
        "p90_abs_error_seconds": _percentile(absolute, 90),
        "p99_abs_error_seconds": _percentile(absolute, 99),
        "max_abs_error_seconds": round(max(absolute), 3) if absolute else None,
        "mean_error_seconds": round(float(np.mean(errors)), 3) if errors else None,
        "late_share": round(sum(e > 0 for e in errors) / len(errors), 3) if errors else None,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Error statistics over the matched estimates of forecasts made from the state on show
    (`current`), whole and by class, lead and later submissions; and apart, those a poll
    showed before the forecast had caught up with a change (`stale`)."""
    matched = [r for r in rows if r["actual_start"] is not None]
    counted = [r for r in matched if r["current"] and not r["previous_start"]]
    return {
        "all": error_stats(counted),
        "unmatched": len(rows) - len(matched),
        "stale": error_stats([r for r in matched if r not in counted]),
        "previous_start_shown": sum(1 for row in rows if row["previous_start"]),
        "by_priority": {
            str(p): error_stats([r for r in counted if r["priority"] == p]) for p in PRIORITIES
        },
        "by_lead": {
            name: error_stats([r for r in counted if low <= r["lead_seconds"] < high])
            for name, low, high in BUCKETS
        },
        "by_arrivals": {
            "none before the start": error_stats(
                [r for r in counted if r["arrivals_before_start"] == 0]
            ),
            "some before the start": error_stats(
                [r for r in counted if r["arrivals_before_start"] > 0]
            ),
        },
        "bases": {
            basis: sum(1 for row in rows if row["basis"] == basis)
            for basis in sorted({row["basis"] for row in rows})
        },
    }


def run_times(replay: Replay) -> dict[str, Any]:
    """Scenario 3's inputs per image: the median of its history runs (what the forecast
    first assumes) against the hidden run times of the measured jobs."""
    images: dict[str, Any] = {}
    for job in replay.jobs.values():
        image = images.setdefault(job.image.split(":", 1)[0], {"history": [], "measured": []})
        image["history" if not job.measured else "measured"].append(job.seconds)
    for image in images.values():
        median = float(np.median(image["history"]))
        image["history_median_seconds"] = round(median, 2)
        image["mean_abs_deviation_seconds"] = (
            round(float(np.mean([abs(run - median) for run in image["measured"]])), 2)
            if image["measured"]
            else None
        )
    return images


def burst_bound(rows: list[dict[str, Any]], interval: float, slowest: float) -> dict[str, Any]:
    """Scenario 1's check over the estimates of the first forecast after the burst; marks
    each of those rows with its bounds."""
    first = [row for row in rows if row["first_forecast"] and row["actual_start"] is not None]
    within = within_plain = 0
    for row in first:
        age = row["age_bound_seconds"] or 0.0
        row["bound_seconds"] = round(row["handoffs"] * slowest + age, 3)
        row["plain_bound_seconds"] = round(interval + age, 3)
        within += abs(row["error_seconds"]) <= row["bound_seconds"]
        within_plain += abs(row["error_seconds"]) <= row["plain_bound_seconds"]
    return {
        "what": "estimates of the first forecast after the burst: |error| <= handoffs x "
        "slowest pick-up + age; plain: |error| <= interval + age",
        "interval_seconds": interval,
        "slowest_pickup_seconds": round(slowest, 3),
        "estimates": len(first),
        "within_bound": within,
        "within_plain_bound": within_plain,
        "max_handoffs": max((row["handoffs"] for row in first), default=0),
        "max_age_seconds": max((row["age_bound_seconds"] or 0.0 for row in first), default=0.0),
        **{key: value for key, value in error_stats(first).items() if key != "estimates"},
    }


# --- The server's own view ---------------------------------------------------------------


def _metric_sums(url: str) -> dict[str, float]:
    """Sums and counts of the pass and forecast histograms, from /metrics."""
    names = ("forecast_duration_seconds", "scheduling_pass_duration_seconds")
    sums = {f"hypervisor_{name}_{part}": 0.0 for name in names for part in ("sum", "count")}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


def _mean_ms(sums: dict[str, float], name: str) -> float | None:
    count = sums[f"hypervisor_{name}_count"]
    return round(1000 * sums[f"hypervisor_{name}_sum"] / count, 2) if count else None


# --- Run and report ----------------------------------------------------------------------


def run(config: Config, seed: int) -> dict[str, Any]:
    """Every scenario's copies at once on one server; the raw rows and their summaries."""
    began = time.time()
    keys = [(name, copy) for name in SCENARIOS for copy in range(config.copies)]
    with tempfile.TemporaryDirectory() as workdir:
        server = Server(Path(workdir), config.interval)
        replays: dict[tuple[str, int], Replay] = {}
        try:
            headers = _login(server.url)
            for name, copy in keys:
                replays[name, copy] = Replay(f"{name}-{copy + 1}", server, headers, config)
                replays[name, copy].setup()
            origin = time.time()

            def scenario(key: tuple[str, int]) -> None:
                name, copy = key
                RUNNERS[name](replays[key], random.Random(f"{seed}-{name}-{copy}"))
                log.info("%s-%s: done after %.0f s", name, copy + 1, time.time() - origin)

            with ThreadPoolExecutor(len(keys)) as pool:
                for done in [pool.submit(scenario, key) for key in keys]:
                    done.result()
            sums = _metric_sums(server.url)
            timelines = {key: replay.timeline() for key, replay in replays.items()}
        finally:
            for replay in replays.values():
                replay.close()
            server.stop()
    scenarios: dict[str, Any] = {}
    lags = {key: handoff_lags(timeline) for key, timeline in timelines.items()}
    for name in SCENARIOS:
        mine = [key for key in keys if key[0] == name]
        rows = [
            row | {"copy": key[1] + 1}
            for key in mine
            for row in records(replays[key], timelines[key], origin)
        ]
        tallies = [asdict(replays[key].tally) for key in mine]
        report_lag = [lag for tally in tallies for lag in tally.pop("report_lag")]
        polls = {column: sum(tally[column] for tally in tallies) for column in tallies[0]}
        polls["most_in_the_past"] = max(tally["most_in_the_past"] for tally in tallies)
        pickup = [lag for key in mine for lag in lags[key]]
        scenarios[name] = {
            "copies": len(mine),
            "jobs": sum(job.measured for key in mine for job in replays[key].jobs.values()),
            "history_runs_reported": sum(replays[key].history_reports for key in mine),
            "polls": polls,
            "report_lag_p50_seconds": _percentile(report_lag, 50),
            "report_lag_max_seconds": round(max(report_lag, default=0.0), 3),
            "pickup_lag_p50_seconds": _percentile(pickup, 50),
            "pickup_lag_max_seconds": round(max(pickup, default=0.0), 3),
            "summary": summarize(rows),
            "estimates": rows,
        }
    scenarios["history"]["run_times"] = [
        run_times(replays[key]) for key in keys if key[0] == "history"
    ]
    slowest = max((max(values, default=0.0) for values in lags.values()), default=0.0)
    burst = scenarios["declared-burst"]
    burst["bound"] = burst_bound(burst["estimates"], config.interval, slowest)
    return {
        "what": "estimated_start_at against the first start after it, live server, SQLite",
        "config": asdict(config) | {"seed": seed},
        "run_seconds": round(time.time() - began, 1),
        "server": {
            "forecasts": int(sums["hypervisor_forecast_duration_seconds_count"]),
            "forecast_mean_ms": _mean_ms(sums, "forecast_duration_seconds"),
            "passes": int(sums["hypervisor_scheduling_pass_duration_seconds_count"]),
            "pass_mean_ms": _mean_ms(sums, "scheduling_pass_duration_seconds"),
        },
        "scenarios": scenarios,
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(result: dict[str, Any], cost: dict[str, Any] | None, command: str) -> str:
    config, scenarios = result["config"], result["scenarios"]
    lines = [
        "# Forecast accuracy",
        "",
        f"`{command}`: {result['run_seconds']:.0f} s on this machine; seed {config['seed']}, "
        f"{config['copies']} clusters of {config['gpus']} GPUs per scenario (each its own "
        f"trace), all at once; loop interval {config['interval']} s, queue polled "
        f"every {config['poll']} s. Error = actual start - estimated start (positive: later "
        "than said); an estimate is compared with the first start after it (with preemption "
        "a deployment may start several times); lead = actual start - when it was seen.",
        "",
        "Estimates of current forecasts; stale: shown before the forecast caught up with a "
        "change (p50 abs error in brackets).",
        "",
        "| scenario | jobs | estimates | p50 abs | p90 abs | p99 abs | max abs | mean | "
        "late | stale | basis |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, scenario in scenarios.items():
        s, stale = scenario["summary"]["all"], scenario["summary"]["stale"]
        bases = ", ".join(f"{k} {v}" for k, v in scenario["summary"]["bases"].items())
        lines.append(
            f"| {name} | {scenario['jobs']} | {s['estimates']} | "
            f"{_seconds(s['p50_abs_error_seconds'])} | {_seconds(s['p90_abs_error_seconds'])} | "
            f"{_seconds(s['p99_abs_error_seconds'])} | {_seconds(s['max_abs_error_seconds'])} | "
            f"{_seconds(s['mean_error_seconds'])} | {s['late_share'] or 0:.0%} | "
            f"{stale['estimates']} ({_seconds(stale['p50_abs_error_seconds'])}) | {bases} |"
        )
    bound = scenarios["declared-burst"]["bound"]
    lines += [
        "",
        "## 1. Declared durations, nothing submitted after the estimate",
        "",
        f"The first forecast after the burst gave {bound['estimates']} estimated starts. "
        f"Max |error| {_seconds(bound['max_abs_error_seconds'])} s, p99 "
        f"{_seconds(bound['p99_abs_error_seconds'])} s, p50 "
        f"{_seconds(bound['p50_abs_error_seconds'])} s. Within one loop interval plus the "
        f"forecast's age (at most {bound['max_age_seconds']:.2f} s here): "
        f"{bound['within_plain_bound']} of {bound['estimates']}. Within one pick-up delay "
        f"per hand-off (slowest pick-up seen: {bound['slowest_pickup_seconds']:.2f} s; up to "
        f"{bound['max_handoffs']} hand-offs) plus the age: {bound['within_bound']} of "
        f"{bound['estimates']}.",
        "",
        "| deployment | priority | gpu | hand-offs before its start | estimated start (s) | "
        "actual (s) | error (s) | bound (s) | plain bound (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    first = [r for r in scenarios["declared-burst"]["estimates"] if "bound_seconds" in r]
    for row in sorted(first, key=lambda r: r["handoffs"]):
        lines.append(
            f"| {row['deployment_id']} | {row['priority']} | {row['gpu']} | {row['handoffs']} | "
            f"{row['estimated_start']:.2f} | {row['actual_start']:.2f} | "
            f"{row['error_seconds']:.2f} | {row['bound_seconds']:.2f} | "
            f"{row['plain_bound_seconds']:.2f} |"
        )
    lines.append("")
    deviations = [
        image["mean_abs_deviation_seconds"]
        for copy in scenarios["history"]["run_times"]
        for image in copy.values()
        if image["mean_abs_deviation_seconds"] is not None
    ]
    lines += [
        "## 3. History-based durations",
        "",
        "Run times hidden from the service are each image's typical time +-25%; the median "
        "of its 3 history runs is what the forecast assumes until more complete. A measured "
        "run differs from that median by "
        f"{min(deviations, default=0):.1f}-{max(deviations, default=0):.1f} s on average "
        "(per image), and a start waits on a few such runs.",
        "",
    ]
    groups = (
        ("priority", "by_priority"),
        ("lead time", "by_lead"),
        ("submissions between the estimate and the start", "by_arrivals"),
    )
    for title, key in groups:
        lines += [
            f"## Error by {title} (estimates of current forecasts)",
            "",
            f"| scenario | {title} | estimates | p50 abs | p90 abs | max abs | mean |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, scenario in scenarios.items():
            for group, s in scenario["summary"][key].items():
                lines.append(
                    f"| {name} | {group} | {s['estimates']} | "
                    f"{_seconds(s['p50_abs_error_seconds'])} | "
                    f"{_seconds(s['p90_abs_error_seconds'])} | "
                    f"{_seconds(s['max_abs_error_seconds'])} | "
                    f"{_seconds(s['mean_error_seconds'])} |"
                )
        lines.append("")
    lines += [
        "## What the polls saw",
        "",
        "Per scenario: polls, and how many showed a forecast of the current state; queue "
        "entries shown with basis unknown, with no forecast yet, with an estimated start "
        "already past (and by how much at most); estimates left out because they showed the "
        "start of the run a preemption had just ended; the loop's pick-up delay (a start "
        "after an end, made by a tick); completions this script reported and how late.",
        "",
        "| scenario | polls | current | unknown | not yet | in the past (max s) | "
        "previous start shown | pick-up p50 / max | reports | report lag p50 / max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, scenario in scenarios.items():
        polls = scenario["polls"]
        lines.append(
            f"| {name} | {polls['polls']} | {polls['current_polls']} | {polls['unknown']} | "
            f"{polls['not_yet']} | {polls['in_the_past']} ({polls['most_in_the_past']:.1f}) | "
            f"{scenario['summary']['previous_start_shown']} | "
            f"{_seconds(scenario['pickup_lag_p50_seconds'])} / "
            f"{_seconds(scenario['pickup_lag_max_seconds'])} | {polls['reports']} | "
            f"{_seconds(scenario['report_lag_p50_seconds'])} / "
            f"{_seconds(scenario['report_lag_max_seconds'])} |"
        )
    server = result["server"]
    lines += [
        "",
        f"The server ran {server['forecasts']} forecasts (mean {server['forecast_mean_ms']} ms "
        f"each, read + simulate + write) and {server['passes']} passes (mean "
        f"{server['pass_mean_ms']} ms).",
        "",
        "## The forecast's cost per cluster (bench/results/forecast_cost.json)",
        "",
    ]
    if cost is None:
        lines.append("Not measured yet: run `.venv/bin/python bench/forecast_cost.py`.")
    else:
        lines += [
            f"{cost['what']}; Python {cost['python']}, {cost['rounds']} rounds, budget "
            f"{cost['budget_seconds']} s.",
            "",
            "| running | pending | median s | max s | run_pass calls | settled | unknown |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in cost["results"]:
            lines.append(
                f"| {row['running']} | {row['pending']} | {row['median_seconds']:.3f} | "
                f"{row['max_seconds']:.3f} | {row['run_pass_calls']} | {row['settled']} | "
                f"{row['unknown']} |"
            )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (scatter, bars) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = list(result["scenarios"])
    for name in names:
        rows = [
            r
            for r in result["scenarios"][name]["estimates"]
            if r["actual_start"] is not None and r["current"] and not r["previous_start"]
        ]
        scatter.scatter(
            [r["lead_seconds"] for r in rows],
            [r["error_seconds"] for r in rows],
            s=10,
            alpha=0.6,
            label=name,
        )
    scatter.axhline(0, color="grey", linewidth=0.8)
    scatter.set_xlabel("lead: actual start - when the estimate was seen (s)")
    scatter.set_ylabel("error: actual - estimated start (s)")
    scatter.set_title("Estimates of current forecasts")
    scatter.legend()
    width = 0.8 / len(names)
    labels = [name for name, _, _ in BUCKETS]
    for index, name in enumerate(names):
        by_lead = result["scenarios"][name]["summary"]["by_lead"]
        values = [by_lead[label]["p50_abs_error_seconds"] or 0.0 for label in labels]
        high = [by_lead[label]["p90_abs_error_seconds"] or 0.0 for label in labels]
        where = [x + (index - (len(names) - 1) / 2) * width for x in range(len(labels))]
        bars.bar(where, values, width, label=f"{name} p50")
        bars.scatter(where, high, marker="_", s=200, color="black")
    bars.set_xticks(range(len(labels)), labels)
    bars.set_xlabel("lead time bucket (black: p90)")
    bars.set_ylabel("absolute error (s)")
    bars.set_title("Absolute error by lead time")
    bars.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="a few seconds, for the tests")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    config = SMOKE if args.smoke else FULL
    result = run(config, args.seed)
    cost_file = ROOT / "bench" / "results" / "forecast_cost.json"
    cost = json.loads(cost_file.read_text()) if cost_file.exists() else None
    result["forecast_cost"] = cost
    command = ".venv/bin/python bench/forecast.py" + (" --smoke" if args.smoke else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "forecast.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result, cost, command)
    (args.out / "forecast.md").write_text(text)
    plot(result, args.out / "forecast_error_vs_lead.png")
    sys.stdout.write(text)
    return result


if __name__ == "__main__":
    main()
