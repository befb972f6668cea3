"""The Lambda sweeper deletes expired runs after dispatching, bounded by count and time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from outlast.platforms.sweeper import SweeperHandler
from statestore import BlobNotFoundError, HotTier
from statestore.backends.memory import MemoryColdTier, MemoryHotTier
from tests.lambda_platform.support import CapturingLambda
from tests.statestore.conftest import FakeClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEEP = timedelta(days=1)


class Context:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


def ended(hot: HotTier, *run_ids: str) -> None:
    for run_id in run_ids:
        hot.create_run(run_id, "fn")
        hot.cancel(run_id)


def handler(
    hot: HotTier, cold: MemoryColdTier | None = None, expire_limit: int = 50
) -> SweeperHandler:
    return SweeperHandler(
        hot=hot,
        cold=cold,
        agent_function="agent",
        lambda_client=CapturingLambda(),
        expire_limit=expire_limit,
    )


def test_expired_runs_are_deleted_at_most_expire_limit_per_tick() -> None:
    clock = FakeClock(T0)
    hot = MemoryHotTier(clock=clock, retention=KEEP)
    cold = MemoryColdTier()
    ended(hot, "a", "b", "c")
    blob = cold.put("a", b"blob of a")
    sweeper = handler(hot, cold, expire_limit=2)
    assert sweeper({}, Context(60))["expired"] == []
    clock.advance(KEEP.total_seconds())
    assert sweeper({}, Context(60))["expired"] == ["a", "b"]
    assert hot.find_run("a") is None and hot.find_run("c") is not None
    with pytest.raises(BlobNotFoundError):
        cold.get("a", blob)
    assert sweeper({}, Context(60))["expired"] == ["c"]


def test_no_expiry_when_time_is_short() -> None:
    clock = FakeClock(T0)
    hot = MemoryHotTier(clock=clock, retention=KEEP)
    ended(hot, "a")
    clock.advance(KEEP.total_seconds())
    report = handler(hot, MemoryColdTier())({}, Context(1))
    assert report["expired"] == [] and report["stopped_early"]
    assert hot.find_run("a") is not None


def test_without_retention_the_cold_tier_is_not_even_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OUTLAST_COLD_URL", "nowhere://at-all")  # opening it would raise
    clock = FakeClock(T0)
    hot = MemoryHotTier(clock=clock)
    ended(hot, "a")
    clock.advance(timedelta(days=3650).total_seconds())
    assert handler(hot)({}, Context(60))["expired"] == []
    assert hot.find_run("a") is not None
