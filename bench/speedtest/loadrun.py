"""Part 3: the load harness (`bench/load.py`) on PostgreSQL, several replicas and clusters;
its own JSON is kept beside ours and its headline numbers copied in."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from .servers import ROOT

log = logging.getLogger(__name__)


def run(
    database_url: str, out: Path, replicas: int, clients: int, clusters: int, requests: int
) -> dict[str, Any]:
    """`bench/load.py` with these options on an empty database; its report, summarized."""
    command = [
        sys.executable,
        str(ROOT / "bench" / "load.py"),
        "--replicas",
        str(replicas),
        "--clients",
        str(clients),
        "--clusters",
        str(clusters),
        "--requests",
        str(requests),
        "--seconds",
        "900",
        "--database-url",
        database_url,
        "--out",
        str(out),
    ]
    log.info("load harness: %s", " ".join(command[1:]))
    finished = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if not out.exists():
        raise RuntimeError(f"bench/load.py wrote no report:\n{finished.stderr[-2000:]}")
    report = json.loads(out.read_text())
    create = report["latency_by_op"].get("create", {})
    return {
        "command": "bench/load.py "
        + " ".join(command[2:]).replace(database_url, "<fresh PG db>").replace(str(ROOT) + "/", ""),
        "exit_code": finished.returncode,
        "report": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
        "ok": report["ok"],
        "requests": report["requests"],
        "throughput_rps": report["throughput_rps"],
        "p50_ms": report["latency"]["p50_ms"],
        "p99_ms": report["latency"]["p99_ms"],
        "create_p50_ms": create.get("p50_ms"),
        "create_p99_ms": create.get("p99_ms"),
        "accepted_creates": report["accepted_creates"],
        "server_errors_5xx": report["server_errors_5xx"],
        "violation_count": report["violation_count"],
        "violations": report["violations"][:10],
        "harness_cpu_seconds": report.get("harness_cpu_seconds"),
        "replica_cpu_seconds": [
            usage["cpu_seconds"]
            for replica in report["per_replica"].values()
            for usage in replica["usage"][-1:]
        ],
        "duration_seconds": report["duration_seconds"],
    }
