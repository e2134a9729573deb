"""The few domain errors. Adapters turn AWS errors into these; handlers decide what each means
for the event (retry, dead-letter queue, or drop with a logged reason)."""


class PrefetcherError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(PrefetcherError):
    """The function's environment (from template.yaml) is missing or invalid."""


class InvalidEventError(PrefetcherError):
    """The event does not have the shape AWS documents; retrying cannot fix it."""


class TransientError(PrefetcherError):
    """A dependency failed in a way that a later retry may not (throttling, 5xx, timeouts,
    eventual consistency). Async consumers let it surface so the queue redelivers."""


class CommandNotFoundError(TransientError):
    """A status event names a command we have not recorded yet (the send is still being
    written, or the event is early). Retried; after the queue's maxReceiveCount the event
    lands in the dead-letter queue."""


class NodeNotReachableError(TransientError):
    """SSM cannot reach the node yet (its agent has not registered: InvalidInstanceId)."""


class NotPermittedError(PrefetcherError):
    """IAM denied SendCommand on the named instance: permanent until the instance (or the policy)
    changes, so it is recorded with its reason at once, never retried."""


class ImageNotFoundError(PrefetcherError):
    """The audit table knows nothing of the image the user asked about."""


class TableNotFoundError(PrefetcherError):
    """The audit table does not exist (wrong name, region or endpoint)."""


class EndpointUnreachableError(PrefetcherError):
    """The AWS endpoint (or the local stack) cannot be reached."""
