"""Prometheus instruments and the per-cluster collector behind `GET /metrics`.

A module of its own because both the web layer (request counts) and the services (pass
latency) record into these instruments, and neither should own them.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models import Cluster, Deployment, DeploymentStatus, Organization

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
    """Per-cluster gauges read from the database at scrape time, so every replica reports
    the same shared truth instead of its own partial view."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

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
        with self.session_factory() as session:
            clusters = session.execute(
                select(Cluster, Organization.name).join(
                    Organization, Organization.id == Cluster.organization_id
                )
            ).all()
            stats = _deployment_stats(session)
        for cluster, organization in clusters:
            key = [organization, cluster.name]
            by_status = stats.get(cluster.id, {})
            pending = by_status.get(DeploymentStatus.pending.value, (0, 0, 0, 0, 0))
            active = by_status.get(DeploymentStatus.running.value, (0, 0, 0, 0, 0))
            queue.add_metric(key, pending[0])
            running.add_metric(key, active[0])
            preemptions.add_metric(key, sum(row[4] for row in by_status.values()))
            for index, resource in enumerate(RESOURCES):
                total.add_metric([*key, resource], getattr(cluster, f"total_{resource}"))
                reserved = getattr(cluster, f"reserved_{resource}")
                allocated.add_metric([*key, resource], reserved + active[1 + index])
        yield from (queue, running, total, allocated, preemptions)


def _deployment_stats(session: Session) -> dict[int, dict[str, tuple[int, int, int, int, int]]]:
    rows = session.execute(
        select(
            Deployment.cluster_id,
            Deployment.status,
            func.count(),
            func.coalesce(func.sum(Deployment.required_cpu), 0),
            func.coalesce(func.sum(Deployment.required_ram), 0),
            func.coalesce(func.sum(Deployment.required_gpu), 0),
            func.coalesce(func.sum(Deployment.preemption_count), 0),
        ).group_by(Deployment.cluster_id, Deployment.status)
    ).all()
    stats: dict[int, dict[str, tuple[int, int, int, int, int]]] = {}
    for cluster_id, status, count, cpu, ram, gpu, preempted in rows:
        stats.setdefault(cluster_id, {})[status] = (
            int(count),
            int(cpu),
            int(ram),
            int(gpu),
            int(preempted),
        )
    return stats


def render(session_factory: sessionmaker[Session]) -> bytes:
    """The Prometheus text exposition: this process's instruments, then every cluster."""
    clusters = CollectorRegistry(auto_describe=False)
    clusters.register(ClusterCollector(session_factory))
    return generate_latest(PROCESS_REGISTRY) + generate_latest(clusters)
