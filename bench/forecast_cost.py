"""Cost of `forecast.forecast` on one large cluster (SPEC section 5, "Forecast"), and of a
preview that waits (SPEC section 4, `POST /deployment/preview`).

    .venv/bin/python bench/forecast_cost.py                 # 1k and 10k pending, 1k running
    .venv/bin/python bench/forecast_cost.py --rounds 3 --out /tmp/f
    .venv/bin/python bench/forecast_cost.py --database-url postgresql+psycopg://.../empty_db

Seeded random clusters: 1,000 running deployments filling a GPU cluster, and a queue of
1,000 or 10,000 pending ones (priorities spread over the range with a few popular levels,
sizes from a fraction of a node to a few nodes, 90% with a declared duration, 5% with an
estimate from history, 5% with neither; one in ten waits for an earlier deployment). Each
state is first settled with one whole `scheduler.run_pass` (as the service leaves it after
a pass), then forecast with the default horizon and event cap, the median of `--rounds`
rounds timed on one core.

Preview: the same clusters written to a fresh database (SQLite in a temporary file, or the
PostgreSQL database `--database-url` names, emptied first; a completed run history for half
of the images, so about half of the jobs without a duration get an estimate from it), then
`POST /deployment/preview` of deployments that would wait, through the app in process: one
at the back of the queue (priority 0, 8 gpu: its start is the last the simulation reaches,
or past the event cap) and one in the middle (priority 100, 8 gpu). Per request, the
median wall time of `--rounds` rounds, alternating with the same preview with the forecast
skipped ("without": what a waiting preview cost before it gave a start), the part of it
spent in the forecast (wall), and of that, in CPU seconds of the process, loading the
cluster and simulating it (`forecast.forecast_start`); also the same `forecast_start` on
the in-memory cluster alone ("alone"). `--no-preview` skips this part.

Prints a table and writes JSON to `--out` (default bench/results/): forecast_cost.json, or
forecast_cost_postgresql.json with a PostgreSQL `--database-url`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HYPERVISOR_BCRYPT_ROUNDS", "4")  # before the app reads its settings

from sqlalchemy import insert, select, text  # noqa: E402

import forecast  # noqa: E402
from models import Base, Deployment, DeploymentDependency, User  # noqa: E402
from scheduler import DEFAULT_POLICY, Cluster, Job, Resources, ends_at_of, run_pass  # noqa: E402

NOW = 1_700_000_000.0
BUDGET_SECONDS = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--running", type=int, default=1_000)
    parser.add_argument("--pending", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--database-url", default=None, help="an empty database (default: SQLite)")
    parser.add_argument("--no-preview", action="store_true")
    args = parser.parse_args(argv)

    results = [measure(args.running, pending, args.seed, args.rounds) for pending in args.pending]
    previews = (
        []
        if args.no_preview
        else [
            measure_preview(args.running, pending, args.seed, args.rounds, args.database_url)
            for pending in args.pending
        ]
    )
    report = {
        "what": "forecast.forecast on one cluster, median of rounds, one core",
        "python": sys.version.split()[0],
        "rounds": args.rounds,
        "budget_seconds": BUDGET_SECONDS,
        "horizon_seconds": forecast.DEFAULT_HORIZON_SECONDS,
        "max_events": forecast.DEFAULT_MAX_EVENTS,
        "results": results,
        "preview": {
            "what": "POST /deployment/preview of a deployment that would wait, in process, "
            "median wall seconds of rounds; load and simulate: its parts in the forecast",
            "database": "sqlite" if args.database_url is None else _dialect(args.database_url),
            "results": previews,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    # The SQLite run is the one bench/forecast.py quotes; another database gets its own file.
    database = report["preview"]["database"]  # type: ignore[index]
    name = "forecast_cost.json" if database == "sqlite" else f"forecast_cost_{database}.json"
    (args.out / name).write_text(json.dumps(report, indent=2) + "\n")
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
    if previews:
        sys.stdout.write(
            f"\npreview of a deployment that would wait ({report['preview']['database']}), "
            "median of rounds, seconds:\n"
            "running  pending  candidate  request  without  forecast (load  simulate  cpu)"
            "  alone  position  basis      start ahead\n"
        )
        for row in previews:
            for name, one in row["candidates"].items():
                ahead = one["start_hours_ahead"]
                sys.stdout.write(
                    f"{row['running']:>7} {row['pending']:>8}  {name:<9} "
                    f"{one['request_seconds']:>7.3f} {one['without_forecast_seconds']:>8.3f} "
                    f"{one['forecast_wall_seconds']:>9.3f}  {one['load_seconds']:>5.3f} "
                    f"{one['simulate_seconds']:>9.3f} {one['alone_seconds']:>6.3f} "
                    f"{one['queue_position']!s:>9}  {one['estimate_basis']:<9} "
                    f"{'-' if ahead is None else f'{ahead} h':>7}\n"
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


CANDIDATES = {
    # The back of the queue: nothing pending is lower, and 8 gpu only free up late.
    "back": {"priority": 0, "required_cpu": 8, "required_ram": 64, "required_gpu": 8},
    # Behind everything of priority 100 and up; smaller ones of that priority would preempt
    # priority 0 work and start at once.
    "middle": {"priority": 100, "required_cpu": 8, "required_ram": 64, "required_gpu": 8},
}


def measure_preview(
    running_count: int, pending_count: int, seed: int, rounds: int, database_url: str | None
) -> dict[str, Any]:
    """Time previews of waiting deployments on the seeded cluster, stored in a database."""
    from fastapi.testclient import TestClient

    import services.deployments as deployments
    import services.forecasting as forecasting
    from database import make_engine, migrate
    from main import create_app
    from utils import Clock, Settings, use_clock, use_settings

    cluster, running, pending, history, images = random_cluster(running_count, pending_count, seed)
    offset = math.floor(time.time() - NOW)  # the seeded state, moved to the present

    class Frozen(Clock):
        """The present of the seeded state, for every round."""

        def now(self) -> datetime:
            return datetime.fromtimestamp(NOW + offset, UTC)

    spent = {"load": 0.0, "simulate": 0.0, "load_wall": 0.0, "simulate_wall": 0.0}
    real_state, real_start = forecasting._state, forecast.forecast_start
    real_question = deployments.start_question

    def timed(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started, wall = time.process_time(), time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - started
                spent[f"{name}_wall"] += time.perf_counter() - wall

        return wrapper

    candidates: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        url = database_url or f"sqlite:///{directory}/preview.db"
        migrate(url)
        engine = make_engine(url)
        if database_url is not None:  # one database for every size: emptied before each
            tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
            with engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        settings = Settings(
            database_url=url,
            secret_key="bench-secret-key-that-is-long-enough-for-hs256",
            rate_limit="0",
            log_level="warning",
            scheduler_interval_seconds=3600,  # the loop stays out of the way
            max_pending_per_organization=10 * (pending_count + 1),
        )
        use_clock(Frozen())
        try:
            app = create_app(settings, engine=engine)
            with TestClient(app) as client:
                headers, org = _store(client, app, cluster, running, pending, offset, seed)
                forecasting._state = timed("load", real_state)  # type: ignore[assignment]
                forecast.forecast_start = timed("simulate", real_start)  # type: ignore[assignment]
                for label, request in CANDIDATES.items():
                    body = {
                        "cluster_name": "big",
                        "organization_name": org,
                        "docker_image": "ghcr.io/team0/model:1",
                        "duration_seconds": 3600,
                        **request,
                    }
                    walls, bare, loads, simulations, walls_in_forecast = [], [], [], [], []
                    answer: dict[str, Any] = {}
                    for _ in range(rounds):
                        # Alternating with a preview that skips the forecast (what it was
                        # before it gave a start), so the other processes' noise is shared.
                        spent.update(dict.fromkeys(spent, 0.0))
                        started = time.perf_counter()
                        response = client.post("/deployment/preview", json=body, headers=headers)
                        walls.append(time.perf_counter() - started)
                        assert response.status_code == 200, response.text
                        answer = response.json()
                        loads.append(spent["load"])
                        simulations.append(spent["simulate"])
                        walls_in_forecast.append(spent["load_wall"] + spent["simulate_wall"])
                        deployments.start_question = _NoForecast  # type: ignore[assignment]
                        try:
                            started = time.perf_counter()
                            client.post("/deployment/preview", json=body, headers=headers)
                            bare.append(time.perf_counter() - started)
                        finally:
                            deployments.start_question = real_question
                    start = answer["estimated_start_at"]
                    ahead = (
                        round((datetime.fromisoformat(start).timestamp() - NOW - offset) / 3600, 2)
                        if start is not None
                        else None
                    )
                    alone = _alone(cluster, running, pending, history, request, rounds)
                    candidates[label] = {
                        "request_seconds": statistics.median(walls),
                        "request_seconds_all": walls,
                        "without_forecast_seconds": statistics.median(bare),
                        "without_forecast_seconds_all": bare,
                        "forecast_wall_seconds": statistics.median(walls_in_forecast),
                        "load_seconds": statistics.median(loads),
                        "simulate_seconds": statistics.median(simulations),
                        "alone_seconds": alone,
                        "would_start": answer["would_start"],
                        "queue_position": answer["queue_position"],
                        "estimate_basis": answer["estimate_basis"],
                        "start_hours_ahead": ahead,
                    }
        finally:
            forecasting._state = real_state  # type: ignore[assignment]
            forecast.forecast_start = real_start  # type: ignore[assignment]
            use_clock(None)
            use_settings(None)
            engine.dispose()
    return {"running": len(running), "pending": len(pending), "candidates": candidates}


class _NoForecast:
    """A preview's question of its start, left unasked: neither loaded nor simulated."""

    def __init__(self, *_args: Any) -> None:
        pass

    def answer(self) -> forecast.Estimate:
        return forecast.Estimate(None, None, "unknown", "not forecast")


def _alone(
    cluster: Cluster,
    running: list[Job],
    pending: list[forecast.Waiting],
    history: dict[int, float],
    request: dict[str, Any],
    rounds: int,
) -> float:
    """`forecast_start` of the candidate added to the in-memory cluster: the simulation's
    cost without the database."""
    candidate = Job(
        id=10**9,
        priority=request["priority"],
        request=Resources(
            request["required_cpu"], request["required_ram"], request["required_gpu"]
        ),
        submitted_at=NOW,
        waiting_since=NOW,
        duration_seconds=3600,
    )
    with_it = [*pending, forecast.Waiting(candidate)]
    timings = []
    for _ in range(rounds):
        started = time.process_time()
        forecast.forecast_start(
            cluster, running, with_it, NOW, DEFAULT_POLICY, target=candidate.id, history=history
        )
        timings.append(time.process_time() - started)
    return statistics.median(timings)


def _store(
    client: Any,
    app: Any,
    cluster: Cluster,
    running: list[Job],
    pending: list[forecast.Waiting],
    offset: float,
    seed: int,
) -> tuple[dict[str, str], str]:
    """An admin, an organization and the cluster "big" through the API; its deployments, a
    history of completed runs and the dependencies written directly (as passes left them)."""
    password = "correct horse battery"
    assert client.post(
        "/user/register", json={"username": "bench", "password": password}
    ).is_success
    token = client.post("/user/login", data={"username": "bench", "password": password})
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    org = client.post("/organization/create", json={"name": "bench"}, headers=headers).json()
    total = cluster.total
    made = client.post(
        "/cluster/create",
        json={
            "name": "big",
            "organization_name": org["name"],
            "total_cpu": total.cpu,
            "total_ram": total.ram,
            "total_gpu": total.gpu,
        },
        headers=headers,
    )
    assert made.status_code == 201, made.text

    def at(instant: float | None) -> datetime | None:
        return datetime.fromtimestamp(instant + offset, UTC) if instant is not None else None

    rng = random.Random(seed)
    with app.state.session_factory.begin() as session:
        base = {
            "cluster_id": made.json()["id"],
            "organization_id": org["id"],
            "created_by_id": session.scalar(select(User.id).where(User.username == "bench")),
            "preemption_count": 0,
        }
        # History: three completed runs of each of the first half of the images.
        completed = []
        for team in range(20):
            for version in (1, 2):
                for _ in range(3):
                    finished = NOW - rng.uniform(3600, 86_400)
                    ran = rng.uniform(600, 4 * 3600)
                    completed.append(
                        {
                            **base,
                            "docker_image": f"ghcr.io/team{team}/model:{version}",
                            "required_cpu": 1,
                            "required_ram": 1,
                            "required_gpu": 1,
                            "priority": 0,
                            "status": "completed",
                            "eligible": True,
                            "saved_seconds": 0.0,
                            "created_at": at(finished - ran - 60),
                            "waiting_since": at(finished - ran - 60),
                            "started_at": at(finished - ran),
                            "finished_at": at(finished),
                        }
                    )
        session.execute(insert(Deployment), completed)
        jobs = [(job, None) for job in running] + [(entry.job, entry) for entry in pending]
        rows = [
            {
                **base,
                "docker_image": f"ghcr.io/team{job.id % 40}/model:{1 + job.id % 2}",
                "required_cpu": job.request.cpu,
                "required_ram": job.request.ram,
                "required_gpu": job.request.gpu,
                "priority": job.priority,
                "status": "running" if entry is None else "pending",
                "eligible": entry is None or not entry.depends_on,
                "duration_seconds": job.duration_seconds,
                "saved_seconds": job.saved_seconds,
                "created_at": at(job.submitted_at),
                "waiting_since": at(job.waiting_since),
                "started_at": at(job.started_at),
                "ends_at": at(ends_at_of(job)) if entry is None else None,
            }
            for job, entry in jobs
        ]
        ids = session.scalars(
            insert(Deployment).returning(Deployment.id, sort_by_parameter_order=True), rows
        ).all()
        id_of = {job.id: new for (job, _), new in zip(jobs, ids, strict=True)}
        links = [
            {"deployment_id": id_of[entry.job.id], "depends_on_id": id_of[dependency]}
            for _, entry in jobs
            if entry is not None
            for dependency in entry.depends_on
            if dependency in id_of
        ]
        if links:
            session.execute(insert(DeploymentDependency), links)
    return headers, str(org["name"])


def _dialect(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0]


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
