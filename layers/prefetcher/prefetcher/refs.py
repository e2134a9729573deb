"""Image references: the one definition of what a registry, repository, tag and digest may look
like. The same regular expressions appear, literally, as `allowedPattern`s of the SSM document
in template.yaml and in the node agent; tests/unit/test_document.py checks that they agree.

The patterns are POSIX extended regular expressions (no `\\d`, no `(?:`), and RE2 compiles them
(no counted repeat above 1000, alone or nested), so bash's `=~`, the SSM service (Java), the SSM
agent (Go's regexp) and Python all read them the same way (tests/unit/test_document.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Lengths are checked apart from the patterns (255 for a registry, 256 for a repository).
# A DNS name (lowercase), optionally with a port: 123456789012.dkr.ecr.us-east-1.amazonaws.com,
# localhost:5000, 127.0.0.1:5000.
REGISTRY = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?"
# ECR's repository-name pattern (CreateRepository), which is stricter than Docker's.
REPOSITORY = r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*"
# A Docker/OCI tag.
TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
DIGEST = r"sha256:[a-f0-9]{64}"
# One image as the agent receives it: registry/repository[:tag]@sha256:digest.
IMAGE_ITEM = rf"{REGISTRY}/{REPOSITORY}(:{TAG})?@{DIGEST}"
MAX_IMAGES_PER_COMMAND = 50
IMAGES_MAX_LENGTH = 32_000

# The document's allowedPattern for Images, checked by SSM when a command is sent and again by
# every node's SSM agent, which compiles it with Go's regexp (RE2) on every command. RE2 refuses a
# repeat count above 1000, also as the product of nested counted repeats (`(x{1,128}){0,15}` is
# 1,920): such a pattern fails every invocation on every node before the script runs. So the
# pattern is the items' shapes only; the bounds a RE2 pattern cannot carry (50 images, name
# lengths) are checked here, by the functions before they send, and by the node agent.
IMAGES_PARAMETER = rf"^{IMAGE_ITEM}(,{IMAGE_ITEM})*$"

REPOSITORY_MAX = 256
# fullmatch: `$` alone would accept a trailing newline.
_registry = re.compile(REGISTRY)
_repository = re.compile(REPOSITORY)
_tag = re.compile(TAG)
_digest = re.compile(DIGEST)
_item = re.compile(IMAGE_ITEM)


def is_registry(value: str) -> bool:
    return len(value) <= 255 and bool(_registry.fullmatch(value))


def is_repository(value: str) -> bool:
    return 2 <= len(value) <= REPOSITORY_MAX and bool(_repository.fullmatch(value))


def is_tag(value: str) -> bool:
    return bool(_tag.fullmatch(value))


def is_digest(value: str) -> bool:
    return bool(_digest.fullmatch(value))


def ecr_registry(account: str, region: str) -> str:
    """The private registry host of an account and region (China regions end in .com.cn)."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{suffix}"


@dataclass(frozen=True, order=True)
class ImageRef:
    """One image, always pinned to a digest; the tag (if any) is the name the kubelet will use."""

    registry: str
    repository: str
    digest: str
    tag: str = ""

    def __post_init__(self) -> None:
        if not is_registry(self.registry):
            raise ValueError(f"invalid registry host {self.registry[:80]!r}")
        if not is_repository(self.repository):
            raise ValueError(f"invalid repository name {self.repository[:80]!r}")
        if not is_digest(self.digest):
            raise ValueError(f"invalid digest {self.digest[:80]!r} (expected sha256:<64 hex>)")
        if self.tag and not is_tag(self.tag):
            raise ValueError(f"invalid tag {self.tag[:80]!r}")

    @property
    def pinned(self) -> str:
        """What nodes pull: registry/repository@sha256:..."""
        return f"{self.registry}/{self.repository}@{self.digest}"

    @property
    def tagged(self) -> str:
        """The name a Pod uses: registry/repository:tag."""
        return f"{self.registry}/{self.repository}:{self.tag}"

    @property
    def agent_item(self) -> str:
        """The form the node agent takes: registry/repository[:tag]@sha256:..."""
        name = f"{self.registry}/{self.repository}"
        return f"{name}:{self.tag}@{self.digest}" if self.tag else f"{name}@{self.digest}"

    @property
    def key(self) -> str:
        """The audit table's name for the image: repository@digest (registry-independent)."""
        return f"{self.repository}@{self.digest}"

    @classmethod
    def parse_agent_item(cls, item: str) -> ImageRef:
        if not _item.fullmatch(item):
            raise ValueError(f"not an image reference of the form registry/repo[:tag]@sha256:...: {item[:120]!r}")
        name, digest = item.rsplit("@", 1)
        registry, rest = name.split("/", 1)
        repository, _, tag = rest.partition(":")
        return cls(registry=registry, repository=repository, digest=digest, tag=tag)


def images_parameter(images: list[ImageRef]) -> str:
    """The SSM document's `Images` parameter: comma-separated agent items."""
    if not images:
        raise ValueError("at least one image is needed")
    if len(images) > MAX_IMAGES_PER_COMMAND:
        raise ValueError(f"at most {MAX_IMAGES_PER_COMMAND} images per command, got {len(images)}")
    value = ",".join(image.agent_item for image in images)
    if len(value) > IMAGES_MAX_LENGTH:
        raise ValueError(f"the Images parameter would be {len(value)} characters, above {IMAGES_MAX_LENGTH}")
    return value


def parse_images_parameter(value: str) -> list[ImageRef]:
    """The images of an `Images` value, with every bound the document's pattern cannot carry
    (ValueError otherwise): the node agent applies the same bounds."""
    if len(value) > IMAGES_MAX_LENGTH:
        raise ValueError(f"the Images parameter is {len(value)} characters, above {IMAGES_MAX_LENGTH}")
    items = value.split(",")
    if len(items) > MAX_IMAGES_PER_COMMAND:
        raise ValueError(f"at most {MAX_IMAGES_PER_COMMAND} images per command, got {len(items)}")
    return [ImageRef.parse_agent_item(item) for item in items]
