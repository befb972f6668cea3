"""The worker's sweeper deletes expired runs as well as re-driving due ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from outlast import App
from outlast.worker.queues import DueRunsQueue
from outlast.worker.worker import Worker
from statestore import StateStore
from statestore.backends.memory import MemoryColdTier, MemoryHotTier
from tests.statestore.conftest import FakeClock

KEEP = timedelta(days=1)


def test_a_sweep_deletes_runs_past_their_retention_and_keeps_the_rest() -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    hot = MemoryHotTier(clock=clock, retention=KEEP)
    app = App("retention", store=StateStore(hot, MemoryColdTier()))
    worker = Worker(app, DueRunsQueue(hot))
    hot.create_run("old", "fn")
    hot.cancel("old")
    clock.advance(KEEP.total_seconds())
    hot.create_run("young", "fn")
    hot.cancel("young")
    worker._sweep_once(30.0)
    assert hot.find_run("old") is None
    assert hot.find_run("young") is not None
