"""Regression tests for the integrity holes: each failed on the code before the leased-run commit.

A committed step is never lost, never committed twice, and never replaced by a value that was not
committed. These tests use ordinary workloads (parallel maps of large values, several runs in one
warm process, leases lost mid-step, store faults, delete and re-create, ``except Exception``).
"""

from __future__ import annotations

import enum
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from outlast import App, Context, RetryPolicy
from outlast.journal_cache import JournalCache
from outlast.testing.replay import replay_context
from statestore import (
    CorruptStateError,
    EntryKind,
    EntryStatus,
    InvalidRunIdError,
    RunStatus,
    StateStore,
    StoreUnavailableError,
    open_store,
    validate_run_id,
)
from statestore.backends.memory import MemoryColdTier, MemoryHotTier

FAST = RetryPolicy(max_attempts=2, initial_delay=0.001, max_delay=0.01)


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[App]:
    store = open_store(f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold")
    app = App("integrity", store=store, retry=FAST)
    yield app
    app.close()


def big(i: int, size: int = 24_000) -> str:
    # Compressible but distinct per item, so a decode that returns another item's bytes shows.
    words = [f"item{i}-word{j % 97}" for j in range(size // 12)]
    return " ".join(words)[:size]


# 1. zstd contexts shared by threads --------------------------------------------------------


def test_parallel_maps_of_large_values_come_back_as_themselves(sqlite_app: App) -> None:
    @sqlite_app.durable()
    def fan(ctx: Context, n: int) -> list[int]:
        out = ctx.map(lambda i: big(i + n), range(16), max_concurrency=4)
        return [len(v) if v == big(i + n) else -1 for i, v in enumerate(out)]

    runs = [sqlite_app.start("fan", n) for n in range(12)]
    threads = [threading.Thread(target=sqlite_app.drive, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, run_id in enumerate(runs):
        assert sqlite_app.result(run_id) == [24_000] * 16, n
        # And a replay (decoding on one thread) gives the same values.
        ctx = replay_context(sqlite_app, run_id)
        assert fan.fn(ctx, n) == [24_000] * 16


# 2. the process cache holds only what was committed ---------------------------------------


def test_reads_refused_with_the_final_write_are_never_replayed(app: App) -> None:
    """Leg 1 draws a uuid, then loses its lease mid-step: its final write is refused. The next
    leg, in the same warm process, must draw again, and its uuid is the one journaled."""
    cache = JournalCache()
    seen: list[tuple[int, str]] = []
    legs = Counter[str]()

    def steal(run_id: str) -> str:
        legs["steal"] += 1
        if legs["steal"] == 1:  # another leg takes the run while this one is in its step
            record = app.store.hot.get_run(run_id)
            assert record.lease is not None
            app.store.hot.break_lease(run_id, record.lease.token)
        return "done"

    @app.durable()
    def flow(ctx: Context) -> str:
        token = ctx.uuid()
        seen.append((ctx.leg, token))
        ctx.step(steal, ctx.run_id)
        return token

    run_id = app.start("flow")
    first = app.run_leg(run_id, cache=cache)
    assert first.status == "lease_lost"
    assert app.journal(run_id) == []
    second = app.run_leg(run_id, cache=cache)
    assert second.status == "completed", second.detail
    journal = app.journal(run_id)
    assert [e.kind for e in journal] == [EntryKind.RANDOM, EntryKind.STEP]
    stored = app.store.decode(run_id, journal[0].value)
    assert seen[-1][1] == stored == app.result(run_id)
    assert seen[0][1] != stored  # the refused draw was not replayed


def test_a_deleted_run_id_started_again_sees_nothing_of_the_old_run(app: App) -> None:
    cache = JournalCache()

    @app.durable()
    def echo(ctx: Context, word: str) -> str:
        said = ctx.step(lambda: word, name="say")
        ctx.wait_for_signal("go")
        return str(said)

    app.start("echo", "old", run_id="same")
    assert app.run_leg("same", cache=cache).status == "suspended"
    assert len(cache) == 1  # the warm process keeps the suspended run's journal
    app.store.hot.delete_run("same")
    app.store.cold.delete_run("same")

    app.start("echo", "new", run_id="same")
    app.signal("same", "go")
    for _ in range(3):
        app.run_leg("same", cache=cache)
    assert app.result("same") == "new"
    assert [e.name for e in app.journal("same")] == ["say", "go"]


# 4. and 5. failures belong to whoever raised them -----------------------------------------


class _FlakyWrites(MemoryHotTier):
    """A memory tier whose next appends fail, before or after they land, and whose reads fail."""

    appends_fail = 0  # appends that fail before landing
    land_then_fail = 0  # appends that land, then lose their reply
    reads_fail = 0  # record reads that fail

    def _write(self, old: Any, new: Any, entries: Any, take: Any) -> Any:
        if entries and self.appends_fail:
            self.appends_fail -= 1
            raise StoreUnavailableError("injected: connection reset before the write")
        if entries and self.land_then_fail:
            self.land_then_fail -= 1
            assert super()._write(old, new, entries, take) is None
            raise StoreUnavailableError("injected: reply lost after the write landed")
        return super()._write(old, new, entries, take)

    def _load_run(self, run_id: str) -> Any:
        if self.reads_fail:
            self.reads_fail -= 1
            raise StoreUnavailableError("injected: unreachable")
        return super()._load_run(run_id)


def test_user_code_cannot_swallow_a_failed_commit() -> None:
    hot = _FlakyWrites()
    app = App(
        "swallow",
        store=StateStore(hot, MemoryColdTier()),
        retry=FAST,
        trouble_backoff=(0.01, 0.02),
    )
    effects = Counter[str]()

    def charge() -> str:
        effects["charge"] += 1
        if effects["charge"] == 1:  # the store goes away while the step runs
            hot.appends_fail, hot.reads_fail = 1, 8
        return "charged"

    @app.durable()
    def flow(ctx: Context) -> str:
        try:
            outcome = ctx.step(charge, name="charge")
        except Exception:
            outcome = "swallowed"
        return str(outcome)

    run_id = app.start("flow")
    with pytest.raises(StoreUnavailableError):
        app.run_leg(run_id)
    record = hot.get_run(run_id)
    assert record.status is RunStatus.RUNNING
    assert record.lease is None  # given back at once, to be retried after a short backoff
    assert record.trouble is not None and record.trouble.transient
    assert record.retry_after is not None
    time.sleep(0.05)
    assert app.run_leg(run_id).status == "completed"
    assert app.result(run_id) == "charged"
    journal = app.journal(run_id)
    assert [(e.name, e.status) for e in journal] == [("charge", EntryStatus.OK)]
    assert effects["charge"] == 2  # one interruption, one repeat


def test_a_commit_whose_reply_was_lost_is_recognised_not_repeated() -> None:
    hot = _FlakyWrites()
    app = App("lost-reply", store=StateStore(hot, MemoryColdTier()), retry=FAST)
    effects = Counter[str]()

    def work() -> int:
        effects["work"] += 1
        hot.land_then_fail, hot.reads_fail = 1, 1
        return 41

    @app.durable()
    def flow(ctx: Context) -> int:
        return int(ctx.step(work)) + 1

    run_id = app.start("flow")
    assert app.run_leg(run_id).status == "completed"
    assert app.result(run_id) == 42
    assert [e.seq for e in app.journal(run_id)] == [0]
    assert effects["work"] == 1


def test_a_store_error_raised_by_user_code_is_the_users(app: App) -> None:
    @app.durable()
    def spawn(ctx: Context) -> str:
        return str(ctx.step(validate_run_id, "not a valid id!", retry=FAST))

    run_id = app.start("spawn")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None and view.error.type == "InvalidRunIdError"
    entries = app.journal(run_id)
    assert [e.status for e in entries] == [EntryStatus.RETRY, EntryStatus.ERROR]
    assert issubclass(InvalidRunIdError, Exception)


# 6. and 7. live values are the committed ones ----------------------------------------------


class Mood(enum.StrEnum):
    HAPPY = "happy"


class Note(BaseModel):
    text: str
    at: datetime


def test_live_values_equal_replayed_values(app: App) -> None:
    offset = timezone(timedelta(hours=2))
    when = datetime(2026, 5, 1, 12, 0, tzinfo=offset)
    makers: dict[str, Any] = {
        "aware": lambda: when,
        "naive": lambda: datetime(2026, 5, 1, 12, 0),
        "enum": lambda: Mood.HAPPY,
        "bytearray": lambda: bytearray(b"\x00\x01"),
        "tuple": lambda: (1, "a", (2.5,)),
        "model": lambda: Note(text="hi", at=when),  # no annotation: the tag rebuilds it
        "tuple-keys": lambda: {("a", 1): "x"},
    }
    live: dict[str, Any] = {}

    @app.durable()
    def flow(ctx: Context) -> None:
        for name, make in makers.items():
            live[name] = ctx.step(make, name=name)

    run_id = app.start("flow")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    first = dict(live)
    flow.fn(replay_context(app, run_id))
    for name, make in makers.items():
        expected = make()
        assert first[name] == live[name] == expected, name
        assert type(first[name]) is type(live[name]) is type(expected), name
    assert first["aware"].utcoffset() == timedelta(hours=2)
    assert first["naive"].tzinfo is None


def test_a_value_that_cannot_round_trip_is_refused_before_anything_is_committed(
    app: App,
) -> None:
    loop: list[Any] = []
    loop.append(loop)

    @app.durable()
    def flow(ctx: Context) -> None:
        ctx.step(lambda: loop, name="loop", retry=FAST)

    run_id = app.start("flow")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None and view.error.type == "TypeError"
    assert "step 'loop'" in view.error.message
    assert app.journal(run_id) == []


def test_the_leased_run_refuses_plain_data_that_does_not_read_back(app: App) -> None:
    from statestore import LeasedRun, Operation, UnstorableValueError, utcnow

    run_id = app.start(app.durable("noop")(lambda ctx: None))
    leased = LeasedRun.take(app.store, run_id, "test", timedelta(seconds=30))
    now = utcnow()
    op = Operation(
        kind=EntryKind.STEP, name="keys", started_at=now, ended_at=now, value={("a", 1): "x"}
    )
    with pytest.raises(UnstorableValueError, match="reads back"):
        leased.commit([op])
    assert app.journal(run_id) == []
    assert app.store.hot.get_run(run_id).next_seq == 0


# 8. bursts of deterministic reads ----------------------------------------------------------


class _SmallBatches(MemoryHotTier):
    max_batch = 7


def test_a_burst_of_reads_larger_than_a_batch_commits_in_order() -> None:
    app = App("burst", store=StateStore(_SmallBatches(), MemoryColdTier()), retry=FAST)
    effects = Counter[str]()

    def side() -> str:
        effects["side"] += 1
        return "ok"

    @app.durable()
    def flow(ctx: Context) -> list[str]:
        ids = [ctx.uuid() for _ in range(100)]
        ctx.step(side)
        return ids

    run_id = app.start("flow")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    journal = app.journal(run_id)
    assert [e.seq for e in journal] == list(range(101))
    assert [e.kind for e in journal[:100]] == [EntryKind.RANDOM] * 100
    assert app.result(run_id) == [app.store.decode(run_id, e.value) for e in journal[:100]]
    assert effects["side"] == 1


# 9. a lost trailing entry is corruption, reported before anything re-runs -----------------


def test_a_lost_trailing_entry_is_reported_as_corruption(sqlite_app: App, tmp_path: Path) -> None:
    effects = Counter[str]()

    def work(i: int) -> int:
        effects[f"work{i}"] += 1
        return i

    @sqlite_app.durable()
    def flow(ctx: Context) -> int:
        total = sum(ctx.step(work, i, name=f"work{i}") for i in range(3))
        ctx.wait_for_signal("go")
        return total

    run_id = sqlite_app.start("flow")
    assert sqlite_app.run_leg(run_id, cache=JournalCache()).status == "suspended"
    with sqlite3.connect(tmp_path / "hot.db") as db:
        db.execute("DELETE FROM journal WHERE run_id = ? AND seq = 2", (run_id,))
    sqlite_app.signal(run_id, "go")
    with pytest.raises(CorruptStateError, match=r"seq=2.*missing"):
        sqlite_app.run_leg(run_id, cache=JournalCache())
    assert effects == Counter({"work0": 1, "work1": 1, "work2": 1})  # nothing re-ran


# 10. code that now does fewer operations -------------------------------------------------


def test_code_that_returns_before_the_journal_ends_is_non_deterministic(app: App) -> None:
    def a() -> str:
        return "a"

    def b() -> str:
        return "b"

    def v1(ctx: Context) -> str:
        ctx.step(a)
        ctx.step(b)
        ctx.wait_for_signal("go")
        return "v1"

    def v2(ctx: Context) -> str:
        ctx.step(a)
        return "v2"

    app.durable("flow")(v1)
    run_id = app.start("flow")
    assert app.run_leg(run_id).status == "suspended"
    app._functions.pop("flow")
    app.durable("flow")(v2)
    app.signal(run_id, "go")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None and view.error.type == "NonDeterminismError"
    assert "seq 1" in view.error.message and "returned before it" in view.error.message


# 13. records from a newer peer --------------------------------------------------------------


def test_unknown_fields_are_ignored_and_a_newer_major_schema_is_refused() -> None:
    from statestore import SchemaVersionError, codec, serialize
    from statestore.codec import Location
    from statestore.models import RunRecord

    now = datetime.now(UTC)
    record = RunRecord(run_id="r", function="f", created_at=now, updated_at=now)
    raw = record.model_dump(exclude_defaults=True, by_alias=True)
    newer_minor = codec.encode({**raw, "schema": "1.4", "priority": 7})
    assert serialize.load(RunRecord, newer_minor, Location(run_id="r")).run_id == "r"
    newer_major = codec.encode({**raw, "schema": "2.0"})
    with pytest.raises(SchemaVersionError, match=r"schema 2\.0.*1\.x"):
        serialize.load(RunRecord, newer_major, Location(run_id="r"))


# 14. a leg's heartbeat and its appends do not starve each other -----------------------------


def test_renewals_racing_a_legs_commits_lose_nothing(sqlite_app: App) -> None:
    from statestore import LeasedRun, Operation, utcnow

    run_id = sqlite_app.start(sqlite_app.durable("noop2")(lambda ctx: None))
    leased = LeasedRun.take(sqlite_app.store, run_id, "leg", timedelta(seconds=30))
    stop = threading.Event()
    renewals = Counter[str]()

    def heartbeat() -> None:
        while not stop.is_set():
            leased.renew(timedelta(seconds=30))
            renewals["ok"] += 1

    beat = threading.Thread(target=heartbeat)
    beat.start()
    try:
        for i in range(300):
            now = utcnow()
            leased.commit(
                [
                    Operation(
                        kind=EntryKind.STEP, name=f"s{i}", started_at=now, ended_at=now, value=i
                    )
                ]
            )
    finally:
        stop.set()
        beat.join()
    assert renewals["ok"] > 0
    assert [e.seq for e in sqlite_app.journal(run_id)] == list(range(300))


def test_a_warm_cache_never_serves_entries_a_retry_cut_away(app: App) -> None:
    """Two warm processes (two caches). One keeps a journal that a retry later cuts back and the
    run regrows to the same length with other values: the old entries must not come back."""
    here, there = JournalCache(), JournalCache()

    def check(word: str) -> str:
        if word == "bad":
            raise ValueError("bad word")
        return word

    @app.durable()
    def flow(ctx: Context) -> str:
        ctx.step(lambda: "a", name="a")
        word = ctx.wait_for_signal("go")
        ctx.wait_for_signal("more")
        return str(ctx.step(check, word, name="check", retry=FAST))

    run_id = app.start("flow")
    assert app.run_leg(run_id, cache=there).status == "suspended"
    app.signal(run_id, "go", "bad")
    assert app.run_leg(run_id, cache=there).status == "suspended"  # there: [a, go=bad]
    app.signal(run_id, "more")
    assert app.drive(run_id).status is RunStatus.FAILED
    app.retry(run_id, from_seq=1)
    app.signal(run_id, "go", "good")
    assert app.run_leg(run_id, cache=here).status == "suspended"  # store: [a, go=good]
    app.signal(run_id, "more")
    assert app.run_leg(run_id, cache=there).status == "completed"
    assert app.result(run_id) == "good"
