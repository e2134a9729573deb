"""eks-image-prefetcher: the logic shared by the Lambda functions and the `prefetcher` CLI.

Module map (one line each: what it holds):

- `settings`      each function's configuration, validated from its environment at cold start
- `events`        pydantic models of the AWS events the functions consume
- `intake`        parse an event or an SQS batch into its model, or keep it in the DLQ with the reason
- `deadletter`    send a poison message to a dead-letter queue with its reason
- `errors`        the few domain errors the adapters raise and the handlers act on
- `refs`          image references: what a registry, repository, tag and digest may look like
- `rules`         which pushes are prefetched, and why the others are ignored
- `eks_tags`      the EKS tag contract: how a node's EC2 tags name its cluster (Membership) and
                  reach it (CommandTarget)
- `commands`      how many images one pull command may carry so the node's output arrives whole
- `ssm`           Run Command: send our document, read an invocation's result
- `send_once`     each pull command sent exactly once: send claims, lookups by marker
- `push`          the push path: record a pushed image, send it to the target clusters
- `join`          the node-join path: one instance state change, decided and applied
- `join_batch`    a node-join batch: one DescribeInstances, records in parallel within the time
- `audit`         the audit path: status events become per-image, per-node writes (a batch at once)
- `agent_output`  what the node agent printed: its result lines (ImageResult), `fatal`, the cut,
                  an inventory's disk line
- `inventory`     what an inventory's lines mean for each image record (Verification, reconcile)
- `verify`        the inventory's send: one cluster, by tag targets, exactly once, kind `inventory`
- `catch_up`      which live node lacks which current image: send now, wait (backoff), or give up
- `fleet_check`   the fleet check per cluster: catch-up, silent nodes leaving coverage, inventory,
                  coverage
- `rollout`       the rollout-events path: a push command that ended becomes one
                  `Image Prefetch Rollout Completed` event per image (counts, coverage, reasons)
- `bus`           EventBridge: put this service's own events on the default bus
- `states`        per-node, per-image states and the updates one status event makes
- `store`         the audit table, one class per aggregate (store/)
- `timestamps`    time as the project writes and reads it
- `clients`       the one place that builds AWS clients
- `observability` X-Ray tracing, only when it is on
"""

__version__ = "0.1.0"
