"""Which pushes we prefetch: a pure decision, so every reason to ignore an event is written down
and logged."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from prefetcher.events import EcrImageActionDetail


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class Prefetch:
    clusters: tuple[str, ...]


@dataclass(frozen=True)
class PushRules:
    """Glob patterns (fnmatch: `*` also matches `/`) for repositories and tags, and the
    clusters whose nodes get every matching image."""

    repository_patterns: tuple[str, ...]
    tag_patterns: tuple[str, ...]
    clusters: tuple[str, ...]

    def decide(self, detail: EcrImageActionDetail) -> Ignore | Prefetch:
        if detail.action_type != "PUSH":
            return Ignore(f"action-type is {detail.action_type}: only pushes are prefetched")
        if detail.result != "SUCCESS":
            return Ignore(f"result is {detail.result}: only successful pushes are prefetched")
        if not detail.image_tag:
            return Ignore(
                "the push has no tag (image-tag is empty): a child manifest of a multi-arch image "
                "or a push by digest; nodes pull the tagged image that refers to it"
            )
        repository = detail.repository_name
        if not any(fnmatchcase(repository, pattern) for pattern in self.repository_patterns):
            return Ignore(
                f"repository {repository} matches none of RepositoryPatterns {','.join(self.repository_patterns)}"
            )
        if not any(fnmatchcase(detail.image_tag, pattern) for pattern in self.tag_patterns):
            return Ignore(f"tag {detail.image_tag} matches none of TagPatterns {','.join(self.tag_patterns)}")
        return Prefetch(clusters=self.clusters)
