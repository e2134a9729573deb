"""How EKS nodes are recognised by their EC2 tags.

Every kind of EKS node carries `kubernetes.io/cluster/<cluster>` (value `owned`, or `shared`):
managed node groups (which add `eks:cluster-name` and `eks:nodegroup-name`), Karpenter (which adds
`karpenter.sh/nodepool`) and self-managed groups. So one tag target reaches every node of a
cluster, and SSM resolves it: the number of calls does not grow with the fleet.

SendCommand's targets are ANDed. A node-group filter therefore needs one command per node-group
tag key (managed node groups and Karpenter node pools use different keys); self-managed nodes
carry neither and are reached only when no node-group filter is set.
"""

from __future__ import annotations

from dataclasses import dataclass

CLUSTER_TAG_PREFIX = "kubernetes.io/cluster/"
CLUSTER_TAG_VALUES = ("owned", "shared")
MANAGED_CLUSTER_TAG = "eks:cluster-name"
KARPENTER_CLUSTER_TAG = "eks:eks-cluster-name"
NODE_GROUP_TAG_KEYS = ("eks:nodegroup-name", "karpenter.sh/nodepool")


@dataclass(frozen=True)
class CommandTarget:
    """One SendCommand's `Targets`, and a label for logs and the audit table."""

    cluster: str
    targets: tuple[tuple[str, tuple[str, ...]], ...]

    def as_api(self) -> list[dict[str, object]]:
        return [{"Key": key, "Values": list(values)} for key, values in self.targets]


def cluster_targets(cluster: str, node_groups: tuple[str, ...] = ()) -> list[CommandTarget]:
    """The SendCommand targets that reach the nodes of `cluster` (in `node_groups`, if given)."""
    by_cluster = (f"tag:{CLUSTER_TAG_PREFIX}{cluster}", CLUSTER_TAG_VALUES)
    if not node_groups:
        return [CommandTarget(cluster=cluster, targets=(by_cluster,))]
    return [
        CommandTarget(cluster=cluster, targets=(by_cluster, (f"tag:{key}", node_groups))) for key in NODE_GROUP_TAG_KEYS
    ]


@dataclass(frozen=True)
class Membership:
    cluster: str
    node_group: str
    kind: str  # managed | karpenter | self-managed
    # The EKS tag that names the cluster (eks:cluster-name or eks:eks-cluster-name), which the
    # stack's IAM policy requires for SendCommand; "" when the instance has neither.
    cluster_tag: str = ""


def membership(tags: dict[str, str]) -> Membership | None:
    """Which cluster (and node group) an instance belongs to, from its EC2 tags."""
    clusters = [
        key.removeprefix(CLUSTER_TAG_PREFIX)
        for key, value in tags.items()
        if key.startswith(CLUSTER_TAG_PREFIX) and value in CLUSTER_TAG_VALUES
    ]
    cluster = tags.get(MANAGED_CLUSTER_TAG) or tags.get(KARPENTER_CLUSTER_TAG) or (clusters[0] if clusters else "")
    if not cluster:
        return None
    cluster_tag = next((key for key in (MANAGED_CLUSTER_TAG, KARPENTER_CLUSTER_TAG) if tags.get(key) == cluster), "")
    if "eks:nodegroup-name" in tags:
        return Membership(cluster, tags["eks:nodegroup-name"], "managed", cluster_tag)
    if "karpenter.sh/nodepool" in tags:
        return Membership(cluster, tags["karpenter.sh/nodepool"], "karpenter", cluster_tag)
    return Membership(cluster, tags.get("aws:autoscaling:groupName", ""), "self-managed", cluster_tag)
