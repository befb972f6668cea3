"""Async durable functions through a worker with ``--concurrency`` > 1 on a Redis stream queue.

Several runs of an async function (``gather`` over steps, then ``parallel`` branches that sleep
on a timer and step) are driven by one worker's concurrent slots; the worker is drained with
SIGTERM mid-way and a second one finishes. Each step's side effect is one line, written when the
step starts and stamped when it ends, so the test sees overlap between runs, which process ran
what, and that nothing ran twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from outlast import App, RunStatus
from outlast.worker import enqueue_start
from tests.conftest import unique
from tests.support.servers import RedisServer, free_port
from tests.worker.support import WorkerProc, kill_all, wait_for

ROOT = Path(__file__).resolve().parents[2]

MODULE = textwrap.dedent(
    """
    import asyncio
    import json
    import os
    import time
    from typing import Any

    from outlast import App, AsyncContext

    app = App("async-worker")


    def _mark(path: str, run_id: str, tag: str, phase: str) -> None:
        record = {"run": run_id, "tag": tag, "pid": os.getpid(), "at": time.time(), "phase": phase}
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\\n").encode())
        finally:
            os.close(fd)


    async def fetch(path: str, run_id: str, tag: str, n: int) -> int:
        _mark(path, run_id, tag, "start")
        await asyncio.sleep(0.15)
        _mark(path, run_id, tag, "end")
        return n * n


    def crunch(path: str, run_id: str, tag: str, n: int) -> int:  # a sync step: in a thread
        _mark(path, run_id, tag, "start")
        time.sleep(0.1)
        _mark(path, run_id, tag, "end")
        return n + 1


    async def branch(ctx: AsyncContext, path: str, name: str, base: int) -> int:
        first = await ctx.step(crunch, path, ctx.run_id, f"{name}0", base, name="crunch")
        await ctx.sleep(1.2)  # longer than inline_wait: the run suspends on a timer
        return first + await ctx.step(crunch, path, ctx.run_id, f"{name}1", base + 1, name="crunch")


    @app.durable()
    async def pipeline(ctx: AsyncContext, spec: dict[str, Any]) -> list[int]:
        path = spec["effects"]
        squares = []
        for batch in range(3):
            squares += await asyncio.gather(
                *(
                    ctx.step(fetch, path, ctx.run_id, f"g{batch}.{i}", batch * 3 + i, name="fetch")
                    for i in range(3)
                )
            )
        a, b = await ctx.parallel(
            lambda c: branch(c, path, "a", 10), lambda c: branch(c, path, "b", 20)
        )
        return [sum(squares), a, b]
    """
)

EXPECTED = [sum(i * i for i in range(9)), 11 + 12, 21 + 22]
TAGS = {f"g{b}.{i}" for b in range(3) for i in range(3)} | {"a0", "a1", "b0", "b1"}


def start_worker(tmp: Path, target: str, hot: str, cold: str, queue: str) -> WorkerProc:
    port = free_port()
    log = tmp / f"worker-{time.monotonic_ns()}.log"
    args = [
        sys.executable,
        "-m",
        "outlast.worker",
        target,
        *("--hot", hot, "--cold", cold, "--queue", queue, "--concurrency", "3"),
        *("--grace", "8", "--lease-ttl", "3", "--heartbeat", "0.5"),
        *("--poll", "0.1", "--sweep", "0.3"),
        *("--health-host", "127.0.0.1", "--health-port", str(port)),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLAST_")}
    env["PYTHONPATH"] = str(ROOT)
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=tmp, env=env)
    return WorkerProc(proc=proc, log=log, health_port=port, grace=8.0)


@pytest.fixture
def workers() -> Iterator[list[WorkerProc]]:
    started: list[WorkerProc] = []
    yield started
    kill_all(started)


def read_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_async_runs_share_a_worker_and_survive_its_drain(
    tmp_path: Path, redis_server: RedisServer, workers: list[WorkerProc]
) -> None:
    hot = f"{redis_server.url}?prefix={unique('ahot')}"
    queue = f"{redis_server.url}#{unique('aruns')}"
    cold = f"file://{tmp_path}/cold"
    effects = tmp_path / "effects.jsonl"
    module = tmp_path / "async_app.py"
    module.write_text(MODULE)
    target = f"{module}:app"

    first = start_worker(tmp_path, target, hot, cold, queue)
    workers.append(first)
    first.wait_ready()

    app = App("async-worker", hot_url=hot, cold_url=cold)
    try:
        # Only to create the runs: the worker imports the same module by its path.
        sys.path.insert(0, str(tmp_path))
        try:
            import async_app  # type: ignore[import-not-found]
        finally:
            sys.path.remove(str(tmp_path))
        app.durable("pipeline")(async_app.pipeline.fn)
        run_ids = [
            app.start("pipeline", {"effects": str(effects)}, run_id=f"ar-{i}") for i in range(4)
        ]
        for run_id in run_ids:
            enqueue_start(queue, run_id)

        # Let the first worker get into the runs (past the gathers, into the branches' timers).
        wait_for(
            lambda: sum(1 for r in read_lines(effects) if r["phase"] == "end") >= 20,
            30,
            "the first worker to run the gathers",
        )
        first.send(signal.SIGTERM)
        assert first.proc.wait(timeout=first.grace + 2) == 0, first.output()[-3000:]

        second = start_worker(tmp_path, target, hot, cold, queue)
        workers.append(second)
        wait_for(
            lambda: all(app.status(r).status.terminal for r in run_ids), 40, "every run to end"
        )
        for run_id in run_ids:
            view = app.status(run_id)
            assert view.status is RunStatus.SUCCEEDED, (view, second.output()[-3000:])
            assert app.result(run_id) == EXPECTED
        lines = read_lines(effects)
        starts = Counter((str(r["run"]), str(r["tag"])) for r in lines if r["phase"] == "start")
        # A drain lets steps in flight finish and commit: every step ran exactly once.
        assert starts == Counter({(r, t): 1 for r in run_ids for t in TAGS})
        # Concurrency: on the first worker, steps of different runs were in flight together.
        spans: dict[tuple[str, str], list[float]] = {}
        for r in lines:
            if r["pid"] == first.pid:
                at = r["at"]
                assert isinstance(at, float)
                spans.setdefault((str(r["run"]), str(r["tag"])), []).append(at)
        overlapping = {
            (a[0], b[0])
            for a, sa in spans.items()
            for b, sb in spans.items()
            if a[0] < b[0] and len(sa) == len(sb) == 2 and sa[0] < sb[1] and sb[0] < sa[1]
        }
        assert overlapping, "no two runs had steps in flight at once on a 3-slot worker"
        assert {str(r["run"]) for r in lines if r["pid"] == second.pid}, "the second did nothing"
        for run_id in run_ids:
            record = app.store.hot.get_run(run_id)
            assert record.counters.legs >= 2  # the timers (and the drain) cost legs
    finally:
        app.close()
