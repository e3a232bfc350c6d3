"""Part "floor": what one request costs the server, from the cheapest to a create, one
client at a time on a fresh SQLite file; optionally beside another checkout of Hypervisor
(`--compare-dir`, e.g. a git worktree of an earlier commit), in alternating rounds.

The ladder says where a create's CPU goes: `/healthz` is the HTTP server and middleware;
`/user/me` adds the token, FastAPI's dependencies and one read; a create refused by body
validation is an authenticated POST through everything but the database; a create that
starts is the whole write. The seed comparison's budget follows from it: at k times the
seed's rate in one process, a create may cost at most the seed's CPU per create / k.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .client import Http, drive, timed
from .servers import ROOMY, Process, Tenant, create_body, hypervisor_tenant, start_hypervisor

log = logging.getLogger(__name__)

# (name, method, path, body given the tenant, the status that counts as done)
Step = tuple[str, str, str, Callable[[Tenant], Any], int]


def _create(tenant: Tenant, **changes: Any) -> dict[str, Any]:
    return {**create_body(tenant), "duration_seconds": 3600, **changes}


LADDER: list[Step] = [
    ("healthz", "GET", "/healthz", lambda _: None, 200),
    ("user_me", "GET", "/user/me", lambda _: None, 200),
    (
        "create_refused",
        "POST",
        "/deployment/create",
        lambda t: _create(t, required_cpu=-1),
        422,
    ),
    ("create_starts", "POST", "/deployment/create", _create, 201),
]


def _measure(server: Process, tenant: Tenant, step: Step, requests: int) -> float:
    """Server CPU ms per request over `requests` of this step (after a warm-up)."""
    _, method, path, body_of, expected = step
    body = body_of(tenant)

    def operation(http: Http, _: int) -> tuple[bool, float, Any]:
        status, _answer, seconds = timed(http, method, path, body)
        return status == expected, seconds, None

    drive(server.url, tenant.headers, 1, 20, 60, operation)
    before = server.cpu_seconds()
    result = drive(server.url, tenant.headers, 1, requests, 120, operation)
    if result.errors:
        raise RuntimeError(f"{step[0]}: {result.errors} requests did not answer {expected}")
    return 1000 * (server.cpu_seconds() - before) / max(1, result.ok)


def run(rounds: int, requests: int, compare_dir: Path | None) -> dict[str, Any]:
    """Median server CPU ms per request of each step, for this checkout and the other."""
    roots = {"this": None} | ({"compared": compare_dir} if compare_dir else {})
    samples: dict[str, dict[str, list[float]]] = {k: {s[0]: [] for s in LADDER} for k in roots}
    with tempfile.TemporaryDirectory() as workdir:
        servers: dict[str, tuple[Process, Tenant]] = {}
        try:
            for name, root in roots.items():
                place = Path(workdir) / name
                place.mkdir()
                server = start_hypervisor(
                    f"sqlite:///{place}/hv.db", place, root=root, scheduler_interval_seconds="3600"
                )
                servers[name] = (server, hypervisor_tenant(server, {"roomy": ROOMY}))
            for index in range(rounds):
                order = list(servers) if index % 2 == 0 else list(servers)[::-1]
                for step in LADDER:
                    for name in order:
                        server, tenant = servers[name]
                        samples[name][step[0]].append(_measure(server, tenant, step, requests))
                log.info("floor round %s: %s", index, {n: {s: round(v[-1], 2) for s, v in
                         by.items()} for n, by in samples.items()})  # fmt: skip
        finally:
            for server, _ in servers.values():
                server.stop()
    result: dict[str, Any] = {
        "rounds": rounds,
        "requests_per_round": requests,
        "compared_dir": str(compare_dir) if compare_dir else None,
        "cpu_ms_per_request": {
            name: {step: round(statistics.median(values), 2) for step, values in by.items()}
            for name, by in samples.items()
        },
    }
    return result
