"""Each function's configuration: its environment (set by template.yaml), validated once at cold
start. Handlers build these; logic receives them and never reads os.environ itself."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from prefetcher.errors import ConfigurationError

CLUSTER_NAME = r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$"  # EKS CreateCluster's pattern
NODE_GROUP_NAME = r"^[0-9A-Za-z][A-Za-z0-9_.-]{0,62}$"
# SendCommand's own patterns for MaxConcurrency and MaxErrors.
MAX_CONCURRENCY = r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$"
MAX_ERRORS = r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$"


def _split(value: object) -> object:
    """Template parameters arrive as comma-separated strings; blanks are dropped."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


CommaList = Annotated[tuple[str, ...], BeforeValidator(_split)]


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, defer_build=True)

    table_name: str = Field(alias="TABLE_NAME", min_length=3, max_length=255)
    # Powertools' own switch; template.yaml sets it from the XRayTracing parameter.
    trace_disabled: bool = Field(True, alias="POWERTOOLS_TRACE_DISABLED")
    dead_letter_queue_url: str = Field("", alias="DEAD_LETTER_QUEUE_URL")
    history_ttl_days: int = Field(90, alias="HISTORY_TTL_DAYS", ge=1, le=3650)

    @property
    def tracing(self) -> bool:
        return not self.trace_disabled

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Self:
        try:
            return cls.model_validate(dict(environ))
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors())
            raise ConfigurationError(f"{cls.__name__} from the environment is invalid: {problems}") from None


class AgentSettings(BaseModel):
    """What every pull command passes to the node agent (both the push and the join path)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, defer_build=True)

    document_name: str = Field(alias="DOCUMENT_NAME", min_length=3, max_length=128)
    max_concurrency: str = Field("10%", alias="MAX_CONCURRENCY", pattern=MAX_CONCURRENCY)
    max_errors: str = Field("10%", alias="MAX_ERRORS", pattern=MAX_ERRORS)
    # SendCommand TimeoutSeconds: how long SSM keeps trying to deliver to a node.
    delivery_timeout_seconds: int = Field(600, alias="DELIVERY_TIMEOUT_SECONDS", ge=30, le=2_592_000)
    # The document's executionTimeout: how long the agent script may run on a node.
    execution_timeout_seconds: int = Field(3600, alias="EXECUTION_TIMEOUT_SECONDS", ge=60, le=172_800)
    min_free_disk_mib: int = Field(2048, alias="MIN_FREE_DISK_MIB", ge=0, le=10_000_000)
    pull_parallelism: int = Field(3, alias="PULL_PARALLELISM", ge=1, le=16)
    pull_timeout_seconds: int = Field(1800, alias="PULL_TIMEOUT_SECONDS", ge=30, le=86_400)
    cleanup_superseded: bool = Field(False, alias="CLEANUP_SUPERSEDED")
    # The CRI pin against the kubelet's image GC (docs/node-agent.md); off: no pin, and the next
    # inventory removes this tool's pins.
    pin_images: bool = Field(True, alias="PIN_IMAGES")


class SelectionSettings(BaseModel):
    """Which clusters (and optionally node groups) get the images."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, defer_build=True)

    target_clusters: CommaList = Field(alias="TARGET_CLUSTERS", min_length=1)
    target_node_groups: CommaList = Field((), alias="TARGET_NODE_GROUPS")

    @field_validator("target_clusters")
    @classmethod
    def _clusters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not re.match(CLUSTER_NAME, name)]
        if bad:
            raise ValueError(f"not EKS cluster names: {bad}")
        return tuple(dict.fromkeys(value))

    @field_validator("target_node_groups")
    @classmethod
    def _node_groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not re.match(NODE_GROUP_NAME, name)]
        if bad:
            raise ValueError(f"not node group / node pool names: {bad}")
        return tuple(dict.fromkeys(value))


class _PullSettings(_Settings):
    """The settings of a function that sends pull commands: to whom, and with what."""

    selection: SelectionSettings
    agent: AgentSettings

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: object) -> object:
        # The environment is flat; the selection and agent groups read the same variables.
        if isinstance(data, dict):
            return {**data, "selection": data.get("selection", data), "agent": data.get("agent", data)}
        return data


class ImagePushSettings(_PullSettings):
    repository_patterns: CommaList = Field(("*",), alias="REPOSITORY_PATTERNS", min_length=1)
    tag_patterns: CommaList = Field(("*",), alias="TAG_PATTERNS", min_length=1)


class AuditSettings(_Settings):
    """The audit function reads results and sends again the images a node did not report."""

    document_name: str = Field(alias="DOCUMENT_NAME", min_length=3, max_length=128)
    agent: AgentSettings

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: object) -> object:
        if isinstance(data, dict):
            return {**data, "agent": data.get("agent", data)}
        return data


class JoinSettings(_PullSettings):
    join_queue_url: str = Field("", alias="JOIN_QUEUE_URL")
    # Receives of one join event before the node counts as undeliverable: the queue's
    # maxReceiveCount (a template test checks they agree).
    join_max_attempts: int = Field(8, alias="JOIN_MAX_ATTEMPTS", ge=1, le=50)
    # Seconds until the next try, after the 1st, 2nd, ... failed try (the last repeats).
    join_retry_delays: CommaList = Field(("15", "30", "60", "120", "180", "240", "240"), alias="JOIN_RETRY_DELAYS")

    @field_validator("join_retry_delays")
    @classmethod
    def _delays(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not all(part.isdigit() and int(part) <= 43_200 for part in value):
            raise ValueError("JOIN_RETRY_DELAYS must be comma-separated whole seconds, each at most 43200")
        return value

    def retry_delay(self, attempt: int) -> int:
        """Seconds before try `attempt + 1`, after try `attempt` (1-based) failed."""
        delays = [int(part) for part in self.join_retry_delays]
        return delays[min(attempt, len(delays)) - 1]


class FleetCheckSettings(_PullSettings):
    """The scheduled (or requested) fleet check: catch-up budget, rounds before a silent node is
    checked with EC2, and where bad events go."""

    # Catch-up commands per node and digest before it is recorded given-up.
    catch_up_max_attempts: int = Field(5, alias="CATCH_UP_MAX_ATTEMPTS", ge=1, le=50)
    # Seconds after the 1st, 2nd, ... catch-up before the next may go (the last repeats).
    catch_up_backoff: CommaList = Field(("3600", "14400", "57600", "230400"), alias="CATCH_UP_BACKOFF_SECONDS")
    # Inventory rounds in a row a live node may leave unanswered before EC2 is asked about it.
    leave_after_rounds: int = Field(
        3, alias="LEAVE_AFTER_ROUNDS", ge=1, le=15
    )  # store.nodes.ROUNDS_KEPT keeps 16 rounds

    @field_validator("catch_up_backoff")
    @classmethod
    def _backoff(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not all(part.isdigit() and int(part) <= 2_592_000 for part in value):
            raise ValueError("CATCH_UP_BACKOFF_SECONDS must be comma-separated whole seconds, each at most 2592000")
        return value

    @property
    def backoff_seconds(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.catch_up_backoff)


class RolloutSettings(_Settings):
    """The rollout events: which document's commands, and how long to wait for the audit."""

    document_name: str = Field(alias="DOCUMENT_NAME", min_length=3, max_length=128)
    # Seconds after the command ended (its status event's time) during which an event the audit
    # table has not caught up with is retried; past them it is emitted with what is recorded.
    grace_seconds: int = Field(900, alias="ROLLOUT_GRACE_SECONDS", ge=0, le=86_400)
    # The queue's maxReceiveCount (a template test checks they agree): on this receive the event
    # is emitted with what is recorded, so it is never lost to the dead-letter queue by waiting.
    max_receives: int = Field(6, alias="ROLLOUT_MAX_RECEIVES", ge=1, le=50)
