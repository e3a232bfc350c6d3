"""The command line: which parts run, their sizes, and one merged report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __doc__ as overview
from . import floor, loadrun, passes, profiling, report, scaling, versus
from .servers import ROOT, postgres_databases

PARTS = ("passes", "floor", "seed", "scaling", "load", "profile")
log = logging.getLogger("bench.speed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(overview or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS)
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, SQLite only, seconds")
    parser.add_argument("--seed-dir", type=Path, help="a checkout of the original seed service")
    parser.add_argument("--seed-python", type=Path, help="the interpreter of the seed's venv")
    parser.add_argument("--clients", default="8,32", help="part 1 concurrencies")
    parser.add_argument(
        "--seed-mode",
        choices=["fresh", "sustained"],
        default="fresh",
        help="fresh: a new cluster per round, rounds under 14 s (no completion meets a round); "
        "sustained: one cluster, rounds up to 60 s",
    )
    parser.add_argument("--seed-rounds", type=int, default=6)
    parser.add_argument("--seed-creates", type=int, help="per round (fresh: 400, sustained: 160)")
    parser.add_argument("--rounds", type=int, default=7, help="part 2 rounds per pair")
    parser.add_argument("--per-round", type=int, default=30, help="part 2 requests per round")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--load-requests", type=int, default=5000)
    parser.add_argument("--load-clusters", type=int, default=4)
    parser.add_argument("--profile-creates", type=int, default=300)
    parser.add_argument(
        "--compare-dir", type=Path, help="floor: another checkout of Hypervisor, measured beside"
    )
    parser.add_argument("--floor-rounds", type=int, default=3)
    parser.add_argument("--floor-requests", type=int, default=200, help="per step and round")
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if args.smoke:
        args.seed_rounds, args.seed_creates, args.clients = 2, 16, "4"
        args.rounds, args.per_round, args.profile_creates = 2, 3, 10
        args.floor_rounds, args.floor_requests = 1, 20
        args.no_postgres = True
        args.parts = [part for part in args.parts if part != "load"]
    return args


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    previous = args.out / "speed.json"
    result: dict[str, Any] = (
        json.loads(previous.read_text()) if previous.exists() and not args.smoke else {}
    )
    result.pop("notes", None)  # a reading of earlier numbers; written by hand after a run
    began = time.monotonic()
    result |= {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {"cores": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2)},
    }
    if "passes" in args.parts:
        depths = [100] if args.smoke else [100, 1000, 10_000, 100_000]
        result["passes"] = passes.time_passes(depths, repeats=3 if args.smoke else 5)
    if "floor" in args.parts:
        seed = (args.seed_dir, args.seed_python) if args.seed_dir and args.seed_python else None
        result["floor"] = floor.run(args.floor_rounds, args.floor_requests, args.compare_dir, seed)
    if "seed" in args.parts:
        if args.seed_dir and args.seed_python:
            fresh = args.seed_mode == "fresh"
            concurrencies = [int(c) for c in args.clients.split(",")]
            result["versus_seed" if fresh else "versus_seed_sustained"] = versus.run(
                args.seed_dir, args.seed_python, concurrencies, args.seed_rounds,
                args.seed_creates or (400 if fresh else 160), round_seconds=14 if fresh else 60,
                drain_seconds=60, fresh_clusters=fresh,
            )  # fmt: skip
        else:
            result["versus_seed"] = {"skipped": "no --seed-dir and --seed-python given"}
    if "scaling" in args.parts:
        scale = 0.01 if args.smoke else 1.0
        rows = scaling.run("SQLite", None, args.rounds, args.per_round, scale)
        if not args.no_postgres:
            with postgres_databases("hv_speed") as new_database:
                if new_database is not None:
                    rows += scaling.run("PostgreSQL", new_database, args.rounds, args.per_round)
        before = {(r["database"], r["measure"]): r for r in result.get("scaling", [])}
        for row in rows:  # earlier runs' ratios beside this one's: how well it reproduces
            earlier = before.get((row["database"], row["measure"]))
            if earlier:
                row["earlier_ratios"] = [*earlier.get("earlier_ratios", []), earlier["ratio"]][-4:]
        result["scaling"] = rows
    if "load" in args.parts:
        with postgres_databases("hv_speed_load") as new_database:
            if new_database is None:
                result["load"] = {"skipped": "PostgreSQL does not answer on 127.0.0.1:5432"}
            else:
                out = args.out / f"load_pg_{args.load_clusters}clusters.json"
                result["load"] = loadrun.run(
                    new_database(), out, 2, 32, args.load_clusters, args.load_requests
                )
    if "profile" in args.parts:
        result["profile"] = profiling.profile_creates(args.profile_creates)
    result["machine"]["load_after"] = round(os.getloadavg()[0], 2)
    result["machine"]["parts_run"] = args.parts
    result["machine"]["seconds"] = round(time.monotonic() - began, 1)
    report.write(args.out, result)
    log.info("wrote %s", args.out / "speed.json")
    return result
