"""Where a worker finds runs: a Redis stream, an SQS queue, or the hot tier's due runs.

A message names a run and the leg it asks for: ``{"run_id": "r1", "leg": null}`` starts (or
recovers) a run, ``{"run_id": "r1", "leg": 4}`` is the continuation a hand-off of leg 3 sent.
Every queue is also a ``Dispatcher``: a leg that hands off calls ``continue_run`` on it.

Delivery is at least once everywhere. A duplicate or stale message costs one failed lease
acquisition; it never runs a step twice. A message is held by one worker until acked:

- Redis stream: the entry sits in the consumer group's pending list under the worker's consumer
  name. The worker touches it (``XCLAIM ... JUSTID``, which resets its idle time) while the leg
  runs; an entry idle longer than the visibility timeout belongs to a dead or frozen worker and
  any worker reclaims it with ``XAUTOCLAIM``.
- SQS: the visibility timeout; the worker extends it while the leg runs.
- Queue-less: nothing is held. The lease alone decides which of the polling workers runs a leg.

What a message is for decides its identity on a FIFO queue (its ``MessageDeduplicationId``;
the run id is its ``MessageGroupId``): ``RUN:start`` for the start, ``RUN:leg:N`` for the
continuation of a hand-off, and ``RUN:recover:KEY`` for a recovery, KEY naming the state it
recovers (``recovery_key``: the run's incarnation and record version). SQS keeps a dedup id for
five minutes, even after the message is deleted: a second message for the same purpose within
that window is dropped, and one for another purpose (a recovery just after the start) is not.

URLs::

    redis://HOST:PORT/DB?group=GROUP#STREAM   also rediss://; default group outlast-workers,
                                              default stream outlast-runs
    sqs://QUEUE_NAME?region=R&endpoint_url=U
    https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE_NAME   any http(s) queue URL; the endpoint
                                              is its host unless it is an amazonaws.com one
    "" or None                                queue-less: poll the hot tier's due_runs
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from statestore import HotTier, InvalidRunIdError, RunRecord, validate_run_id

log = logging.getLogger("outlast.worker.queue")

DEFAULT_STREAM = "outlast-runs"
DEFAULT_GROUP = "outlast-workers"
QUEUE_ENV = "OUTLAST_QUEUE_URL"

# The longest a blocking receive may wait: a draining worker must notice the drain quickly.
_MAX_BLOCK_S = 1.0

_MAX_DEDUP_ID = 128
_DEDUP_CHARS = re.compile(r"[!-~]+")  # what SQS allows: ASCII letters, digits, punctuation


class QueueError(Exception):
    """The queue could not be reached or refused a request; the caller retries later."""


class InvalidQueueUrlError(QueueError, ValueError):
    """A queue URL with an unknown scheme or missing parts."""


class BadMessageError(QueueError):
    """A message body that is not a run reference; it is acked and dropped, never retried."""


@dataclass(frozen=True)
class Message:
    """A run to drive. ``leg`` is None for a start (or a sweeper's recovery), else the leg
    number a continuation asks for. ``handle`` is the backend's receipt for ack and release."""

    run_id: str
    leg: int | None
    handle: str = ""


def recovery_key(record: RunRecord) -> str:
    """Names the state a recovery message recovers: this incarnation of the run at this version.

    Every write bumps the version, so two sweepers that saw the same record send one message
    (on a FIFO queue), and a recovery of a later state is a message of its own.
    """
    return f"{record.incarnation or '-'}.{record.version}"


def dedup_id(run_id: str, leg: int | None, recovers: str | None = None) -> str:
    """The FIFO deduplication id of a message: unique to its purpose (see the module doc)."""
    if leg is not None:
        return f"{run_id}:leg:{leg}"
    if recovers is None:
        return f"{run_id}:start"
    found = f"{run_id}:recover:{recovers}"
    if len(found) <= _MAX_DEDUP_ID and _DEDUP_CHARS.fullmatch(found):
        return found
    # SQS allows 128 characters of letters, digits and punctuation; a longer or odd key is
    # hashed, which keeps it unique to what it names.
    return f"{run_id}:recover:{hashlib.sha256(recovers.encode()).hexdigest()[:40]}"


def encode_body(run_id: str, leg: int | None) -> str:
    validate_run_id(run_id)
    return json.dumps({"run_id": run_id, "leg": leg}, separators=(",", ":"))


def decode_body(body: str | bytes) -> tuple[str, int | None]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessageError(f"message body is not JSON: {body[:200]!r}") from exc
    if not isinstance(doc, dict):
        raise BadMessageError(f"message body is not a JSON object: {body[:200]!r}")
    run_id, leg = doc.get("run_id"), doc.get("leg")
    if not isinstance(run_id, str):
        raise BadMessageError(f"message has no run_id: {doc!r}")
    try:
        validate_run_id(run_id)
    except InvalidRunIdError as exc:
        raise BadMessageError(str(exc)) from exc
    if leg is not None and (isinstance(leg, bool) or not isinstance(leg, int) or leg < 1):
        raise BadMessageError(f"message leg must be null or a positive integer: {doc!r}")
    return run_id, leg


class WorkQueue(Protocol):
    """What a worker needs from a queue. Also a ``Dispatcher`` (``continue_run``)."""

    url: str
    #: Whether runs that no message will ever name (woken timers, lost hand-offs) must be
    #: swept into the queue from the hot tier's due runs. The queue-less mode sweeps by design.
    needs_sweeper: bool

    def receive(self, timeout: float) -> Message | None:
        """The next message, waiting up to ``timeout`` seconds; None if none came."""

    def ack(self, message: Message) -> None:
        """The message is done with: never deliver it again."""

    def release(self, message: Message, delay: float) -> None:
        """Give the message back, to be delivered again after about ``delay`` seconds."""

    def touch(self, message: Message) -> None:
        """The message is still being worked on: do not redeliver it yet."""

    def continue_run(self, run_id: str, leg: int) -> None:
        """Enqueue the continuation ``leg`` of ``run_id`` (the Dispatcher protocol)."""

    def enqueue(self, run_id: str, leg: int | None = None, *, recovers: str | None = None) -> None:
        """Enqueue a start (``leg`` None), a continuation, or (``recovers`` given, ``leg`` None)
        a recovery of the state ``recovers`` names (``recovery_key``)."""

    def close(self) -> None: ...


def open_queue(
    url: str | None,
    *,
    hot: HotTier | None = None,
    visibility: float = 30.0,
    poll: float = 0.5,
    consumer: str | None = None,
) -> WorkQueue:
    """Open the queue named by ``url``; None or "" is the queue-less mode over ``hot``."""
    if not url:
        if hot is None:
            raise InvalidQueueUrlError("the queue-less mode needs the hot tier to poll")
        return DueRunsQueue(hot, poll=poll)
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisStreamQueue(url, visibility=visibility, consumer=consumer)
    if scheme in ("sqs", "http", "https"):
        return SqsQueue(url, visibility=visibility)
    raise InvalidQueueUrlError(
        f"queue URL {url!r}: unknown scheme; use redis://HOST:PORT/DB#STREAM, sqs://NAME, "
        "an SQS https:// queue URL, or nothing for the queue-less mode"
    )


def enqueue_start(queue_url: str | None, run_id: str, *, key: str | None = None) -> None:
    """Ask the workers behind ``queue_url`` to start ``run_id`` (created with ``app.start``).

    In the queue-less mode there is nothing to send: a pending run is already due. ``key`` tells
    this start from an earlier one of the same run id on a FIFO queue (which drops a repeated
    start for five minutes): pass ``recovery_key(record)`` to start a run re-opened by
    ``app.retry_policy``, or a run id deleted and started again.
    """
    validate_run_id(run_id)
    if not queue_url:
        return
    queue = open_queue(queue_url)
    try:
        queue.enqueue(run_id, None, recovers=key)
    finally:
        queue.close()


# ---------------------------------------------------------------------- Redis stream


class RedisStreamQueue:
    """A Redis stream read through a consumer group (XADD / XREADGROUP / XACK / XAUTOCLAIM)."""

    needs_sweeper = True

    def __init__(self, url: str, *, visibility: float = 30.0, consumer: str | None = None) -> None:
        import redis

        parts = urlsplit(url)
        self.stream = unquote(parts.fragment) or DEFAULT_STREAM
        options = dict(parse_qsl(parts.query))
        self.group = options.pop("group", DEFAULT_GROUP)
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(options), ""))
        self.url = _mask(url)
        self.visibility = visibility
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self._reclaim_every = max(0.2, min(1.0, visibility / 4))
        self._next_reclaim = 0.0
        self._cursor = "0-0"
        self._reclaim_lock = threading.Lock()
        self._redis_error: type[Exception] = redis.RedisError
        try:
            # The socket timeout must outlast the longest blocking XREADGROUP.
            self._client: Any = redis.Redis.from_url(
                base, decode_responses=True, socket_timeout=_MAX_BLOCK_S + 5.0
            )
        except ValueError as exc:
            raise InvalidQueueUrlError(f"queue URL {self.url!r}: {exc}") from None
        with self._errors("create the consumer group"):
            try:
                self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._redis_error as exc:
            raise QueueError(f"redis stream {self.stream!r} at {self.url}: {what}: {exc}") from exc

    def receive(self, timeout: float) -> Message | None:
        reclaimed = self._reclaim()
        if reclaimed is not None:
            return reclaimed
        block_ms = max(1, int(min(timeout, _MAX_BLOCK_S) * 1000))
        with self._errors("read"):
            answer = self._client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=1, block=block_ms
            )
        for _stream, entries in answer or ():
            for entry_id, fields in entries:
                return self._message(entry_id, fields)
        return None

    def _reclaim(self) -> Message | None:
        """Take over one entry that a dead or frozen consumer left pending too long."""
        now = time.monotonic()
        with self._reclaim_lock:
            if now < self._next_reclaim:
                return None
            self._next_reclaim = now + self._reclaim_every
            cursor = self._cursor
        with self._errors("reclaim"):
            answer = self._client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=int(self.visibility * 1000),
                start_id=cursor,
                count=1,
            )
        next_cursor, entries = answer[0], answer[1]
        with self._reclaim_lock:
            self._cursor = next_cursor
        for entry_id, fields in entries:
            if fields is None:
                continue  # deleted from the stream while pending; Redis drops it from the list
            log.info("reclaimed stream entry %s from a consumer that went quiet", entry_id)
            return self._message(entry_id, fields)
        return None

    def _message(self, entry_id: str, fields: dict[str, str]) -> Message:
        try:
            run_id, leg = decode_body(fields.get("body", ""))
        except BadMessageError:
            with self._errors("drop a bad entry"):
                self._client.xack(self.stream, self.group, entry_id)
                self._client.xdel(self.stream, entry_id)
            log.warning("dropped stream entry %s: not a run reference: %r", entry_id, fields)
            raise
        return Message(run_id, leg, entry_id)

    def ack(self, message: Message) -> None:
        with self._errors("ack"):
            pipe = self._client.pipeline(transaction=True)
            pipe.xack(self.stream, self.group, message.handle)
            pipe.xdel(self.stream, message.handle)
            pipe.execute()

    def release(self, message: Message, delay: float) -> None:
        if delay > 0:
            # Left pending and no longer touched, it is reclaimed once idle for the visibility
            # timeout: a stream has no per-entry delay, so the delay is at least that long.
            return
        with self._errors("release"):
            pipe = self._client.pipeline(transaction=True)
            pipe.xack(self.stream, self.group, message.handle)
            pipe.xdel(self.stream, message.handle)
            pipe.xadd(self.stream, {"body": encode_body(message.run_id, message.leg)})
            pipe.execute()

    def touch(self, message: Message) -> None:
        with self._errors("touch"):
            self._client.xclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=0,
                message_ids=[message.handle],
                justid=True,
            )

    def continue_run(self, run_id: str, leg: int) -> None:
        self.enqueue(run_id, leg)

    def enqueue(self, run_id: str, leg: int | None = None, *, recovers: str | None = None) -> None:
        with self._errors("add"):
            self._client.xadd(self.stream, {"body": encode_body(run_id, leg)})

    def close(self) -> None:
        self._client.close()


# ---------------------------------------------------------------------- SQS


class SqsQueue:
    """An SQS queue: receive with a visibility timeout, delete on ack, change visibility."""

    needs_sweeper = True

    def __init__(self, url: str, *, visibility: float = 30.0) -> None:
        import boto3
        from botocore.config import Config

        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query))
        self.url = url
        self.visibility = visibility
        region = options.get("region")
        endpoint = options.get("endpoint_url")
        host = parts.hostname or ""
        if parts.scheme == "sqs":
            name = (parts.netloc + parts.path).strip("/")
            if not name:
                raise InvalidQueueUrlError(f"queue URL {url!r} names no queue: sqs://NAME")
            queue_url = None
        else:
            name = ""
            queue_url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
            if host.endswith(".amazonaws.com"):
                # https://sqs.REGION.amazonaws.com/ACCOUNT/NAME
                labels = host.split(".")
                region = region or (labels[1] if len(labels) > 3 else None)
            else:
                endpoint = endpoint or f"{parts.scheme}://{parts.netloc}"
        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5)
        self._client: Any = boto3.client(
            "sqs", region_name=region, endpoint_url=endpoint, config=config
        )
        from botocore.exceptions import BotoCoreError, ClientError

        self._aws_errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        if queue_url is None:
            with self._errors("look up the queue"):
                queue_url = str(self._client.get_queue_url(QueueName=name)["QueueUrl"])
        self.queue_url = queue_url
        self._fifo = queue_url.endswith(".fifo")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._aws_errors as exc:
            raise QueueError(f"SQS queue {self.url}: {what}: {exc}") from exc

    def receive(self, timeout: float) -> Message | None:
        with self._errors("receive"):
            answer = self._client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=max(0, min(20, int(min(timeout, _MAX_BLOCK_S)))),
                VisibilityTimeout=_seconds(self.visibility),
            )
        for raw in answer.get("Messages", ()):
            handle = str(raw["ReceiptHandle"])
            try:
                run_id, leg = decode_body(str(raw.get("Body", "")))
            except BadMessageError:
                with self._errors("drop a bad message"):
                    self._client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=handle)
                log.warning("dropped SQS message: not a run reference: %r", raw.get("Body"))
                raise
            return Message(run_id, leg, handle)
        return None

    def ack(self, message: Message) -> None:
        with self._errors("delete"):
            self._client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message.handle)

    def release(self, message: Message, delay: float) -> None:
        with self._errors("release"):
            self._client.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message.handle,
                VisibilityTimeout=min(43200, _seconds(delay)),
            )

    def touch(self, message: Message) -> None:
        with self._errors("extend visibility"):
            self._client.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message.handle,
                VisibilityTimeout=_seconds(self.visibility),
            )

    def continue_run(self, run_id: str, leg: int) -> None:
        self.enqueue(run_id, leg)

    def enqueue(self, run_id: str, leg: int | None = None, *, recovers: str | None = None) -> None:
        extra: dict[str, str] = {}
        if self._fifo:
            # One group per run keeps a run's messages in order. The dedup id names the
            # message's purpose, so a hand-off or sweep sent twice within SQS's five-minute
            # window is one message, while a recovery sent seconds after the start (whose id
            # SQS still remembers, deleted or not) is a message of its own.
            extra = {
                "MessageGroupId": run_id,
                "MessageDeduplicationId": dedup_id(run_id, leg, recovers),
            }
        with self._errors("send"):
            self._client.send_message(
                QueueUrl=self.queue_url, MessageBody=encode_body(run_id, leg), **extra
            )

    def close(self) -> None:
        self._client.close()


def _seconds(value: float) -> int:
    return max(0, math.ceil(value))


# ---------------------------------------------------------------------- queue-less


class DueRunsQueue:
    """No queue: poll the hot tier's due runs (pending, woken, handed off, lease expired).

    Several workers polling the same store race for each due run; the lease picks one winner and
    the others' attempts end as "skipped". Each worker shuffles what it sees, so they spread over
    the due runs instead of all trying the earliest one first.
    """

    needs_sweeper = False

    def __init__(self, hot: HotTier, *, poll: float = 0.5, batch: int = 50) -> None:
        self.url = ""
        self._hot = hot
        self._poll = poll
        self._batch = batch
        self._local: deque[tuple[str, int | None]] = deque()
        self._seen: deque[str] = deque()
        self._next_poll = 0.0
        self._lock = threading.Lock()
        # Runs given back with a delay (a leg that hit a store error): not tried again here
        # before that time, though the store may list them as due at once.
        self._not_before: dict[str, float] = {}

    def receive(self, timeout: float) -> Message | None:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._local:
                    run_id, leg = self._local.popleft()
                    return Message(run_id, leg)
                now = time.monotonic()
                if now >= self._next_poll:
                    self._next_poll = now + self._poll
                    due = self._hot.due_runs(limit=self._batch)
                    random.shuffle(due)
                    self._not_before = {r: t for r, t in self._not_before.items() if t > now}
                    due = [r for r in due if r not in self._not_before]
                    if due:
                        # A fresh look replaces the old one: those runs may be taken by now.
                        self._seen = deque(due)
                while self._seen:
                    run_id = self._seen.popleft()
                    if self._not_before.get(run_id, 0.0) <= now:
                        return Message(run_id, None)
                wait = min(self._next_poll, deadline) - now
            if time.monotonic() >= deadline:
                return None
            time.sleep(max(0.0, min(wait, 0.05)))

    def ack(self, message: Message) -> None:
        return None

    def release(self, message: Message, delay: float) -> None:
        if delay > 0:
            with self._lock:
                self._not_before[message.run_id] = time.monotonic() + delay

    def touch(self, message: Message) -> None:
        return None

    def continue_run(self, run_id: str, leg: int) -> None:
        # The hand-off already made the run due for every poller; this worker just tries first.
        with self._lock:
            self._local.append((run_id, leg))

    def enqueue(self, run_id: str, leg: int | None = None, *, recovers: str | None = None) -> None:
        with self._lock:
            self._local.append((run_id, leg))

    def close(self) -> None:
        return None


def _mask(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url
