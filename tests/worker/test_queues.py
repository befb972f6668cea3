"""The queues on their own: Redis stream (redis-server), SQS (moto_server), queue-less polling."""

from __future__ import annotations

import time
from pathlib import Path

import boto3
import pytest

from outlast.worker.queues import (
    BadMessageError,
    DueRunsQueue,
    InvalidQueueUrlError,
    RedisStreamQueue,
    SqsQueue,
    decode_body,
    dedup_id,
    encode_body,
    enqueue_start,
    open_queue,
    recovery_key,
)
from tests.conftest import unique
from tests.support.servers import MotoServer, RedisServer
from tests.worker.support import make_app


def stream_url(redis_server: RedisServer) -> str:
    return f"{redis_server.url}#{unique('stream')}"


def test_body_round_trip_and_bad_bodies() -> None:
    assert decode_body(encode_body("run-1", None)) == ("run-1", None)
    assert decode_body(encode_body("run-1", 4)) == ("run-1", 4)
    for bad in (
        b"\xff",
        "[]",
        '{"leg": 1}',
        '{"run_id": "a b"}',
        '{"run_id": "r", "leg": 0}',
        '{"run_id": "r", "leg": true}',
    ):
        with pytest.raises(BadMessageError):
            decode_body(bad)


def test_open_queue_rejects_unknown_schemes() -> None:
    with pytest.raises(InvalidQueueUrlError, match="unknown scheme"):
        open_queue("amqp://localhost/x")
    with pytest.raises(InvalidQueueUrlError, match="hot tier"):
        open_queue(None)


def test_redis_stream_delivers_once_and_acks(redis_server: RedisServer) -> None:
    url = stream_url(redis_server)
    a = RedisStreamQueue(url, consumer="a")
    b = RedisStreamQueue(url, consumer="b")
    try:
        enqueue_start(url, "run-1")
        a.continue_run("run-1", 2)
        first = a.receive(0.5)
        second = b.receive(0.5)
        assert first is not None and second is not None
        assert {(first.run_id, first.leg), (second.run_id, second.leg)} == {
            ("run-1", None),
            ("run-1", 2),
        }
        assert a.receive(0.1) is None and b.receive(0.1) is None
        a.ack(first)
        b.ack(second)
        assert a._client.xlen(a.stream) == 0
        assert a._client.xpending(a.stream, a.group)["pending"] == 0
    finally:
        a.close()
        b.close()


def test_redis_stream_reclaims_a_dead_consumers_message(redis_server: RedisServer) -> None:
    url = stream_url(redis_server)
    dead = RedisStreamQueue(url, consumer="dead", visibility=0.5)
    alive = RedisStreamQueue(url, consumer="alive", visibility=0.5)
    try:
        dead.enqueue("run-2")
        held = dead.receive(0.5)
        assert held is not None
        # Touched messages stay with their holder.
        for _ in range(4):
            time.sleep(0.2)
            dead.touch(held)
            assert alive.receive(0.05) is None
        # Untouched for longer than the visibility timeout: the holder is presumed dead.
        time.sleep(0.7)
        deadline = time.monotonic() + 3
        got = None
        while got is None and time.monotonic() < deadline:
            got = alive.receive(0.1)
        assert got is not None and got.run_id == "run-2" and got.handle == held.handle
        alive.ack(got)
        assert alive._client.xlen(alive.stream) == 0
    finally:
        dead.close()
        alive.close()


def test_redis_stream_release_now_requeues(redis_server: RedisServer) -> None:
    url = stream_url(redis_server)
    queue = RedisStreamQueue(url, consumer="c")
    try:
        queue.enqueue("run-3", 5)
        got = queue.receive(0.5)
        assert got is not None
        queue.release(got, 0)
        again = queue.receive(0.5)
        assert again is not None and (again.run_id, again.leg) == ("run-3", 5)
        assert again.handle != got.handle
    finally:
        queue.close()


def test_redis_stream_drops_a_bad_entry(redis_server: RedisServer) -> None:
    url = stream_url(redis_server)
    queue = RedisStreamQueue(url, consumer="c")
    try:
        queue._client.xadd(queue.stream, {"body": "not json"})
        with pytest.raises(BadMessageError):
            queue.receive(0.5)
        assert queue._client.xlen(queue.stream) == 0
    finally:
        queue.close()


@pytest.fixture
def sqs_queue(moto_server: MotoServer) -> str:
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    name = unique("runs")
    client.create_queue(QueueName=name)
    return f"sqs://{name}?region=us-east-1&endpoint_url={moto_server.endpoint}"


def test_sqs_receive_ack_release_touch(sqs_queue: str) -> None:
    queue = SqsQueue(sqs_queue, visibility=1)
    try:
        enqueue_start(sqs_queue, "run-4")
        got = queue.receive(1)
        assert got is not None and (got.run_id, got.leg) == ("run-4", None)
        # In flight: invisible while touched, past its first visibility timeout.
        for _ in range(3):
            time.sleep(0.5)
            queue.touch(got)
        assert queue.receive(0) is None
        queue.release(got, 0)
        again = queue.receive(1)
        assert again is not None and again.run_id == "run-4"
        queue.ack(again)
        time.sleep(1.2)
        assert queue.receive(1) is None
    finally:
        queue.close()


def test_sqs_by_queue_url_redelivers_after_visibility(sqs_queue: str) -> None:
    by_name = SqsQueue(sqs_queue, visibility=1)
    by_url = SqsQueue(by_name.queue_url, visibility=1)
    try:
        by_url.continue_run("run-5", 3)
        got = by_url.receive(1)
        assert got is not None and (got.run_id, got.leg) == ("run-5", 3)
        time.sleep(1.3)  # not acked, not touched: it comes back
        again = by_name.receive(1)
        assert again is not None and (again.run_id, again.leg) == ("run-5", 3)
        by_name.ack(again)
    finally:
        by_name.close()
        by_url.close()


def test_due_runs_queue_finds_pending_runs_and_continuations_first(workdir: Path) -> None:
    app = make_app(f"sqlite:///{workdir}/hot.db", f"file://{workdir}/cold")
    spec = {"steps": 1, "pause": 0, "effects": str(workdir / "fx")}
    ids = {app.start("counter", spec, run_id=f"due-{i}") for i in range(3)}
    queue = DueRunsQueue(app.store.hot, poll=0.05)
    seen = set()
    for _ in range(3):
        got = queue.receive(1)
        assert got is not None and got.leg is None
        seen.add(got.run_id)
    assert seen == ids
    queue.continue_run("due-1", 2)
    got = queue.receive(1)
    assert got is not None and (got.run_id, got.leg) == ("due-1", 2)


@pytest.fixture
def fifo_queue(moto_server: MotoServer) -> str:
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    name = unique("runs") + ".fifo"
    client.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})
    return f"sqs://{name}?region=us-east-1&endpoint_url={moto_server.endpoint}"


def drain_bodies(queue: SqsQueue) -> list[tuple[str, int | None]]:
    """Everything the queue delivers, acked as it comes (a FIFO group is held while in flight)."""
    got: list[tuple[str, int | None]] = []
    while (message := queue.receive(0)) is not None:
        got.append((message.run_id, message.leg))
        queue.ack(message)
    return got


def test_sqs_fifo_keeps_a_recovery_sent_just_after_the_start(
    fifo_queue: str, workdir: Path
) -> None:
    app = make_app(f"sqlite:///{workdir}/hot.db", f"file://{workdir}/cold")
    spec = {"steps": 1, "pause": 0, "effects": str(workdir / "fx")}
    app.start("counter", spec, run_id="fifo-1")
    record = app.store.hot.get_run("fifo-1")
    queue = SqsQueue(fifo_queue, visibility=5)
    try:
        assert queue._fifo
        enqueue_start(fifo_queue, "fifo-1")
        # Seconds later, a sweeper recovers the run (its start message may be lost): the
        # recovery has a purpose of its own and must not be folded into the start.
        queue.enqueue("fifo-1", None, recovers=recovery_key(record))
        # True duplicates are folded: the same start again, a second sweeper's recovery of the
        # same state, a hand-off's continuation sent twice.
        enqueue_start(fifo_queue, "fifo-1")
        queue.enqueue("fifo-1", None, recovers=recovery_key(record))
        queue.continue_run("fifo-1", 2)
        queue.continue_run("fifo-1", 2)
        # A recovery of a later state of the run is a message of its own.
        app.cancel("fifo-1")
        later = app.store.hot.get_run("fifo-1")
        assert recovery_key(later) != recovery_key(record)
        queue.enqueue("fifo-1", None, recovers=recovery_key(later))

        # In the order sent: one group per run.
        assert drain_bodies(queue) == [
            ("fifo-1", None),
            ("fifo-1", None),
            ("fifo-1", 2),
            ("fifo-1", None),
        ]
    finally:
        queue.close()
        app.close()


def test_sqs_dedup_ids_name_the_purpose() -> None:
    assert dedup_id("r1", None) == "r1:start"
    assert dedup_id("r1", 3) == "r1:leg:3"
    assert dedup_id("r1", None, "abc.7") == "r1:recover:abc.7"
    # SQS allows 128 characters of ASCII punctuation, letters and digits: others are hashed.
    for odd in ("k" * 200, "naïve key", "with space"):
        got = dedup_id("r" * 64, None, odd)
        assert len(got) <= 128 and got.isascii() and " " not in got
        assert got != dedup_id("r" * 64, None, odd + "x")


def test_due_runs_queue_holds_back_a_released_run(workdir: Path) -> None:
    app = make_app(f"sqlite:///{workdir}/hot.db", f"file://{workdir}/cold")
    spec = {"steps": 1, "pause": 0, "effects": str(workdir / "fx")}
    app.start("counter", spec, run_id="held")
    queue = DueRunsQueue(app.store.hot, poll=0.05)
    try:
        got = queue.receive(1)
        assert got is not None and got.run_id == "held"
        queue.release(got, 0.6)
        # Still due in the store, but this worker does not try it again before the delay.
        assert queue.receive(0.4) is None
        again = queue.receive(1)
        assert again is not None and again.run_id == "held"
    finally:
        app.close()
