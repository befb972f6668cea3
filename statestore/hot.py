"""The hot tier: run records, journal entries, leases, signals and timers.

``HotTier`` owns the policy (run-id checks, lease rules, fencing, sequence checks, signal wake-ups,
counters). A backend implements only a handful of storage primitives, and the one that matters is
``_write``: an atomic compare-and-set on the run record's ``version`` that also inserts journal
entries and removes a taken signal. Every state change is built on it, so fencing needs no
backend-specific logic: a leg's token is checked against the record at the version it writes on.

Why a version and not only the token: ``cancel`` and ``put_signal`` change a run while a leg holds
it. With a version condition the leg's next write notices, re-reads and re-checks::

    leg A (token 7)            API                      store
    append seq 12  ---------------------------------->  v=40 -> v=41   ok
                               cancel  ---------------> v=41 -> v=42   lease cleared
    append seq 13  ---------------------------------->  expects v=41: conflict, returns v=42
    re-check: lease gone  -> LeaseLostError, nothing written

The leg that holds a run keeps the record it last wrote (``_held``), so an append costs one write
and no read, whatever the length of the journal. That cache is only a hint: several threads (a
leg and its lease heartbeat) and several handles (a worker renewing through another connection)
write the same run, so a check that fails against the cached record is re-made against the stored
one before it is believed, and the cache only ever moves to a newer version.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from statestore.errors import (
    BatchTooLargeError,
    CorruptStateError,
    LeaseHeldError,
    LeaseLostError,
    RunConflictError,
    RunNotFoundError,
    SequenceConflictError,
    StateStoreError,
)
from statestore.ids import validate_run_id
from statestore.models import (
    EntryKind,
    EntryStatus,
    ErrorInfo,
    JournalEntry,
    Lease,
    RunRecord,
    RunStatus,
    RunUpdate,
    Signal,
    StoredValue,
    utcnow,
)

Clock = Callable[[], datetime]

# A compare-and-set loses only to a concurrent writer, and each loss means that writer made
# progress; a handful of tries is plenty before reporting contention as an error.
_CAS_TRIES = 32


class RunEndedError(StateStoreError):
    """The run has ended (succeeded, failed or cancelled); it takes no more signals or leases."""


class HotTier(ABC):
    """Base of every hot-tier backend. Subclasses implement the ``_`` primitives only."""

    scheme: ClassVar[str] = "abstract"
    default_inline_limit: ClassVar[int] = 64 * 1024
    max_batch: ClassVar[int] = 10_000  # entries one append may write atomically

    def __init__(self, *, inline_limit: int | None = None, clock: Clock = utcnow) -> None:
        self.inline_limit = inline_limit if inline_limit is not None else self.default_inline_limit
        self._clock = clock
        self._held: dict[str, RunRecord] = {}
        self._held_lock = threading.Lock()
        self._signal_seq = 0
        self._signal_lock = threading.Lock()

    # ------------------------------------------------------------------ primitives

    @abstractmethod
    def _insert_run(self, record: RunRecord) -> RunRecord | None:
        """Insert ``record`` unless its id is taken; return None if inserted, else the existing."""

    @abstractmethod
    def _load_run(self, run_id: str) -> RunRecord | None: ...

    @abstractmethod
    def _write(
        self,
        old: RunRecord,
        new: RunRecord,
        entries: Sequence[JournalEntry],
        take: Signal | None,
    ) -> RunRecord | None:
        """Atomically, if the stored record's version is ``old.version``: store ``new``, insert
        ``entries`` and delete the signal ``take``. Return None on success; otherwise write
        nothing and return the stored record (raise ``RunNotFoundError`` if there is none).
        The backend also keeps its due index in step with ``new.due_at()``.
        """

    @abstractmethod
    def _load_entries(self, run_id: str, after_seq: int) -> Iterable[JournalEntry]:
        """Entries with seq > after_seq, in seq order; backends page through large journals."""

    @abstractmethod
    def _insert_signal(self, signal: Signal) -> None: ...

    @abstractmethod
    def _load_signals(self, run_id: str, name: str | None) -> list[Signal]:
        """Pending signals of a run (of one name, or all), oldest first."""

    @abstractmethod
    def _due(self, now: datetime, limit: int) -> list[str]:
        """Ids of runs whose ``due_at()`` is at or before ``now``, earliest first."""

    @abstractmethod
    def _list_runs(self, limit: int) -> list[RunRecord]:
        """Up to ``limit`` runs, most recently created first."""

    @abstractmethod
    def _delete_run(self, run_id: str) -> None: ...

    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""

    # ------------------------------------------------------------------ runs

    def now(self) -> datetime:
        return self._clock()

    def create_run(
        self,
        run_id: str,
        function: str,
        *,
        input: StoredValue | None = None,
        input_hash: str = "",
        tags: dict[str, str] | None = None,
    ) -> RunRecord:
        """Create a pending run, idempotently.

        The same id with the same function and input hash returns the stored record; with a
        different one it raises ``RunConflictError`` and changes nothing.
        """
        validate_run_id(run_id)
        now = self.now()
        record = RunRecord(
            run_id=run_id,
            function=function,
            incarnation=secrets.token_hex(8),
            input=input,
            input_hash=input_hash,
            created_at=now,
            updated_at=now,
            tags=tags or {},
        )
        existing = self._insert_run(record)
        if existing is None:
            return record
        if existing.function != function or existing.input_hash != input_hash:
            raise RunConflictError(
                f"run {run_id!r} already exists with "
                + (
                    f"function {existing.function!r} (not {function!r})"
                    if existing.function != function
                    else "a different input"
                )
                + "; choose another run id"
            )
        return existing

    def get_run(self, run_id: str) -> RunRecord:
        validate_run_id(run_id)
        record = self._load_run(run_id)
        if record is None:
            raise RunNotFoundError(run_id)
        return record

    def find_run(self, run_id: str) -> RunRecord | None:
        validate_run_id(run_id)
        return self._load_run(run_id)

    def list_runs(self, limit: int = 100, status: RunStatus | None = None) -> list[RunRecord]:
        runs = self._list_runs(limit if status is None else max(limit * 10, 1000))
        if status is not None:
            runs = [r for r in runs if r.status is status]
        return runs[:limit]

    def delete_run(self, run_id: str) -> None:
        """Remove a run with its journal and signals (retention). Not fenced: use on ended runs."""
        validate_run_id(run_id)
        self._held.pop(run_id, None)
        self._delete_run(run_id)

    # ------------------------------------------------------------------ leases

    def acquire_lease(
        self, run_id: str, owner: str, ttl: timedelta, *, expect_leg: int | None = None
    ) -> Lease:
        """Take the run's lease if it is runnable and no live lease is held.

        Returns a lease whose token is larger than any handed out before for this run. Raises
        ``LeaseHeldError`` (saying why) if the run is not runnable now.

        ``expect_leg`` is the leg number a continuation event carries. The lease is granted only
        to the next leg, or to a re-delivery of the last leg if that leg died holding its lease
        (the platform's retry after a hard timeout). Any other continuation is stale or a
        duplicate, and is refused in the same compare-and-set, so two copies cannot both run.
        """
        validate_run_id(run_id)
        record = self.get_run(run_id)
        for _ in range(_CAS_TRIES):
            now = self.now()
            if not record.runnable(now):
                raise LeaseHeldError(_why_not_runnable(record, now))
            if expect_leg is not None and not (
                expect_leg == record.counters.legs + 1
                or (expect_leg == record.counters.legs and record.lease is not None)
            ):
                raise LeaseHeldError(
                    f"run {run_id!r}: continuation for leg {expect_leg} is stale "
                    f"({record.counters.legs} legs have started)"
                )
            token = record.fence + 1
            lease = Lease(owner=owner, token=token, expires_at=now + ttl)
            counters = record.counters.model_copy(
                update={
                    "legs": record.counters.legs + 1,
                    "recoveries": record.counters.recoveries
                    + (1 if record.lease is not None else 0),
                }
            )
            new = _evolve(
                record,
                now,
                status=RunStatus.RUNNING,
                lease=lease,
                fence=token,
                wake_at=None,
                waiting_for=None,
                counters=counters,
            )
            current = self._write(record, new, (), None)
            if current is None:
                self._remember(new, keep=True)
                return lease
            record = current
        raise LeaseHeldError(f"run {run_id!r}: too much contention taking the lease")

    def renew_lease(self, run_id: str, token: int, ttl: timedelta) -> Lease:
        record = self._fenced(
            run_id, token, lambda rec, now: (_renewed(rec, now, ttl), ()), check_expiry=True
        )
        assert record.lease is not None
        return record.lease

    def release_lease(self, run_id: str, token: int, *, handoff: bool = False) -> RunRecord:
        """Give the run up so the next leg can take it at once (a hand-off)."""
        return self.append(run_id, token, (), RunUpdate(release_lease=True, handoff=handoff))

    def break_lease(self, run_id: str, token: int) -> bool:
        """Expire the lease ``token`` now, because its holder is known to be dead.

        Only a supervisor that has seen the holder's process exit may call this (the local
        emulator does, after reaping a killed leg); otherwise wait for the lease to expire.
        Returns False if that lease is no longer the run's.
        """
        record = self.get_run(run_id)
        for _ in range(_CAS_TRIES):
            if record.lease is None or record.lease.token != token:
                return False
            now = self.now()
            expired = record.lease.model_copy(update={"expires_at": now})
            current = self._write(record, _evolve(record, now, lease=expired), (), None)
            if current is None:
                self._held.pop(run_id, None)
                return True
            record = current
        return False

    # ------------------------------------------------------------------ journal

    def append(
        self,
        run_id: str,
        token: int,
        entries: Sequence[JournalEntry],
        update: RunUpdate | None = None,
    ) -> RunRecord:
        """Append ``entries`` (and apply ``update``) atomically, fenced by ``token``.

        A stale token raises ``LeaseLostError`` and writes nothing. The entries' seqs must run on
        from the run's ``next_seq`` (else ``SequenceConflictError``). The batch is written whole
        or not at all.
        """
        if len(entries) > self.max_batch:
            raise BatchTooLargeError(
                f"{len(entries)} entries in one append; the {self.scheme} tier writes at most "
                f"{self.max_batch} atomically"
            )

        def build(rec: RunRecord, now: datetime) -> tuple[RunRecord, Sequence[JournalEntry]]:
            for offset, entry in enumerate(entries):
                if entry.seq != rec.next_seq + offset:
                    raise SequenceConflictError(
                        f"run {run_id!r}: entry seq {entry.seq} given where seq "
                        f"{rec.next_seq + offset} is next"
                    )
            return _applied(rec, now, entries, update), entries

        return self._fenced(run_id, token, build)

    def read_journal(self, run_id: str, after_seq: int = -1) -> list[JournalEntry]:
        """Entries after ``after_seq``, in seq order. A gap raises ``CorruptStateError``."""
        validate_run_id(run_id)
        out: list[JournalEntry] = []
        expected = after_seq + 1
        for entry in self._load_entries(run_id, after_seq):
            if entry.seq != expected:
                raise CorruptStateError(
                    f"journal has seq {entry.seq} where seq {expected} should be",
                    run_id=run_id,
                    seq=expected,
                    tier=self.scheme,
                )
            out.append(entry)
            expected += 1
        return out

    # ------------------------------------------------------------------ status changes

    def suspend(
        self,
        run_id: str,
        token: int,
        *,
        wake_at: datetime | None = None,
        waiting_for: str | None = None,
        entries: Sequence[JournalEntry] = (),
    ) -> RunRecord:
        """Park the run until ``wake_at`` or until the signal ``waiting_for`` arrives."""
        if wake_at is None and waiting_for is None:
            raise ValueError("suspend needs wake_at, waiting_for, or both")
        record = self.append(
            run_id,
            token,
            entries,
            RunUpdate(status=RunStatus.SUSPENDED, wake_at=wake_at, waiting_for=waiting_for),
        )
        if waiting_for is not None and self._load_signals(run_id, waiting_for):
            # The signal came in before the suspend landed (put_signal saw no waiter). Both
            # sides write first and look second, so at least one of them sees the other.
            record = self._wake_for_signal(run_id, waiting_for) or record
        return record

    def complete(
        self,
        run_id: str,
        token: int,
        result: StoredValue | None,
        entries: Sequence[JournalEntry] = (),
    ) -> RunRecord:
        return self.append(
            run_id, token, entries, RunUpdate(status=RunStatus.SUCCEEDED, result=result)
        )

    def fail(
        self,
        run_id: str,
        token: int,
        error: ErrorInfo,
        entries: Sequence[JournalEntry] = (),
    ) -> RunRecord:
        return self.append(run_id, token, entries, RunUpdate(status=RunStatus.FAILED, error=error))

    def cancel(self, run_id: str, reason: str = "cancelled") -> RunRecord:
        """Cancel a run that has not ended. The leg holding it loses its lease at its next write.

        Cancelling an ended run changes nothing and returns its record.
        """
        record = self.get_run(run_id)
        for _ in range(_CAS_TRIES):
            if record.status.terminal:
                return record
            now = self.now()
            new = _evolve(
                record,
                now,
                status=RunStatus.CANCELLED,
                lease=None,
                wake_at=None,
                waiting_for=None,
                error=ErrorInfo(type="Cancelled", message=reason),
            )
            current = self._write(record, new, (), None)
            if current is None:
                self._held.pop(run_id, None)
                return new
            record = current
        raise StateStoreError(f"run {run_id!r}: too much contention to cancel")

    # ------------------------------------------------------------------ signals

    def put_signal(self, run_id: str, name: str, payload: StoredValue | None = None) -> Signal:
        """Keep a signal for the run until a leg takes it; wake the run if it waits for it."""
        record = self.get_run(run_id)
        if record.status.terminal:
            raise RunEndedError(f"run {run_id!r} has {record.status.value}; it takes no signals")
        if not name or len(name) > 128:
            raise ValueError("a signal name is 1-128 characters")
        signal = Signal(
            run_id=run_id,
            name=name,
            signal_id=self._next_signal_id(),
            payload=payload,
            sent_at=self.now(),
        )
        self._insert_signal(signal)
        self._wake_for_signal(run_id, name)
        return signal

    def pending_signals(self, run_id: str, name: str | None = None) -> list[Signal]:
        validate_run_id(run_id)
        return self._load_signals(run_id, name)

    def take_signal(
        self, run_id: str, token: int, name: str, seq: int, meta: dict[str, Any] | None = None
    ) -> JournalEntry | None:
        """Move the oldest pending signal ``name`` into the journal as entry ``seq``, atomically.

        Returns the new entry, or None if no such signal is pending. A signal is never lost: it
        leaves the pending set in the same write that journals it.
        """
        pending = self._load_signals(run_id, name)
        if not pending:
            return None
        signal = pending[0]
        made: list[JournalEntry] = []

        def build(rec: RunRecord, now: datetime) -> tuple[RunRecord, Sequence[JournalEntry]]:
            if rec.next_seq != seq:
                raise SequenceConflictError(
                    f"run {run_id!r}: signal entry seq {seq} given where seq {rec.next_seq} is next"
                )
            entry = JournalEntry(
                seq=seq,
                kind=EntryKind.SIGNAL,
                name=name,
                value=signal.payload,
                started_at=signal.sent_at,
                ended_at=now,
                meta={"signal_id": signal.signal_id, **(meta or {})},
            )
            made[:] = [entry]
            return _applied(rec, now, (entry,), None), (entry,)

        self._fenced(run_id, token, build, take=signal)
        return made[0]

    def _wake_for_signal(self, run_id: str, name: str) -> RunRecord | None:
        record = self.get_run(run_id)
        for _ in range(_CAS_TRIES):
            now = self.now()
            if not (
                record.status is RunStatus.SUSPENDED
                and record.waiting_for == name
                and (record.wake_at is None or record.wake_at > now)
            ):
                return None
            new = _evolve(record, now, wake_at=now)
            current = self._write(record, new, (), None)
            if current is None:
                return new
            record = current
        return None

    def _next_signal_id(self) -> str:
        # Sortable across processes by time, unique by pid and a per-process counter.
        with self._signal_lock:
            self._signal_seq += 1
            seq = self._signal_seq
        return f"{time.time_ns():020d}-{os.getpid():07d}-{seq:06d}"

    # ------------------------------------------------------------------ sweeping

    def due_runs(self, now: datetime | None = None, limit: int = 100) -> list[str]:
        """Runs a sweeper should re-drive: expired leases, passed timers, arrived signals, and
        pending or handed-off runs whose next leg never started. Uses an index, not a scan."""
        return self._due(now or self.now(), limit)

    # ------------------------------------------------------------------ fencing

    def _fenced(
        self,
        run_id: str,
        token: int,
        build: Callable[[RunRecord, datetime], tuple[RunRecord, Sequence[JournalEntry]]],
        *,
        take: Signal | None = None,
        check_expiry: bool = True,
    ) -> RunRecord:
        validate_run_id(run_id)
        record = self._held.get(run_id)
        cached = record is not None
        if record is None or record.lease is None or record.lease.token != token:
            record, cached = self.get_run(run_id), False
        for _ in range(_CAS_TRIES):
            now = self.now()
            try:
                self._check_token(record, token, now if check_expiry else None)
                new, entries = build(record, now)
            except (LeaseLostError, SequenceConflictError):
                if not cached:
                    raise
                # The cached record may be older than the store (a renewal through another
                # handle, a heartbeat thread's write): judge by what is stored.
                record, cached = self.get_run(run_id), False
                continue
            current = self._write(record, new, entries, take)
            if current is None:
                self._remember(new, keep=new.lease is not None and new.lease.token == token)
                return new
            # Someone else wrote (a signal, a cancel, a newer leg): re-check against what is there.
            record, cached = current, False
        raise StateStoreError(f"run {run_id!r}: too much contention to write")

    def _remember(self, record: RunRecord, *, keep: bool) -> None:
        """Move the cache to ``record``, unless it already holds a newer version of the run."""
        with self._held_lock:
            known = self._held.get(record.run_id)
            if known is not None and known.version > record.version:
                return
            if keep:
                self._held[record.run_id] = record
            else:
                self._held.pop(record.run_id, None)

    def _check_token(self, record: RunRecord, token: int, now: datetime | None) -> None:
        lease = record.lease
        if lease is None or lease.token != token:
            holder = f"token {lease.token} ({lease.owner})" if lease else "no lease"
            raise LeaseLostError(
                f"run {record.run_id!r}: lease token {token} is stale; the run is "
                f"{record.status.value} with {holder}"
            )
        if now is not None and not lease.live(now):
            # Our lease ran out: another leg may take the run at any moment. Stop rather than
            # race it (fencing would reject us once it has, but it may not have yet).
            raise LeaseLostError(
                f"run {record.run_id!r}: lease token {token} expired at "
                f"{lease.expires_at.isoformat()}"
            )


def _evolve(record: RunRecord, now: datetime, **changes: Any) -> RunRecord:
    return record.model_copy(update={**changes, "version": record.version + 1, "updated_at": now})


def _renewed(record: RunRecord, now: datetime, ttl: timedelta) -> RunRecord:
    assert record.lease is not None
    lease = record.lease.model_copy(update={"expires_at": now + ttl})
    return _evolve(record, now, lease=lease)


def _applied(
    record: RunRecord,
    now: datetime,
    entries: Sequence[JournalEntry],
    update: RunUpdate | None,
) -> RunRecord:
    steps = sum(
        1 for e in entries if e.kind is EntryKind.STEP and e.status is not EntryStatus.RETRY
    )
    changes: dict[str, Any] = {"next_seq": record.next_seq + len(entries)}
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
    return _evolve(record, now, **changes)


def _why_not_runnable(record: RunRecord, now: datetime) -> str:
    run = f"run {record.run_id!r}"
    if record.status.terminal:
        return f"{run} has {record.status.value}"
    if record.lease is not None and record.lease.live(now):
        return (
            f"{run} is held by {record.lease.owner} (token {record.lease.token}) until "
            f"{record.lease.expires_at.isoformat()}"
        )
    if record.waiting_for and (record.wake_at is None or record.wake_at > now):
        return f"{run} waits for signal {record.waiting_for!r}"
    assert record.wake_at is not None
    return f"{run} sleeps until {record.wake_at.isoformat()}"
