"""Nodes are recognised by the tags EKS managed node groups, Karpenter and self-managed groups
set; one tag target reaches every node of a cluster."""

from __future__ import annotations

from prefetcher.eks_tags import cluster_targets, membership

from devtools.local_stack.ec2_fleet import NodeSpec, node_tags


def test_one_target_per_cluster_without_a_node_group_filter():
    # Given no node-group filter
    # When the targets of a cluster are made
    (target,) = cluster_targets("ml-prod")
    # Then one target, the cluster tag with either value, reaches every node
    assert target.as_api() == [{"Key": "tag:kubernetes.io/cluster/ml-prod", "Values": ["owned", "shared"]}]


def test_a_node_group_filter_needs_one_command_per_group_tag_key():
    # Given a node-group filter
    # When the targets of a cluster are made
    targets = cluster_targets("ml-prod", ("gpu", "general"))
    # Then one target per node-group tag key, each ANDed with the cluster tag
    keys = [t.as_api()[1]["Key"] for t in targets]
    assert keys == ["tag:eks:nodegroup-name", "tag:karpenter.sh/nodepool"]
    assert all(t.as_api()[0]["Key"] == "tag:kubernetes.io/cluster/ml-prod" for t in targets)
    assert all(t.as_api()[1]["Values"] == ["gpu", "general"] for t in targets)


def test_every_kind_of_node_carries_the_cluster_tag_the_target_uses():
    # Given a node of each kind, tagged as EKS, Karpenter or an Auto Scaling group tags it
    # When its tags are read
    # Then each carries kubernetes.io/cluster/<name>, the tag a cluster target uses
    for kind in ("managed", "karpenter", "self-managed"):
        assert node_tags(NodeSpec("ml-prod", kind, "g"))["kubernetes.io/cluster/ml-prod"] == "owned"


def test_membership_of_each_kind_of_node():
    # Given a node of each kind, and instances of no cluster
    # When their membership is read from their tags
    # Then each names its cluster, node group, kind and the EKS tag the IAM policy accepts
    assert membership(node_tags(NodeSpec("c1", "managed", "general"))).__dict__ == {
        "cluster": "c1",
        "node_group": "general",
        "kind": "managed",
        "cluster_tag": "eks:cluster-name",
    }
    assert membership(node_tags(NodeSpec("c1", "karpenter", "gpu"))).__dict__ == {
        "cluster": "c1",
        "node_group": "gpu",
        "kind": "karpenter",
        "cluster_tag": "eks:eks-cluster-name",
    }
    # A self-managed node carries only kubernetes.io/cluster/<name>: no tag the IAM policy accepts
    self_managed = membership(node_tags(NodeSpec("c1", "self-managed", "asg")))
    assert (self_managed.kind, self_managed.cluster, self_managed.cluster_tag) == ("self-managed", "c1", "")
    assert membership({"Name": "bastion"}) is None
    assert membership({"kubernetes.io/cluster/c1": "something-else"}) is None
