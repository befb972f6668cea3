"""Legs: hand-off before the budget ends, drains, warm caches, fencing between racing drivers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from outlast import App, Budget, Context
from outlast.dispatch import CollectingDispatcher
from outlast.journal_cache import JournalCache
from statestore import (
    EntryKind,
    InvalidRunIdError,
    LeaseHeldError,
    RunConflictError,
    RunStatus,
)


def register_counter(app: App, work: float = 0.0) -> None:
    def tick(i: int) -> int:
        time.sleep(work)
        return i

    @app.durable()
    def count(ctx: Context, n: int) -> int:
        return sum(ctx.step(tick, i, name="tick") for i in range(n))


def test_leg_hands_off_before_the_budget_runs_out(app: App) -> None:
    register_counter(app, work=0.05)
    run_id = app.start("count", 20)
    dispatcher = CollectingDispatcher()
    budget = Budget.seconds(0.4, margin=0.1)
    started = time.monotonic()
    outcome = app.run_leg(run_id, budget=budget, dispatcher=dispatcher)
    elapsed = time.monotonic() - started
    assert outcome.status == "handed_off"
    assert "budget" in outcome.detail
    assert elapsed < 0.4  # it stopped before the deadline, not at it
    assert 3 <= outcome.steps_executed < 20
    assert dispatcher.pop() == (run_id, 2)
    record = app.store.hot.get_run(run_id)
    assert record.lease is None and record.counters.handoffs == 1
    assert record.next_seq == outcome.steps_executed


def test_expected_duration_is_learned_from_the_journal(app: App) -> None:
    register_counter(app, work=0.15)
    run_id = app.start("count", 3)
    first = app.run_leg(run_id, budget=Budget.seconds(10, margin=0.0))
    assert first.status == "completed"
    run2 = app.start("count", 3, run_id="second")
    # A budget of 0.1 s cannot fit a step that took 0.15 s last time... but this run's journal
    # is empty, so the leg tries its first step (progress beats a guess), then hands off.
    outcome = app.run_leg(run2, budget=Budget.seconds(0.25, margin=0.05))
    assert outcome.status == "handed_off" and outcome.steps_executed == 1
    again = app.run_leg(run2, budget=Budget.seconds(0.25, margin=0.05))
    assert again.status == "handed_off" and again.steps_executed == 1
    assert "next step expected 0.15" in again.detail


def test_drain_finishes_the_step_in_flight_then_hands_off(app: App) -> None:
    register_counter(app, work=0.2)
    run_id = app.start("count", 10)
    budget = Budget.unlimited()
    timer = threading.Timer(0.1, budget.request_drain, args=("SIGTERM",))
    timer.start()
    outcome = app.run_leg(run_id, budget=budget)
    assert outcome.status == "handed_off"
    assert outcome.steps_executed == 1  # the step in flight was finished and committed
    assert "SIGTERM" in outcome.detail
    assert app.store.hot.get_run(run_id).next_seq == 1


def test_a_warm_process_loads_only_new_entries(app: App) -> None:
    register_counter(app)
    run_id = app.start("count", 30)
    cache = JournalCache()
    dispatcher = CollectingDispatcher()
    budget_calls = iter([100.0] * 10 + [0.0] * 1000)
    first = app.run_leg(
        run_id,
        budget=Budget(lambda: next(budget_calls), margin=0.0),
        cache=cache,
        dispatcher=dispatcher,
    )
    assert first.status == "handed_off"
    hits_before = cache.hits
    second = app.run_leg(run_id, budget=Budget.unlimited(), cache=cache)
    assert second.status == "completed"
    assert cache.hits - hits_before == first.steps_executed  # served from memory, not re-read
    assert second.steps_replayed == first.steps_executed


def test_stale_and_duplicate_continuations_do_nothing(app: App) -> None:
    register_counter(app)
    run_id = app.start("count", 3)
    first = app.run_leg(run_id, expect_leg=1)
    assert first.status == "completed"
    dup = app.run_leg(run_id, expect_leg=1)
    assert dup.status == "skipped" and "has succeeded" in dup.detail
    run2 = app.start("count", 3, run_id="r2")
    stale = app.run_leg(run2, expect_leg=5)
    assert stale.status == "skipped" and "stale" in stale.detail
    assert app.store.hot.get_run(run2).counters.legs == 0


def test_two_drivers_racing_commit_each_seq_once(tmp_path: pytest.TempPathFactory) -> None:
    from statestore import open_store

    url = f"sqlite:///{tmp_path}/race.db"
    apps = [App("race", store=open_store(url, f"file://{tmp_path}/cold")) for _ in range(2)]
    executions: list[int] = []
    lock = threading.Lock()

    def tick(i: int) -> int:
        with lock:
            executions.append(i)
        time.sleep(0.002)
        return i

    for a in apps:

        @a.durable(name="count")
        def count(ctx: Context, n: int) -> int:
            return sum(ctx.step(tick, i, name="tick") for i in range(n))

    run_id = apps[0].start("count", 60)
    views = []

    def drive(a: App) -> None:
        views.append(a.drive(run_id, leg_seconds=0.15))

    threads = [threading.Thread(target=drive, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal = apps[0].journal(run_id)
    assert [e.seq for e in journal] == list(range(60))
    assert sorted(e.name for e in journal) == ["tick"] * 60
    assert apps[0].result(run_id) == sum(range(60))
    assert sorted(set(executions)) == list(range(60))
    legs = apps[0].status(run_id).counters.legs
    assert legs >= 2


def test_sleep_suspends_and_resumes_in_a_later_leg(app: App) -> None:
    @app.durable()
    def nap(ctx: Context) -> str:
        ctx.step(lambda: "a", name="a")
        ctx.sleep(timedelta(seconds=1.5))
        return ctx.step(lambda: "b", name="b")

    run_id = app.start("nap")
    outcome = app.run_leg(run_id)
    assert outcome.status == "suspended" and "timer" in outcome.detail
    record = app.store.hot.get_run(run_id)
    assert record.status is RunStatus.SUSPENDED and record.wake_at is not None
    assert app.run_leg(run_id).status == "skipped"  # not due yet: no leg may take it
    time.sleep(1.6)
    assert run_id in app.store.hot.due_runs()
    assert app.run_leg(run_id).status == "completed"
    assert app.result(run_id) == "b"
    assert [e.kind for e in app.journal(run_id)] == [
        EntryKind.STEP,
        EntryKind.SLEEP,
        EntryKind.STEP,
    ]


def test_signal_sent_before_the_wait_is_not_lost(app: App) -> None:
    @app.durable()
    def approve(ctx: Context) -> object:
        ctx.step(lambda: 1, name="prepare")
        return ctx.wait_for_signal("approve", timeout=timedelta(hours=1))

    run_id = app.start("approve")
    app.signal(run_id, "approve", {"by": "alice"})
    assert app.run_leg(run_id).status == "completed"
    assert app.result(run_id) == {"by": "alice"}


def test_signal_wait_times_out_with_the_default(app: App) -> None:
    @app.durable()
    def approve(ctx: Context) -> object:
        return ctx.wait_for_signal("approve", timeout=timedelta(seconds=0.3), default="timed out")

    run_id = app.start("approve")
    assert app.run_leg(run_id).status == "suspended"
    time.sleep(0.35)
    assert app.run_leg(run_id).status == "completed"
    assert app.result(run_id) == "timed out"


def test_cancel_stops_a_run_between_steps(app: App) -> None:
    started = threading.Event()
    done: list[int] = []

    def slow(i: int) -> int:
        started.set()
        time.sleep(0.1)
        done.append(i)
        return i

    @app.durable()
    def long(ctx: Context) -> int:
        return sum(ctx.step(slow, i, name="slow") for i in range(50))

    run_id = app.start("long")
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(app.run_leg(run_id)))
    thread.start()
    started.wait(5)
    app.cancel(run_id)
    thread.join(10)
    assert outcome[0].status == "cancelled"  # type: ignore[attr-defined]
    assert app.status(run_id).status is RunStatus.CANCELLED
    assert len(done) <= 2  # the step in flight may finish; nothing after it commits
    assert len(app.journal(run_id)) == 0


def test_start_is_idempotent_and_validates(app: App) -> None:
    register_counter(app)
    assert app.start("count", 3, run_id="same") == "same"
    assert app.start("count", 3, run_id="same") == "same"
    with pytest.raises(RunConflictError):
        app.start("count", 4, run_id="same")
    with pytest.raises(InvalidRunIdError):
        app.start("count", 3, run_id="../etc")
    from outlast import FunctionNotFoundError

    with pytest.raises(FunctionNotFoundError, match="no durable function 'nope'"):
        app.start("nope")


def test_lease_held_by_a_live_leg_keeps_others_out(app: App) -> None:
    register_counter(app)
    run_id = app.start("count", 1)
    app.store.hot.acquire_lease(run_id, "someone-else", timedelta(seconds=30))
    assert app.run_leg(run_id).status == "skipped"
    with pytest.raises(LeaseHeldError):
        app.store.hot.acquire_lease(run_id, "third", timedelta(seconds=30))
