"""A simulated EKS fleet in moto's EC2: instances tagged exactly as managed node groups,
Karpenter and self-managed groups tag them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NodeSpec:
    cluster: str
    kind: str  # managed | karpenter | self-managed
    group: str  # node group, node pool or Auto Scaling group name


def node_tags(spec: NodeSpec) -> dict[str, str]:
    tags = {f"kubernetes.io/cluster/{spec.cluster}": "owned"}
    if spec.kind == "managed":
        tags |= {
            "eks:cluster-name": spec.cluster,
            "eks:nodegroup-name": spec.group,
            f"k8s.io/cluster-autoscaler/{spec.cluster}": "owned",
            "k8s.io/cluster-autoscaler/enabled": "true",
            "Name": f"{spec.cluster}-{spec.group}-node",
        }
    elif spec.kind == "karpenter":
        tags |= {
            "eks:eks-cluster-name": spec.cluster,
            "karpenter.sh/nodepool": spec.group,
            "karpenter.k8s.aws/ec2nodeclass": "default",
            "Name": f"{spec.group}-karpenter-node",
        }
    elif spec.kind == "self-managed":
        tags |= {"Name": f"{spec.cluster}-{spec.group}-node"}
    else:
        raise ValueError(f"unknown node kind {spec.kind}")
    return tags


def launch(ec2: Any, spec: NodeSpec, count: int = 1) -> list[str]:
    """Run `count` instances tagged as `spec` describes; returns their ids."""
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ids: list[str] = []
    while len(ids) < count:
        chunk = min(count - len(ids), 500)  # moto takes a while per instance
        answer = ec2.run_instances(
            ImageId=image_id,
            MinCount=chunk,
            MaxCount=chunk,
            InstanceType="m7g.xlarge",
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in node_tags(spec).items()]}
            ],
        )
        ids += [instance["InstanceId"] for instance in answer["Instances"]]
    return ids


DEMO_FLEET = (
    (NodeSpec("ml-prod", "managed", "general"), 2),
    (NodeSpec("ml-prod", "karpenter", "gpu"), 1),
    (NodeSpec("ml-batch", "managed", "spot"), 1),
    (NodeSpec("ml-batch", "karpenter", "batch"), 1),
    (NodeSpec("web", "managed", "frontend"), 1),  # a cluster the rules do not target
)


def launch_in_process(
    spec: NodeSpec, count: int, account: str = "123456789012", region: str = "us-east-1"
) -> list[str]:
    """`launch`, straight into the in-process moto backend (four times faster than through its
    API, for the benchmarks' fleets of thousands); the instances are the same."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[account][region]
    image = next(iter(backend.amis.values())).id
    reservation = backend.run_instances(
        image, count, None, [], instance_type="m7g.xlarge", is_instance_type_default=False, region_name=region,
        tags={"instance": node_tags(spec)},
    )  # fmt: skip
    return [instance.id for instance in reservation.instances]
