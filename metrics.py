"""Prometheus instruments and the per-cluster gauges behind `GET /metrics`.

A module of its own because both the web layer (request counts) and the services (pass
latency) record into these instruments, and neither should own them. It reads no database:
`services.cluster_gauges` gives it the numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

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


def render(clusters: Sequence[ClusterNumbers]) -> bytes:
    """The Prometheus text exposition: this process's instruments, then every cluster."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(clusters))
    return generate_latest(PROCESS_REGISTRY) + generate_latest(registry)
