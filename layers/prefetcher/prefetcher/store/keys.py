"""The audit table's data model as code: every key and index name the store writes or reads.

One table, `pk` / `sk`, three global secondary indexes; every question is a Query on a key or an
index, never a Scan.

  pk                        / sk                  what it is
  TAG#<repo>:<tag>          / CURRENT             the digest a tag points to now (catalog)
  CLUSTER#<cluster>         / TAG#<repo>:<tag>    a current image of a cluster (catalog)
  CLUSTER#<cluster>         / NODE#<instance>     a node of a cluster   (gsi1: NODE#<instance> / #NODE,
                                                    gsi2: LIVE#<cluster> / <instance> until it leaves)
  CLUSTER#<cluster>         / #ROUNDS             the cluster's last fleet checks (event id, time)
  CLUSTERS                  / CLUSTER#<name>      every cluster we send to
  IMAGE#<repo>@<digest>     / #META               the image: tags, pushed, superseded
  IMAGE#<repo>@<digest>     / NODE#<instance>     the image on one node (gsi1: NODE#<instance> / IMAGE#...,
                                                    gsi2: COVER#<cluster>#<repo>@<digest> while live,
                                                    gsi3: FAIL#<day> / <finished>#<instance>#<repo>@<digest>
                                                    while failed)
  COMMAND#<command-id>      / #META               what a command pulls, for which cluster or node
  SEND#<key>                / #META               the claim of one send (`command_id` once sent)
  idempotency#<function>    / <hash>              Powertools idempotency records

History items (images, node-image records, commands, send claims) carry `expires_at` (the table's
TTL attribute); the catalog, the nodes, the rounds and the cluster list do not expire.
"""

from __future__ import annotations

from datetime import date, datetime

from prefetcher.timestamps import iso

Key = dict[str, str]

GSI_NODE = "gsi1"  # a node and its image records
GSI_COVERAGE = "gsi2"  # a cluster's live nodes; the live nodes' records of one image
GSI_FAILURES = "gsi3"  # current failures, per day
TTL_ATTRIBUTE = "expires_at"

META = "#META"
CURRENT = "CURRENT"
CLUSTERS = "CLUSTERS"
NODE_ITEM = "#NODE"  # gsi1 sort key of a node's own item
TAG_PREFIX = "TAG#"
ROUNDS = "#ROUNDS"  # a cluster's fleet-check rounds


def key(pk: str, sk: str) -> Key:
    return {"pk": pk, "sk": sk}


def tag_pk(repository: str, tag: str) -> str:
    return f"TAG#{repository}:{tag}"


def current_tag(repository: str, tag: str) -> Key:
    return key(tag_pk(repository, tag), CURRENT)


def cluster_pk(cluster: str) -> str:
    return f"CLUSTER#{cluster}"


def cluster_image(cluster: str, repository: str, tag: str) -> Key:
    return key(cluster_pk(cluster), tag_pk(repository, tag))


def cluster_rounds(cluster: str) -> Key:
    return key(cluster_pk(cluster), ROUNDS)


def cluster_listed(cluster: str) -> Key:
    return key(CLUSTERS, cluster_pk(cluster))


def node_pk(instance_id: str) -> str:
    """A node's partition in gsi1, and the sort key of its items in the table."""
    return f"NODE#{instance_id}"


def node(cluster: str, instance_id: str) -> Key:
    return key(cluster_pk(cluster), node_pk(instance_id))


def live_pk(cluster: str) -> str:
    return f"LIVE#{cluster}"


def image_pk(repository: str, digest: str) -> str:
    return f"IMAGE#{repository}@{digest}"


def image(repository: str, digest: str) -> Key:
    return key(image_pk(repository, digest), META)


def node_image(repository: str, digest: str, instance_id: str) -> Key:
    return key(image_pk(repository, digest), node_pk(instance_id))


def coverage_pk(cluster: str, repository: str, digest: str) -> str:
    return f"COVER#{cluster}#{repository}@{digest}"


def failure_pk(day: date) -> str:
    return f"FAIL#{day:%Y-%m-%d}"


def failure_sk(finished: datetime, instance_id: str, repository: str, digest: str) -> str:
    return f"{iso(finished)}#{instance_id}#{repository}@{digest}"


def command(command_id: str) -> Key:
    return key(f"COMMAND#{command_id}", META)


def send_claim(send_key: str) -> Key:
    return key(f"SEND#{send_key}", META)


def idempotency_pk(function: str) -> str:
    return f"idempotency#{function}"
