"""The hot-tier contract. Every test runs on memory, sqlite, redis and dynamodb."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from statestore import (
    CorruptStateError,
    EntryKind,
    EntryStatus,
    ErrorInfo,
    HotTier,
    InvalidRunIdError,
    JournalEntry,
    LeaseHeldError,
    LeaseLostError,
    RunConflictError,
    RunEndedError,
    RunNotFoundError,
    RunStatus,
    SequenceConflictError,
    StateStore,
)
from statestore.backends.memory import MemoryColdTier
from tests.statestore.conftest import FakeClock, HotFactory
from tests.statestore.corrupt import corrupt_entry

TTL = timedelta(seconds=30)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entry(seq: int, value: bytes | None = b"v", name: str = "s") -> JournalEntry:
    return JournalEntry(
        seq=seq, kind=EntryKind.STEP, name=name, value=value, started_at=T0, ended_at=T0
    )


def started(hot: HotTier, run_id: str = "r1") -> int:
    hot.create_run(run_id, "fn", input=b"in", input_hash="h1")
    return hot.acquire_lease(run_id, "leg-a", TTL).token


# ---------------------------------------------------------------- create


def test_create_is_idempotent_for_same_input(hot: HotTier) -> None:
    first = hot.create_run("r1", "fn", input=b"in", input_hash="h1")
    again = hot.create_run("r1", "fn", input=b"in", input_hash="h1")
    assert again.created_at == first.created_at
    assert again.status is RunStatus.PENDING
    assert hot.get_run("r1").input == b"in"


def test_create_conflicts_on_different_input_or_function(hot: HotTier) -> None:
    hot.create_run("r1", "fn", input=b"in", input_hash="h1")
    with pytest.raises(RunConflictError, match="different input"):
        hot.create_run("r1", "fn", input=b"other", input_hash="h2")
    with pytest.raises(RunConflictError, match="function 'fn'"):
        hot.create_run("r1", "other_fn", input=b"in", input_hash="h1")
    assert hot.get_run("r1").input == b"in"


def test_get_missing_run_raises(hot: HotTier) -> None:
    with pytest.raises(RunNotFoundError, match="'nope'"):
        hot.get_run("nope")
    assert hot.find_run("nope") is None


@pytest.mark.parametrize("bad", ["../x", "", "a" * 65, "r\u00e9sum\u00e9", "a/b", "a b", None])
def test_bad_run_ids_are_rejected_clearly(hot: HotTier, bad: object) -> None:
    with pytest.raises(InvalidRunIdError, match="run id"):
        hot.create_run(bad, "fn")  # type: ignore[arg-type]
    with pytest.raises(InvalidRunIdError):
        hot.get_run(bad)  # type: ignore[arg-type]
    assert hot.list_runs() == []


def test_run_id_of_64_characters_is_fine(hot: HotTier) -> None:
    hot.create_run("a" * 64, "fn")
    assert hot.get_run("a" * 64).run_id == "a" * 64


# ---------------------------------------------------------------- leases


def test_tokens_strictly_increase(hot: HotTier) -> None:
    hot.create_run("r1", "fn")
    tokens = []
    for _ in range(3):
        lease = hot.acquire_lease("r1", "leg", TTL)
        tokens.append(lease.token)
        hot.release_lease("r1", lease.token, handoff=True)
    assert tokens == sorted(set(tokens))
    record = hot.get_run("r1")
    assert record.counters.legs == 3
    assert record.counters.handoffs == 3
    assert record.status is RunStatus.RUNNING and record.lease is None


def test_live_lease_excludes_others_until_it_expires(make_hot: HotFactory) -> None:
    clock = FakeClock(T0)
    a, b = make_hot(clock=clock), make_hot(clock=clock)
    a.create_run("r1", "fn")
    lease = a.acquire_lease("r1", "leg-a", TTL)
    with pytest.raises(LeaseHeldError, match="held by leg-a"):
        b.acquire_lease("r1", "leg-b", TTL)
    clock.advance(31)
    newer = b.acquire_lease("r1", "leg-b", TTL)
    assert newer.token > lease.token
    assert b.get_run("r1").counters.recoveries == 1
    with pytest.raises(LeaseLostError):
        a.append("r1", lease.token, [entry(0)])
    assert b.read_journal("r1") == []


def test_concurrent_acquirers_in_threads_one_wins(make_hot: HotFactory) -> None:
    handles = [make_hot() for _ in range(6)]
    handles[0].create_run("r1", "fn")
    wins: list[int] = []
    losses: list[str] = []
    barrier = threading.Barrier(len(handles))

    def contend(tier: HotTier, i: int) -> None:
        barrier.wait()
        try:
            wins.append(tier.acquire_lease("r1", f"t{i}", TTL).token)
        except LeaseHeldError as exc:
            losses.append(str(exc))

    threads = [threading.Thread(target=contend, args=(h, i)) for i, h in enumerate(handles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1, (wins, losses)
    assert len(losses) == len(handles) - 1


_ACQUIRE = """
import sys, time
from datetime import timedelta
from statestore import open_hot, LeaseHeldError
hot = open_hot(sys.argv[1])
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
try:
    print(hot.acquire_lease("r1", "proc", timedelta(seconds=60)).token)
except LeaseHeldError:
    print("held")
"""


def test_concurrent_acquirers_in_processes_one_wins(hot_url: str, make_hot: HotFactory) -> None:
    if hot_url.startswith("memory://"):
        pytest.skip("an in-memory store cannot be shared by processes")
    make_hot().create_run("r1", "fn")
    import time

    start = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ACQUIRE, hot_url, str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(outs).count("held") == 3, outs


def test_renew_extends_and_release_frees(make_hot: HotFactory) -> None:
    clock = FakeClock(T0)
    hot = make_hot(clock=clock)
    token = started(hot)
    clock.advance(20)
    renewed = hot.renew_lease("r1", token, TTL)
    assert renewed.expires_at == clock.now + TTL
    clock.advance(20)  # past the first expiry, within the renewed one
    with pytest.raises(LeaseHeldError):
        make_hot(clock=clock).acquire_lease("r1", "other", TTL)
    hot.release_lease("r1", token)
    assert make_hot(clock=clock).acquire_lease("r1", "other", TTL).token == token + 1


def test_break_lease_frees_a_dead_holders_run(hot: HotTier) -> None:
    token = started(hot)
    assert hot.break_lease("r1", token)
    assert hot.acquire_lease("r1", "next", TTL).token == token + 1
    assert not hot.break_lease("r1", token)


# ---------------------------------------------------------------- append and fencing


def test_append_reads_back_in_order(hot: HotTier) -> None:
    token = started(hot)
    hot.append("r1", token, [entry(0, b"a")])
    hot.append("r1", token, [entry(1, b"b"), entry(2, b"c")])
    journal = hot.read_journal("r1")
    assert [(e.seq, e.value) for e in journal] == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert [e.seq for e in hot.read_journal("r1", after_seq=1)] == [2]
    record = hot.get_run("r1")
    assert record.next_seq == 3 and record.counters.steps == 3


def test_stale_token_append_writes_nothing(make_hot: HotFactory) -> None:
    a, b = make_hot(), make_hot()
    token = started(a)
    a.append("r1", token, [entry(0)])
    a.release_lease("r1", token)
    newer = b.acquire_lease("r1", "leg-b", TTL).token
    with pytest.raises(LeaseLostError, match="stale"):
        a.append("r1", token, [entry(1, b"zombie")])
    with pytest.raises(LeaseLostError):
        a.complete("r1", token, b"zombie result")
    assert [e.value for e in b.read_journal("r1")] == [b"v"]
    record = b.get_run("r1")
    assert record.next_seq == 1 and record.status is RunStatus.RUNNING
    b.append("r1", newer, [entry(1, b"ok")])
    assert [e.value for e in b.read_journal("r1")] == [b"v", b"ok"]


def test_batch_is_all_or_nothing(hot: HotTier) -> None:
    token = started(hot)
    with pytest.raises(SequenceConflictError, match="seq 5 given where seq 1 is next"):
        hot.append("r1", token, [entry(0), entry(5), entry(2)])
    assert hot.read_journal("r1") == []
    assert hot.get_run("r1").next_seq == 0
    batch = [entry(i) for i in range(min(hot.max_batch, 25))]
    hot.append("r1", token, batch)
    assert len(hot.read_journal("r1")) == len(batch)


def test_seq_must_be_next(hot: HotTier) -> None:
    token = started(hot)
    hot.append("r1", token, [entry(0)])
    with pytest.raises(SequenceConflictError):
        hot.append("r1", token, [entry(0)])
    assert len(hot.read_journal("r1")) == 1


def test_ten_thousand_entries_read_back_in_order(hot: HotTier) -> None:
    token = started(hot)
    batch = min(hot.max_batch, 100)
    payload = b"x" * 200
    seq = 0
    while seq < 10_000:
        n = min(batch, 10_000 - seq)
        hot.append("r1", token, [entry(seq + i, payload + str(seq + i).encode()) for i in range(n)])
        seq += n
    journal = hot.read_journal("r1")
    assert [e.seq for e in journal] == list(range(10_000))
    assert journal[9_999].value == payload + b"9999"
    assert [e.seq for e in hot.read_journal("r1", after_seq=9_989)] == list(range(9_990, 10_000))


# ---------------------------------------------------------------- status changes


def test_complete_and_fail_end_the_run(hot: HotTier) -> None:
    token = started(hot)
    done = hot.complete("r1", token, b"result", [entry(0)])
    assert done.status is RunStatus.SUCCEEDED and done.result == b"result" and done.lease is None
    with pytest.raises(LeaseHeldError, match="succeeded"):
        hot.acquire_lease("r1", "late", TTL)
    token2 = started(hot, "r2")
    failed = hot.fail("r2", token2, ErrorInfo(type="ValueError", message="boom", traceback="tb"))
    assert failed.status is RunStatus.FAILED
    assert hot.get_run("r2").error == ErrorInfo(type="ValueError", message="boom", traceback="tb")


def test_cancel_stops_the_holder_at_its_next_write(make_hot: HotFactory) -> None:
    leg, api = make_hot(), make_hot()
    token = started(leg)
    leg.append("r1", token, [entry(0)])
    cancelled = api.cancel("r1")
    assert cancelled.status is RunStatus.CANCELLED
    with pytest.raises(LeaseLostError):
        leg.append("r1", token, [entry(1)])
    assert len(api.read_journal("r1")) == 1
    assert api.cancel("r1").status is RunStatus.CANCELLED  # idempotent
    with pytest.raises(RunEndedError):
        api.put_signal("r1", "go")


def test_sleep_suspends_until_the_timer(make_hot: HotFactory) -> None:
    clock = FakeClock(T0)
    hot = make_hot(clock=clock)
    token = started(hot)
    hot.suspend("r1", token, wake_at=T0 + timedelta(minutes=5), entries=[entry(0)])
    assert hot.get_run("r1").status is RunStatus.SUSPENDED
    with pytest.raises(LeaseHeldError, match="sleeps until"):
        hot.acquire_lease("r1", "early", TTL)
    assert "r1" not in hot.due_runs()
    clock.advance(301)
    assert "r1" in hot.due_runs()
    assert hot.acquire_lease("r1", "on-time", TTL).token == token + 1
    assert hot.get_run("r1").status is RunStatus.RUNNING


# ---------------------------------------------------------------- signals


def test_signal_sent_before_the_wait_is_kept(make_hot: HotFactory) -> None:
    leg, api = make_hot(), make_hot()
    token = started(leg)
    api.put_signal("r1", "approve", b"yes")
    api.put_signal("r1", "approve", b"again")
    taken = leg.take_signal("r1", token, "approve", seq=0)
    assert taken is not None and taken.value == b"yes" and taken.kind is EntryKind.SIGNAL
    assert [s.payload for s in api.pending_signals("r1", "approve")] == [b"again"]
    assert leg.read_journal("r1")[0].value == b"yes"
    assert leg.take_signal("r1", token, "other", seq=1) is None


def test_signal_wakes_a_waiting_run(make_hot: HotFactory) -> None:
    clock = FakeClock(T0)
    leg, api = make_hot(clock=clock), make_hot(clock=clock)
    token = started(leg)
    leg.suspend("r1", token, waiting_for="approve", wake_at=T0 + timedelta(days=1))
    assert "r1" not in api.due_runs()
    with pytest.raises(LeaseHeldError, match="waits for signal 'approve'"):
        api.acquire_lease("r1", "early", TTL)
    api.put_signal("r1", "unrelated", None)
    assert "r1" not in api.due_runs()
    api.put_signal("r1", "approve", b"ok")
    assert "r1" in api.due_runs()
    token2 = api.acquire_lease("r1", "woken", TTL).token
    assert api.take_signal("r1", token2, "approve", seq=0) is not None


def test_suspend_after_signal_arrived_is_due_at_once(hot: HotTier) -> None:
    token = started(hot)
    hot.put_signal("r1", "approve", b"early")
    record = hot.suspend("r1", token, waiting_for="approve")
    assert record.wake_at is not None
    assert "r1" in hot.due_runs()


# ---------------------------------------------------------------- due runs


def test_due_runs_finds_expired_leases_timers_and_undispatched_runs(make_hot: HotFactory) -> None:
    clock = FakeClock(T0)
    hot = make_hot(clock=clock)
    hot.create_run("pending", "fn")
    live = started(hot, "live")
    hot.renew_lease("live", live, timedelta(hours=1))
    dead = started(hot, "dead")
    sleeper = started(hot, "sleeper")
    hot.suspend("sleeper", sleeper, wake_at=T0 + timedelta(seconds=60))
    done = started(hot, "done")
    hot.complete("done", done, None)
    handed = started(hot, "handed")
    hot.release_lease("handed", handed, handoff=True)
    assert dead
    clock.advance(45)  # "dead"'s 30 s lease has expired; "sleeper" is not due yet
    due = set(hot.due_runs())
    assert due == {"pending", "dead", "handed"}
    clock.advance(30)
    assert set(hot.due_runs()) == {"pending", "dead", "handed", "sleeper"}
    assert len(hot.due_runs(limit=2)) == 2


# ---------------------------------------------------------------- damage


def test_corrupt_entry_is_detected_and_named(hot: HotTier) -> None:
    if hot.scheme == "memory":
        pytest.skip("the memory tier keeps objects, not bytes")
    token = started(hot)
    hot.append("r1", token, [entry(0), entry(1, b"q" * 500), entry(2)])
    key = corrupt_entry(hot, "r1", 1)
    with pytest.raises(CorruptStateError) as info:
        hot.read_journal("r1")
    err = info.value
    assert (err.run_id, err.seq, err.tier) == ("r1", 1, hot.scheme)
    assert err.key == key
    assert "run=r1" in str(err) and "seq=1" in str(err)


def test_corrupt_inline_value_is_detected_and_named(hot: HotTier) -> None:
    store = StateStore(hot, MemoryColdTier())
    token = started(hot)
    good = store.encode("r1", {"ok": True})
    assert isinstance(good, bytes)
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    hot.append("r1", token, [entry(0, good), entry(1, bad)])
    journal = hot.read_journal("r1")
    assert store.entry_values("r1", journal[:1]) == [{"ok": True}]
    with pytest.raises(CorruptStateError, match="checksum") as info:
        store.entry_values("r1", journal)
    assert (info.value.run_id, info.value.seq, info.value.tier) == ("r1", 1, hot.scheme)


def test_failed_attempts_do_not_count_as_steps(hot: HotTier) -> None:
    token = started(hot)
    retry = JournalEntry(
        seq=0,
        kind=EntryKind.STEP,
        name="s",
        status=EntryStatus.RETRY,
        error=ErrorInfo(type="E", message="m"),
        started_at=T0,
        ended_at=T0,
    )
    hot.append("r1", token, [retry, entry(1)])
    assert hot.get_run("r1").counters.steps == 1


# ---------------------------------------------------------------- the holder's cache


def test_a_renewal_through_another_handle_keeps_the_holder_writing(make_hot: HotFactory) -> None:
    clock = FakeClock(T0)
    leg, keeper = make_hot(clock=clock), make_hot(clock=clock)
    token = started(leg)
    leg.append("r1", token, [entry(0)])
    clock.advance(25)
    keeper.renew_lease("r1", token, TTL)
    clock.advance(25)  # past the expiry the leg's handle last wrote, within the renewed one
    leg.append("r1", token, [entry(1)])
    assert [e.seq for e in keeper.read_journal("r1")] == [0, 1]


def test_renewals_racing_appends_in_one_handle_lose_nothing(hot: HotTier) -> None:
    token = started(hot)
    stop = threading.Event()
    errors: list[BaseException] = []
    import time

    clock = time.perf_counter()
    hot.renew_lease("r1", token, TTL)
    # A real heartbeat renews every few seconds; this one about as often as the backend can
    # write, so renewals keep landing between appends without starving them.
    period = 3 * (time.perf_counter() - clock)

    def heartbeat() -> None:
        while not stop.wait(period):
            try:
                hot.renew_lease("r1", token, TTL)
            except BaseException as exc:
                errors.append(exc)
                return

    beat = threading.Thread(target=heartbeat)
    beat.start()
    try:
        for seq in range(60):
            hot.append("r1", token, [entry(seq)])
    finally:
        stop.set()
        beat.join()
    assert errors == []
    assert [e.seq for e in hot.read_journal("r1")] == list(range(60))


def test_survey_lists_every_readable_run_and_reports_a_corrupt_record_apart(
    hot: HotTier,
) -> None:
    hot.create_run("good", "fn")
    hot.create_run("bad", "fn")
    # The backend's own record loader fails for one run, as it would on damaged bytes.
    real = hot._listed

    def damaged(run_id: str, load: Any) -> Any:
        if run_id == "bad":
            from statestore import CorruptStateError

            def broken() -> Any:
                raise CorruptStateError("checksum mismatch", run_id="bad", tier=hot.scheme)

            return real(run_id, broken)
        return real(run_id, load)

    hot._listed = damaged  # type: ignore[method-assign]
    if hot.scheme == "memory":
        pytest.skip("the memory tier keeps objects, not bytes")
    records, corrupt = hot.survey_runs(limit=10)
    assert [r.run_id for r in records] == ["good"]
    assert [c.run_id for c in corrupt] == ["bad"] and "checksum mismatch" in corrupt[0].error
    from statestore import CorruptStateError

    with pytest.raises(CorruptStateError, match="bad"):
        hot.list_runs(limit=10)
