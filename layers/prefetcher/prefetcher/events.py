"""Pydantic models of the AWS events we consume, with the shapes AWS documents.

Built on first use (defer_build), so a function's cold start builds only the model it parses.

Only the fields we use are required (AWS's own EC2 sample has no `version`); everything we use
is validated strictly, because a repository name, tag or digest ends up in a command that runs
as root on nodes. A model that does not validate means the event is malformed or forged: it goes
to the dead-letter queue with the validation error as its reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from prefetcher import refs
from prefetcher.timestamps import aware

AccountId = Annotated[str, StringConstraints(pattern=r"^[0-9]{12}$")]
Region = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+){1,2}-[0-9]{1,2}$")]
InstanceId = Annotated[str, StringConstraints(pattern=r"^(i|mi)-[0-9a-f]{8,17}$")]
CommandId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
# SSM document names (and ARNs of shared documents).
DocumentName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{3,1011}$")]
Word = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_-]{1,32}$")]
MediaType = Annotated[str, StringConstraints(max_length=255, pattern=r"^[A-Za-z0-9.+/_-]*$")]


def _repository(value: str) -> str:
    if not refs.is_repository(value):
        raise ValueError("repository-name is not a valid ECR repository name")
    return value


def _digest(value: str) -> str:
    if not refs.is_digest(value):
        raise ValueError("image-digest is not of the form sha256:<64 lowercase hex>")
    return value


def _tag(value: str) -> str:
    if value and not refs.is_tag(value):
        raise ValueError("image-tag is not a valid image tag")
    return value


class _AwsEvent(EventBridgeModel):
    """The EventBridge envelope; subclasses pin `source`, `detail-type` and `detail`."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, defer_build=True)

    version: str = Field("0", max_length=8)
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    account: AccountId
    region: Region
    resources: list[Annotated[str, StringConstraints(max_length=2048)]] = Field(default_factory=list, max_length=100)

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        # EventBridge times are UTC ("2026-11-29T10:15:00Z"); read a zone-less time as UTC too.
        return aware(value)


# ---- ECR: "ECR Image Action" -------------------------------------------------------------


class EcrImageActionDetail(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, defer_build=True)

    action_type: Word = Field(alias="action-type")
    result: Word
    repository_name: Annotated[str, AfterValidator(_repository)] = Field(alias="repository-name")
    image_digest: Annotated[str, AfterValidator(_digest)] = Field(alias="image-digest")
    image_tag: Annotated[str, AfterValidator(_tag)] = Field("", alias="image-tag")
    manifest_media_type: MediaType | None = Field(None, alias="manifest-media-type")
    artifact_media_type: MediaType | None = Field(None, alias="artifact-media-type")


class EcrImageActionEvent(_AwsEvent):
    source: Literal["aws.ecr"]
    detail_type: Literal["ECR Image Action"] = Field(alias="detail-type")
    detail: EcrImageActionDetail

    @property
    def image(self) -> refs.ImageRef:
        return refs.ImageRef(
            registry=refs.ecr_registry(self.account, self.region),
            repository=self.detail.repository_name,
            digest=self.detail.image_digest,
            tag=self.detail.image_tag,
        )


# ---- SSM: "EC2 Command Invocation Status-change Notification" ------------------------------

InvocationStatus = Literal[
    "Pending", "InProgress", "Delayed", "Success", "Cancelled", "TimedOut", "Failed", "Cancelling"
]


class _CommandDetail(BaseModel):
    """What SSM's two command events share (one invocation, or the whole command)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, defer_build=True)

    command_id: CommandId = Field(alias="command-id")
    document_name: DocumentName = Field(alias="document-name")
    requested_date_time: datetime = Field(alias="requested-date-time")

    @field_validator("requested_date_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return aware(value)


class CommandInvocationDetail(_CommandDetail):
    # AWS's own sample names a different instance in `resources` than here: this one is right.
    instance_id: InstanceId = Field(alias="instance-id")
    status: InvocationStatus


class CommandInvocationEvent(_AwsEvent):
    source: Literal["aws.ssm"]
    detail_type: Literal["EC2 Command Invocation Status-change Notification"] = Field(alias="detail-type")
    detail: CommandInvocationDetail


# ---- SSM: "EC2 Command Status-change Notification" (the whole command) -------------------

CommandStatus = Literal["Pending", "InProgress", "Success", "Cancelled", "Failed", "TimedOut", "Cancelling"]


class CommandStatusDetail(_CommandDetail):
    """What the rollout path uses; `expire-after` and `parameters` are in AWS's shape but unused."""

    status: CommandStatus


class CommandStatusEvent(_AwsEvent):
    source: Literal["aws.ssm"]
    detail_type: Literal["EC2 Command Status-change Notification"] = Field(alias="detail-type")
    detail: CommandStatusDetail


# ---- EC2: "EC2 Instance State-change Notification" ----------------------------------------

InstanceState = Literal["pending", "running", "stopping", "stopped", "shutting-down", "terminated"]


class InstanceStateDetail(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, defer_build=True)

    instance_id: Annotated[str, StringConstraints(pattern=r"^i-[0-9a-f]{8,17}$")] = Field(alias="instance-id")
    state: InstanceState


class InstanceStateEvent(_AwsEvent):
    source: Literal["aws.ec2"]
    detail_type: Literal["EC2 Instance State-change Notification"] = Field(alias="detail-type")
    detail: InstanceStateDetail


# ---- The fleet check: EventBridge's "Scheduled Event", or our own "Fleet Check Requested" ------

ClusterName = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$")]
SCHEDULED = ("aws.events", "Scheduled Event")
REQUESTED = ("eks-image-prefetcher", "Fleet Check Requested")


class FleetCheckDetail(BaseModel):
    """A schedule's detail is `{}`; a request (`prefetcher verify`) may name clusters and who
    asked."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True, defer_build=True)

    clusters: list[ClusterName] = Field(default_factory=list, max_length=100)
    requested_by: str = Field("", alias="requested-by", max_length=256, pattern=r"^[A-Za-z0-9@._:/+=,-]*$")


class FleetCheckEvent(_AwsEvent):
    """Either the schedule rule's event (AWS's `Scheduled Event` shape: source `aws.events`,
    detail `{}`, the rule's ARN in `resources`) or an operator's request (source
    `eks-image-prefetcher`, detail-type `Fleet Check Requested`)."""

    source: Literal["aws.events", "eks-image-prefetcher"]
    detail_type: Literal["Scheduled Event", "Fleet Check Requested"] = Field(alias="detail-type")
    detail: FleetCheckDetail

    @model_validator(mode="after")
    def _pair(self) -> FleetCheckEvent:
        if (self.source, self.detail_type) not in (SCHEDULED, REQUESTED):
            raise ValueError(f"detail-type {self.detail_type!r} does not come from source {self.source!r}")
        if self.source == SCHEDULED[0] and (self.detail.clusters or self.detail.requested_by):
            raise ValueError("a Scheduled Event's detail is empty")
        return self

    @property
    def scheduled(self) -> bool:
        return self.source == SCHEDULED[0]


__all__ = [
    "CommandInvocationEvent",
    "CommandStatusEvent",
    "EcrImageActionEvent",
    "FleetCheckEvent",
    "InstanceStateEvent",
    "InvocationStatus",
]
