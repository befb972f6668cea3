"""Chaos: 3 worker processes, 50 runs of 100 steps, SIGTERM and SIGKILL at random, replacements.

Only invariants are asserted, never timings:

- every run succeeds with the right result;
- every journal is dense (seq 0..99, one committed step each): nothing committed twice;
- a step ran more than once only if a SIGKILLed worker ran it (the copy that died uncommitted),
  and the repeats number at most the SIGKILLs sent times the legs each worker runs at once;
- every worker given SIGTERM exited 0 within its grace period.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from outlast.worker import enqueue_start
from statestore import RunStatus
from tests.conftest import unique
from tests.support.servers import RedisServer
from tests.worker import chaos_app
from tests.worker.support import (
    Effect,
    WorkerProc,
    assert_dense,
    kill_all,
    make_app,
    read_effects,
    start_worker,
)

RUNS = 50
STEPS = 100
WORKERS = 3
GRACE = 3.0
MAX_EVENTS = 14
TIME_LIMIT = 150.0


@dataclass
class Chaos:
    tmp: Path
    hot: str
    cold: str
    queue: str | None
    concurrency: int
    seed: int
    rng: random.Random = field(init=False)
    live: list[WorkerProc] = field(default_factory=list)
    every: list[WorkerProc] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)
    terminated: list[tuple[WorkerProc, int | None, float]] = field(default_factory=list)
    reapers: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def spawn(self) -> None:
        worker = start_worker(
            self.tmp,
            hot=self.hot,
            cold=self.cold,
            queue=self.queue,
            concurrency=self.concurrency,
            grace=GRACE,
            lease_ttl=2.0,
            heartbeat=0.5,
            poll=0.1,
            sweep=1.0,
        )
        self.live.append(worker)
        self.every.append(worker)

    def sigkill(self, worker: WorkerProc) -> None:
        self.live.remove(worker)
        worker.send(signal.SIGKILL)
        self.killed.add(worker.pid)
        worker.proc.wait(timeout=10)

    def sigterm(self, worker: WorkerProc) -> None:
        self.live.remove(worker)
        worker.send(signal.SIGTERM)

        def reap() -> None:
            try:
                code: int | None = worker.proc.wait(timeout=GRACE + 10)
            except Exception:
                code = None
            took = time.monotonic() - (worker.signalled_at or 0.0)
            self.terminated.append((worker, code, took))

        thread = threading.Thread(target=reap, daemon=True)
        thread.start()
        self.reapers.append(thread)

    def strike(self, number: int) -> None:
        """SIGTERM or SIGKILL a random worker at a random moment, and start a replacement."""
        victim = self.rng.choice(self.live)
        # The first two strikes are one of each, the rest a coin toss. Only a worker that is up
        # (its signal handlers installed) is asked to drain; one still starting would die of the
        # default SIGTERM action, which is not what is tested here.
        term = number == 1 or (number > 1 and self.rng.random() < 0.5)
        if term and victim.healthz() == 200:
            self.sigterm(victim)
        else:
            self.sigkill(victim)
        self.spawn()


@pytest.fixture
def chaos_workers() -> Iterator[list[WorkerProc]]:
    every: list[WorkerProc] = []
    yield every
    kill_all(every)


def run_chaos(chaos: Chaos, every: list[WorkerProc]) -> None:
    effects = chaos.tmp / "effects"
    app = make_app(chaos.hot, chaos.cold)
    spec = {"steps": STEPS, "pause": 0.008, "effects": str(effects)}
    prefix = unique("chaos")
    run_ids = [app.start("counter", spec, run_id=f"{prefix}-{i}") for i in range(RUNS)]
    for run_id in run_ids:
        enqueue_start(chaos.queue, run_id)
    chaos.every = every
    for _ in range(WORKERS):
        chaos.spawn()

    started = time.monotonic()
    events = 0
    open_runs = set(run_ids)
    next_strike = started + chaos.rng.uniform(0.3, 1.0)
    while open_runs and time.monotonic() - started < TIME_LIMIT:
        now = time.monotonic()
        if events < MAX_EVENTS and now >= next_strike:
            chaos.strike(events)
            events += 1
            next_strike = now + chaos.rng.uniform(0.2, 1.0)
        open_runs = {
            r for r in open_runs if app.store.hot.get_run(r).status is not RunStatus.SUCCEEDED
        }
        time.sleep(0.2)
    assert not open_runs, f"{len(open_runs)} runs unfinished after {TIME_LIMIT}s"

    for worker in list(chaos.live):
        chaos.sigterm(worker)
    for thread in chaos.reapers:
        thread.join(timeout=GRACE + 15)

    # Every run finished with the right result, and nothing was committed twice.
    total = chaos_app.expected_total(STEPS)
    for run_id in run_ids:
        assert app.result(run_id) == total
        assert_dense(app.journal(run_id), STEPS)

    # A step ran again only because a SIGKILLed worker had run it and died before committing.
    executions = read_effects(effects)
    by_step = Counter((e.run_id, e.seq) for e in executions)
    assert set(by_step) == {(r, s) for r in run_ids for s in range(STEPS)}
    survivors = Counter((e.run_id, e.seq) for e in executions if e.pid not in chaos.killed)
    twice = [step for step, n in survivors.items() if n > 1]
    assert not twice, "steps ran twice without a SIGKILL: " + explain(chaos, executions, twice)
    repeats = sum(n - 1 for n in by_step.values())
    assert repeats <= len(chaos.killed) * chaos.concurrency

    # Every SIGTERMed worker drained and exited 0 within its grace.
    assert chaos.terminated, "no worker was asked to drain"
    for worker, code, took in chaos.terminated:
        assert code == 0, f"worker {worker.pid} exited {code}:\n{worker.output()[-3000:]}"
        assert took <= GRACE, f"worker {worker.pid} took {took:.2f}s to drain"
    assert chaos.killed, "no worker was SIGKILLed"


def explain(chaos: Chaos, executions: list[Effect], steps: list[tuple[str, int]]) -> str:
    lines = []
    for run_id, seq in steps[:3]:
        runs = [e for e in executions if (e.run_id, e.seq) == (run_id, seq)]
        lines.append(f"{run_id} seq {seq}: " + ", ".join(f"pid {e.pid} leg {e.leg}" for e in runs))
        for worker in chaos.every:
            if any(e.pid == worker.pid for e in runs):
                lines += [ln for ln in worker.output().splitlines() if run_id in ln][-8:]
    return "\n".join(lines)


@pytest.mark.slow
def test_chaos_over_redis_stream(
    tmp_path: Path, redis_server: RedisServer, chaos_workers: list[WorkerProc]
) -> None:
    chaos = Chaos(
        tmp=tmp_path,
        hot=f"{redis_server.url}?prefix={unique('chaos-hot')}",
        cold=f"file://{tmp_path}/cold",
        queue=f"{redis_server.url}#{unique('chaos-runs')}",
        concurrency=2,
        seed=6,
    )
    run_chaos(chaos, chaos_workers)


@pytest.mark.slow
def test_chaos_over_sqlite_polling_due_runs(
    tmp_path: Path, chaos_workers: list[WorkerProc]
) -> None:
    chaos = Chaos(
        tmp=tmp_path,
        hot=f"sqlite:///{tmp_path}/hot.db",
        cold=f"file://{tmp_path}/cold",
        queue=None,
        concurrency=1,
        seed=7,
    )
    run_chaos(chaos, chaos_workers)
