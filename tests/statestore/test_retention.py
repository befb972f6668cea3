"""Retention: ended runs expire, every item of theirs goes, and a reused id starts afresh.

Every test runs on memory, sqlite, redis and dynamodb.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from statestore import (
    BlobNotFoundError,
    BlobRef,
    EntryKind,
    HotTier,
    InvalidStoreUrlError,
    JournalEntry,
    RunStatus,
    StateStore,
    open_hot,
)
from statestore.backends.memory import MemoryColdTier
from tests.statestore.conftest import FakeClock, HotFactory

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)
KEEP = timedelta(days=1)


def entry(seq: int, value: bytes | BlobRef | None) -> JournalEntry:
    return JournalEntry(
        seq=seq, kind=EntryKind.STEP, name="s", value=value, started_at=T0, ended_at=T0
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(make_hot: HotFactory, clock: FakeClock) -> StateStore:
    return StateStore(make_hot(clock=clock, retention=KEEP), MemoryColdTier())


def ended_run(store: StateStore, run_id: str = "r1", result: bytes = b"old result") -> BlobRef:
    """A run that wrote a cold input, a cold and a hot entry, a pending signal, then succeeded.

    Returns the blob reference of its cold input.
    """
    cold_input = store.place(run_id, b"input " * 50, tier="cold")
    assert isinstance(cold_input, BlobRef)
    store.hot.create_run(run_id, "fn", input=cold_input, input_hash="h1")
    token = store.hot.acquire_lease(run_id, "leg", LEASE).token
    big = store.place(run_id, b"step " * 50, tier="cold")
    store.hot.append(run_id, token, [entry(0, big), entry(1, b"small")])
    store.hot.put_signal(run_id, "late", b"never taken")
    store.hot.complete(run_id, token, result)
    return cold_input


def test_an_ended_run_expires_after_the_retention_and_all_of_it_goes(
    store: StateStore, clock: FakeClock
) -> None:
    blob = ended_run(store)
    hot = store.hot
    assert hot.expired_runs() == []
    clock.advance(KEEP.total_seconds() - 1)
    assert store.expire_runs() == []
    assert hot.get_run("r1").status is RunStatus.SUCCEEDED

    clock.advance(1)
    assert hot.expired_runs() == ["r1"]
    assert store.expire_runs() == ["r1"]
    assert hot.find_run("r1") is None
    assert hot.read_journal("r1") == []
    assert hot.pending_signals("r1") == []
    with pytest.raises(BlobNotFoundError):
        store.cold.get("r1", blob)
    assert hot.expired_runs() == []
    assert store.expire_runs() == []


def test_a_reused_id_is_a_new_incarnation_that_sees_nothing_of_the_old(
    store: StateStore, clock: FakeClock
) -> None:
    ended_run(store)
    old = store.hot.get_run("r1")
    clock.advance(KEEP.total_seconds())
    assert store.expire_runs() == ["r1"]

    # Another input under the same id: no conflict with the old run, and none of its state.
    new = store.hot.create_run("r1", "fn", input=b"new input", input_hash="h2")
    assert new.incarnation != old.incarnation
    assert new.status is RunStatus.PENDING and new.next_seq == 0
    assert store.hot.read_journal("r1") == []
    assert store.hot.pending_signals("r1") == []
    token = store.hot.acquire_lease("r1", "leg", LEASE).token
    store.hot.append("r1", token, [entry(0, b"fresh")])
    store.hot.complete("r1", token, b"new result")
    assert store.hot.get_run("r1").result == b"new result"
    assert [e.value for e in store.hot.read_journal("r1")] == [b"fresh"]


def test_runs_that_have_not_ended_never_expire(store: StateStore, clock: FakeClock) -> None:
    hot = store.hot
    hot.create_run("pending", "fn")
    hot.create_run("running", "fn")
    hot.acquire_lease("running", "leg", LEASE)
    hot.create_run("asleep", "fn")
    token = hot.acquire_lease("asleep", "leg", LEASE).token
    hot.suspend("asleep", token, wake_at=T0 + timedelta(days=3650), waiting_for="go")
    clock.advance(timedelta(days=400).total_seconds())
    assert hot.expired_runs() == []
    assert store.expire_runs() == []
    statuses = {r: hot.get_run(r).status for r in ("pending", "running", "asleep")}
    assert statuses == {
        "pending": RunStatus.PENDING,
        "running": RunStatus.RUNNING,
        "asleep": RunStatus.SUSPENDED,
    }


def test_expired_runs_come_longest_ended_first_and_a_pass_is_bounded(
    store: StateStore, clock: FakeClock
) -> None:
    for run_id in ("c", "a", "b"):
        store.hot.create_run(run_id, "fn")
        store.hot.cancel(run_id)
        clock.advance(60)
    clock.advance(KEEP.total_seconds())
    assert store.hot.expired_runs() == ["c", "a", "b"]
    assert store.hot.expired_runs(limit=2) == ["c", "a"]
    assert store.expire_runs(limit=2) == ["c", "a"]
    assert store.hot.find_run("b") is not None
    assert store.expire_runs() == ["b"]


def test_without_a_retention_ended_runs_are_kept(make_hot: HotFactory, clock: FakeClock) -> None:
    store = StateStore(make_hot(clock=clock), MemoryColdTier())
    ended_run(store)
    clock.advance(timedelta(days=3650).total_seconds())
    assert store.hot.expired_runs() == []
    assert store.expire_runs() == []
    assert store.hot.get_run("r1").result == b"old result"


def test_a_pass_that_died_midway_is_finished_by_the_next(
    store: StateStore, clock: FakeClock
) -> None:
    blob = ended_run(store)
    clock.advance(KEEP.total_seconds())
    # A sweeper claimed the run and deleted its blobs, then died before the hot items.
    claimed = store.hot.claim_expired("r1")
    assert claimed is not None
    store.cold.delete_run("r1")
    assert store.hot.get_run("r1").status is RunStatus.SUCCEEDED  # the id is still taken
    assert store.hot.expired_runs() == ["r1"]
    assert store.expire_runs() == ["r1"]
    assert store.hot.find_run("r1") is None and store.hot.read_journal("r1") == []
    with pytest.raises(BlobNotFoundError):
        store.cold.get("r1", blob)


def test_only_the_latest_claim_deletes(
    make_hot: HotFactory, store: StateStore, clock: FakeClock
) -> None:
    ended_run(store)
    clock.advance(KEEP.total_seconds())
    other = make_hot(clock=clock, retention=KEEP)  # a second sweeper's connection
    first = store.hot.claim_expired("r1")
    second = other.claim_expired("r1")
    assert first is not None and second is not None
    assert store.hot.drop_expired(first) is False  # overtaken: it deletes nothing
    assert len(store.hot.read_journal("r1")) == 2
    assert other.drop_expired(second) is True
    assert store.hot.find_run("r1") is None


def test_a_run_recreated_after_listing_is_not_claimed(store: StateStore, clock: FakeClock) -> None:
    ended_run(store)
    clock.advance(KEEP.total_seconds())
    assert store.hot.expired_runs() == ["r1"]
    # Deleted and started again between the listing and the claim: the new life is kept.
    store.hot.delete_run("r1")
    store.hot.create_run("r1", "fn", input=b"again", input_hash="h3")
    assert store.hot.claim_expired("r1") is None
    assert store.expire_runs() == []
    assert store.hot.get_run("r1").input == b"again"


def test_retention_days_in_the_url(hot_url: str, clock: FakeClock) -> None:
    sep = "&" if "?" in hot_url else "?"
    hot: HotTier = open_hot(f"{hot_url}{sep}retention_days=1.5", clock=clock)
    try:
        assert hot.retention == timedelta(days=1.5)
    finally:
        hot.close()


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "1e400", "1e10", "soon"])
def test_a_bad_retention_in_the_url_is_refused_clearly(bad: str) -> None:
    with pytest.raises(InvalidStoreUrlError, match=rf"retention_days='{bad}'.*above zero"):
        open_hot(f"memory://retention-bad?retention_days={bad}")
