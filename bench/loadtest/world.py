"""The clients' shared world: orgs, users, clusters set up via the API; what 2xx answers said."""

from __future__ import annotations

import argparse
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx

PASSWORD = "load-harness-password-1"
FINISHED = ("completed", "failed", "cancelled")
STATES = ("pending", "running", *FINISHED)
RESOURCES = ("cpu", "ram", "gpu")


@dataclass
class Org:
    name: str
    clusters: list[str]
    admin: dict[str, str]
    ids: list[int] = field(default_factory=list)
    running: set[int] = field(default_factory=set)
    reservations: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)


@dataclass
class Actor:
    username: str
    headers: dict[str, str]
    orgs: list[Org]
    admin_of: set[str]


@dataclass
class Observation:
    """What clients were told about one deployment."""

    latest_unfinished_send: float = -1.0
    latest_unfinished_status: str = ""
    first_finished_recv: float = float("inf")
    finished_seen: set[str] = field(default_factory=set)


class World:
    """Everything the clients learned, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.orgs: list[Org] = []
        self.actors: list[Actor] = []
        self.accepted: dict[int, tuple[str, str]] = {}  # id -> (org, cluster)
        self.cancelled_ok: set[int] = set()
        self.reported_ok: dict[int, str] = {}
        self.observed: dict[int, Observation] = defaultdict(Observation)
        self.unknown_creates = 0
        self.client_violations: list[str] = []

    def violation(self, message: str) -> None:
        """Record something a client was told that contradicts the spec."""
        with self.lock:
            self.client_violations.append(message)

    def observe(self, org: Org | None, body: dict[str, Any], sent: float, received: float) -> None:
        deployment_id, status = body.get("id"), body.get("status")
        with self.lock:
            if not isinstance(deployment_id, int) or status not in STATES:
                self.client_violations.append(f"2xx body without a valid id/status: {body!r:.200}")
                return
            seen = self.observed[deployment_id]
            if status in FINISHED:
                seen.finished_seen.add(status)
                seen.first_finished_recv = min(seen.first_finished_recv, received)
            elif sent > seen.latest_unfinished_send:
                seen.latest_unfinished_send = sent
                seen.latest_unfinished_status = status
            if org is not None:
                if status == "running":
                    org.running.add(deployment_id)
                else:
                    org.running.discard(deployment_id)


def setup_world(base_urls: list[str], args: argparse.Namespace, run_id: str) -> World:
    """Two organizations, admins and developers (one in both), small clusters."""
    world = World()
    with httpx.Client(timeout=60) as http:
        counter = iter(range(10**6))

        def url(path: str) -> str:
            return base_urls[next(counter) % len(base_urls)] + path

        def expect(response: httpx.Response, code: int) -> dict[str, Any]:
            if response.status_code != code:
                raise RuntimeError(
                    f"setup: {response.request.method} {response.request.url} answered "
                    f"{response.status_code}: {response.text[:300]}"
                )
            result: dict[str, Any] = response.json()
            return result

        def user(name: str) -> dict[str, str]:
            username = f"{name}-{run_id}"
            body = {"username": username, "password": PASSWORD}
            expect(http.post(url("/user/register"), json=body), 201)
            token = expect(http.post(url("/user/login"), data=body), 200)["access_token"]
            return {"Authorization": f"Bearer {token}"}

        org_count = 2 if args.clusters > 1 else 1
        for o in range(org_count):
            admin = user(f"admin{o}")
            name = f"load-{run_id}-{o}"
            expect(http.post(url("/organization/create"), json={"name": name}, headers=admin), 201)
            world.orgs.append(Org(name=name, clusters=[], admin=admin))
            world.actors.append(Actor(f"admin{o}", admin, [world.orgs[-1]], {name}))
        cpu, ram, gpu = args.cluster_size
        for c in range(args.clusters):
            org = world.orgs[c % org_count]
            # Both organizations get a `gpu-0`: names are unique only within one.
            cluster = f"gpu-{c // org_count}"
            body = {
                "name": cluster,
                "organization_name": org.name,
                "total_cpu": cpu,
                "total_ram": ram,
                "total_gpu": gpu,
            }
            expect(http.post(url("/cluster/create"), json=body, headers=org.admin), 201)
            org.clusters.append(cluster)
        codes = {
            org.name: expect(
                http.get(url(f"/organization/get-invite-code/{org.name}"), headers=org.admin), 200
            )["invite_code"]
            for org in world.orgs
        }
        members: list[tuple[str, list[Org]]] = [
            (f"dev{o}{d}", [org]) for o, org in enumerate(world.orgs) for d in range(2)
        ]
        if org_count > 1:
            members.append(("devboth", list(world.orgs)))
        for name, orgs in members:
            headers = user(name)
            for org in orgs:
                expect(
                    http.post(
                        url("/user/join"), json={"invite_code": codes[org.name]}, headers=headers
                    ),
                    200,
                )
            world.actors.append(Actor(name, headers, orgs, set()))
    return world
