"""Long-lived workers for containers and VMs: ``outlast worker`` (issue 6).

A worker takes runs from a queue (a Redis stream, SQS, or the hot tier's due runs), drives their
legs with a heartbeat-renewed lease, and on SIGTERM or a spot notice drains: every leg in flight
hands off after its current step, and the process exits 0 within its grace period.
"""

from outlast.worker.queues import (
    DueRunsQueue,
    Message,
    QueueError,
    RedisStreamQueue,
    SqsQueue,
    WorkQueue,
    enqueue_start,
    open_queue,
)
from outlast.worker.worker import Worker, WorkerConfig, resolve_app

__all__ = [
    "DueRunsQueue",
    "Message",
    "QueueError",
    "RedisStreamQueue",
    "SqsQueue",
    "WorkQueue",
    "Worker",
    "WorkerConfig",
    "enqueue_start",
    "open_queue",
    "resolve_app",
]
