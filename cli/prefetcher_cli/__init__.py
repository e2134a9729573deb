"""The `prefetcher` command: query the audit table, redrive dead-letter queues, run the local
stack."""
