"""Prometheus instruments and the per-cluster gauges behind `GET /metrics`.

A module of its own because both the web layer (request counts) and the services (pass
latency) record into these instruments, and neither should own them. It reads no database:
`services.cluster_gauges` gives it the numbers.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Process-wide instruments; each replica exposes its own, Prometheus sums them.
PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)
HTTP_REQUESTS = Counter(
    "hypervisor_http_requests_total",
    "HTTP requests answered",
    ["method", "route", "status"],
    registry=PROCESS_REGISTRY,
)
HTTP_LATENCY = Histogram(
    "hypervisor_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    registry=PROCESS_REGISTRY,
)
PASS_SECONDS = Histogram(
    "hypervisor_scheduling_pass_duration_seconds",
    "Time of one scheduling pass over one cluster",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=PROCESS_REGISTRY,
)

FORECAST_SECONDS = Histogram(
    "hypervisor_forecast_duration_seconds",
    "Time to forecast one cluster (read, simulate, write)",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=PROCESS_REGISTRY,
)

RESOURCES = ("cpu", "ram", "gpu")


class ClusterCollector(Collector):
    """Per-cluster gauges from numbers read out of the database at scrape time, so every
    replica reports the same shared truth instead of its own partial view."""

    def __init__(self, clusters: Sequence[ClusterNumbers]) -> None:
        self.clusters = clusters

    def collect(self) -> Iterator[Metric]:
        labels = ["organization", "cluster"]
        queue = GaugeMetricFamily(
            "hypervisor_cluster_queue_length", "Pending deployments", labels=labels
        )
        running = GaugeMetricFamily(
            "hypervisor_cluster_running", "Running deployments", labels=labels
        )
        total = GaugeMetricFamily(
            "hypervisor_cluster_total", "Capacity", labels=[*labels, "resource"]
        )
        allocated = GaugeMetricFamily(
            "hypervisor_cluster_allocated",
            "Reserved plus requests of running deployments",
            labels=[*labels, "resource"],
        )
        preemptions = CounterMetricFamily(
            "hypervisor_cluster_preemptions",
            "Preemptions of the cluster's deployments",
            labels=labels,
        )
        lost = CounterMetricFamily(
            "hypervisor_cluster_preempted_work_resource_seconds",
            "Unsaved work discarded by preemptions: seconds times the request, per resource",
            labels=[*labels, "resource"],
        )
        for numbers in self.clusters:
            key = [numbers.organization, numbers.cluster]
            queue.add_metric(key, numbers.pending)
            running.add_metric(key, numbers.running)
            preemptions.add_metric(key, numbers.preemptions)
            for resource in RESOURCES:
                total.add_metric([*key, resource], getattr(numbers.total, resource))
                allocated.add_metric([*key, resource], getattr(numbers.allocated, resource))
                lost.add_metric([*key, resource], numbers.lost_seconds[resource])
        yield from (queue, running, total, allocated, preemptions, lost)


class ClusterNumbers(Protocol):
    """What the collector needs of one cluster (`services.views.ClusterGauges`)."""

    @property
    def organization(self) -> str: ...
    @property
    def cluster(self) -> str: ...
    @property
    def running(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def preemptions(self) -> int: ...
    @property
    def lost_seconds(self) -> dict[str, float]: ...
    @property
    def total(self) -> Any: ...
    @property
    def allocated(self) -> Any: ...


def render_process() -> bytes:
    """The Prometheus text of this process's instruments (requests, pass latency)."""
    return generate_latest(PROCESS_REGISTRY)


def render_clusters(clusters: Sequence[ClusterNumbers]) -> bytes:
    """The Prometheus text of every cluster's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(clusters))
    return generate_latest(registry)


def scrape_authorized(authorization: str, token: str) -> bool:
    """Whether an `Authorization` header carries the operator's bearer token (compared in
    constant time)."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.encode(), token.encode())


T = TypeVar("T")


class SharedSnapshot(Generic[T]):
    """A value computed at most once every `max_age` seconds of the process clock and shared
    by every caller: while one caller recomputes it, the others take the previous value (or,
    before there is one, wait for the first). Safe to call from many threads."""

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.clock = clock
        self._computing = threading.Lock()
        self._value: tuple[T] | None = None  # boxed: None means "none taken yet"
        self._taken_at = -math.inf

    def get(self, compute: Callable[[], T]) -> T:
        """The shared value, recomputed with `compute` if it is older than `max_age`."""
        current = self._value
        if current is not None:
            if self._fresh() or not self._computing.acquire(blocking=False):
                return current[0]  # fresh, or another caller is already taking a new one
        else:
            self._computing.acquire()  # the very first value: everyone waits for it
        try:
            current = self._value
            if current is not None and self._fresh():
                return current[0]  # taken while this caller waited
            taken_at = self.clock()
            value = compute()
            self._value, self._taken_at = (value,), taken_at
            return value
        finally:
            self._computing.release()

    def _fresh(self) -> bool:
        return self.clock() - self._taken_at < self.max_age
