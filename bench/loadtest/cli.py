"""The command line and the run: replicas up, world set up, traffic, checks, report."""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import __doc__ as overview
from .invariants import check_database
from .replicas import APP_DIR, running_replicas
from .report import build_report, summary_text
from .traffic import Driver
from .world import setup_world

DEFAULT_OUT = APP_DIR / "bench" / "results" / "load.json"

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(overview or "").split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2, help="server processes (default 2)")
    parser.add_argument("--clients", type=int, default=32, help="client threads (default 32)")
    parser.add_argument("--requests", type=int, default=5000, help="total requests (5000)")
    parser.add_argument("--seconds", type=float, default=600, help="time limit of the drive")
    parser.add_argument("--database-url", help="an EMPTY database (default: fresh SQLite file)")
    parser.add_argument("--kill-after", type=int, help="SIGKILL a replica after N responses")
    parser.add_argument("--kill-replica", type=int, default=-1, help="which one (default last)")
    parser.add_argument("--down-seconds", type=float, default=2.0, help="before the restart")
    parser.add_argument("--routing", choices=["round-robin", "random"], default="round-robin")
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument(
        "--cluster-size", type=int, nargs=3, default=[32, 128, 8], metavar=("CPU", "RAM", "GPU")
    )
    parser.add_argument("--scheduler-interval", type=float, default=1.0)
    parser.add_argument(
        "--starvation-seconds",
        type=float,
        default=10**7,
        help="large, so the starvation guard never applies",
    )
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument(
        "--failover-seconds",
        type=float,
        default=90.0,
        help="how long one request keeps looking for a live replica",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--python", default=sys.executable, help="interpreter for replicas")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep-temp", action="store_true", help="keep logs and SQLite file")
    args = parser.parse_args(argv)
    if args.replicas < 1 or args.clients < 1 or args.requests < 1 or args.clusters < 1:
        parser.error("--replicas, --clients, --requests and --clusters must be >= 1")
    if args.seconds <= 0 or args.seconds > 6 * 3600:
        parser.error("--seconds must be in (0, 21600]")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the harness; 0 if the report is clean, 1 on any 5xx or violation."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="hv-load-"))
    database_url = args.database_url or f"sqlite:///{tmp}/hypervisor.db"
    run_id = secrets.token_hex(3)
    ok = False
    try:
        with running_replicas(args, database_url, tmp) as replicas:
            world = setup_world([r.base_url for r in replicas], args, run_id)
            logger.info(
                "set up %s organizations, %s users; driving %s requests with %s clients",
                len(world.orgs),
                len(world.actors),
                args.requests,
                args.clients,
            )
            driver = Driver(args, replicas, world)
            elapsed = driver.run()
            logger.info("drive done in %.1fs; waiting two scheduler intervals", elapsed)
            time.sleep(2 * args.scheduler_interval + 0.5)
            for replica in replicas:
                replica.stop()
        logger.info("replicas stopped; final pass and database checks")
        violations, notes, facts = check_database(database_url, world, args)
        report = build_report(
            args, driver, world, elapsed, replicas, violations, notes, facts, database_url
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        sys.stdout.write(summary_text(report))
        sys.stdout.write(f"report: {args.out}\n")
        ok = report["ok"]
        return 0 if ok else 1
    finally:
        if args.keep_temp or not ok:
            logger.info("logs kept in %s", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
