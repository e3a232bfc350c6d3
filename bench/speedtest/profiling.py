"""Where a single create spends its time: cProfile over an in-process `TestClient` run.

The app runs in TestClient's event-loop thread and the sync endpoint in a worker thread,
neither of them the caller's, so every thread started after `threading.setprofile` gets
a profiler of its own once measuring begins; their stats are merged. The client's own
thread is not profiled. Each profiler counts its thread's CPU time, so waiting (the event
loop's poll, a thread handing work to another) costs nothing. cProfile's overhead inflates
code made of many small calls, so read the shares, not the absolute milliseconds.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from .servers import PASSWORD, ROOMY, ROOT

WAITS = ("acquire", "poll", "select", "sleep", "wait")


def _where(filename: str, name: str) -> str:
    """The package a function belongs to: a site-packages distribution, our module, or C."""
    if filename == "~":
        return "sqlite3 (C)" if "sqlite3" in name else "builtins (C)"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith(str(ROOT)):
        return "app: " + str(Path(filename).relative_to(ROOT))
    return "stdlib: " + Path(filename).name


def profile_creates(creates: int, warmup: int = 20, top: int = 10) -> dict[str, Any]:
    """Profile `creates` creates that start at once (a roomy cluster, SQLite file)."""
    from fastapi.testclient import TestClient

    from main import create_app
    from utils import Settings, use_settings

    profiles: list[cProfile.Profile] = []
    measuring = threading.Event()
    lock = threading.Lock()

    def start_profiler(*_: Any) -> None:
        if measuring.is_set():
            profiler = cProfile.Profile(time.thread_time)  # CPU, not waits
            with lock:
                profiles.append(profiler)
            profiler.enable()  # replaces this hook for the rest of the thread's life

    with tempfile.TemporaryDirectory() as workdir:
        settings = Settings(
            database_url=f"sqlite:///{workdir}/hypervisor.db",
            secret_key="profile-secret-key-that-is-long-enough-for-hs256",
            rate_limit="0",
            scheduler_interval_seconds=3600,
            bcrypt_rounds=4,
            log_level="warning",
        )
        threading.setprofile(start_profiler)
        try:
            with TestClient(create_app(settings)) as client:
                user = {"username": "bench", "password": PASSWORD}
                client.post("/user/register", json=user)
                token = client.post("/user/login", data=user).json()["access_token"]
                client.headers["Authorization"] = f"Bearer {token}"
                client.post("/organization/create", json={"name": "bench-org"})
                cluster = {"name": "roomy", "organization_name": "bench-org", **ROOMY}
                client.post("/cluster/create", json=cluster)
                body = {
                    "cluster_name": "roomy",
                    "organization_name": "bench-org",
                    "docker_image": "ghcr.io/acme/train:1.0",
                    "required_cpu": 1,
                    "required_ram": 1,
                    "required_gpu": 1,
                    "priority": 1,
                }
                for _ in range(warmup):
                    assert client.post("/deployment/create", json=body).status_code == 201
                unprofiled = time.perf_counter()
                for _ in range(warmup):
                    client.post("/deployment/create", json=body)
                unprofiled = (time.perf_counter() - unprofiled) / warmup
                measuring.set()
                started = time.perf_counter()
                for _ in range(creates):
                    assert client.post("/deployment/create", json=body).status_code == 201
                elapsed = time.perf_counter() - started
                measuring.clear()
                stats = pstats.Stats(*profiles) if profiles else None
        finally:
            threading.setprofile(None)
            use_settings(None)
    if stats is None:
        return {"error": "no thread was profiled"}
    return _summary(stats, creates, elapsed, unprofiled, top)


def _summary(
    stats: pstats.Stats, creates: int, elapsed: float, unprofiled: float, top: int
) -> dict[str, Any]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    # Blocking C calls are waits, whatever a per-thread clock makes of them (cProfile can
    # even book them negative when a thread blocks): left out of every share.
    working = {
        key: entry
        for key, entry in raw.items()
        if not (key[0] == "~" and any(word in key[2] for word in WAITS)) and entry[2] > 0
    }
    total = sum(entry[2] for entry in working.values())
    rows = []
    by_package: dict[str, float] = defaultdict(float)
    for (filename, line, name), (_, calls, tottime, cumtime, _) in working.items():
        by_package[_where(filename, name)] += tottime
        where = f"{Path(filename).name}:{line}" if filename != "~" else "C"
        rows.append((tottime, cumtime, calls, f"{where} {name}", _where(filename, name)))
    rows.sort(reverse=True)
    text = io.StringIO()
    stats.stream = text  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(40)
    return {
        "creates": creates,
        "profiled_ms_per_create": round(1000 * elapsed / creates, 2),
        "unprofiled_ms_per_create": round(1000 * unprofiled, 2),
        "profiled_cpu_ms_per_create": round(1000 * total / creates, 2),
        "top_self_time": [
            {
                "function": label,
                "package": package,
                "calls_per_create": round(calls / creates, 1),
                "self_ms_per_create": round(1000 * tottime / creates, 3),
                "cumulative_ms_per_create": round(1000 * cumtime / creates, 3),
                "share_of_self_time": round(tottime / total, 3),
            }
            for tottime, cumtime, calls, label, package in rows[:top]
        ],
        "top_app_cumulative": [
            {
                "function": label,
                "calls_per_create": round(calls / creates, 1),
                "cumulative_ms_per_create": round(1000 * cumtime / creates, 3),
                "share_of_cpu": round(cumtime / total, 3),
            }
            for cumtime, _, calls, label, package in sorted(
                ((c, t, n, label, p) for t, c, n, label, p in rows if p.startswith("app: ")),
                reverse=True,
            )[:top]
        ],
        "self_time_by_package": {
            package: round(seconds / total, 3)
            for package, seconds in sorted(by_package.items(), key=lambda kv: -kv[1])[:12]
        },
        "pstats_text": text.getvalue(),
    }
