"""Redelivery after a leg raised: a run whose state is broken must not spin in a tight loop.

Every leg of such a run fails the same way (here: its input blob is corrupt in the cold tier, a
non-transient ``CorruptStateError``). The leg gives its lease back on the way out, so the store
lists the run as due at once; the worker must still wait (its backoff, or the run's own due time
if the runtime pushed it later) before trying again.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from outlast import App
from outlast.platforms.aws_lambda import LambdaDispatcher
from outlast.platforms.sweeper import sweep
from outlast.worker.queues import DueRunsQueue, SqsQueue, WorkQueue
from outlast.worker.worker import Worker, WorkerConfig
from statestore import RunStatus, StateStoreError
from tests.conftest import unique
from tests.lambda_platform.support import CapturingLambda
from tests.support.servers import MotoServer
from tests.worker import chaos_app
from tests.worker.support import make_app

WINDOW = 5.0
# With the backoff (1 s, then 2 s, then 4 s) a run is tried at about 0, 1 and 3 s into the
# window; re-queued after a fixed second it would be tried 5 or 6 times, and re-polled at once
# (the queue-less mode's old behaviour) dozens of times.
MOST_ATTEMPTS = 4


def start_broken(app: App, workdir: Path) -> App:
    """Start ``broken`` on ``app``: its input lives in the cold tier, and is corrupt."""
    spec = {"steps": 1, "pause": 0, "effects": str(workdir / "fx"), "pad": "p" * 4096}
    app.start("counter", spec, run_id="broken")
    blobs = [p for p in (workdir / "cold").rglob("*") if p.is_file()]
    assert blobs, "the input should have gone to the cold tier"
    for blob in blobs:
        blob.write_bytes(b"not a frame at all")
    return app


@pytest.fixture
def broken_app(workdir: Path) -> Iterator[App]:
    """An app with one run, ``broken``, whose input is corrupt."""
    app = make_app(f"sqlite:///{workdir}/hot.db?inline_limit=64", f"file://{workdir}/cold")
    yield start_broken(app, workdir)
    app.close()


def serve_for(worker: Worker, seconds: float) -> None:
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    time.sleep(seconds)
    worker.drain("test over", grace=2.0)
    thread.join(timeout=10)
    assert not thread.is_alive()


def make_queue(kind: str, app: App, moto: MotoServer | None) -> WorkQueue:
    if kind == "queue-less":
        return DueRunsQueue(app.store.hot, poll=0.05)
    assert moto is not None
    name = unique("redeliver")
    boto3.client("sqs", region_name="us-east-1", endpoint_url=moto.endpoint).create_queue(
        QueueName=name
    )
    queue = SqsQueue(f"sqs://{name}?region=us-east-1&endpoint_url={moto.endpoint}", visibility=10)
    queue.enqueue("broken")
    return queue


@pytest.mark.parametrize("kind", ["queue-less", "sqs"])
def test_a_run_whose_legs_keep_raising_a_store_error_is_retried_with_backoff(
    broken_app: App, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    moto = request.getfixturevalue("moto_server") if kind == "sqs" else None
    queue = make_queue(kind, broken_app, moto)
    attempts: list[float] = []
    errors: list[str] = []
    run_leg = broken_app.run_leg

    def counting(run_id: str, **kwargs: Any) -> Any:
        attempts.append(time.monotonic())
        try:
            return run_leg(run_id, **kwargs)
        except StateStoreError as exc:
            errors.append(type(exc).__name__)
            raise

    monkeypatch.setattr(broken_app, "run_leg", counting)
    # The sweeper (SQS) would re-drive the run only once it has been due for the lease TTL.
    config = WorkerConfig(
        lease_ttl=10.0, heartbeat=3.0, poll=0.05, sweep=0.5, grace=2.0, health_port=None
    )
    try:
        serve_for(Worker(broken_app, queue, config), WINDOW)
    finally:
        queue.close()

    assert 1 <= len(attempts) <= MOST_ATTEMPTS, [round(t - attempts[0], 2) for t in attempts]
    assert errors and set(errors) <= {"CorruptStateError"}, errors
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.9 for gap in gaps), gaps
    record = broken_app.store.hot.get_run("broken")
    assert record.status is not RunStatus.SUCCEEDED


@pytest.mark.parametrize("max_broken_legs", [5, 1], ids=["backing-off", "blocked"])
def test_no_re_driver_takes_a_run_before_it_is_due(workdir: Path, max_broken_legs: int) -> None:
    # One leg on broken state: the run backs off (not due for a while) or, at the limit, is
    # blocked (never due). Neither the Lambda sweeper nor a worker's sweep or poll may take it.
    app = App(
        "worker-tests",
        hot_url=f"sqlite:///{workdir}/hot.db?inline_limit=64",
        cold_url=f"file://{workdir}/cold",
        max_broken_legs=max_broken_legs,
    )
    app.durable("counter")(chaos_app.counter.fn)
    start_broken(app, workdir)
    hot = app.store.hot
    try:
        with pytest.raises(StateStoreError):
            app.run_leg("broken")
        record = hot.get_run("broken")
        due = record.due_at()
        if max_broken_legs == 1:
            assert record.status is RunStatus.BLOCKED and due is None
        else:
            assert due is not None and due > hot.now()

        lam = CapturingLambda()
        report = sweep(hot, LambdaDispatcher(lam, "outlast-agent"), grace=0)
        assert (report.dispatched, lam.invokes) == ([], [])

        queue = DueRunsQueue(hot, poll=0.01)
        worker = Worker(app, queue, WorkerConfig(health_port=None))
        worker._sweep_once(0.0)  # what the sweeper thread does every --sweep seconds
        assert queue.receive(0.2) is None
        # A message for it anyway (a start, a duplicate) is kept back, or dropped if blocked.
        delay = worker._retry_delay("broken")
        if due is None:
            assert delay is None
        else:
            assert delay is not None
            assert delay >= max(1.0, (due - hot.now()).total_seconds() - 0.5)
    finally:
        app.close()
