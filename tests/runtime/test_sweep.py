"""The re-drive policy shared by the Lambda sweeper and the worker's sweeper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from outlast.sweep import RedrivePolicy
from statestore import Lease, RunRecord, RunStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RedrivePolicy(pending_after=60, unheld_after=30, expired_after=10)


def record(**changes: object) -> RunRecord:
    base = RunRecord(run_id="r", function="f", created_at=T0, updated_at=T0)
    return base.model_copy(update=changes)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_pending_runs_wait_for_their_own_start() -> None:
    pending = record(status=RunStatus.PENDING)
    assert not POLICY.wants(pending, at(59))
    assert POLICY.wants(pending, at(60))


def test_handed_off_runs_wait_for_their_continuation() -> None:
    handed = record(status=RunStatus.RUNNING, lease=None)
    assert not POLICY.wants(handed, at(29))
    assert POLICY.wants(handed, at(30))


def test_a_dead_legs_lease_waits_for_the_platforms_redelivery() -> None:
    lease = Lease(owner="leg", token=3, expires_at=at(100))
    dead = record(status=RunStatus.RUNNING, lease=lease, fence=3)
    assert not POLICY.wants(dead, at(99))  # still live: nobody may take it
    assert not POLICY.wants(dead, at(109))
    assert POLICY.wants(dead, at(110))


def test_woken_runs_go_at_once_and_sleepers_and_ended_runs_never() -> None:
    sleeper = record(status=RunStatus.SUSPENDED, wake_at=at(50))
    assert not POLICY.wants(sleeper, at(49))
    assert POLICY.wants(sleeper, at(50))
    waiter = record(status=RunStatus.SUSPENDED, waiting_for="approve")
    assert not POLICY.wants(waiter, at(10_000))
    for status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
        assert not POLICY.wants(record(status=status), at(10_000))
