"""SQLAlchemy 2.0 typed models: the tables the service keeps its whole state in."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from utils import utcnow

# SQLite only auto-increments a primary key declared exactly INTEGER; PostgreSQL gets BIGINT
# so ids reach 2^63-1 as the spec allows.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Timestamp(TypeDecorator[datetime]):
    """A UTC timestamp that reads back timezone-aware on every database (SQLite drops it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Role(enum.StrEnum):
    """A member's role in one organization, most powerful first."""

    admin = "admin"
    developer = "developer"
    viewer = "viewer"


ROLE_VALUES = tuple(role.value for role in Role)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    username: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(back_populates="user")


class Organization(Base):
    __tablename__ = "organizations"
    __table_args__ = (CheckConstraint(f"invite_role IN {ROLE_VALUES}", name="invite_role"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    # One active invite code per organization: rotating overwrites it, so the old one stops
    # working in the same transaction.
    invite_code: Mapped[str] = mapped_column(String(64), unique=True)
    invite_role: Mapped[str] = mapped_column(String(16))
    invite_expires_at: Mapped[datetime] = mapped_column(Timestamp)
    # When the active code was issued: a former member may rejoin only with a code issued
    # after their membership ended (SPEC §3).
    invite_issued_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(back_populates="organization")


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (CheckConstraint(f"role IN {ROLE_VALUES}", name="role"),)

    user_id: Mapped[int] = mapped_column(
        Id, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[int] = mapped_column(
        Id, ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    joined_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    user: Mapped[User] = relationship(back_populates="memberships")
    organization: Mapped[Organization] = relationship(back_populates="memberships")


class MembershipEnd(Base):
    """When a user's latest membership of an organization ended (they left or were removed)."""

    __tablename__ = "membership_ends"

    user_id: Mapped[int] = mapped_column(
        Id, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[int] = mapped_column(
        Id, ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    ended_at: Mapped[datetime] = mapped_column(Timestamp)


class Cluster(Base):
    """Fixed capacity; what is in use is derived, never counted by hand (see services)."""

    __tablename__ = "clusters"
    __table_args__ = (
        CheckConstraint(
            "reserved_cpu >= 0 AND reserved_ram >= 0 AND reserved_gpu >= 0", name="reserved_nonneg"
        ),
        CheckConstraint(
            "reserved_cpu <= total_cpu AND reserved_ram <= total_ram AND reserved_gpu <= total_gpu",
            name="reserved_within_total",
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        Id, ForeignKey("organizations.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(63))
    total_cpu: Mapped[int] = mapped_column(BigInteger)
    total_ram: Mapped[int] = mapped_column(BigInteger)
    total_gpu: Mapped[int] = mapped_column(BigInteger)
    reserved_cpu: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_ram: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_gpu: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    # Counters for /metrics, kept with the cluster so a scrape never reads history:
    # preemptions, and unsaved work they discarded in resource-seconds per resource.
    preemptions: Mapped[int] = mapped_column(BigInteger, default=0)
    lost_cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    lost_ram_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    lost_gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # Bumped by every change to the cluster's state; the loop forecasts again when it has
    # moved past `forecast_revision`.
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    forecast_revision: Mapped[int] = mapped_column(BigInteger, default=-1)
    # When the latest forecast's earliest history-based estimate comes to pass (null: it
    # has none): the loop forecasts again then, so a passed guess does not stay shown.
    forecast_valid_until: Mapped[datetime | None] = mapped_column(Timestamp)

    organization: Mapped[Organization] = relationship()


# Names are unique ignoring case, yet each keeps the spelling it was created with.
Index("uq_users_username_lower", func.lower(User.username), unique=True)
Index("uq_organizations_name_lower", func.lower(Organization.name), unique=True)
Index(
    "uq_clusters_organization_id_name_lower",
    Cluster.organization_id,
    func.lower(Cluster.name),
    unique=True,
)


class DeploymentStatus(enum.StrEnum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


STATUS_VALUES = tuple(status.value for status in DeploymentStatus)
FINISHED = (DeploymentStatus.completed, DeploymentStatus.failed, DeploymentStatus.cancelled)


class Deployment(Base):
    """A docker image with the resources it needs; its state is only ever changed by a pass
    or a request holding its cluster's row lock."""

    __tablename__ = "deployments"
    __table_args__ = (
        CheckConstraint(f"status IN {STATUS_VALUES}", name="status"),
        CheckConstraint("priority >= 0 AND priority <= 1000", name="priority_range"),
        Index("ix_deployments_organization_id", "organization_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(Id, ForeignKey("clusters.id", ondelete="CASCADE"))
    organization_id: Mapped[int] = mapped_column(
        Id, ForeignKey("organizations.id", ondelete="CASCADE")
    )
    created_by_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id"))
    name: Mapped[str | None] = mapped_column(String(63))
    docker_image: Mapped[str] = mapped_column(String(512))
    required_cpu: Mapped[int] = mapped_column(BigInteger)
    required_ram: Mapped[int] = mapped_column(BigInteger)
    required_gpu: Mapped[int] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=DeploymentStatus.pending.value)
    # True once every dependency has completed; only eligible deployments are swept.
    eligible: Mapped[bool] = mapped_column(default=True)
    # Why it failed or was cancelled; pending reasons are derived on read from live state.
    reason: Mapped[str | None] = mapped_column(String(1024))
    preempted_by_id: Mapped[int | None] = mapped_column(Id)
    duration_seconds: Mapped[int | None] = mapped_column(BigInteger)
    preemption_count: Mapped[int] = mapped_column(Integer, default=0)
    # Submission time: the FIFO key within a priority, kept across preemptions.
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    # The starvation clock: latest of submission, dependencies completing, last preemption.
    waiting_since: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Work kept across preemptions (SPEC §5 "Checkpoints"): as of the latest start, or of
    # the latest checkpoint of the current run (`checkpointed_at`, cleared at each start).
    saved_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    checkpointed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # A running timed deployment's end (latest start + duration - saved work at that start;
    # a checkpoint leaves it unchanged): lets a create ask "is anything due?" with an index.
    ends_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The forecast (SPEC §5), written by the loop for every unfinished deployment of a
    # cluster whose state changed: read by every request, computed by none.
    estimated_start_at: Mapped[datetime | None] = mapped_column(Timestamp)
    estimated_end_at: Mapped[datetime | None] = mapped_column(Timestamp)
    estimate_basis: Mapped[str | None] = mapped_column(String(16))
    estimate_reason: Mapped[str | None] = mapped_column(String(1024))

    cluster: Mapped[Cluster] = relationship()
    created_by: Mapped[User] = relationship()
    events: Mapped[list[DeploymentEvent]] = relationship(order_by="DeploymentEvent.id")
    dependencies: Mapped[list[DeploymentDependency]] = relationship(
        foreign_keys="DeploymentDependency.deployment_id",
        order_by="DeploymentDependency.depends_on_id",
    )


class DeploymentDependency(Base):
    __tablename__ = "deployment_dependencies"

    deployment_id: Mapped[int] = mapped_column(
        Id, ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    depends_on_id: Mapped[int] = mapped_column(
        Id, ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class DeploymentEvent(Base):
    """One step of a deployment's history. Its organization and cluster are copied from the
    deployment when it is written, so an organization's feed (SPEC §4 "Events") is read by
    index in id order, one page at a time, without a join."""

    __tablename__ = "deployment_events"
    __table_args__ = (
        Index("ix_deployment_events_organization_id_id", "organization_id", "id"),
        Index("ix_deployment_events_cluster_id_id", "cluster_id", "id"),
        Index("ix_deployment_events_deployment_id_id", "deployment_id", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(Id, ForeignKey("deployments.id", ondelete="CASCADE"))
    organization_id: Mapped[int] = mapped_column(
        Id, ForeignKey("organizations.id", ondelete="CASCADE")
    )
    cluster_id: Mapped[int] = mapped_column(Id, ForeignKey("clusters.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(String(1024))


# The queue in scheduling order (priority desc, submission, id) per cluster and state: what
# passes, positions and the queue endpoint walk.
Index(
    "ix_deployments_queue",
    Deployment.cluster_id,
    Deployment.status,
    Deployment.eligible,
    Deployment.priority.desc(),
    Deployment.created_at,
    Deployment.id,
)

# The whole queue of a cluster in that order, eligible or not: a queue page reads its rows
# in order instead of sorting the queue.
Index(
    "ix_deployments_queue_order",
    Deployment.cluster_id,
    Deployment.status,
    Deployment.priority.desc(),
    Deployment.created_at,
    Deployment.id,
)

# Is any running deployment of a cluster due? (a create asks before its fast path)
Index("ix_deployments_ends", Deployment.cluster_id, Deployment.status, Deployment.ends_at)
# What a cluster's running deployments hold, read from the index alone: summed by a create
# (all of them, or those of a priority and above), per priority level for the reasons a
# wait gives, and the lowest ids of a level that hold some of a resource, to name them.
Index(
    "ix_deployments_running",
    Deployment.cluster_id,
    Deployment.status,
    Deployment.priority,
    Deployment.id,
    Deployment.required_cpu,
    Deployment.required_ram,
    Deployment.required_gpu,
    Deployment.started_at,
)
# Unfinished deployments of every cluster (metrics), whatever the stored history.
Index("ix_deployments_status_cluster", Deployment.status, Deployment.cluster_id)

# Per-organization limits count an organization's pending deployments.
Index("ix_deployments_organization_status", Deployment.organization_id, Deployment.status)

# The starvation guard looks for the longest-waiting deployments of a cluster.
Index(
    "ix_deployments_waiting",
    Deployment.cluster_id,
    Deployment.status,
    Deployment.eligible,
    Deployment.waiting_since,
)
