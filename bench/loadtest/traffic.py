"""The workload: the operation mix, client threads with fail-over, what each answer must say."""

from __future__ import annotations

import argparse
import logging
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx

from .replicas import LOCKED_MARKER, Replica
from .world import RESOURCES, Actor, Org, World

# The traffic mix: operation -> weight.
MIX: dict[str, int] = {
    "create": 34,
    "get": 15,
    "report": 14,
    "cancel": 10,
    "list": 9,
    "queue": 9,
    "me": 3,
    "allocate": 3,
    "release": 3,
}
# Status codes each operation may legitimately answer under this workload.
EXPECTED: dict[str, set[int]] = {
    "create": {201, 422},
    "get": {200, 404},
    "report": {200, 409},
    "cancel": {200, 409},
    "list": {200},
    "queue": {200},
    "me": {200},
    "allocate": {200, 409},
    "release": {200, 409},
}

logger = logging.getLogger(__name__)


class Stats:
    """Every response and failed attempt, aggregated under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.status: Counter[int] = Counter()
        self.status_by_op: dict[str, Counter[int]] = defaultdict(Counter)
        self.connection_errors: Counter[str] = Counter()
        self.connection_errors_by_replica: Counter[int] = Counter()
        self.unknown_outcomes: Counter[str] = Counter()
        self.gave_up: Counter[str] = Counter()
        self.timeouts: Counter[str] = Counter()
        self.per_replica: Counter[int] = Counter()
        self.per_replica_after_restart: Counter[int] = Counter()
        self.server_errors: list[dict[str, Any]] = []
        self.unexpected: Counter[tuple[str, int]] = Counter()
        self.unexpected_sample: dict[tuple[str, int], str] = {}
        self.locked = 0
        self.completed = 0

    def response(
        self, op: str, replica: int, response: httpx.Response, seconds: float, restarted: bool
    ) -> None:
        code = response.status_code
        body = response.text
        with self.lock:
            self.completed += 1
            self.latencies[op].append(seconds)
            self.status[code] += 1
            self.status_by_op[op][code] += 1
            self.per_replica[replica] += 1
            if restarted:
                self.per_replica_after_restart[replica] += 1
            if LOCKED_MARKER in body:
                self.locked += 1
            if code >= 500 and len(self.server_errors) < 25:
                self.server_errors.append(
                    {"op": op, "replica": replica, "status": code, "body": body[:300]}
                )
            if code not in EXPECTED[op]:
                self.unexpected[op, code] += 1
                self.unexpected_sample.setdefault((op, code), body[:200])

    def count(self, counter: Counter[str], op: str) -> None:
        """One more `op` in one of the per-operation counters."""
        with self.lock:
            counter[op] += 1

    def connection_error(self, replica: int, error: Exception) -> None:
        with self.lock:
            self.connection_errors[type(error).__name__] += 1
            self.connection_errors_by_replica[replica] += 1

    def five_xx(self) -> int:
        return sum(n for code, n in self.status.items() if code >= 500)

    def responses(self) -> int:
        with self.lock:
            return self.completed


@dataclass
class Client:
    """One client thread's connection pool, random stream and round-robin position."""

    http: httpx.Client
    rng: random.Random
    next: int


def _reservation(org: Org, cluster: str, amount: tuple[int, int, int]) -> dict[str, Any]:
    """The body of an allocate or release of `amount` (cpu, ram, gpu) on a cluster."""
    body: dict[str, Any] = {"cluster_name": cluster, "organization_name": org.name}
    body.update(zip(RESOURCES, amount, strict=True))
    return body


class Driver:
    """C client threads sharing a ticket counter, plus the kill/restart monitor."""

    def __init__(self, args: argparse.Namespace, replicas: list[Replica], world: World) -> None:
        self.args = args
        self.replicas = replicas
        self.world = world
        self.stats = Stats()
        self.lock = threading.Lock()
        self.issued = 0
        self.deadline = 0.0
        self.stop = threading.Event()
        self.kill_report: dict[str, Any] | None = None
        self.restarted: dict[int, float] = {}

    def take_ticket(self) -> bool:
        with self.lock:
            if self.issued >= self.args.requests or time.monotonic() >= self.deadline:
                return False
            self.issued += 1
            return True

    # -- one request with fail-over --

    def call(
        self,
        client: Client,
        op: str,
        method: str,
        path: str,
        headers: dict[str, str],
        **kwargs: Any,
    ) -> tuple[httpx.Response | None, float, float]:
        """Send to the next replica; fail over to the others while connections are refused.

        Returns (response or None, send time, receive time). A request that may have reached
        a replica that died with it in flight is never retried unless it is a read: its
        outcome is unknown, and it counts as such."""
        count = len(self.replicas)
        attempts = 0
        give_up_at = time.monotonic() + self.args.failover_seconds
        while attempts < 50 * count and time.monotonic() < give_up_at:
            if self.args.routing == "random":
                index = client.rng.randrange(count)
            else:
                index = client.next % count
                client.next += 1
            replica = self.replicas[index]
            attempts += 1
            sent = time.monotonic()
            try:
                response = client.http.request(
                    method, replica.base_url + path, headers=headers, **kwargs
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                self.stats.connection_error(index, error)
                if attempts % count == 0:
                    time.sleep(0.05)  # every replica refused: give a restart a moment
                continue
            except httpx.TransportError as error:  # no answer in time, or died in flight
                if isinstance(error, httpx.TimeoutException):
                    # the replica is alive but did not answer in --request-timeout
                    self.stats.count(self.stats.timeouts, op)
                else:
                    self.stats.connection_error(index, error)
                    if method == "GET":
                        continue
                self.stats.count(self.stats.unknown_outcomes, op)
                if op == "create":
                    with self.world.lock:
                        self.world.unknown_creates += 1
                return None, sent, time.monotonic()
            received = time.monotonic()
            restarted = index in self.restarted and sent >= self.restarted[index]
            self.stats.response(op, index, response, received - sent, restarted)
            return response, sent, received
        self.stats.count(self.stats.gave_up, op)
        return None, 0.0, 0.0

    # -- the workload --

    def client(self, number: int) -> None:
        rng = random.Random(f"{self.args.seed}-{number}")
        ops, weights = zip(*MIX.items(), strict=True)
        limits = httpx.Limits(max_connections=4 * len(self.replicas), max_keepalive_connections=8)
        with httpx.Client(timeout=self.args.request_timeout, limits=limits) as http:
            client = Client(http, rng, number)
            while not self.stop.is_set() and self.take_ticket():
                actor = rng.choice(self.world.actors)
                op = rng.choices(ops, weights)[0]
                try:
                    getattr(self, f"op_{op}")(client, actor)
                except Exception as error:  # noqa: BLE001 - a harness or body surprise
                    logger.exception("client %s: %s failed", number, op)
                    self.world.violation(f"client error in {op}: {error!r}")

    def _org_and_cluster(self, rng: random.Random, actor: Actor) -> tuple[Org, str]:
        org = rng.choice(actor.orgs)
        return org, rng.choice(org.clusters)

    def _cluster_query(self, actor: Actor, org: Org) -> dict[str, str]:
        return {"organization_name": org.name} if len(actor.orgs) > 1 else {}

    def _pick_id(self, rng: random.Random, org: Org, recent: int = 60) -> int | None:
        with self.world.lock:
            ids = org.ids[-recent:]
            return rng.choice(ids) if ids else None

    def op_create(self, client: Client, actor: Actor) -> None:
        rng = client.rng
        org, cluster = self._org_and_cluster(rng, actor)
        size = self.args.cluster_size
        body: dict[str, Any] = {
            "cluster_name": cluster,
            "organization_name": org.name,
            "docker_image": rng.choice(
                ["nginx", "nginx:1.27", "ghcr.io/acme/model:1.0", "registry:5000/team/train:2"]
            ),
            "required_gpu": rng.choices([0, 1, 2, 4, size[2]], [30, 30, 20, 15, 5])[0],
            "required_cpu": rng.randint(1, size[0] // 3),
            "required_ram": rng.randint(1, size[1] // 3),
            "priority": rng.randint(0, 9),
        }
        if rng.random() < 0.02:
            body["required_gpu"] = size[2] + 1  # could never run: 422
        if rng.random() < 0.5:
            body["name"] = f"job-{rng.randint(1, 10**6)}"
        if rng.random() < 0.4:
            body["duration_seconds"] = rng.randint(1, 5)
        if rng.random() < 0.25:
            with self.world.lock:
                recent = org.ids[-30:]
                body["depends_on"] = rng.sample(recent, min(len(recent), rng.randint(1, 2)))
        response, sent, received = self.call(
            client, "create", "POST", "/deployment/create", actor.headers, json=body
        )
        if response is None or response.status_code != 201:
            return
        created = response.json()
        if created.get("status") not in ("running", "pending"):
            self.world.violation(f"create answered status {created.get('status')!r}")
        with self.world.lock:
            self.world.accepted[created["id"]] = (org.name, cluster)
            org.ids.append(created["id"])
        self.world.observe(org, created, sent, received)

    def op_get(self, client: Client, actor: Actor) -> None:
        rng = client.rng
        org = rng.choice(actor.orgs)
        deployment_id = self._pick_id(rng, org, recent=500)
        bogus = deployment_id is None or rng.random() < 0.02
        if bogus:
            deployment_id = 2**62 + rng.randint(1, 1000)
        response, sent, received = self.call(
            client, "get", "GET", f"/deployment/{deployment_id}", actor.headers
        )
        if response is None:
            return
        if response.status_code == 404 and not bogus:
            self.world.violation(f"GET of accepted deployment {deployment_id} answered 404")
        if response.status_code == 200:
            self.world.observe(org, response.json(), sent, received)

    def op_report(self, client: Client, actor: Actor) -> None:
        rng = client.rng
        org = rng.choice(actor.orgs)
        with self.world.lock:
            running = sorted(org.running)
        deployment_id = rng.choice(running) if running else self._pick_id(rng, org)
        if deployment_id is None:
            self.op_create(client, actor)
            return
        status = "completed" if rng.random() < 0.75 else "failed"
        response, sent, received = self.call(
            client,
            "report",
            "POST",
            f"/deployment/{deployment_id}/status",
            actor.headers,
            json={"status": status},
        )
        if response is None or response.status_code != 200:
            return
        body = response.json()
        if body.get("status") != status:
            self.world.violation(f"report {status} of {deployment_id} answered {body!r:.200}")
        with self.world.lock:
            self.world.reported_ok[deployment_id] = status
        self.world.observe(org, body, sent, received)

    def op_cancel(self, client: Client, actor: Actor) -> None:
        rng = client.rng
        org = rng.choice(actor.orgs)
        deployment_id = self._pick_id(rng, org)
        if deployment_id is None:
            self.op_create(client, actor)
            return
        response, sent, received = self.call(
            client, "cancel", "DELETE", f"/deployment/delete/{deployment_id}", actor.headers
        )
        if response is None or response.status_code != 200:
            return
        body = response.json()
        if body.get("status") != "cancelled":
            self.world.violation(f"cancel of {deployment_id} answered {body!r:.200}")
        with self.world.lock:
            self.world.cancelled_ok.add(deployment_id)
        self.world.observe(org, body, sent, received)

    def op_list(self, client: Client, actor: Actor) -> None:
        rng = client.rng
        org, cluster = self._org_and_cluster(rng, actor)
        params = self._cluster_query(actor, org)
        status = rng.choice([None, "running", "running", "pending", "completed"])
        if status is not None:
            params["status"] = status
        response, sent, received = self.call(
            client, "list", "GET", f"/deployment/list/{cluster}", actor.headers, params=params
        )
        if response is None or response.status_code != 200:
            return
        for item in response.json()["deployments"]:
            if status is not None and item.get("status") != status:
                self.world.violation(f"list ?status={status} returned {item.get('status')}")
            self.world.observe(org, item, sent, received)

    def op_queue(self, client: Client, actor: Actor) -> None:
        org, cluster = self._org_and_cluster(client.rng, actor)
        response, _, _ = self.call(
            client,
            "queue",
            "GET",
            f"/deployment/queue/{cluster}",
            actor.headers,
            params=self._cluster_query(actor, org),
        )
        if response is None or response.status_code != 200:
            return
        positions = [entry["position"] for entry in response.json()["queue"]]
        if positions != list(range(1, len(positions) + 1)):
            self.world.violation(f"queue of {cluster} has positions {positions[:10]}...")

    def op_me(self, client: Client, actor: Actor) -> None:
        self.call(client, "me", "GET", "/user/me", actor.headers)

    def op_allocate(self, client: Client, actor: Actor) -> None:
        rng = client.rng
        org, cluster = self._org_and_cluster(rng, actor)
        amount = (rng.randint(1, 2), rng.randint(1, 4), rng.choice([0, 0, 1]))
        body = _reservation(org, cluster, amount)
        response, _, _ = self.call(
            client, "allocate", "POST", "/cluster/allocate", org.admin, json=body
        )
        if response is not None and response.status_code == 200:
            with self.world.lock:
                org.reservations.setdefault(cluster, []).append(amount)

    def op_release(self, client: Client, actor: Actor) -> None:
        org, cluster = self._org_and_cluster(client.rng, actor)
        with self.world.lock:
            held = org.reservations.get(cluster, [])
            amount = held.pop() if held else (1, 1, 0)
        body = _reservation(org, cluster, amount)
        self.call(client, "release", "POST", "/cluster/release", org.admin, json=body)

    # -- kill and restart, progress, the run --

    def monitor(self) -> None:
        """SIGKILL one replica after --kill-after responses, restart it after --down-seconds."""
        target = self.replicas[self.args.kill_replica % len(self.replicas)]
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            done = self.stats.responses()
            if done >= self.args.kill_after:
                break
            time.sleep(0.02)
        else:
            return
        report: dict[str, Any] = {"replica": target.index, "port": target.port}
        report["killed_after_responses"] = done
        report["killed_pid"] = target.pid
        target.kill()
        killed_at = time.monotonic()
        logger.info(
            "SIGKILLed replica %s (pid %s) after %s responses",
            target.index,
            report["killed_pid"],
            done,
        )
        self.kill_report = report
        self.stop.wait(self.args.down_seconds)
        try:
            target.start()
            report["restart_ready_seconds"] = round(target.wait_ready(60), 2)
        except RuntimeError as error:
            report["restart_error"] = str(error)[:2000]
            logger.error("restart failed: %s", error)
            return
        self.restarted[target.index] = time.monotonic()
        report["down_seconds"] = round(time.monotonic() - killed_at, 2)
        report["restarted_pid"] = target.pid
        report["restarted_after_responses"] = self.stats.responses()
        logger.info(
            "replica %s back (pid %s) after %.1fs down",
            target.index,
            target.pid,
            report["down_seconds"],
        )

    def progress(self) -> None:
        started = time.monotonic()
        while not self.stop.wait(5.0):
            with self.stats.lock:
                done = self.stats.completed
                errors = sum(self.stats.connection_errors.values())
            elapsed = time.monotonic() - started
            logger.info(
                "%s responses, %.0f/s, %s connection errors",
                done,
                done / max(elapsed, 1e-9),
                errors,
            )

    def run(self) -> float:
        """Drive until --requests or --seconds; returns the wall time spent."""
        self.deadline = time.monotonic() + self.args.seconds
        started = time.monotonic()
        threads = [
            threading.Thread(target=self.client, args=(n,), name=f"client-{n}", daemon=True)
            for n in range(self.args.clients)
        ]
        helpers = [threading.Thread(target=self.progress, name="progress", daemon=True)]
        if self.args.kill_after is not None:
            helpers.append(threading.Thread(target=self.monitor, name="monitor", daemon=True))
        for thread in threads + helpers:
            thread.start()
        join_until = self.deadline + self.args.request_timeout + self.args.failover_seconds + 30
        for thread in threads:
            thread.join(max(0.0, join_until - time.monotonic()))
        elapsed = time.monotonic() - started
        self.stop.set()
        for thread in helpers:
            thread.join(90)
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            self.world.violation(f"client threads still running at the end: {stuck}")
        return elapsed
