"""Pydantic v2 request and response bodies; every bound of SPEC §1 lives here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

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


# --- users -----------------------------------------------------------------------------------


class UserRegister(Input):
    username: Username
    password: Password


class UserRead(Output):
    id: int
    username: str
    created_at: datetime


class Token(Output):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")


class OrganizationRole(Output):
    name: str
    role: RoleName


class Me(Output):
    id: int
    username: str
    organizations: list[OrganizationRole]


class JoinRequest(Input):
    invite_code: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]


class JoinResult(Output):
    organization: str
    role: RoleName


# --- organizations ---------------------------------------------------------------------------


class OrganizationCreate(Input):
    name: OrganizationName


class OrganizationCreated(Output):
    id: int
    name: str
    invite_code: str
    invite_role: RoleName
    invite_expires_at: datetime
    created_at: datetime


class InviteCode(Output):
    invite_code: str
    role: RoleName
    expires_at: datetime


class InviteRotate(Input):
    role: RoleName = "developer"
    expires_in_hours: Annotated[int, Field(ge=1, le=720, strict=True)] = 168


class Member(Output):
    username: str
    role: RoleName
    joined_at: datetime


class MemberList(Output):
    organization: str
    users: list[Member]


class RoleUpdate(Input):
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
    name: ClusterName
    organization_name: OrganizationName


class ClusterResize(Capacity):
    cluster_name: ClusterName
    organization_name: OrganizationName


class Reservation(Input):
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


class ClusterRead(Output):
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
    status: Literal["completed", "failed"]
    message: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None


class CheckpointReport(Input):
    message: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None


class DeploymentEventRead(Output):
    at: datetime
    type: str
    message: str


class EventRead(Output):
    """One event of an organization's feed (SPEC §4 "Events")."""

    id: int = Field(description="Ascending in commit order; the cursor of `after`")
    at: datetime = Field(description="When it happened")
    deployment_id: int
    cluster_name: str
    type: str = Field(examples=["created", "started", "preempted", "completed"])
    message: str


class EventPage(Output):
    events: list[EventRead]
    next_after: int = Field(
        description="Pass as `after` for the next page: the last id returned, else `after`"
    )


class DeploymentRead(Output):
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
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class DeploymentDetail(DeploymentRead):
    events: list[DeploymentEventRead]


class DeploymentList(Output):
    cluster_name: str
    deployments: list[DeploymentRead]


class QueueEntry(Output):
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


class Queue(Output):
    cluster_name: str
    queue: list[QueueEntry]
