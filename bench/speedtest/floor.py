"""Part "floor": what one request costs the server, from the cheapest to a create, one
client at a time on a fresh SQLite file; optionally beside another checkout of Hypervisor
(`--compare-dir`, e.g. a git worktree of an earlier commit), in alternating rounds.

The ladder says where a create's CPU goes: `/healthz` is the HTTP server and middleware;
`/user/me` adds the token, FastAPI's dependencies and one read; a create refused by body
validation is an authenticated POST through everything but the database; a create that
starts is the whole write. The seed comparison's budget follows from it: at k times the
seed's rate in one process, a create may cost at most the seed's CPU per create / k.

Beside them, measured the same way: `bare` (`bare.py`), the least a create can cost in this
stack (FastAPI, Pydantic, one SQLAlchemy ORM INSERT and commit, uvicorn on h11), and, given
`--seed-dir` and `--seed-python`, the seed's own create.
"""

from __future__ import annotations

import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import Http, drive, timed
from .servers import (
    ROOMY,
    Process,
    Tenant,
    create_body,
    free_port,
    hypervisor_tenant,
    seed_tenant,
    start_hypervisor,
    start_seed,
)

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


@dataclass
class Subject:
    """A server measured in the floor part, with the steps of the ladder it answers."""

    server: Process
    tenant: Tenant
    steps: list[Step]


def _measure(subject: Subject, step: Step, requests: int) -> tuple[float, float]:
    """Server and client (this process) CPU ms per request over `requests` of this step,
    after a warm-up."""
    _, method, path, body_of, expected = step
    body = body_of(subject.tenant)

    def operation(http: Http, _: int) -> tuple[bool, float, Any]:
        status, _answer, seconds = timed(http, method, path, body)
        return status == expected, seconds, None

    server, headers = subject.server, subject.tenant.headers
    drive(server.url, headers, 1, 20, 60, operation)
    before, client_before = server.cpu_seconds(), time.process_time()
    result = drive(server.url, headers, 1, requests, 120, operation)
    if result.errors:
        raise RuntimeError(f"{step[0]}: {result.errors} requests did not answer {expected}")
    done = max(1, result.ok)
    client = time.process_time() - client_before
    return 1000 * (server.cpu_seconds() - before) / done, 1000 * client / done


def _bare(place: Path) -> Subject:
    """The stack's floor (`bare.py`): only its create, which answers 201 like ours."""
    port = free_port()
    env = {**os.environ, "BARE_DATABASE": str(place / "bare.db"), "BARE_PORT": str(port)}
    command = [sys.executable, str(Path(__file__).with_name("bare.py"))]
    server = Process(command, env, place, port, "/healthz")
    return Subject(server, Tenant({}, "bench-org", "roomy"), [LADDER[-1]])


def _seed(place: Path, seed_dir: Path, seed_python: Path) -> Subject:
    """The seed: only its create, which answers 200."""
    server = start_seed(seed_dir, seed_python, place)
    tenant = seed_tenant(server, secrets.token_hex(4))
    name, method, path, body_of, _ = LADDER[-1]
    return Subject(server, tenant, [(name, method, path, body_of, 200)])


def run(
    rounds: int,
    requests: int,
    compare_dir: Path | None,
    seed: tuple[Path, Path] | None = None,
) -> dict[str, Any]:
    """Median server CPU ms per request of each step, for this checkout, the other one, the
    stack's floor (`bare`) and, given its checkout and Python, the seed."""
    with tempfile.TemporaryDirectory() as workdir:
        subjects: dict[str, Subject] = {}

        def place(name: str) -> Path:
            directory = Path(workdir) / name
            directory.mkdir()
            return directory

        try:
            for name, root in {"this": None, "compared": compare_dir}.items():
                if name == "this" or root is not None:
                    directory = place(name)
                    server = start_hypervisor(
                        f"sqlite:///{directory}/hv.db",
                        directory,
                        root=root,
                        scheduler_interval_seconds="3600",
                    )
                    tenant = hypervisor_tenant(server, {"roomy": ROOMY})
                    subjects[name] = Subject(server, tenant, LADDER)
            subjects["bare"] = _bare(place("bare"))
            if seed is not None:
                subjects["seed"] = _seed(place("seed"), *seed)
            samples = {name: {s[0]: [] for s in subject.steps} for name, subject in
                       subjects.items()}  # fmt: skip
            client: list[float] = []  # this process's CPU per create sent to this checkout
            for index in range(rounds):
                order = list(subjects) if index % 2 == 0 else list(subjects)[::-1]
                for step in LADDER:
                    for name in order:
                        subject = subjects[name]
                        mine = [s for s in subject.steps if s[0] == step[0]]
                        if mine:
                            server_ms, client_ms = _measure(subject, mine[0], requests)
                            samples[name][step[0]].append(server_ms)
                            if name == "this" and step is LADDER[-1]:
                                client.append(client_ms)
                log.info("floor round %s: %s", index, {n: {s: round(v[-1], 2) for s, v in
                         by.items()} for n, by in samples.items()})  # fmt: skip
        finally:
            for subject in subjects.values():
                subject.server.stop()
    result: dict[str, Any] = {
        "rounds": rounds,
        "requests_per_round": requests,
        "compared_dir": str(compare_dir) if compare_dir else None,
        "cpu_ms_per_request": {
            name: {step: round(statistics.median(values), 2) for step, values in by.items()}
            for name, by in samples.items()
        },
        "client_cpu_ms_per_create": round(statistics.median(client), 2),
    }
    return result
