"""Runtime costs: step overhead, resume time from a cold leg, and the restart tax of evictions.

Run from the repository root::

    .venv/bin/python bench/runtime_bench.py [--steps 3000] [--skip-tax] [--profile] [--json]

- step overhead: inside a running leg, each iteration times a plain call of a trivial function
  and then ``ctx.step`` of the same function (live, committed by a fenced append); the sample is
  the difference. SQLite and Redis (AOF on) hot tiers, a directory cold tier.
- async step overhead: the same in an ``async def`` durable function (an ``AsyncContext``): each
  iteration times ``await`` of a trivial ``async def`` and then ``await ctx.step`` of it (awaited
  on the leg's event loop); and, apart, ``await ctx.step`` of the sync trivial function (which an
  async context runs in a thread). Printed next to the sync figures, with the async/sync ratio
  of the p50s (target: within 2x).
- typed values: ``outlast.values.to_plain`` + ``statestore.codec.encode`` (what a commit does to
  a step's result) and ``codec.decode`` + ``values.from_plain`` (what a replay does), for a dict
  of 10 plain fields, a pydantic model with nested models, enums, datetimes, a UUID and a
  Decimal, a dataclass, and a list of 100 such dataclass rows: microseconds per value, p50 of
  ``--value-repeats`` timings, no store involved.
- resume: a fresh interpreter imports this module (the app), then the clock starts and it calls
  ``app.run_leg``; the clock stops when the first step the journal does not hold starts running.
  Runs of 100, 1000 and 10,000 entries on SQLite; the median of several legs.
- map: a durable function whose one operation is ``ctx.map`` of 16 items, 4 at a time, each
  item returning a 24 KiB JSON-like text of random words (above the codec's 1 KiB compression
  threshold; zstd shrinks it to about half). Started with ``app.start`` and run with
  ``app.drive``; the sample is the wall time of the ``ctx.map`` call (16 live steps committed),
  p50/p99 over ``--map-runs`` runs after a warm-up run. SQLite and Redis hot tiers.
- restart tax: the same run driven by the local emulator (a subprocess per leg) with evictions
  (``Faults(evict_rate=0.5)``: SIGTERM at a random moment, SIGKILL after a grace period) and
  without. Each step appends its own duration to a side-effect file, so steps run by legs that
  died before committing count too. Tax = step time with evictions / step time without.

The script starts its own redis-server, keeps every file in a temporary directory, and stops
what it started. ``--resume-leg`` and the emulator's leg processes re-enter this file; they are
internal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import enum
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402

from outlast import App, AsyncContext, Budget, Context, values  # noqa: E402
from outlast.emulator import Emulator, Faults  # noqa: E402
from statestore import RunStatus, codec, open_store  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402

THIS = Path(__file__).resolve()
RESUME_SIZES = (100, 1000, 10_000)

# Targets from the runtime issue (2-core machine).
TARGET_OVERHEAD_P50_US = {"sqlite": 200.0, "redis": 500.0}
TARGET_RESUME_MS = ("1000", 50.0)
TARGET_ASYNC_RATIO = 2.0  # async step p50 within 2x of the sync step p50 (the async issue)
TARGET_TAX = 1.02

MAP_ITEMS = 16
MAP_CONCURRENCY = 4
MAP_VALUE_BYTES = 24 * 1024

# The resume and restart-tax runs live in the store named by OUTLAST_HOT_URL/OUTLAST_COLD_URL,
# which main() sets before anything opens it; leg subprocesses inherit it.
app = App("bench-runtime")

_samples: list[float] = []  # step overhead samples (us), filled by overhead_fn
_probes: list[float] = []  # perf_counter when each probe step started
_leg_budgets: list[Budget] = []  # the budget of the leg running in this process


# ---------------------------------------------------------------------- workloads


def trivial(i: int) -> int:
    return i


def overhead_fn(ctx: Context, args: dict[str, int]) -> int:
    clock = time.perf_counter_ns
    for i in range(args["n"]):
        t0 = clock()
        trivial(i)
        t1 = clock()
        ctx.step(trivial, i)
        t2 = clock()
        _samples.append(((t2 - t1) - (t1 - t0)) / 1000)
    return args["n"]


async def atrivial(i: int) -> int:
    return i


async def aoverhead_fn(ctx: AsyncContext, args: dict[str, int]) -> int:
    """``overhead_fn`` in an async function; with ``thread`` set, the step is the sync
    ``trivial``, which an async context runs in a worker thread."""
    clock = time.perf_counter_ns
    in_thread = bool(args.get("thread"))
    for i in range(args["n"]):
        if in_thread:
            t0 = clock()
            trivial(i)
            t1 = clock()
            await ctx.step(trivial, i)
        else:
            t0 = clock()
            await atrivial(i)
            t1 = clock()
            await ctx.step(atrivial, i)
        t2 = clock()
        _samples.append(((t2 - t1) - (t1 - t0)) / 1000)
    return args["n"]


def tick(i: int) -> int:
    return i


def probe() -> int:
    # The first step past the journal: note when it started, then end the leg after it.
    _probes.append(time.perf_counter())
    for budget in _leg_budgets:
        budget.request_drain("probe done")
    return len(_probes)


@app.durable()
def resume_fn(ctx: Context, args: dict[str, int]) -> None:
    """``n - 1`` ticks, then probes forever: each leg replays, runs one probe and hands off."""
    for i in range(args["n"] - 1):
        ctx.step(tick, i)
    while True:
        ctx.step(probe)


def work(path: str, i: int, seconds: float) -> int:
    """Burn ``seconds`` of this thread's CPU, logging the start and the CPU and wall time spent.

    The step is CPU-bound and timed on the thread's CPU clock: wall time on a shared machine
    swings with whatever else runs (a sleep's wake-up, a preemption), by more than the 2% the
    tax target allows, while the CPU a step burns is the same in every leg.
    """
    _effect(path, f"S {i}")
    cpu, wall = time.thread_time(), time.perf_counter()
    while time.thread_time() - cpu < seconds:
        pass
    _effect(path, f"E {i} {time.thread_time() - cpu:.9f} {time.perf_counter() - wall:.9f}")
    return i


def _effect(path: str, line: str) -> None:
    # O_APPEND writes of one short line are atomic: legs that overlap cannot interleave bytes.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@app.durable()
def tax_fn(ctx: Context, args: dict[str, Any]) -> int:
    total = 0
    for i in range(int(args["steps"])):
        total += ctx.step(work, str(args["file"]), i, float(args["work_s"]), name="work")
    return total


_MAP_WORDS = [
    "".join(random.Random(n).choices("abcdefghijklmnopqrstuvwxyz", k=3 + n % 8))
    for n in range(5000)
]
_map_values: list[str] = []  # what map_item(i) returns in the current run
_map_ms: list[float] = []  # wall time of each run's ctx.map


def map_value(rng: random.Random) -> str:
    """About MAP_VALUE_BYTES of JSON-like records of random words (zstd halves it)."""
    records: list[str] = []
    size = 0
    while size < MAP_VALUE_BYTES:
        record = json.dumps(
            {
                "id": rng.randrange(10**9),
                "title": " ".join(rng.choices(_MAP_WORDS, k=6)),
                "score": round(rng.random(), 4),
                "body": " ".join(rng.choices(_MAP_WORDS, k=rng.randrange(20, 80))),
            }
        )
        records.append(record)
        size += len(record) + 2
    return ("[" + ", ".join(records) + "]")[:MAP_VALUE_BYTES]


def map_item(i: int) -> str:
    return _map_values[i]


def map_fn(ctx: Context, _input: Any) -> int:
    started = time.perf_counter()
    values = ctx.map(map_item, range(MAP_ITEMS), max_concurrency=MAP_CONCURRENCY)
    _map_ms.append((time.perf_counter() - started) * 1000)
    return sum(len(v) for v in values)


# ---------------------------------------------------------------------- statistics


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- step overhead


@dataclass
class Overhead:
    p50: float
    p99: float
    samples: int


OVERHEAD_KINDS = ("sync", "async", "async-thread")


def step_overhead(
    hot_url: str, cold_url: str, steps: int, profile: bool, kind: str = "sync"
) -> Overhead:
    """``kind``: ``sync`` (``ctx.step`` in a sync function), ``async`` (``await ctx.step`` of an
    ``async def`` in an async function) or ``async-thread`` (of a sync def, in a thread)."""
    bench = App("bench-overhead", store=open_store(hot_url, cold_url))
    durable = bench.durable()(overhead_fn if kind == "sync" else aoverhead_fn)
    extra = {"thread": 1} if kind == "async-thread" else {}
    try:
        # Warm-up run: imports, connections, statement and script caches, pydantic adapters.
        _samples.clear()
        bench.run_leg(durable.start({"n": 200, **extra}), budget=Budget.seconds(3600))
        _samples.clear()
        run_id = durable.start({"n": steps, **extra})
        backend = f"{hot_url.partition(':')[0]} {kind}"

        def leg() -> Any:
            return bench.run_leg(run_id, budget=Budget.seconds(3600))

        outcome = _profiled(leg, f"step overhead, {backend}") if profile else leg()
        assert outcome.status == "completed", outcome
        assert len(_samples) == steps
        # Every timed step was committed: the run's journal holds each one.
        assert bench.store.hot.get_run(run_id).next_seq == steps
        return Overhead(pct(_samples, 50), pct(_samples, 99), len(_samples))
    finally:
        bench.close()


def _profiled(call: Any, title: str) -> Any:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    result = profiler.runcall(call)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print(f"\n===== profile: {title} (sorted by own time) =====", file=sys.stderr)
    print(out.getvalue(), file=sys.stderr)
    return result


# ---------------------------------------------------------------------- typed values


class Tier(enum.StrEnum):
    FREE = "free"
    PRO = "pro"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 3


class Address(BaseModel):
    street: str
    city: str
    country: str
    since: dt.date


class Contact(BaseModel):
    email: str
    phone: str | None
    verified_at: dt.datetime  # aware


class Customer(BaseModel):
    id: UUID
    name: str
    tier: Tier
    priority: Priority
    created: dt.datetime  # aware, with an offset
    last_seen: dt.datetime  # naive
    balance: Decimal
    address: Address
    contacts: list[Contact]
    tags: list[str]


@dataclass
class Row:
    id: int
    sku: str
    qty: int
    price: Decimal
    at: dt.datetime
    status: Tier
    note: str | None


def typed_samples() -> dict[str, Any]:
    rng = random.Random(7)
    aware = dt.datetime(2026, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    plain = {
        f"f{i}": (rng.randrange(10**6), f"text-{i}", rng.random(), i % 2 == 0, None)[i % 5]
        for i in range(10)
    }
    customer = Customer(
        id=UUID(int=rng.getrandbits(128)),
        name="Ada Lovelace",
        tier=Tier.PRO,
        priority=Priority.HIGH,
        created=aware,
        last_seen=dt.datetime(2026, 5, 2, 8, 0, 0, 123456),
        balance=Decimal("1234.56"),
        address=Address(
            street="12 Byron St", city="London", country="UK", since=dt.date(2020, 1, 2)
        ),
        contacts=[
            Contact(
                email=f"ada{i}@example.com", phone=None if i else "+44 20 0000", verified_at=aware
            )
            for i in range(2)
        ],
        tags=["vip", "beta", "eu"],
    )

    def row(i: int) -> Row:
        return Row(
            id=i,
            sku=f"SKU-{i:05d}",
            qty=rng.randrange(1, 20),
            price=Decimal(rng.randrange(100, 99999)) / 100,
            at=aware + dt.timedelta(minutes=i),
            status=Tier.FREE if i % 3 else Tier.PRO,
            note=None if i % 4 else "gift",
        )

    return {
        "dict of 10 fields": plain,
        "pydantic model": customer,
        "dataclass": row(0),
        "100 dataclass rows": [row(i) for i in range(100)],
    }


@dataclass
class ValueCost:
    encode_us: float  # to_plain + codec.encode, p50
    decode_us: float  # codec.decode + from_plain, p50
    encode_p99_us: float
    decode_p99_us: float
    frame_bytes: int


def typed_values(repeats: int) -> dict[str, ValueCost]:
    where = codec.Location(run_id="bench", seq=0, tier="hot")
    clock = time.perf_counter_ns
    out: dict[str, ValueCost] = {}
    for label, value in typed_samples().items():
        frame = codec.encode(values.to_plain(value))
        back = values.from_plain(codec.decode(frame, where))
        assert back == value, (label, back)
        assert type(back) is type(value), (label, type(back))
        for _ in range(min(200, repeats)):  # warm-up: caches of class paths and encoders
            values.from_plain(codec.decode(codec.encode(values.to_plain(value)), where))
        enc: list[float] = []
        dec: list[float] = []
        for _ in range(repeats):
            t0 = clock()
            data = codec.encode(values.to_plain(value))
            t1 = clock()
            values.from_plain(codec.decode(data, where))
            t2 = clock()
            enc.append((t1 - t0) / 1000)
            dec.append((t2 - t1) / 1000)
        out[label] = ValueCost(
            encode_us=pct(enc, 50),
            decode_us=pct(dec, 50),
            encode_p99_us=pct(enc, 99),
            decode_p99_us=pct(dec, 99),
            frame_bytes=len(frame),
        )
    return out


# ---------------------------------------------------------------------- map


@dataclass
class MapFigures:
    p50_ms: float
    p99_ms: float
    drive_p50_ms: float
    runs: int
    stored_value_bytes: int  # median codec frame of one item's value (compressed)


def map_bench(hot_url: str, cold_url: str, runs: int, seed: int = 0) -> MapFigures:
    label = hot_url.partition(":")[0]
    bench = App("bench-map", store=open_store(hot_url, cold_url))
    durable = bench.durable()(map_fn)
    rng = random.Random(seed)
    drive_ms: list[float] = []
    frames: list[int] = []
    try:
        _map_ms.clear()
        for n in range(runs + 1):  # run 0 warms up: connections, scripts, thread pool
            # Fresh values for each run, made before the clock starts.
            _map_values[:] = [map_value(rng) for _ in range(MAP_ITEMS)]
            frames.extend(len(codec.encode(v)) for v in _map_values)
            # The run id names the backend: the process-wide journal cache is keyed by run id
            # alone, so a run id reused on another store would replay the first store's journal.
            run_id = durable.start(None, run_id=f"map-{label}-{n}-{os.getpid()}")
            started = time.perf_counter()
            view = bench.drive(run_id)
            drive_ms.append((time.perf_counter() - started) * 1000)
            if view.status is not RunStatus.SUCCEEDED:
                raise RuntimeError(f"the map run ended {view.status.value}: {view.error}")
            assert len(_map_ms) == n + 1, "ctx.map ran more than once in a run"
        samples, drives = _map_ms[1:], drive_ms[1:]
        return MapFigures(
            p50_ms=pct(samples, 50),
            p99_ms=pct(samples, 99),
            drive_p50_ms=pct(drives, 50),
            runs=len(samples),
            stored_value_bytes=int(statistics.median(frames)),
        )
    finally:
        bench.close()


# ---------------------------------------------------------------------- resume


def build_resume_run(size: int) -> str:
    """Drive a run in this process until its journal holds ``size`` entries."""
    run_id = f"resume-{size}-{os.getpid()}"
    app.start(resume_fn, {"n": size}, run_id=run_id)
    budget = Budget.seconds(3600)
    _leg_budgets[:] = [budget]
    try:
        outcome = app.run_leg(run_id, budget=budget)
    finally:
        _leg_budgets.clear()
    assert outcome.status == "handed_off", outcome
    entries = app.store.hot.get_run(run_id).next_seq
    assert entries == size, (entries, size)
    return run_id


def resume_once(run_id: str, profile: bool) -> dict[str, Any]:
    args = [sys.executable, str(THIS), "--resume-leg", run_id]
    if profile:
        args.append("--profile")
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"resume leg failed:\n{proc.stderr}")
    if profile:
        print(proc.stderr, file=sys.stderr)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def resume_leg_main(run_id: str, profile: bool) -> int:
    """In a fresh interpreter: time one leg from its start to the first new step."""
    marks: dict[str, float] = {}
    budget = Budget.seconds(600)
    _leg_budgets[:] = [budget]

    def on_context(ctx: Context) -> None:
        marks["context"] = time.perf_counter()

    def leg() -> Any:
        return app.run_leg(run_id, budget=budget, on_context=on_context)

    start = time.perf_counter()
    outcome = _profiled(leg, f"resume leg {run_id}") if profile else leg()
    assert outcome.status == "handed_off", outcome
    assert _probes, "the probe step never ran"
    print(
        json.dumps(
            {
                "resume_ms": (_probes[0] - start) * 1000,
                "load_ms": (marks["context"] - start) * 1000,
                "replay_ms": (_probes[0] - marks["context"]) * 1000,
                "replayed": outcome.steps_replayed,
            }
        )
    )
    return 0


def resume(repeats: int, profile: bool) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for size in RESUME_SIZES:
        progress(f"resume: building a run of {size} entries")
        run_id = build_resume_run(size)
        legs = []
        for i in range(repeats):
            # Profile only the last leg of the 1000-entry run: one profile is enough to read.
            legs.append(resume_once(run_id, profile and size == 1000 and i == repeats - 1))
        legs = [leg for leg in legs if leg]
        out[str(size)] = {
            key: statistics.median(leg[key] for leg in legs)
            for key in ("resume_ms", "load_ms", "replay_ms", "replayed")
        }
    return out


# ---------------------------------------------------------------------- restart tax


@dataclass
class Drive:
    step_seconds: float  # CPU time inside step functions, all legs, committed or not
    wall_seconds: float  # the same on the wall clock (noisy on a shared machine)
    executions: int
    unfinished: int
    legs: int
    evictions: int


def drive(tmp: Path, label: str, faults: Faults, steps: int, work_s: float) -> Drive:
    effects = tmp / f"effects-{label}.log"
    run_id = f"tax-{label}-{os.getpid()}"
    app.start(tax_fn, {"steps": steps, "file": str(effects), "work_s": work_s}, run_id=run_id)
    emulator = Emulator(app, f"{THIS}:tax_fn", leg_timeout=1.0, faults=faults, margin=0.2)
    report = emulator.run(run_id)
    assert report.status.value == "succeeded", report
    assert report.result == steps * (steps - 1) // 2, report.result
    started = ended = 0
    seconds = wall = 0.0
    done: set[int] = set()
    for line in effects.read_text().splitlines():
        kind, index, *rest = line.split()
        if kind == "S":
            started += 1
        else:
            ended += 1
            seconds += float(rest[0])
            wall += float(rest[1])
            done.add(int(index))
    assert done == set(range(steps)), "a step's side effect is missing"
    # A step whose leg was killed before it ended left only its start line; it is counted as a
    # whole step (an upper bound: it was cut short somewhere inside).
    unfinished = started - ended
    return Drive(
        step_seconds=seconds + unfinished * work_s,
        wall_seconds=wall + unfinished * work_s,
        executions=started,
        unfinished=unfinished,
        legs=report.legs,
        evictions=report.evictions,
    )


def restart_tax(
    tmp: Path, seeds: int, steps: int, work_s: float, kill_rate: float
) -> dict[str, Any]:
    clean: list[Drive] = []
    evicted: list[Drive] = []
    for seed in range(seeds):
        # Alternate so that whatever else loads the machine touches both sides alike.
        progress(f"restart tax: seed {seed}, uninterrupted")
        clean.append(drive(tmp, f"clean{seed}", Faults(seed=seed), steps, work_s))
        progress(f"restart tax: seed {seed}, evictions on half the legs")
        evicted.append(
            drive(
                tmp,
                f"evict{seed}",
                Faults(evict_rate=0.5, kill_rate=kill_rate, seed=seed),
                steps,
                work_s,
            )
        )
    clean_s = sum(d.step_seconds for d in clean)
    evicted_s = sum(d.step_seconds for d in evicted)
    return {
        "tax": evicted_s / clean_s,
        "wall_tax": sum(d.wall_seconds for d in evicted) / sum(d.wall_seconds for d in clean),
        "executions_ratio": sum(d.executions for d in evicted) / sum(d.executions for d in clean),
        "clean_legs": sum(d.legs for d in clean),
        "evicted_legs": sum(d.legs for d in evicted),
        "evictions": sum(d.evictions for d in evicted),
        "reexecuted": sum(d.executions - steps for d in evicted),
        "unfinished": sum(d.unfinished for d in evicted),
        "clean_s": clean_s,
        "evicted_s": evicted_s,
    }


# ---------------------------------------------------------------------- main


@contextmanager
def redis_url(tmp: Path) -> Iterator[str]:
    workdir = tmp / "redis"
    workdir.mkdir()
    server = RedisServer(workdir=workdir, persistent=True)
    server.start()
    try:
        yield f"{server.url}?prefix=bench"
    finally:
        server.stop()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="timed steps per backend")
    parser.add_argument("--resume-repeats", type=int, default=5)
    parser.add_argument("--map-runs", type=int, default=20, help="timed ctx.map runs per backend")
    parser.add_argument(
        "--value-repeats", type=int, default=2000, help="timings per typed value (encode/decode)"
    )
    parser.add_argument("--tax-seeds", type=int, default=3)
    parser.add_argument("--tax-steps", type=int, default=200)
    parser.add_argument("--tax-work", type=float, default=0.01, help="CPU seconds per step")
    parser.add_argument(
        "--tax-kill-rate",
        type=float,
        default=0.0,
        help="also SIGKILL this share of legs in the evicted run (default 0: evictions only)",
    )
    parser.add_argument("--skip-tax", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile to stderr")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    parser.add_argument("--resume-leg", metavar="RUN_ID", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.resume_leg:
        return resume_leg_main(args.resume_leg, args.profile)

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="outlast-bench-")))
        cold = f"file://{tmp}/cold"
        os.environ["OUTLAST_HOT_URL"] = f"sqlite:///{tmp}/hot.db"
        os.environ["OUTLAST_COLD_URL"] = cold
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        stack.callback(app.close)

        overhead: dict[str, Overhead] = {}
        async_overhead: dict[str, dict[str, Overhead]] = {}
        mapped: dict[str, MapFigures] = {}

        def overheads(backend: str, url: str) -> None:
            # Sync, then async, then async of a sync def: one leg of --steps steps each.
            progress(f"step overhead: {args.steps} steps on {backend}")
            overhead[backend] = step_overhead(url, cold, args.steps, args.profile)
            for kind in OVERHEAD_KINDS[1:]:
                progress(f"{kind} step overhead: {args.steps} steps on {backend}")
                async_overhead.setdefault(backend, {})[kind] = step_overhead(
                    url, cold, args.steps, args.profile, kind
                )

        overheads("sqlite", f"sqlite:///{tmp}/overhead.db")
        progress(f"map: {args.map_runs} runs on sqlite")
        mapped["sqlite"] = map_bench(f"sqlite:///{tmp}/map.db", cold, args.map_runs)
        with redis_url(tmp) as url:
            overheads("redis", url)
            progress(f"map: {args.map_runs} runs on redis")
            mapped["redis"] = map_bench(url, cold, args.map_runs)
        progress(f"typed values: {args.value_repeats} encodes and decodes of each")
        typed = typed_values(args.value_repeats)

        resumed = resume(args.resume_repeats, args.profile)
        tax = (
            None
            if args.skip_tax
            else restart_tax(tmp, args.tax_seeds, args.tax_steps, args.tax_work, args.tax_kill_rate)
        )

    print(f"{'step overhead':<22} {'n':>6} {'p50 us':>9} {'p99 us':>9} {'vs sync p50':>12}")
    for name, o in overhead.items():
        print(f"{name + ' sync':<22} {o.samples:>6} {o.p50:>9.1f} {o.p99:>9.1f} {'':>12}")
        for kind, a in async_overhead.get(name, {}).items():
            ratio = a.p50 / o.p50
            print(
                f"{name + ' ' + kind:<22} {a.samples:>6} {a.p50:>9.1f} {a.p99:>9.1f} "
                f"{ratio:>11.2f}x"
            )
    print(
        "  (async: await ctx.step of an async def, on the leg's event loop; async-thread: "
        "await ctx.step of a sync def, which runs in a worker thread)"
    )
    print()
    print(
        f"{'typed value':<20} {'bytes':>6} {'encode us':>10} {'p99':>8} {'decode us':>10} "
        f"{'p99':>8}"
    )
    for label, c in typed.items():
        print(
            f"{label:<20} {c.frame_bytes:>6} {c.encode_us:>10.1f} {c.encode_p99_us:>8.1f} "
            f"{c.decode_us:>10.1f} {c.decode_p99_us:>8.1f}"
        )
    rows = typed["100 dataclass rows"]
    print(
        "  (encode: values.to_plain + codec.encode; decode: codec.decode + values.from_plain; "
        f"per row of the 100: {rows.encode_us / 100:.1f} us to encode, "
        f"{rows.decode_us / 100:.1f} us to decode)"
    )
    print()
    print(f"{'ctx.map 16x24KB':<16} {'runs':>6} {'p50 ms':>9} {'p99 ms':>9} {'drive p50 ms':>13}")
    for name, m in mapped.items():
        print(f"{name:<16} {m.runs:>6} {m.p50_ms:>9.2f} {m.p99_ms:>9.2f} {m.drive_p50_ms:>13.2f}")
    frame = statistics.median(m.stored_value_bytes for m in mapped.values())
    print(
        f"  (the wall time of one ctx.map of {MAP_ITEMS} items, {MAP_CONCURRENCY} at a time, each "
        f"returning {MAP_VALUE_BYTES} bytes of JSON-like text, {frame:.0f} bytes once encoded; "
        "drive: app.drive of the whole run, lease to completion)"
    )
    print()
    print(f"{'resume entries':<16} {'total ms':>9} {'load ms':>9} {'replay ms':>10}")
    for size, r in resumed.items():
        print(f"{size:<16} {r['resume_ms']:>9.1f} {r['load_ms']:>9.1f} {r['replay_ms']:>10.1f}")
    print(
        "  (total: leg start to first new step, in a fresh interpreter with the app imported; "
        "load: lease + store open + journal read; replay: the function re-run over the journal)"
    )
    if tax is not None:
        print()
        print(
            f"restart tax {tax['tax']:.4f}: step time {tax['evicted_s']:.3f}s with "
            f"{tax['evictions']} evictions over {tax['evicted_legs']} legs vs "
            f"{tax['clean_s']:.3f}s over {tax['clean_legs']} legs uninterrupted; "
            f"{tax['reexecuted']} step executions repeated, {tax['unfinished']} cut short "
            f"(executions ratio {tax['executions_ratio']:.4f}; on the wall clock the tax reads "
            f"{tax['wall_tax']:.4f})"
        )
    print()
    for name, target in TARGET_OVERHEAD_P50_US.items():
        p50 = overhead[name].p50
        print(f"step overhead p50 {name} {p50:.1f} us <= {target:.0f} us: {verdict(p50 <= target)}")
    for name, o in overhead.items():
        a = async_overhead[name]["async"]
        ratio = a.p50 / o.p50
        ok = verdict(ratio <= TARGET_ASYNC_RATIO)
        print(
            f"async/sync ratio {name} {ratio:.2f} (async p50 {a.p50:.1f} us, sync p50 "
            f"{o.p50:.1f} us) within {TARGET_ASYNC_RATIO:.0f}x: {ok}"
        )
    size, limit = TARGET_RESUME_MS
    ms = resumed[size]["resume_ms"]
    print(f"resume at {size} entries {ms:.1f} ms <= {limit:.0f} ms: {verdict(ms <= limit)}")
    if tax is not None:
        ok = tax["tax"] <= TARGET_TAX
        print(f"restart tax {tax['tax']:.4f} <= {TARGET_TAX}: {verdict(ok)}")

    if args.json:
        figures: dict[str, Any] = {
            "step_overhead_p50_us": {k: round(v.p50, 1) for k, v in overhead.items()},
            "step_overhead_p99_us": {k: round(v.p99, 1) for k, v in overhead.items()},
            "async_step_overhead_p50_us": {
                f"{k} {kind}": round(v.p50, 1)
                for k, kinds in async_overhead.items()
                for kind, v in kinds.items()
            },
            "async_step_overhead_p99_us": {
                f"{k} {kind}": round(v.p99, 1)
                for k, kinds in async_overhead.items()
                for kind, v in kinds.items()
            },
            "async_sync_ratio_p50": {
                k: round(async_overhead[k]["async"].p50 / v.p50, 2) for k, v in overhead.items()
            },
            "typed_value_us": {
                label: {
                    "encode": round(c.encode_us, 1),
                    "decode": round(c.decode_us, 1),
                    "bytes": c.frame_bytes,
                }
                for label, c in typed.items()
            },
            "map_p50_ms": {k: round(v.p50_ms, 2) for k, v in mapped.items()},
            "map_p99_ms": {k: round(v.p99_ms, 2) for k, v in mapped.items()},
            "resume_ms": {k: round(v["resume_ms"], 1) for k, v in resumed.items()},
            "restart_tax": round(tax["tax"], 4) if tax is not None else None,
        }
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
