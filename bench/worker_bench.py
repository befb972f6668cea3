"""Worker benchmark: throughput by number of worker processes, and the restart tax of evictions.

    .venv/bin/python bench/worker_bench.py [--json]

Everything runs against a redis-server this script starts on a free loopback port: the hot tier
and a Redis stream queue (consumer group) on it, workers as `python -m outlast.worker` processes.

- runs_per_s: completed runs of 20 short steps (5 ms each) per second, with 1, 2 and 4 worker
  processes of one consumer each, counted from the first enqueue to the last completion.
- restart_tax_sigterm / restart_tax_sigkill: runs of 40 steps of 10 ms, while half of all legs
  (a coin toss when each leg starts) are evicted at a random moment with SIGTERM (drain) or
  SIGKILL (hard kill), and a replacement worker is started. The tax is the total step-execution
  time (every execution, including ones lost to a kill, read from the side-effect file, each
  counted at its full duration) divided by that of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from outlast.worker import enqueue_start  # noqa: E402
from statestore import RunStatus  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402
from tests.worker.support import (  # noqa: E402
    WorkerProc,
    kill_all,
    make_app,
    read_effects,
    start_worker,
)

THROUGHPUT_RUNS = 40
THROUGHPUT_STEPS = 20
THROUGHPUT_PAUSE = 0.005
TAX_RUNS = 8
TAX_STEPS = 40
TAX_PAUSE = 0.010
LEASE_TTL = 1.0
HEARTBEAT = 0.25


class Bench:
    def __init__(self, tmp: Path, redis: RedisServer) -> None:
        self.tmp = tmp
        self.redis = redis
        self.count = 0

    def fresh(self) -> tuple[str, str, str, Path]:
        self.count += 1
        n = self.count
        hot = f"{self.redis.url}?prefix=bench{n}"
        queue = f"{self.redis.url}#bench-runs-{n}"
        cold = f"file://{self.tmp}/cold{n}"
        return hot, queue, cold, self.tmp / f"effects{n}"

    def spawn(self, hot: str, queue: str, cold: str) -> WorkerProc:
        return start_worker(
            self.tmp,
            hot=hot,
            cold=cold,
            queue=queue,
            lease_ttl=LEASE_TTL,
            heartbeat=HEARTBEAT,
            grace=5.0,
            poll=0.1,
            sweep=1.0,
        )

    def throughput(self, workers: int) -> float:
        hot, queue, cold, effects = self.fresh()
        app = make_app(hot, cold)
        procs = [self.spawn(hot, queue, cold) for _ in range(workers)]
        try:
            for proc in procs:
                proc.wait_ready()
            spec = {"steps": THROUGHPUT_STEPS, "pause": THROUGHPUT_PAUSE, "effects": str(effects)}
            ids = [
                app.start("counter", spec, run_id=f"tp{workers}-{i}")
                for i in range(THROUGHPUT_RUNS)
            ]
            started = time.monotonic()
            for run_id in ids:
                enqueue_start(queue, run_id)
            wait_done(app, ids, 120)
            return THROUGHPUT_RUNS / (time.monotonic() - started)
        finally:
            kill_all(procs)
            app.close()

    def restart_tax(self, sig: int, seed: int) -> tuple[float, int]:
        """Step-execution time relative to an uninterrupted run, and the evictions made."""
        hot, queue, cold, effects = self.fresh()
        app = make_app(hot, cold)
        rng = random.Random(seed)
        live = [self.spawn(hot, queue, cold) for _ in range(2)]
        every = list(live)
        evictions = 0
        try:
            for proc in live:
                proc.wait_ready()
            spec = {"steps": TAX_STEPS, "pause": TAX_PAUSE, "effects": str(effects)}
            ids = [app.start("counter", spec, run_id=f"tax{sig}-{i}") for i in range(TAX_RUNS)]
            for run_id in ids:
                enqueue_start(queue, run_id)
            seen_legs: dict[str, int] = {}
            planned: list[tuple[float, int]] = []  # (when, pid)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                now = time.monotonic()
                open_runs = 0
                for run_id in ids:
                    record = app.store.hot.get_run(run_id)
                    if record.status is not RunStatus.SUCCEEDED:
                        open_runs += 1
                    if record.lease is None or seen_legs.get(run_id) == record.counters.legs:
                        continue
                    seen_legs[run_id] = record.counters.legs
                    if rng.random() < 0.5:
                        # Somewhere in the leg's first half, if it were to run to the end.
                        left = (TAX_STEPS - record.next_seq) * TAX_PAUSE
                        pid = int(record.lease.owner.split("/")[0].rsplit(":", 1)[1])
                        planned.append((now + rng.uniform(0, max(0.02, left / 2)), pid))
                if open_runs == 0:
                    break
                for when, pid in [p for p in planned if p[0] <= now]:
                    planned.remove((when, pid))
                    victim = next((w for w in live if w.pid == pid and w.proc.poll() is None), None)
                    if victim is None:
                        continue
                    live.remove(victim)
                    victim.send(sig)
                    evictions += 1
                    fresh = self.spawn(hot, queue, cold)
                    live.append(fresh)
                    every.append(fresh)
                time.sleep(0.01)
            wait_done(app, ids, 5)
            executions = len(read_effects(effects))
            return executions / (TAX_RUNS * TAX_STEPS), evictions
        finally:
            kill_all(every)
            app.close()


def wait_done(app: object, ids: list[str], timeout: float) -> None:
    from outlast import App

    assert isinstance(app, App)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(app.store.hot.get_run(r).status is RunStatus.SUCCEEDED for r in ids):
            return
        time.sleep(0.05)
    raise SystemExit(f"runs did not finish within {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    # The bench's redis-server is volatile on purpose; its warning is noise here.
    logging.getLogger("statestore.redis").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="worker-bench-") as tmp:
        redis = RedisServer(workdir=Path(tmp))
        redis.start()
        try:
            bench = Bench(Path(tmp), redis)
            runs_per_s = {str(n): bench.throughput(n) for n in (1, 2, 4)}
            tax_term, term_n = bench.restart_tax(signal.SIGTERM, seed=1)
            tax_kill, kill_n = bench.restart_tax(signal.SIGKILL, seed=2)
        finally:
            redis.stop()
    print("queue: Redis stream (consumer group), hot tier: Redis, one consumer per worker")
    steps = f"{THROUGHPUT_STEPS} steps of {THROUGHPUT_PAUSE * 1000:g} ms"
    print(f"{'workers':>8} {'runs/s':>8}   ({steps})")
    for n, rate in runs_per_s.items():
        print(f"{n:>8} {rate:8.2f}")
    print(f"restart tax, SIGTERM: {tax_term:.3f} ({term_n} evictions, 50% of legs)")
    print(f"restart tax, SIGKILL: {tax_kill:.3f} ({kill_n} kills, 50% of legs)")
    if args.json:
        print(
            json.dumps(
                {
                    "runs_per_s": {k: round(v, 2) for k, v in runs_per_s.items()},
                    "restart_tax_sigterm": round(tax_term, 4),
                    "restart_tax_sigkill": round(tax_kill, 4),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
