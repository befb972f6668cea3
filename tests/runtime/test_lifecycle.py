"""Nothing loops forever: every run ends, or waits for a person with a stated reason.

Each trigger that used to re-drive a run without end (a step longer than its leg, corrupt or
missing data, a full disk, an unstorable error, an unknown function) now ends in a bounded number
of legs: the run fails or is blocked with the error named. Each test counts the side effects it
caused. Then ``retry``, fork and ``delete`` put a person back in charge.
"""

from __future__ import annotations

import base64
import errno
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from outlast import App, Context, RetryPolicy
from outlast.journal_cache import JournalCache
from outlast.testing.store_faults import SimulatedKill
from statestore import (
    BlobRef,
    RunStatus,
    StateStore,
    StateStoreError,
    open_store,
)
from statestore.backends.fs import FsColdTier
from tests.conftest import unique
from tests.statestore.corrupt_s3 import corrupt_s3_blob
from tests.support.servers import MotoServer, RedisServer

FAST = RetryPolicy(max_attempts=1)


def incompressible(size: int) -> str:
    return base64.b64encode(os.urandom(size))[:size].decode()


MAX_LEGS = 40  # a driver that needs more than this to settle a run has looped


def settle(app: App, run_id: str, *, cache: JournalCache | None = None) -> tuple[int, list[str]]:
    """Drive legs until the run takes no more legs; return the legs run and what they raised."""
    raised: list[str] = []
    for legs in range(1, MAX_LEGS + 1):
        try:
            app.run_leg(run_id, cache=cache or JournalCache())
        except StateStoreError as exc:
            raised.append(type(exc).__name__)
        except SimulatedKill:
            # The process died mid-leg: its supervisor saw it go and frees the run.
            record = app.store.hot.get_run(run_id)
            assert record.lease is not None
            app.store.hot.break_lease(run_id, record.lease.token)
        record = app.store.hot.get_run(run_id)
        if not record.status.takes_legs:
            return legs, raised
        if record.retry_after is not None:
            time.sleep(max(0.0, (record.retry_after - app.store.hot.now()).total_seconds()))
    raise AssertionError(f"run {run_id} still takes legs after {MAX_LEGS}: {record}")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    store = open_store(f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold")
    application = App("life", store=store, retry=FAST, trouble_backoff=(0.001, 0.01))
    yield application
    application.close()


# ------------------------------------------------------------------ bounded attempts


def test_a_step_whose_leg_keeps_dying_fails_the_run_naming_it(app: App) -> None:
    effects = Counter[str]()

    def longer_than_a_leg() -> str:
        effects["slow"] += 1
        raise SimulatedKill("the leg's deadline passed while the step ran")

    @app.durable()
    def flow(ctx: Context) -> str:
        ctx.step(lambda: "before", name="before")
        return str(ctx.step(longer_than_a_leg, name="slow"))

    run_id = app.start("flow")
    legs, _ = settle(app, run_id)
    record = app.store.hot.get_run(run_id)
    assert record.status is RunStatus.FAILED
    assert record.error is not None
    assert "step 'slow' was interrupted 3 times" in record.error.message
    assert "leg budget" in record.error.message and "expected duration" in record.error.message
    assert effects["slow"] == 3 and legs == 4
    assert [e.name for e in app.journal(run_id)] == ["before", "slow"]


def test_the_interruption_cap_is_per_step(app: App) -> None:
    effects = Counter[str]()

    def fragile() -> str:
        effects["fragile"] += 1
        if effects["fragile"] <= 4:
            raise SimulatedKill("killed")
        return "made it"

    @app.durable()
    def flow(ctx: Context) -> str:
        return str(ctx.step(fragile, name="fragile", max_interruptions=6))

    run_id = app.start("flow")
    settle(app, run_id)
    assert app.result(run_id) == "made it"
    assert effects["fragile"] == 5


def test_a_step_timeout_is_an_ordinary_retryable_failure(app: App) -> None:
    effects = Counter[str]()

    def sometimes_hangs() -> str:
        effects["calls"] += 1
        if effects["calls"] == 1:
            time.sleep(2)
        return "answered"

    @app.durable()
    def flow(ctx: Context) -> str:
        policy = RetryPolicy(max_attempts=2, initial_delay=0.001, max_delay=0.001)
        return str(ctx.step(sometimes_hangs, timeout=0.2, retry=policy))

    run_id = app.start("flow")
    settle(app, run_id)
    assert app.result(run_id) == "answered"
    journal = app.journal(run_id)
    assert journal[0].error is not None and journal[0].error.type == "StepTimeoutError"
    assert effects["calls"] == 2


def test_a_huge_exception_is_stored_clipped_and_the_run_fails() -> None:
    from statestore.backends.memory import MemoryColdTier, MemoryHotTier

    app = App("huge", store=StateStore(MemoryHotTier(), MemoryColdTier()), retry=FAST)

    def explode() -> None:
        raise RuntimeError("x" * 1_000_000)

    @app.durable()
    def flow(ctx: Context) -> None:
        ctx.step(explode, name="explode")

    run_id = app.start("flow")
    legs, _ = settle(app, run_id)
    record = app.store.hot.get_run(run_id)
    assert record.status is RunStatus.FAILED and legs == 1
    assert record.error is not None and len(record.error.message) < 20_000
    assert "characters cut" in record.error.message


# ------------------------------------------------------------------ broken state


def _suspended_after_a_big_step(app: App, effects: Counter[str]) -> str:
    def big() -> str:
        effects["big"] += 1
        return incompressible(150_000)  # above the inline limit: a cold blob

    def after(value: str) -> int:
        effects["after"] += 1
        return len(value)

    @app.durable()
    def flow(ctx: Context) -> int:
        value = ctx.step(big, name="big")
        ctx.wait_for_signal("go")
        return int(ctx.step(after, value, name="after"))

    run_id = app.start("flow")
    assert app.run_leg(run_id).status == "suspended"
    app.signal(run_id, "go")
    return run_id


def _blob_path(app: App, run_id: str) -> Path:
    entry = app.journal(run_id)[0]
    assert isinstance(entry.value, BlobRef)
    return Path(app.store.cold.key(run_id, entry.value.sha256))


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_a_damaged_cold_blob_blocks_the_run_with_a_named_error(app: App, damage: str) -> None:
    effects = Counter[str]()
    run_id = _suspended_after_a_big_step(app, effects)
    path = _blob_path(app, run_id)
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        path.unlink()
    legs, raised = settle(app, run_id)
    record = app.store.hot.get_run(run_id)
    assert record.status is RunStatus.BLOCKED
    assert legs == app.max_broken_legs
    assert record.error is not None
    assert "seq=0" in record.error.message and "tier=file" in record.error.message
    expected = "CorruptStateError" if damage == "flip" else "BlobNotFoundError"
    assert record.error.type == expected and set(raised) == {expected}
    assert effects == Counter({"big": 1})  # nothing re-ran, nothing after it ran
    # Blocked takes no legs, from any driver.
    assert app.run_leg(run_id).status == "skipped"
    assert run_id not in app.store.hot.due_runs()


def test_a_corrupt_journal_row_blocks_the_run(app: App, tmp_path: Path) -> None:
    effects = Counter[str]()
    run_id = _suspended_after_a_big_step(app, effects)
    with sqlite3.connect(tmp_path / "hot.db") as db:
        db.execute("UPDATE journal SET doc = x'00112233' WHERE run_id = ? AND seq = 0", (run_id,))
    legs, _ = settle(app, run_id)
    record = app.store.hot.get_run(run_id)
    assert record.status is RunStatus.BLOCKED and legs == app.max_broken_legs
    assert record.error is not None and record.error.type == "CorruptStateError"
    assert effects == Counter({"big": 1})


class _FullDisk(FsColdTier):
    def _put(self, run_id: str, sha256: str, data: bytes) -> None:
        raise_full = OSError(errno.ENOSPC, "No space left on device")
        from statestore import StoreFullError

        raise StoreFullError(f"cannot write blob: {raise_full}") from raise_full


def test_a_full_cold_tier_blocks_the_run_after_a_bounded_number_of_side_effects(
    tmp_path: Path,
) -> None:
    hot = open_store(f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold").hot
    app = App(
        "full",
        store=StateStore(hot, _FullDisk(tmp_path / "cold")),
        retry=FAST,
        trouble_backoff=(0.001, 0.01),
    )
    effects = Counter[str]()

    def large() -> str:
        effects["large"] += 1
        return incompressible(200_000)

    @app.durable()
    def flow(ctx: Context) -> int:
        return len(str(ctx.step(large, name="large")))

    run_id = app.start("flow")
    legs, raised = settle(app, run_id)
    record = app.store.hot.get_run(run_id)
    assert record.status is RunStatus.BLOCKED
    assert record.error is not None and record.error.type == "StoreFullError"
    assert set(raised) == {"StoreFullError"}
    assert effects["large"] == legs == app.max_broken_legs


def test_transient_trouble_keeps_retrying_without_a_cap(tmp_path: Path) -> None:
    from statestore.backends.memory import MemoryColdTier
    from tests.runtime.test_integrity import _FlakyWrites

    hot = _FlakyWrites()
    app = App(
        "transient",
        store=StateStore(hot, MemoryColdTier()),
        retry=FAST,
        trouble_backoff=(0.001, 0.002),
    )
    effects = Counter[str]()

    def work() -> str:
        effects["work"] += 1
        if effects["work"] <= 8:  # more failed legs than max_broken_legs: never blocked
            hot.appends_fail, hot.reads_fail = 1, 8
        return "done"

    @app.durable()
    def flow(ctx: Context) -> str:
        return str(ctx.step(work, name="work"))

    run_id = app.start("flow")
    legs, raised = settle(app, run_id)
    assert app.result(run_id) == "done"
    assert raised == ["StoreUnavailableError"] * 8 and legs == 9
    assert effects["work"] == 9


def test_an_unknown_function_blocks_the_run(app: App) -> None:
    @app.durable()
    def old(ctx: Context) -> str:
        return "old"

    run_id = app.start("old")
    other = App("other", store=app.store, trouble_backoff=(0.001, 0.01))
    other.durable("new")(lambda ctx: "new")
    from outlast.errors import FunctionNotFoundError

    for _ in range(other.max_broken_legs):
        with pytest.raises(FunctionNotFoundError):
            other.run_leg(run_id)
        time.sleep(0.02)
    record = app.store.hot.get_run(run_id)
    assert record.status is RunStatus.BLOCKED
    assert record.error is not None and "no durable function 'old'" in record.error.message
    # The right deployment retries it.
    app.retry(run_id)
    assert app.drive(run_id).status is RunStatus.SUCCEEDED


# ------------------------------------------------------------------ retry, fork, delete


def _store_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str]:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold"
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return f"{server.url}?prefix={unique('life')}", f"file://{tmp_path}/cold"
    moto: MotoServer = request.getfixturevalue("moto_server")
    end = f"region=us-east-1&endpoint_url={moto.endpoint}&create=1"
    return f"dynamodb://{unique('life')}?{end}", f"s3://{unique('life')}/runs?{end}"


@pytest.fixture(params=["sqlite", "redis", "dynamodb"])
def any_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    hot_url, cold_url = _store_url(str(request.param), tmp_path, request)
    application = App(
        "retry", store=open_store(hot_url, cold_url), retry=FAST, trouble_backoff=(0.001, 0.01)
    )
    yield application
    application.close()


def test_retry_reopens_a_failed_run_from_its_failing_step(any_app: App) -> None:
    app = any_app
    effects = Counter[str]()
    fixed = {"yes": False}

    def prepare() -> str:
        effects["prepare"] += 1
        return "p" * 70_000  # cold on every backend

    def charge(prep: str) -> str:
        effects["charge"] += 1
        if not fixed["yes"]:
            raise ValueError("card declined")
        return f"charged {len(prep)}"

    @app.durable()
    def flow(ctx: Context) -> str:
        prep = ctx.step(prepare, name="prepare")
        return str(
            ctx.step(
                charge, prep, name="charge", retry=RetryPolicy(max_attempts=2, initial_delay=0.001)
            )
        )

    run_id = app.start("flow")
    assert app.drive(run_id).status is RunStatus.FAILED
    assert [e.name for e in app.journal(run_id)] == ["prepare", "charge", "charge"]
    fixed["yes"] = True
    assert app.retry(run_id) == run_id
    assert app.status(run_id).status is RunStatus.PENDING
    assert [e.name for e in app.journal(run_id)] == ["prepare"]
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == "charged 70000"
    assert effects == Counter({"prepare": 1, "charge": 3})
    with pytest.raises(StateStoreError, match="only failed or blocked"):
        app.retry(run_id)


def test_fork_copies_the_journal_up_to_a_seq_and_leaves_the_source_alone(any_app: App) -> None:
    app = any_app
    effects = Counter[str]()

    def part(i: int) -> str:
        effects[f"part{i}"] += 1
        return f"{i}:" + "q" * (50_000 if i == 0 else 10)

    @app.durable()
    def flow(ctx: Context) -> list[str]:
        return [str(ctx.step(part, i, name=f"part{i}"))[:3] for i in range(3)]

    run_id = app.start("flow")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    fork = app.retry(run_id, from_seq=2, as_id=f"{run_id}-fork")
    assert fork == f"{run_id}-fork"
    assert [e.name for e in app.journal(fork)] == ["part0", "part1"]
    assert app.drive(fork).status is RunStatus.SUCCEEDED
    assert app.result(fork) == app.result(run_id) == ["0:q", "1:q", "2:q"]
    assert effects == Counter({"part0": 1, "part1": 1, "part2": 2})
    assert app.status(run_id).status is RunStatus.SUCCEEDED
    assert app.store.hot.get_run(fork).tags["forked_from"] == f"{run_id}@2"


def test_delete_removes_everything_and_the_id_starts_afresh(any_app: App) -> None:
    app = any_app

    @app.durable()
    def flow(ctx: Context, word: str) -> str:
        big = ctx.step(lambda: word * 40_000, name="big")
        ctx.wait_for_signal("go")
        return str(big)[:5]

    app.start("flow", "old", run_id="gone")
    app.run_leg("gone")
    app.signal("gone", "go", {"payload": "p" * 80_000})
    app.delete("gone")
    assert app.store.hot.find_run("gone") is None
    assert app.store.hot.read_journal("gone") == []
    assert app.store.hot.pending_signals("gone") == []
    assert app.store.cold.delete_run("gone") == 0  # no blob was left behind
    app.start("flow", "new", run_id="gone")
    app.signal("gone", "go")
    assert app.drive("gone").status is RunStatus.SUCCEEDED
    assert app.result("gone") == "newne"


def test_a_huge_exception_fails_the_run_on_every_backend(any_app: App) -> None:
    app = any_app
    effects = Counter[str]()

    def explode() -> None:
        effects["explode"] += 1
        raise RuntimeError(incompressible(1_000_000))  # DynamoDB items hold 400 KB

    @app.durable()
    def flow(ctx: Context) -> None:
        ctx.step(explode, name="explode")

    run_id = app.start("flow")
    legs, raised = settle(app, run_id)
    record = app.store.hot.get_run(run_id)
    assert record.status is RunStatus.FAILED and legs == 1 and raised == []
    assert record.error is not None and "characters cut" in record.error.message
    assert effects["explode"] == 1


def test_a_flipped_byte_in_an_s3_blob_blocks_the_run(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    end = f"region=us-east-1&endpoint_url={moto_server.endpoint}&create=1"
    store = open_store(f"sqlite:///{tmp_path}/hot.db", f"s3://{unique('flip')}/runs?{end}")
    app = App("s3flip", store=store, retry=FAST, trouble_backoff=(0.001, 0.01))
    effects = Counter[str]()
    run_id = _suspended_after_a_big_step(app, effects)
    entry = app.journal(run_id)[0]
    assert isinstance(entry.value, BlobRef)
    corrupt_s3_blob(app.store.cold, run_id, entry.value.sha256)
    legs, raised = settle(app, run_id)
    assert set(raised) == {"CorruptStateError"}
    record = app.store.hot.get_run(run_id)
    assert record.status is RunStatus.BLOCKED and legs == app.max_broken_legs
    assert record.error is not None and record.error.type == "CorruptStateError"
    assert "tier=s3" in record.error.message
    assert effects == Counter({"big": 1})
    app.close()
