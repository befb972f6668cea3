"""Worker processes against real stores and queues: drain, heartbeat, zombie, SQS, spot, health."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from typer.testing import CliRunner

from outlast.worker import enqueue_start
from statestore import RunStatus
from tests.conftest import unique
from tests.support.servers import MotoServer, RedisServer, free_port
from tests.worker import chaos_app
from tests.worker.support import (
    WorkerProc,
    assert_dense,
    kill_all,
    make_app,
    read_effects,
    start_worker,
    wait_for,
)


def redis_urls(redis_server: RedisServer) -> tuple[str, str]:
    """A hot tier under its own key prefix and a stream of its own, on the test's redis-server."""
    return (
        f"{redis_server.url}?prefix={unique('hot')}",
        f"{redis_server.url}#{unique('runs')}",
    )


@pytest.fixture
def workers() -> Iterator[list[WorkerProc]]:
    started: list[WorkerProc] = []
    yield started
    kill_all(started)


def stream_bodies(redis_server: RedisServer, queue: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        stream = queue.partition("#")[2]
        return [json.loads(fields["body"]) for _id, fields in client.xrange(stream)]
    finally:
        client.close()


def test_register_adds_the_worker_command_to_the_outlast_cli() -> None:
    from outlast.cli import cli
    from outlast.worker.cli import register

    if not any(c.name == "worker" for c in cli.registered_commands):
        register(cli)
    result = CliRunner().invoke(cli, ["worker", "--help"])
    assert result.exit_code == 0, result.output
    for flag in (
        "--queue",
        "--concurrency",
        "--grace",
        "--lease-ttl",
        "--heartbeat",
        "--health-port",
        "--spot",
        "--hot",
        "--cold",
    ):
        assert flag in result.output


def test_bad_flags_exit_2(tmp_path: Path, workers: list[WorkerProc]) -> None:
    worker = start_worker(
        tmp_path,
        hot=f"sqlite:///{tmp_path}/hot.db",
        cold=f"file://{tmp_path}/cold",
        lease_ttl=1.0,
        heartbeat=2.0,
    )
    workers.append(worker)
    assert worker.proc.wait(timeout=15) == 2
    assert "--heartbeat" in worker.output()


def test_sigterm_mid_step_finishes_commits_hands_off_and_exits_0(
    tmp_path: Path, redis_server: RedisServer, workers: list[WorkerProc]
) -> None:
    hot, queue = redis_urls(redis_server)
    cold = f"file://{tmp_path}/cold"
    effects = tmp_path / "effects"
    app = make_app(hot, cold)
    first = start_worker(
        tmp_path, hot=hot, cold=cold, queue=queue, grace=6.0, lease_ttl=3.0, heartbeat=1.0
    )
    workers.append(first)
    first.wait_ready()
    spec = {"steps": 4, "pause": 0.01, "effects": str(effects), "long": {"1": 2.0}}
    run_id = app.start("counter", spec, run_id=unique("drain"))
    enqueue_start(queue, run_id)
    wait_for(lambda: any(e.seq == 1 for e in read_effects(effects)), 15, "the long step to start")

    first.send(signal.SIGTERM)
    wait_for(lambda: first.healthz() == 503, 2, "/healthz to say draining")
    assert first.proc.wait(timeout=first.grace + 1) == 0
    took = time.monotonic() - (first.signalled_at or 0)
    assert 1.0 < took < first.grace  # waited for the step, not for the grace

    record = app.store.hot.get_run(run_id)
    assert record.status is RunStatus.RUNNING and record.lease is None
    assert record.counters.handoffs == 1
    assert [e.seq for e in app.journal(run_id)] == [0, 1]  # the long step was committed
    assert stream_bodies(redis_server, queue) == [{"run_id": run_id, "leg": 2}]

    second = start_worker(tmp_path, hot=hot, cold=cold, queue=queue, lease_ttl=3.0, heartbeat=1.0)
    workers.append(second)
    wait_for(lambda: app.status(run_id).status is RunStatus.SUCCEEDED, 20, "the run to finish")
    assert app.result(run_id) == chaos_app.expected_total(4)
    assert sorted(e.seq for e in read_effects(effects)) == [0, 1, 2, 3]  # nothing ran twice
    assert stream_bodies(redis_server, queue) == []


def test_heartbeat_keeps_the_lease_across_a_step_longer_than_the_ttl(
    tmp_path: Path, workers: list[WorkerProc]
) -> None:
    hot, cold = f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold"
    effects = tmp_path / "effects"
    app = make_app(hot, cold)
    spec = {"steps": 2, "pause": 0.01, "effects": str(effects), "long": {"0": 3.0}}
    run_id = app.start("counter", spec, run_id="heartbeat")
    # Two workers poll the same store: if the lease lapsed, the other would take the run.
    for _ in range(2):
        workers.append(start_worker(tmp_path, hot=hot, cold=cold, lease_ttl=1.0, heartbeat=0.25))
    wait_for(lambda: bool(read_effects(effects)), 15, "the long step to start")
    expiries = set()
    deadline = time.monotonic() + 15
    while app.journal(run_id) == [] and time.monotonic() < deadline:
        lease = app.store.hot.get_run(run_id).lease
        if lease is not None:
            expiries.add(lease.expires_at)
        time.sleep(0.1)
    wait_for(lambda: app.status(run_id).status is RunStatus.SUCCEEDED, 15, "the run to finish")
    record = app.store.hot.get_run(run_id)
    assert record.counters.legs == 1 and record.counters.recoveries == 0
    assert len(expiries) >= 5  # renewed again and again during the 3 s step
    assert [e.seq for e in read_effects(effects)] == [0, 1]


def test_zombie_resumed_after_another_worker_took_its_run_commits_nothing(
    tmp_path: Path, redis_server: RedisServer, workers: list[WorkerProc]
) -> None:
    hot, queue = redis_urls(redis_server)
    cold = f"file://{tmp_path}/cold"
    effects = tmp_path / "effects"
    app = make_app(hot, cold)
    zombie = start_worker(tmp_path, hot=hot, cold=cold, queue=queue, lease_ttl=1.0, heartbeat=0.25)
    workers.append(zombie)
    zombie.wait_ready()
    spec = {"steps": 40, "pause": 0.1, "effects": str(effects)}
    run_id = app.start("counter", spec, run_id=unique("zombie"))
    enqueue_start(queue, run_id)
    wait_for(lambda: len(read_effects(effects)) >= 3, 15, "the zombie to make progress")

    zombie.proc.send_signal(signal.SIGSTOP)
    time.sleep(0.3)  # anything the zombie had sent has landed
    zombie_leg = read_effects(effects)[-1].leg
    before = [e.seq for e in app.journal(run_id) if e.leg == zombie_leg]

    rescuer = start_worker(tmp_path, hot=hot, cold=cold, queue=queue, lease_ttl=1.0, heartbeat=0.25)
    workers.append(rescuer)
    wait_for(
        lambda: any(e.leg != zombie_leg for e in app.journal(run_id)),
        20,
        "another worker to take the run over",
    )
    resumed_at = len(read_effects(effects))
    zombie.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: app.status(run_id).status is RunStatus.SUCCEEDED, 30, "the run to finish")
    time.sleep(0.5)

    journal = app.journal(run_id)
    assert_dense(journal, 40)
    assert app.result(run_id) == chaos_app.expected_total(40)
    assert [e.seq for e in journal if e.leg == zombie_leg] == before
    after = [e for e in read_effects(effects)[resumed_at:] if e.pid == zombie.pid]
    for effect in after:
        assert journal[effect.seq].leg != zombie_leg
    assert "lease_lost" in zombie.output()

    zombie.send(signal.SIGTERM)
    assert zombie.proc.wait(timeout=zombie.grace + 1) == 0


def test_sqs_worker_drives_runs_and_hands_off_through_the_queue(
    tmp_path: Path, moto_server: MotoServer, workers: list[WorkerProc]
) -> None:
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    name = unique("worker-runs")
    client.create_queue(QueueName=name)
    queue = f"sqs://{name}?region=us-east-1&endpoint_url={moto_server.endpoint}"
    hot, cold = f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold"
    effects = tmp_path / "effects"
    app = make_app(hot, cold)
    first = start_worker(tmp_path, hot=hot, cold=cold, queue=queue, lease_ttl=3.0, heartbeat=1.0)
    workers.append(first)
    first.wait_ready()
    quick = [
        app.start(
            "counter", {"steps": 5, "pause": 0.01, "effects": str(effects)}, run_id=f"sqs-{i}"
        )
        for i in range(3)
    ]
    long_spec = {"steps": 3, "pause": 0.01, "effects": str(effects), "long": {"1": 1.5}}
    slow = app.start("counter", long_spec, run_id="sqs-slow")
    for run_id in [*quick, slow]:
        enqueue_start(queue, run_id)
    wait_for(
        lambda: any(e.run_id == slow and e.seq == 1 for e in read_effects(effects)),
        20,
        "the slow run's long step",
    )
    first.send(signal.SIGTERM)
    assert first.proc.wait(timeout=first.grace + 1) == 0

    second = start_worker(tmp_path, hot=hot, cold=cold, queue=queue, lease_ttl=3.0, heartbeat=1.0)
    workers.append(second)
    wait_for(
        lambda: all(app.status(r).status is RunStatus.SUCCEEDED for r in [*quick, slow]),
        30,
        "every run to finish",
    )
    assert app.store.hot.get_run(slow).counters.handoffs >= 1
    for run_id in quick:
        assert app.result(run_id) == chaos_app.expected_total(5)
    assert app.result(slow) == chaos_app.expected_total(3)
    runs_seqs = [(e.run_id, e.seq) for e in read_effects(effects)]
    assert len(runs_seqs) == len(set(runs_seqs)) == 3 * 5 + 3


class _Imds(BaseHTTPRequestHandler):
    notice: bytes | None = None

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_PUT(self) -> None:
        self._answer(200, b"token")

    def do_GET(self) -> None:
        body = type(self).notice
        if self.path == "/latest/meta-data/spot/instance-action" and body is not None:
            self._answer(200, body)
        else:
            self._answer(404, b"")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_spot_notice_drains_like_sigterm(tmp_path: Path, workers: list[WorkerProc]) -> None:
    handler: type[_Imds] = type("Imds", (_Imds,), {"notice": None})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        worker = start_worker(
            tmp_path,
            hot=f"sqlite:///{tmp_path}/hot.db",
            cold=f"file://{tmp_path}/cold",
            grace=30.0,
            extra=("--spot",),
            env={"OUTLAST_IMDS_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}"},
        )
        workers.append(worker)
        worker.wait_ready()
        when = (datetime.now(UTC) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        handler.notice = json.dumps({"action": "terminate", "time": when}).encode()
        wait_for(lambda: worker.healthz() != 200, 15, "the worker to drain on the notice")
        assert worker.proc.wait(timeout=5) == 0
        assert "spot terminate" in worker.output()
    finally:
        server.shutdown()
        server.server_close()
