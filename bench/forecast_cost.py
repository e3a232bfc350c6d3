"""Cost of `forecast.forecast` on one large cluster (SPEC section 5, "Forecast").

    .venv/bin/python bench/forecast_cost.py                 # 1k and 10k pending, 1k running
    .venv/bin/python bench/forecast_cost.py --rounds 3 --out /tmp/f

Seeded random clusters: 1,000 running deployments filling a GPU cluster, and a queue of
1,000 or 10,000 pending ones (priorities spread over the range with a few popular levels,
sizes from a fraction of a node to a few nodes, 90% with a declared duration, 5% with an
estimate from history, 5% with neither; one in ten waits for an earlier deployment). Each
state is first settled with one whole `scheduler.run_pass` (as the service leaves it after
a pass), then forecast with the default horizon and event cap, the median of `--rounds`
rounds timed on one core. Prints a table and writes JSON to `--out` (default
bench/results/forecast_cost.json).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import forecast  # noqa: E402
from scheduler import DEFAULT_POLICY, Cluster, Job, Resources, run_pass  # noqa: E402

NOW = 1_700_000_000.0
BUDGET_SECONDS = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--running", type=int, default=1_000)
    parser.add_argument("--pending", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    results = [measure(args.running, pending, args.seed, args.rounds) for pending in args.pending]
    report = {
        "what": "forecast.forecast on one cluster, median of rounds, one core",
        "python": sys.version.split()[0],
        "rounds": args.rounds,
        "budget_seconds": BUDGET_SECONDS,
        "horizon_seconds": forecast.DEFAULT_HORIZON_SECONDS,
        "max_events": forecast.DEFAULT_MAX_EVENTS,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "forecast_cost.json").write_text(json.dumps(report, indent=2) + "\n")
    columns = ("running", 8), ("pending", 8), ("median s", 9), ("max s", 7), ("settled", 8)
    sys.stdout.write(" ".join(f"{name:>{width}}" for name, width in columns) + "  unknown\n")
    for row in results:
        sys.stdout.write(
            f"{row['running']:>8} {row['pending']:>8} {row['median_seconds']:>9.3f} "
            f"{row['max_seconds']:>7.3f} {row['settled']:>8} {row['unknown']:>8}\n"
        )
        sys.stdout.write(
            f"    {row['pending_with_a_start']} pending get a start, up to "
            f"{row['latest_start_hours_ahead']} h ahead; {row['run_pass_calls']} calls of "
            f"run_pass take {row['run_pass_seconds']:.3f} s; "
            f"unknown because: {row['unknown_because']}\n"
        )
    over = [row for row in results if row["median_seconds"] > BUDGET_SECONDS]
    return 1 if over else 0


def measure(running_count: int, pending_count: int, seed: int, rounds: int) -> dict[str, Any]:
    """Time `rounds` forecasts of one seeded cluster."""
    cluster, running, pending, history, images = random_cluster(running_count, pending_count, seed)
    timings: list[float] = []
    estimates: dict[int, forecast.Estimate] = {}
    for _ in range(rounds):
        started = time.process_time()
        estimates = forecast.forecast(
            cluster, running, pending, NOW, DEFAULT_POLICY, history=history, images=images
        )
        timings.append(time.process_time() - started)
    in_pass = _time_in_run_pass(cluster, running, pending, history)
    bases = Counter(estimate.basis for estimate in estimates.values())
    because = Counter(
        _kind(estimate.reason) for estimate in estimates.values() if estimate.reason is not None
    )
    pending_starts = [
        estimates[entry.job.id].start_at
        for entry in pending
        if estimates[entry.job.id].start_at is not None
    ]
    return {
        "running": len(running),
        "pending": len(pending),
        "median_seconds": statistics.median(timings),
        "max_seconds": max(timings),
        "timings_seconds": timings,
        # One more round, with the calls of `scheduler.run_pass` counted and timed.
        "run_pass_calls": in_pass["calls"],
        "run_pass_seconds": in_pass["seconds"],
        "settled": bases["declared"] + bases["history"],
        "unknown": bases["unknown"],
        "bases": dict(bases),
        "unknown_because": dict(because),
        "pending_with_a_start": len(pending_starts),
        "latest_start_hours_ahead": (
            round((max(pending_starts) - NOW) / 3600, 2) if pending_starts else None
        ),
    }


def _time_in_run_pass(
    cluster: Cluster, running: list[Job], pending: list[forecast.Waiting], history: dict[int, float]
) -> dict[str, float]:
    """How often, and how long, one forecast spends inside `scheduler.run_pass`."""
    real = forecast.run_pass
    spent = {"calls": 0, "seconds": 0.0}

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            spent["calls"] += 1
            spent["seconds"] += time.process_time() - started

    forecast.run_pass = timed  # type: ignore[assignment]
    try:
        forecast.forecast(cluster, running, pending, NOW, DEFAULT_POLICY, history=history)
    finally:
        forecast.run_pass = real
    return spent


def _kind(reason: str) -> str:
    for kind in ("later than", "no duration", "waits for room", "held back", "dependency"):
        if kind in reason:
            return kind
    return "other"


def random_cluster(
    running_count: int, pending_count: int, seed: int
) -> tuple[Cluster, list[Job], list[forecast.Waiting], dict[int, float], dict[int, str]]:
    """A full GPU cluster and its queue, settled by one whole pass at NOW."""
    rng = random.Random(seed)
    images = [f"ghcr.io/team{n}/model:{v}" for n in range(40) for v in (1, 2)]
    image_of: dict[int, str] = {}
    history: dict[int, float] = {}
    ids = iter(range(1, running_count + pending_count + 1))

    def job(started_at: float | None) -> Job:
        job_id = next(ids)
        image_of[job_id] = rng.choice(images)
        kind = rng.random()
        ran = 0 if started_at is None else int(NOW - started_at) + 1  # not due yet
        duration: int | None = ran + rng.randint(60, 8 * 3600)
        if kind > 0.90:
            duration = None
            if kind < 0.95:
                history[job_id] = float(rng.randint(600, 4 * 3600))
        submitted = NOW - rng.uniform(0, 86_400)
        return Job(
            id=job_id,
            priority=rng.choice([rng.randint(0, 1000), 0, 100, 500, 900]),
            request=Resources(
                cpu=rng.randint(1, 32), ram=rng.randint(4, 256), gpu=rng.choice([0, 1, 1, 2, 4, 8])
            ),
            submitted_at=submitted,
            waiting_since=max(submitted, NOW - rng.uniform(0, 3600)),
            started_at=started_at,
            duration_seconds=duration,
            saved_seconds=0.0,
        )

    running = [job(NOW - rng.uniform(0, 3600)) for _ in range(running_count)]
    held = Resources(
        sum(j.request.cpu for j in running),
        sum(j.request.ram for j in running),
        sum(j.request.gpu for j in running),
    )
    cluster = Cluster(total=Resources(held.cpu + 16, held.ram + 64, held.gpu + 4))
    queued = [job(None) for _ in range(pending_count)]
    depends: dict[int, frozenset[int]] = {}
    for entry in queued:
        if rng.random() < 0.1:
            depends[entry.id] = frozenset({rng.randint(1, entry.id - 1)})

    # Settle it as a pass would: the eligible queue swept once at NOW.
    plan = run_pass(
        cluster, running, [j for j in queued if j.id not in depends], NOW, DEFAULT_POLICY
    )
    started, completed = set(plan.started), set(plan.completed)
    requeued = {j.id: j for j in plan.pending}
    victims = [j for j in running if j.id in plan.preempted]
    pending = [
        forecast.Waiting(requeued.get(j.id, j), depends.get(j.id, frozenset()) - completed)
        for j in [*queued, *victims]
        if j.id not in started
    ]
    return cluster, plan.running, pending, history, image_of


if __name__ == "__main__":
    raise SystemExit(main())
