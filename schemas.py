"""Pydantic v2 request and response bodies; every bound on names, units and ids lives here.

Each body carries an example (`examples` in its JSON schema) that Swagger UI shows and
pre-fills: request examples work as they are right after the README's walkthrough (org
`acme-ml`, cluster `gpu-a`, users `alice` and `bob`); response examples are answers
recorded from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_UNITS = 1_000_000
MAX_ID = 2**63 - 1

OrganizationName = Annotated[
    str, StringConstraints(min_length=3, max_length=63, pattern=NAME_PATTERN)
]
ClusterName = OrganizationName
Username = Annotated[str, StringConstraints(min_length=3, max_length=32, pattern=NAME_PATTERN)]
MAX_PASSWORD_LENGTH = 128
Password = Annotated[str, StringConstraints(min_length=8, max_length=MAX_PASSWORD_LENGTH)]
Units = Annotated[int, Field(ge=0, le=MAX_UNITS, strict=True)]
RoleName = Literal["admin", "developer", "viewer"]
# PostgreSQL text cannot hold NUL; free text that reaches the database must not carry one.
NO_NUL = r"^[^\x00]*$"


class Input(BaseModel):
    """Request bodies reject unknown fields, so a typo is a 422 rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def example(*examples: dict[str, Any]) -> ConfigDict:
    """The config that gives a body's JSON schema these `examples` (the first is pre-filled)."""
    return ConfigDict(json_schema_extra={"examples": list(examples)})


# --- errors ----------------------------------------------------------------------------------


class ErrorMessage(BaseModel):
    """A refusal: `detail` says in a sentence what was wrong."""

    model_config = example({"detail": "cluster 'gpu-a' not found in 'acme-ml'"})

    detail: str


class ValidationIssue(BaseModel):
    """One field that failed validation: where, why, and the offending value."""

    loc: list[str | int] = Field(description="Where: body, path or query, then the field")
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrors(BaseModel):
    """A request that does not validate: one entry per problem."""

    model_config = example(
        {
            "detail": [
                {
                    "type": "greater_than_equal",
                    "loc": ["body", "required_gpu"],
                    "msg": "Input should be greater than or equal to 0",
                    "input": -1,
                    "ctx": {"ge": 0},
                }
            ]
        }
    )

    detail: list[ValidationIssue]


# --- users -----------------------------------------------------------------------------------


class UserRegister(Input):
    model_config = example({"username": "carol", "password": "a long enough passphrase"})

    username: Username
    password: Password


class UserRead(Output):
    model_config = example({"id": 3, "username": "carol", "created_at": "2026-12-01T09:30:00Z"})

    id: int
    username: str
    created_at: datetime


class Token(Output):
    model_config = example(
        {
            "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIiwiaWF0IjoxNzk2"
            "NzE1MDAwLCJleHAiOjE3OTY3MTg2MDB9.q1Y9bV0m3Lx2XcR8k6wZ5nJtP4sHfA7dGeU0oIyTb1E",
            "token_type": "bearer",
            "expires_in": 3600,
        }
    )

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")


class OrganizationRole(Output):
    model_config = example({"name": "acme-ml", "role": "admin"})

    name: str
    role: RoleName


class Me(Output):
    model_config = example(
        {"id": 1, "username": "alice", "organizations": [{"name": "acme-ml", "role": "admin"}]}
    )

    id: int
    username: str
    organizations: list[OrganizationRole]


class JoinRequest(Input):
    model_config = example({"invite_code": "WEFj0ZHpccVFed_oFb6Dhw"})

    invite_code: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)] = (
        Field(description="The code an admin reads at GET /organization/get-invite-code/{org}")
    )


class JoinResult(Output):
    model_config = example({"organization": "acme-ml", "role": "developer"})

    organization: str
    role: RoleName


# --- organizations ---------------------------------------------------------------------------


class OrganizationCreate(Input):
    model_config = example({"name": "acme-research"})

    name: OrganizationName


class OrganizationCreated(Output):
    model_config = example(
        {
            "id": 1,
            "name": "acme-ml",
            "invite_code": "WEFj0ZHpccVFed_oFb6Dhw",
            "invite_role": "developer",
            "invite_expires_at": "2026-12-08T09:00:00Z",
            "created_at": "2026-12-01T09:00:00Z",
        }
    )

    id: int
    name: str
    invite_code: str
    invite_role: RoleName
    invite_expires_at: datetime
    created_at: datetime


class InviteCode(Output):
    model_config = example(
        {
            "invite_code": "WEFj0ZHpccVFed_oFb6Dhw",
            "role": "developer",
            "expires_at": "2026-12-08T09:00:00Z",
        }
    )

    invite_code: str
    role: RoleName
    expires_at: datetime


class InviteRotate(Input):
    model_config = example({"role": "developer", "expires_in_hours": 168})

    role: RoleName = "developer"
    expires_in_hours: Annotated[int, Field(ge=1, le=720, strict=True)] = 168


class Member(Output):
    model_config = example(
        {"username": "bob", "role": "developer", "joined_at": "2026-12-01T09:05:00Z"}
    )

    username: str
    role: RoleName
    joined_at: datetime


class MemberList(Output):
    model_config = example(
        {
            "organization": "acme-ml",
            "users": [
                {"username": "alice", "role": "admin", "joined_at": "2026-12-01T09:00:00Z"},
                {"username": "bob", "role": "developer", "joined_at": "2026-12-01T09:05:00Z"},
            ],
        }
    )

    organization: str
    users: list[Member]


class RoleUpdate(Input):
    model_config = example({"role": "admin"})

    role: RoleName


# --- clusters --------------------------------------------------------------------------------


class Capacity(Input):
    """Totals of a cluster: at least one unit of something."""

    total_cpu: Units
    total_ram: Units
    total_gpu: Units

    @model_validator(mode="after")
    def _offers_something(self) -> Self:
        if self.total_cpu == self.total_ram == self.total_gpu == 0:
            raise ValueError("a cluster must offer at least one unit of cpu, ram or gpu")
        return self


class ClusterCreate(Capacity):
    model_config = example(
        {
            "name": "gpu-b",
            "organization_name": "acme-ml",
            "total_cpu": 32,
            "total_ram": 256,
            "total_gpu": 4,
        }
    )

    name: ClusterName
    organization_name: OrganizationName


class ClusterResize(Capacity):
    model_config = example(
        {
            "cluster_name": "gpu-a",
            "organization_name": "acme-ml",
            "total_cpu": 64,
            "total_ram": 512,
            "total_gpu": 8,
        }
    )

    cluster_name: ClusterName
    organization_name: OrganizationName


class Reservation(Input):
    model_config = example(
        {"cluster_name": "gpu-a", "organization_name": "acme-ml", "cpu": 4, "ram": 32, "gpu": 0}
    )

    cluster_name: ClusterName
    organization_name: OrganizationName
    cpu: Units
    ram: Units
    gpu: Units

    @model_validator(mode="after")
    def _asks_for_something(self) -> Self:
        if self.cpu == self.ram == self.gpu == 0:
            raise ValueError("reserve or release at least one unit of cpu, ram or gpu")
        return self


CLUSTER_EXAMPLE: dict[str, Any] = {
    "id": 1,
    "name": "gpu-a",
    "organization_name": "acme-ml",
    "total_cpu": 32,
    "total_ram": 256,
    "total_gpu": 4,
    "reserved_cpu": 0,
    "reserved_ram": 0,
    "reserved_gpu": 0,
    "allocated_cpu": 8,
    "allocated_ram": 64,
    "allocated_gpu": 4,
    "available_cpu": 24,
    "available_ram": 192,
    "available_gpu": 0,
    "running": 1,
    "pending": 1,
    "created_at": "2026-12-01T09:10:00Z",
}


class ClusterRead(Output):
    """A cluster's capacity: allocated = reserved + what running deployments request, and
    available = total - allocated."""

    model_config = example(CLUSTER_EXAMPLE)

    id: int
    name: str
    organization_name: str
    total_cpu: int
    total_ram: int
    total_gpu: int
    reserved_cpu: int
    reserved_ram: int
    reserved_gpu: int
    allocated_cpu: int
    allocated_ram: int
    allocated_gpu: int
    available_cpu: int
    available_ram: int
    available_gpu: int
    running: int
    pending: int
    created_at: datetime


class ClusterList(Output):
    model_config = example({"organization_name": "acme-ml", "clusters": [CLUSTER_EXAMPLE]})

    organization_name: str
    clusters: list[ClusterRead]


# --- deployments -----------------------------------------------------------------------------

# The OCI distribution reference grammar (distribution/reference):
#   [domain[:port]/]path[:tag][@digest]
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
DOCKER_IMAGE_PATTERN = (
    rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?$"
)

DeploymentName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=NAME_PATTERN)
]
DockerImage = Annotated[
    str, StringConstraints(min_length=1, max_length=512, pattern=DOCKER_IMAGE_PATTERN)
]
Priority = Annotated[int, Field(ge=0, le=1000, strict=True)]
DeploymentId = Annotated[int, Field(ge=1, le=MAX_ID, strict=True)]
DeploymentStatusName = Literal["pending", "running", "completed", "failed", "cancelled"]


class DeploymentCreate(Input):
    model_config = example(
        {
            "cluster_name": "gpu-a",
            "organization_name": "acme-ml",
            "name": "finetune-bert",
            "docker_image": "ghcr.io/acme/train:1.0",
            "required_cpu": 4,
            "required_ram": 32,
            "required_gpu": 1,
            "priority": 0,
            "depends_on": [],
            "duration_seconds": 3600,
        }
    )

    cluster_name: ClusterName
    organization_name: OrganizationName
    docker_image: DockerImage = Field(examples=["ghcr.io/acme/model:1.0"])
    required_cpu: Units
    required_ram: Units
    required_gpu: Units
    priority: Priority = 0
    name: DeploymentName | None = None
    depends_on: Annotated[list[DeploymentId], Field(max_length=100)] = []
    duration_seconds: Annotated[int, Field(ge=1, le=10**9, strict=True)] | None = Field(
        None, description="Run time from its latest start; null runs until cancelled or reported"
    )

    @model_validator(mode="after")
    def _requests_something(self) -> Self:
        if self.required_cpu == self.required_ram == self.required_gpu == 0:
            raise ValueError("a deployment must request at least one unit of cpu, ram or gpu")
        return self


class StatusReport(Input):
    model_config = example({"status": "completed", "message": "3 epochs done, model saved"})

    status: Literal["completed", "failed"]
    message: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None


class CheckpointReport(Input):
    model_config = example({"message": "epoch 2 of 3 written to s3://acme-ckpt/train"})

    message: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None


class DeploymentEventRead(Output):
    model_config = example(
        {"at": "2026-12-01T09:21:00Z", "type": "preempted", "message": "preempted by deployment 3"}
    )

    at: datetime
    type: str
    message: str


DEPLOYMENT_EXAMPLE: dict[str, Any] = {
    "id": 2,
    "name": "eval-llm",
    "cluster_name": "gpu-a",
    "organization_name": "acme-ml",
    "docker_image": "ghcr.io/acme/eval:1.0",
    "required_cpu": 4,
    "required_ram": 32,
    "required_gpu": 2,
    "priority": 1,
    "status": "pending",
    "reason": "needs 2 gpu, 0 available (4 used by 1 deployment of priority >= 1, 0 reserved)",
    "queue_position": 1,
    "depends_on": [],
    "duration_seconds": None,
    "preemption_count": 0,
    "saved_seconds": 0.0,
    "checkpointed_at": None,
    "estimated_start_at": "2026-12-01T11:20:30Z",
    "estimated_end_at": None,
    "estimate_basis": "unknown",
    "created_by": "bob",
    "created_at": "2026-12-01T09:20:30Z",
    "started_at": None,
    "finished_at": None,
}


EstimateBasis = Literal["declared", "history", "unknown"]


EVENT_EXAMPLE: dict[str, Any] = {
    "id": 41,
    "at": "2026-12-01T09:20:30Z",
    "deployment_id": 2,
    "cluster_name": "gpu-a",
    "type": "preempted",
    "message": "preempted by deployment 3; 95 s of unsaved work lost",
}


class EventRead(Output):
    """One event of an organization's feed."""

    model_config = example(EVENT_EXAMPLE)

    id: int = Field(description="Ascending in commit order; the cursor of `after`")
    at: datetime = Field(description="When it happened")
    deployment_id: int
    cluster_name: str
    type: str = Field(examples=["created", "started", "preempted", "completed"])
    message: str


class EventPage(Output):
    model_config = example({"events": [EVENT_EXAMPLE], "next_after": 41})

    events: list[EventRead]
    next_after: int = Field(
        description="Pass as `after` for the next page: the last id returned, else `after`"
    )


class DeploymentRead(Output):
    model_config = example(DEPLOYMENT_EXAMPLE)

    id: int
    name: str | None
    cluster_name: str
    organization_name: str
    docker_image: str
    required_cpu: int
    required_ram: int
    required_gpu: int
    priority: int
    status: DeploymentStatusName
    reason: str | None
    queue_position: int | None
    depends_on: list[int]
    duration_seconds: int | None
    preemption_count: int
    saved_seconds: float = Field(
        description="Work kept across preemptions (seconds); never above duration_seconds"
    )
    checkpointed_at: datetime | None = Field(
        description="The latest checkpoint of the current run (of the last run while waiting)"
    )
    estimated_start_at: datetime | None = Field(
        description="Pending: when the forecast expects it to start (null when unknown)"
    )
    estimated_end_at: datetime | None = Field(
        description="Pending or running: when the forecast expects it to end"
    )
    estimate_basis: EstimateBasis | None = Field(
        description="declared (every duration it rests on was given), history (some come "
        "from past runs) or unknown; null once finished or before the first forecast"
    )
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class DeploymentDetail(DeploymentRead):
    model_config = example(
        {
            **DEPLOYMENT_EXAMPLE,
            "id": 1,
            "name": "train-llm",
            "docker_image": "ghcr.io/acme/train:1.0",
            "required_cpu": 8,
            "required_ram": 64,
            "required_gpu": 4,
            "status": "running",
            "reason": None,
            "queue_position": None,
            "duration_seconds": 7200,
            "preemption_count": 1,
            "created_at": "2026-12-01T09:20:00Z",
            "started_at": "2026-12-01T09:25:00Z",
            "events": [
                {"at": "2026-12-01T09:20:00Z", "type": "created", "message": "submitted by bob"},
                {"at": "2026-12-01T09:20:00Z", "type": "started", "message": "started"},
                {
                    "at": "2026-12-01T09:21:00Z",
                    "type": "preempted",
                    "message": "preempted by deployment 3",
                },
                {
                    "at": "2026-12-01T09:21:00Z",
                    "type": "requeued",
                    "message": "back in the queue at its original place",
                },
                {"at": "2026-12-01T09:25:00Z", "type": "started", "message": "started"},
            ],
        }
    )

    events: list[DeploymentEventRead]


class Preview(Output):
    model_config = example(
        {
            "would_start": True,
            "would_preempt": [2],
            "queue_position": None,
            "reason": None,
            "estimated_start_at": "2026-12-01T09:30:00Z",
            "estimate_basis": "declared",
        }
    )

    would_start: bool
    would_preempt: list[int] = Field(
        description="Running deployments the new one itself would preempt, ascending"
    )
    queue_position: int | None
    reason: str | None
    estimated_start_at: datetime | None
    estimate_basis: EstimateBasis


@dataclass(frozen=True)
class Page:
    """Which part of a list to answer: after an id (lists) or an offset (the queue)."""

    after: int = 0
    limit: int = 1000


class DeploymentList(Output):
    model_config = example(
        {"cluster_name": "gpu-a", "deployments": [DEPLOYMENT_EXAMPLE], "next_after": None}
    )

    cluster_name: str
    deployments: list[DeploymentRead]
    next_after: int | None = Field(
        description="The last id returned when more match after it (pass it as `after`), else null"
    )


QUEUE_ENTRY_EXAMPLE: dict[str, Any] = {
    "deployment_id": 1,
    "name": "train-llm",
    "position": 1,
    "priority": 1,
    "required_cpu": 8,
    "required_ram": 64,
    "required_gpu": 4,
    "reason": "preempted by deployment 3; needs 4 gpu, 0 available "
    "(4 used by 1 deployment of priority >= 1, 0 reserved)",
    "waiting_seconds": 12.5,
    "eligible": True,
    "preemption_count": 1,
    "submitted_at": "2026-12-01T09:20:00Z",
    "estimated_start_at": "2026-12-01T11:20:00Z",
    "estimate_basis": "declared",
}


class QueueEntry(Output):
    model_config = example(QUEUE_ENTRY_EXAMPLE)

    deployment_id: int
    name: str | None
    position: int
    priority: int
    required_cpu: int
    required_ram: int
    required_gpu: int
    reason: str
    waiting_seconds: float = Field(
        description="Seconds since submission, dependencies completing or last preemption"
    )
    eligible: bool
    preemption_count: int
    submitted_at: datetime
    estimated_start_at: datetime | None
    estimate_basis: EstimateBasis | None


class Queue(Output):
    model_config = example(
        {
            "cluster_name": "gpu-a",
            "queue": [
                QUEUE_ENTRY_EXAMPLE,
                {
                    **QUEUE_ENTRY_EXAMPLE,
                    "deployment_id": 2,
                    "name": "eval-llm",
                    "position": 2,
                    "required_cpu": 4,
                    "required_ram": 32,
                    "required_gpu": 2,
                    "reason": "needs 2 gpu, 0 available "
                    "(4 used by 1 deployment of priority >= 1, 0 reserved)",
                    "waiting_seconds": 12.0,
                    "preemption_count": 0,
                    "submitted_at": "2026-12-01T09:20:30Z",
                },
            ],
            "total": 2,
        }
    )

    cluster_name: str
    total: int = Field(description="Pending deployments in the whole queue")
    queue: list[QueueEntry]
