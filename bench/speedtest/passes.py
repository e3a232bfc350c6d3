"""Part 0: `scheduler.run_pass` alone, 1,000 running and 100 ... 100,000 pending."""

from __future__ import annotations

import logging
import random
import statistics
import time
from typing import Any

import scheduler

log = logging.getLogger(__name__)


def _random_jobs(
    count: int, rng: random.Random, running: bool, first_id: int
) -> list[scheduler.Job]:
    return [
        scheduler.Job(
            id=first_id + index,
            priority=rng.randint(0, 9) if not running else rng.randint(5, 9),
            request=scheduler.Resources(rng.randint(1, 8), rng.randint(1, 32), rng.randint(0, 2)),
            submitted_at=1_000.0 + index,
            waiting_since=1_000.0 + index,
            started_at=900.0 if running else None,
        )
        for index in range(count)
    ]


def time_passes(depths: list[int], repeats: int) -> list[dict[str, Any]]:
    """Median run_pass time with 1,000 running and each number of pending jobs, for two
    queues: `churn`, a random queue whose higher priorities preempt most running work in
    one pass (the worst case), and `steady`, the queue a previous pass left (what a pass
    meets in service: nothing fits, nothing can preempt)."""
    rng = random.Random(1)
    running = _random_jobs(1000, rng, running=True, first_id=1)
    used = scheduler.Resources(
        sum(j.request.cpu for j in running),
        sum(j.request.ram for j in running),
        sum(j.request.gpu for j in running),
    )
    cluster = scheduler.Cluster(total=used + scheduler.Resources(2, 4, 0))
    results = []
    for depth in depths:
        pending = _random_jobs(depth, rng, running=False, first_id=10_000)
        settled = scheduler.run_pass(cluster, running, pending, now=2_000.0)
        row: dict[str, Any] = {"running": 1000, "pending": depth}
        for label, (run, wait) in {
            "churn": (running, pending),
            "steady": (settled.running, settled.pending),
        }.items():
            samples = []
            for _ in range(repeats):
                started = time.perf_counter()
                scheduler.run_pass(cluster, run, wait, now=2_000.0)
                samples.append(time.perf_counter() - started)
            row[f"{label}_ms"] = round(statistics.median(samples) * 1000, 2)
        row["preempted_in_churn"] = len(settled.preempted)
        results.append(row)
        log.info(
            "pass 1000 running + %s pending: steady %.1f ms, churn %.1f ms (%s preemptions)",
            depth,
            row["steady_ms"],
            row["churn_ms"],
            row["preempted_in_churn"],
        )
    return results
