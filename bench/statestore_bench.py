"""Hot-tier append and read costs on SQLite, Redis and DynamoDB (moto), printed as a table.

Run from the repository root::

    .venv/bin/python bench/statestore_bench.py [--backends sqlite,redis,dynamodb-moto]
                                               [--appends 2000] [--json]

An append is what a leg does per step: one ``JournalEntry`` carrying a 200-byte value, written by
the real ``HotTier.append`` under a held lease (the fenced compare-and-set the runtime uses).

Appends at a short journal and at a long one are timed in alternating blocks of ten, so that
noise from anything else on the machine lands on both sides of the 10-vs-10,000 ratio alike:

    block k:  short run #k (10 entries)  -> time 10 appends
              long run     (10,000 + 10k entries) -> time 10 appends

The script starts its own redis-server and moto_server on free loopback ports, keeps every
file in a temporary directory, and stops what it started.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from statestore import (  # noqa: E402
    EntryKind,
    HotTier,
    JournalEntry,
    codec,
    open_hot,
    serialize,
    utcnow,
)
from tests.support.servers import MotoServer, RedisServer  # noqa: E402

BACKENDS = ("sqlite", "redis", "dynamodb-moto")
VALUE_BYTES = 200
LONG_JOURNAL = 10_000
SHORT_JOURNAL = 10
BLOCK = 10
LEASE = timedelta(hours=1)

# Targets from the statestore issue (2-core machine).
TARGET_P50_US = {"sqlite": 150.0, "redis": 400.0}
TARGET_RATIO = 1.2


def value_frame() -> bytes:
    """A codec frame of exactly ``VALUE_BYTES`` bytes (random, so nothing compresses it)."""
    # frame = 8-byte header + msgpack bin8 header (2 bytes) + payload
    frame = codec.encode(os.urandom(VALUE_BYTES - 10))
    assert len(frame) == VALUE_BYTES, len(frame)
    return frame


@dataclass
class Run:
    """A run this process holds the lease of, and the seq its next append gets."""

    run_id: str
    token: int
    next_seq: int = 0


@dataclass(frozen=True)
class Stored:
    """What the backend itself says one append costs in storage, and how that was counted."""

    per_append: float
    how: str
    wal_per_append: float | None = None


StoredProbe = Callable[["Bench"], Stored]


@dataclass
class Result:
    backend: str
    short_us: list[float] = field(default_factory=list)
    long_us: list[float] = field(default_factory=list)
    read_1000_ms: float = 0.0
    bytes_per_append: int = 0
    bytes_per_append_at_10000: int = 0
    stored: Stored | None = None

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "append_p50_us": round(pct(self.short_us, 50), 1),
            "append_p99_us": round(pct(self.short_us, 99), 1),
            "append_p50_us_at_10000": round(pct(self.long_us, 50), 1),
            "read_1000_ms": round(self.read_1000_ms, 2),
            "bytes_per_append": self.bytes_per_append,
            "bytes_per_append_at_10000": self.bytes_per_append_at_10000,
            "samples": len(self.short_us),
        }
        if self.stored is not None:
            out["stored_bytes_per_append"] = round(self.stored.per_append, 1)
            if self.stored.wal_per_append is not None:
                out["wal_bytes_per_append"] = round(self.stored.wal_per_append, 1)
        return out


def pct(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


class Bench:
    def __init__(self, hot: HotTier, name: str) -> None:
        self.hot = hot
        self.name = name
        self.frame = value_frame()
        self._runs = 0

    def entry(self, seq: int) -> JournalEntry:
        now = utcnow()
        return JournalEntry(
            seq=seq,
            kind=EntryKind.STEP,
            name="bench.step",
            value=self.frame,
            leg=1,
            started_at=now,
            ended_at=now,
        )

    def new_run(self, prefill: int) -> Run:
        self._runs += 1
        run_id = f"b{os.getpid()}-{self._runs}"
        self.hot.create_run(run_id, "bench")
        lease = self.hot.acquire_lease(run_id, "bench", LEASE)
        run = Run(run_id, lease.token)
        self.fill(run, prefill)
        return run

    def fill(self, run: Run, count: int) -> None:
        """Append ``count`` entries in batches as large as the backend writes atomically."""
        batch = self.hot.max_batch
        done = 0
        while done < count:
            n = min(batch, count - done)
            entries = [self.entry(run.next_seq + i) for i in range(n)]
            self.hot.append(run.run_id, run.token, entries)
            run.next_seq += n
            done += n

    def timed_appends(self, run: Run, count: int, into: list[float]) -> None:
        # The entry is built before the clock starts: building it is the runtime's work, the
        # append (policy checks, serialization, the backend's atomic write) is the store's.
        hot, run_id, token = self.hot, run.run_id, run.token
        for _ in range(count):
            batch = [self.entry(run.next_seq)]
            start = time.perf_counter_ns()
            hot.append(run_id, token, batch)
            into.append((time.perf_counter_ns() - start) / 1000)
            run.next_seq += 1

    def written_bytes(self, run: Run) -> int:
        """Bytes one append hands the backend: the entry document and the rewritten record."""
        entry = self.entry(run.next_seq)
        record = self.hot.append(run.run_id, run.token, [entry])
        run.next_seq += 1
        return len(serialize.dump(entry)) + len(serialize.dump(record))

    def read_ms(self, run: Run, repeats: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            entries = self.hot.read_journal(run.run_id)
            times.append((time.perf_counter() - start) * 1000)
            assert len(entries) == run.next_seq, (len(entries), run.next_seq)
        return statistics.median(times)


def measure(
    bench: Bench,
    appends: int,
    read_repeats: int,
    stored: StoredProbe,
    progress: Callable[[str], None],
) -> Result:
    result = Result(bench.name)
    # Warm up: connections, Lua script loading, statement caches, the interpreter's caches.
    warm = bench.new_run(SHORT_JOURNAL)
    bench.timed_appends(warm, 50, [])

    progress(f"{bench.name}: filling a {LONG_JOURNAL}-entry journal")
    long_run = bench.new_run(LONG_JOURNAL)
    progress(f"{bench.name}: timing {appends} appends at {SHORT_JOURNAL} and at {LONG_JOURNAL}")
    for _ in range(max(1, appends // BLOCK)):
        short = bench.new_run(SHORT_JOURNAL)
        bench.timed_appends(short, BLOCK, result.short_us)
        bench.timed_appends(long_run, BLOCK, result.long_us)

    result.bytes_per_append = bench.written_bytes(warm)
    result.bytes_per_append_at_10000 = bench.written_bytes(long_run)

    progress(f"{bench.name}: reading a 1000-entry journal")
    reader = bench.new_run(1000)
    result.read_1000_ms = bench.read_ms(reader, read_repeats)

    result.stored = stored(bench)
    return result


# ---------------------------------------------------------------------- per-backend storage


def sqlite_stored(path: Path) -> StoredProbe:
    def stored(bench: Bench) -> Stored:
        count = 200
        with sqlite3.connect(path) as conn:
            run = bench.new_run(0)
            # new_run wrote the run row and took the lease; count only what appends add.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            before = _sqlite_size(conn)
            bench.timed_appends(run, count, [])
            _, wal_frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            after = _sqlite_size(conn)
        return Stored(
            (after - before) / count,
            f"database growth (used pages x page size) over {count} appends; the record is "
            "rewritten in place, so growth is journal rows and b-tree pages",
            # A WAL frame is one page plus a 24-byte frame header.
            wal_per_append=wal_frames * (page + 24) / count,
        )

    return stored


def _sqlite_size(conn: sqlite3.Connection) -> int:
    count = conn.execute("PRAGMA page_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    freelist = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((count - freelist) * size)


def redis_stored(url: str) -> StoredProbe:
    import redis

    def stored(bench: Bench) -> Stored:
        count = 1000
        client = redis.Redis.from_url(url)
        try:
            run = bench.new_run(0)
            before = int(client.info("memory")["used_memory"])
            bench.timed_appends(run, count, [])
            after = int(client.info("memory")["used_memory"])
        finally:
            client.close()
        return Stored(
            (after - before) / count,
            f"growth of the server's used_memory over {count} appends (the journal list)",
        )

    return stored


def dynamo_stored(endpoint: str, table: str) -> StoredProbe:
    def stored(bench: Bench) -> Stored:
        import boto3

        count = 20
        run = bench.new_run(0)
        bench.timed_appends(run, count, [])
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        items = client.query(
            TableName=table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": run.run_id}},
            ConsistentRead=True,
        )["Items"]
        journal = [i for i in items if "docs" in i]
        assert len(journal) == count, len(journal)
        size = sum(_dynamo_item_size(i) for i in journal)
        return Stored(
            size / count,
            f"DynamoDB item size (AWS sizing rules) of the {count} journal items {count} "
            "appends wrote; the run item is rewritten in place",
        )

    return stored


def _dynamo_item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + _dynamo_value_size(value) for name, value in item.items())


def _dynamo_value_size(value: dict[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "B":
        return len(inner)
    if kind == "N":
        return len(str(inner).lstrip("-").replace(".", "")) // 2 + 2
    if kind == "L":
        return 3 + sum(1 + _dynamo_value_size(v) for v in inner)
    raise ValueError(f"unsized DynamoDB type {kind}")


# ---------------------------------------------------------------------- opening backends


@contextmanager
def opened(backend: str, tmp: Path) -> Iterator[tuple[HotTier, StoredProbe]]:
    if backend == "sqlite":
        path = tmp / "hot.db"
        hot = open_hot(f"sqlite:///{path}")
        try:
            yield hot, sqlite_stored(path)
        finally:
            hot.close()
    elif backend == "redis":
        workdir = tmp / "redis"
        workdir.mkdir()
        # AOF on (fsync every second, Redis's default): the setting a durable store runs with.
        server = RedisServer(workdir=workdir, persistent=True)
        server.start()
        try:
            hot = open_hot(f"{server.url}?prefix=bench")
            try:
                yield hot, redis_stored(server.url)
            finally:
                hot.close()
        finally:
            server.stop()
    elif backend == "dynamodb-moto":
        for key, default in (
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ):
            os.environ.setdefault(key, default)
        moto = MotoServer()
        moto.start()
        try:
            hot = open_hot(
                f"dynamodb://bench?region=us-east-1&endpoint_url={moto.endpoint}&create=1"
            )
            try:
                yield hot, dynamo_stored(moto.endpoint, "bench")
            finally:
                hot.close()
        finally:
            moto.stop()
    else:
        raise SystemExit(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


# ---------------------------------------------------------------------- report


def verdicts(name: str, figures: dict[str, Any]) -> list[str]:
    out = []
    target = TARGET_P50_US.get(name)
    if target is not None:
        ok = figures["append_p50_us"] <= target
        out.append(
            f"{name}: append p50 {figures['append_p50_us']:.1f} us <= {target:.0f} us: "
            f"{'PASS' if ok else 'FAIL'}"
        )
    ratio = figures["append_p50_us_at_10000"] / figures["append_p50_us"]
    ok = ratio <= TARGET_RATIO
    label = "PASS" if ok else "FAIL"
    if name == "dynamodb-moto":
        label = f"{label} (moto, not DynamoDB: informative only)"
    out.append(
        f"{name}: p50 at {LONG_JOURNAL} / p50 at {SHORT_JOURNAL} = {ratio:.2f} "
        f"<= {TARGET_RATIO}: {label}"
    )
    return out


def print_table(results: list[Result]) -> None:
    header = (
        f"{'backend':<14} {'n':>5} {'p50 us':>9} {'p99 us':>9} {'p50@10k us':>11} "
        f"{'ratio':>6} {'read1000 ms':>12} {'B/append':>9} {'stored B':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        f = r.figures()
        print(
            f"{r.backend:<14} {f['samples']:>5} {f['append_p50_us']:>9.1f} "
            f"{f['append_p99_us']:>9.1f} {f['append_p50_us_at_10000']:>11.1f} "
            f"{f['append_p50_us_at_10000'] / f['append_p50_us']:>6.2f} "
            f"{f['read_1000_ms']:>12.2f} {f['bytes_per_append']:>9} "
            f"{f.get('stored_bytes_per_append', float('nan')):>9.1f}"
        )
    print()
    print(
        f"append: one {VALUE_BYTES}-byte entry through HotTier.append with a held lease; "
        f"p50/p99 at a {SHORT_JOURNAL}-{SHORT_JOURNAL + BLOCK} entry journal, p50@10k at "
        f"{LONG_JOURNAL}+ entries (blocks of {BLOCK} alternate between the two)."
    )
    print(
        "B/append: serialized entry document + rewritten run-record document, the bytes one "
        "append hands the backend (the same at 10,000 entries: "
        + ", ".join(f"{r.backend} {r.bytes_per_append_at_10000}" for r in results)
        + ")."
    )
    for r in results:
        if r.stored is None:
            continue
        extra = ""
        if r.stored.wal_per_append is not None:
            extra = f"; WAL written per append: {r.stored.wal_per_append:.0f} B (whole pages)"
        print(f"stored B ({r.backend}): {r.stored.how}{extra}.")
    if any(r.backend == "dynamodb-moto" for r in results):
        print(
            "dynamodb-moto: moto_server is a Python emulation of DynamoDB (tens of ms a call, "
            "and it copies its table for each transaction); its figures say nothing about "
            "DynamoDB's latency."
        )
    print()
    for r in results:
        for line in verdicts(r.backend, r.figures()):
            print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument(
        "--appends",
        type=int,
        default=2000,
        help="timed appends per journal length (dynamodb-moto uses a tenth, at most 200)",
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    args = parser.parse_args(argv)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    for name in names:
        if name not in BACKENDS:
            parser.error(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")

    def progress(message: str) -> None:
        print(f"... {message}", file=sys.stderr, flush=True)

    results: list[Result] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="outlast-bench-")))
        for name in names:
            work = tmp / name
            work.mkdir()
            with opened(name, work) as (hot, stored):
                moto = name == "dynamodb-moto"
                appends = min(200, max(BLOCK, args.appends // 10)) if moto else args.appends
                result = measure(Bench(hot, name), appends, 3 if moto else 9, stored, progress)
                results.append(result)
    print_table(results)
    if args.json:
        print(json.dumps({r.backend: r.figures() for r in results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
