"""A run record's state transitions, as pure functions: no I/O, no clock, no store.

Every write to a run is one of these applied to the record as last read, then handed to the
backend's compare-and-set. Keeping them here, apart from the loops that retry them, lets the rules
be read (and tested) in one place: when a run may take a lease, what an append changes, why a run
is not runnable.

Each transition bumps ``version`` (the compare-and-set condition) and adds a fresh write nonce to
``recent_writes``: a writer whose reply was lost finds its nonce in the stored record if, and only
if, its write landed.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from statestore.models import (
    EntryKind,
    EntryStatus,
    ErrorInfo,
    JournalEntry,
    Lease,
    RunRecord,
    RunStatus,
    RunUpdate,
)

# Enough to recognise one's own write across the few writes that can land between a lost reply
# and the re-read (a signal's wake-up, a cancel); each costs 13 bytes in the record.
RECENT_WRITES = 4


def new_nonce() -> str:
    return secrets.token_hex(6)


def evolve(record: RunRecord, now: datetime, **changes: Any) -> RunRecord:
    """``record`` with ``changes``, a new version and a new write nonce."""
    nonce = new_nonce()
    recent = (*record.recent_writes[-(RECENT_WRITES - 1) :], nonce)
    return record.model_copy(
        update={
            **changes,
            "version": record.version + 1,
            "updated_at": now,
            "recent_writes": recent,
        }
    )


def nonce_of(record: RunRecord) -> str:
    """The nonce of the write that produced ``record`` (made by ``evolve``)."""
    return record.recent_writes[-1] if record.recent_writes else ""


def landed(ours: RunRecord, stored: RunRecord) -> bool:
    """Did the write that produced ``ours`` land, judging by the record now stored?"""
    nonce = nonce_of(ours)
    return bool(nonce) and nonce in stored.recent_writes and stored.version >= ours.version


def leased(record: RunRecord, now: datetime, owner: str, ttl: timedelta) -> tuple[RunRecord, Lease]:
    """The run taken by a new leg: a lease with a token larger than any before it."""
    token = record.fence + 1
    lease = Lease(owner=owner, token=token, expires_at=now + ttl)
    died = record.lease is not None  # the last leg neither finished, handed off nor gave back
    counters = record.counters.model_copy(
        update={
            "legs": record.counters.legs + 1,
            "recoveries": record.counters.recoveries + (1 if died else 0),
        }
    )
    interrupted, at = record.interrupted, record.interrupted_seq
    if died:
        # Whatever was in flight at the journal's end was interrupted once more.
        interrupted, at = (interrupted + 1, at) if at == record.next_seq else (1, record.next_seq)
    new = evolve(
        record,
        now,
        status=RunStatus.RUNNING,
        lease=lease,
        fence=token,
        wake_at=None,
        waiting_for=None,
        counters=counters,
        retry_after=None,
        interrupted=interrupted,
        interrupted_seq=at,
    )
    return new, lease


def gave_back(
    record: RunRecord, now: datetime, error: ErrorInfo, *, delay: timedelta, max_broken: int
) -> RunRecord:
    """A leg that stopped on a store error gives the run back, to be retried after ``delay``.

    Transient trouble (a store briefly unreachable, throttling) backs off without limit. Broken
    state (corrupt or missing data, a value the store refuses, a full disk, an unknown function)
    gets ``max_broken`` legs in a row; then the run is blocked with the error named.
    """
    troubles = record.troubles + 1
    broken = record.broken + (0 if error.transient else 1)
    if not error.transient and broken >= max_broken:
        return evolve(
            record,
            now,
            status=RunStatus.BLOCKED,
            lease=None,
            wake_at=None,
            waiting_for=None,
            error=error,
            trouble=error,
            troubles=troubles,
            broken=broken,
            retry_after=None,
        )
    return evolve(
        record,
        now,
        lease=None,
        trouble=error,
        troubles=troubles,
        broken=broken,
        retry_after=now + delay,
    )


def retried(record: RunRecord, now: datetime, keep: int) -> RunRecord:
    """A failed or blocked run re-opened with its journal cut back to ``keep`` entries."""
    return evolve(
        record,
        now,
        status=RunStatus.PENDING,
        next_seq=keep,
        epoch=record.epoch + 1,
        lease=None,
        wake_at=None,
        waiting_for=None,
        result=None,
        error=None,
        troubles=0,
        broken=0,
        trouble=None,
        retry_after=None,
        interrupted=0,
        interrupted_seq=-1,
    )


def continuation_ok(record: RunRecord, expect_leg: int) -> bool:
    """May a continuation event for leg ``expect_leg`` take the run?

    Only the next leg, or a re-delivery of the last leg if that leg died holding its lease (the
    platform's retry after a hard timeout). Any other continuation is stale or a duplicate.
    """
    legs = record.counters.legs
    return expect_leg == legs + 1 or (expect_leg == legs and record.lease is not None)


def renewed(record: RunRecord, now: datetime, ttl: timedelta) -> RunRecord:
    assert record.lease is not None
    lease = record.lease.model_copy(update={"expires_at": now + ttl})
    return evolve(record, now, lease=lease)


def broken(record: RunRecord, now: datetime) -> RunRecord:
    """The lease expired now: its holder is known to be dead (or gave up on an error)."""
    assert record.lease is not None
    return evolve(record, now, lease=record.lease.model_copy(update={"expires_at": now}))


def cancelled(record: RunRecord, now: datetime, reason: str) -> RunRecord:
    return evolve(
        record,
        now,
        status=RunStatus.CANCELLED,
        lease=None,
        wake_at=None,
        waiting_for=None,
        error=ErrorInfo(type="Cancelled", message=reason),
    )


def woken(record: RunRecord, now: datetime) -> RunRecord:
    """A suspended run whose awaited signal arrived: due now."""
    return evolve(record, now, wake_at=now)


def waits_for(record: RunRecord, name: str, now: datetime) -> bool:
    return (
        record.status is RunStatus.SUSPENDED
        and record.waiting_for == name
        and (record.wake_at is None or record.wake_at > now)
    )


def applied(
    record: RunRecord,
    now: datetime,
    entries: Sequence[JournalEntry],
    update: RunUpdate | None,
) -> RunRecord:
    """``record`` after appending ``entries`` and applying ``update`` in the same write."""
    steps = sum(
        1 for e in entries if e.kind is EntryKind.STEP and e.status is not EntryStatus.RETRY
    )
    changes: dict[str, Any] = {"next_seq": record.next_seq + len(entries)}
    if entries and (record.troubles or record.trouble is not None):
        # Progress: whatever troubled earlier legs is behind the run now.
        changes.update(troubles=0, broken=0, trouble=None)
    counters = record.counters
    if steps:
        counters = counters.model_copy(update={"steps": counters.steps + steps})
    if update is not None:
        if update.status is not None:
            changes["status"] = update.status
            changes["wake_at"] = update.wake_at
            changes["waiting_for"] = update.waiting_for
            if update.status is not RunStatus.RUNNING:
                changes["lease"] = None
        if update.result is not None:
            changes["result"] = update.result
        if update.error is not None:
            changes["error"] = update.error
        if update.release_lease:
            changes["lease"] = None
        if update.handoff:
            counters = counters.model_copy(update={"handoffs": counters.handoffs + 1})
        if update.tags is not None:
            changes["tags"] = {**record.tags, **update.tags}
    changes["counters"] = counters
    return evolve(record, now, **changes)


def why_not_runnable(record: RunRecord, now: datetime) -> str:
    run = f"run {record.run_id!r}"
    if record.status.terminal:
        return f"{run} has {record.status.value}"
    if record.status is RunStatus.BLOCKED:
        why = f": {record.error.type}: {record.error.message}" if record.error else ""
        return f"{run} is blocked{why}; fix the cause, then retry it"
    if record.retry_after is not None and record.retry_after > now:
        why = f" after {record.trouble.type}" if record.trouble else ""
        return f"{run} backs off{why} until {record.retry_after.isoformat()}"
    if record.lease is not None and record.lease.live(now):
        return (
            f"{run} is held by {record.lease.owner} (token {record.lease.token}) until "
            f"{record.lease.expires_at.isoformat()}"
        )
    if record.waiting_for and (record.wake_at is None or record.wake_at > now):
        return f"{run} waits for signal {record.waiting_for!r}"
    if record.wake_at is None:
        return f"{run} is {record.status.value} with nothing to wake it"
    return f"{run} sleeps until {record.wake_at.isoformat()}"
