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

import random
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from statestore import transitions
from statestore.errors import (
    BatchTooLargeError,
    CorruptStateError,
    LeaseHeldError,
    LeaseLostError,
    RunConflictError,
    RunNotFoundError,
    SchemaVersionError,
    SequenceConflictError,
    StateStoreError,
    StoreUnavailableError,
)
from statestore.ids import validate_run_id
from statestore.logs import RecordLogs
from statestore.models import (
    CorruptRun,
    EntryKind,
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
# progress. Past a few losses the loop backs off with jitter; it gives up only after this long.
_CAS_PATIENCE = 10.0
_CAS_TRIES = 32  # bounded re-checks in loops that are not writes (signal wake-ups)
_SETTLE_TRIES = 8

_Plan = tuple[RunRecord, Sequence[JournalEntry], Signal | None]

# Where a listing of runs stands: (created_at as a timestamp, run id). Runs are listed newest
# first by this pair, so a page that ends at cursor c is followed by the runs before c.
RunCursor = tuple[float, str]
ListedRun = tuple[RunCursor, "RunRecord | CorruptRun"]
_LIST_PAGE = 500


class _Reread(Exception):  # noqa: N818 - internal signal, never escapes _cas
    """Plan again from the stored record (the one in hand may be older than the store)."""


class RunEndedError(StateStoreError):
    """The run has ended (succeeded, failed or cancelled); it takes no more signals or leases."""


class HotTier(RecordLogs, ABC):
    """Base of every hot-tier backend. Subclasses implement the ``_`` primitives only.

    Record logs (``append_log``, ``read_log``, ...) come from ``RecordLogs`` (``logs.py``)."""

    scheme: ClassVar[str] = "abstract"
    default_inline_limit: ClassVar[int] = 64 * 1024
    max_batch: ClassVar[int] = 10_000  # entries one append may write atomically

    def __init__(
        self,
        *,
        inline_limit: int | None = None,
        clock: Clock = utcnow,
        retention: timedelta | None = None,
    ) -> None:
        super().__init__()
        self.inline_limit = inline_limit if inline_limit is not None else self.default_inline_limit
        self._clock = clock
        if retention is not None and retention <= timedelta(0):
            raise ValueError(f"retention must be positive, not {retention}")
        # How long an ended run is kept before expire_runs deletes it; None keeps it forever.
        self.retention = retention
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
    def _delete_signal(self, signal: Signal) -> bool:
        """Delete the pending ``signal``; return True if it was there (not taken meanwhile)."""

    @abstractmethod
    def _load_signals(self, run_id: str, name: str | None) -> list[Signal]:
        """Pending signals of a run (of one name, or all), oldest first."""

    @abstractmethod
    def _due(self, now: datetime, limit: int) -> list[str]:
        """Ids of runs whose ``due_at()`` is at or before ``now``, earliest first."""

    @abstractmethod
    def _list_runs(self, limit: int, before: RunCursor | None) -> list[ListedRun]:
        """Up to ``limit`` runs, newest first by (created_at timestamp, run id), each with its
        cursor, strictly before ``before`` when given. A record that cannot be read is a
        ``CorruptRun`` in its place (backends build them with ``_listed``), at its created_at
        when the backend knows it and before every run otherwise."""

    def _listed(self, run_id: str, load: Callable[[], RunRecord]) -> RunRecord | CorruptRun:
        try:
            return load()
        except (CorruptStateError, SchemaVersionError) as exc:
            return CorruptRun(run_id=run_id, error=str(exc))

    @abstractmethod
    def _delete_run(self, run_id: str) -> None: ...

    @abstractmethod
    def _truncate(self, run_id: str, keep: int) -> None:
        """Delete the run's journal entries with seq >= ``keep`` (a retry cuts the journal back).

        Only called on a run no leg can hold (failed or blocked); idempotent.
        """

    @abstractmethod
    def _ended(self, before: datetime, limit: int) -> list[str]:
        """Ids of ended runs whose ``ended_at()`` is at or before ``before``, earliest first.

        The backend indexes ``ended_at()`` of the record it stores (in ``_write``).
        """

    @abstractmethod
    def _delete_ended(self, claimed: RunRecord) -> bool:
        """Delete the run's journal and signals, then its record, if the stored record is still
        ``claimed`` (same incarnation and version). Return whether it was deleted.

        The record goes last (or in the same atomic write): while any item of the run remains,
        its id stays taken, so a new incarnation never meets the old one's items.
        """

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
        """Runs newest first. A record that cannot be read raises ``CorruptStateError``; use
        ``survey_runs`` to list the others and report it."""
        records, corrupt = self.survey_runs(limit, status)
        if corrupt:
            raise CorruptStateError(corrupt[0].error, run_id=corrupt[0].run_id, tier=self.scheme)
        return records

    def survey_runs(
        self, limit: int = 100, status: RunStatus | None = None
    ) -> tuple[list[RunRecord], list[CorruptRun]]:
        """Up to ``limit`` runs newest first (of ``status``, if given), and, apart, the records
        met on the way that cannot be read (with why).

        One damaged record hides no other run. A corrupt record's status is unknown, so it is
        reported whatever ``status`` asked for. A status filter reads on through older runs
        until ``limit`` match or the store ends.
        """
        records: list[RunRecord] = []
        corrupt: list[CorruptRun] = []
        if limit <= 0:
            return records, corrupt
        page = min(max(limit + 1, 50), _LIST_PAGE) if status is None else _LIST_PAGE
        for listed in self.iter_runs(status, page=page):
            if isinstance(listed, CorruptRun):
                corrupt.append(listed)
                continue
            records.append(listed)
            if len(records) >= limit:
                break
        return records, corrupt

    def iter_runs(
        self, status: RunStatus | None = None, *, page: int = _LIST_PAGE
    ) -> Iterator[RunRecord | CorruptRun]:
        """Every run, newest first (of ``status``, if given; damaged records always), read a
        page at a time through a cursor: memory stays one page whatever the store holds."""
        before: RunCursor | None = None
        while True:
            listed = self._list_runs(page, before)
            for _, item in listed:
                if isinstance(item, CorruptRun) or status is None or item.status is status:
                    yield item
            if len(listed) < page:
                return
            before = listed[-1][0]

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

        ``expect_leg`` is the leg number a continuation event carries: see
        ``transitions.continuation_ok``. A stale or duplicate continuation is refused in the same
        compare-and-set, so two copies cannot both run.
        """
        record, lease = self.take_lease(run_id, owner, ttl, expect_leg=expect_leg)
        self._remember(record, keep=True)
        return lease

    def take_lease(
        self, run_id: str, owner: str, ttl: timedelta, *, expect_leg: int | None = None
    ) -> tuple[RunRecord, Lease]:
        """``acquire_lease`` that also returns the record as written (for a ``LeasedRun``)."""
        validate_run_id(run_id)
        taken: list[Lease] = []

        def take(rec: RunRecord, now: datetime) -> _Plan:
            if not rec.runnable(now):
                raise LeaseHeldError(transitions.why_not_runnable(rec, now))
            if expect_leg is not None and not transitions.continuation_ok(rec, expect_leg):
                raise LeaseHeldError(
                    f"run {run_id!r}: continuation for leg {expect_leg} is stale "
                    f"({rec.counters.legs} legs have started)"
                )
            new, lease = transitions.leased(rec, now, owner, ttl)
            taken[:] = [lease]
            return new, (), None

        record = self._cas(self.get_run(run_id), take, what="take the lease")
        if record.lease is None or not taken or record.lease.token != taken[0].token:
            # Only reachable if our own write was recognised after a newer one: read the truth.
            raise LeaseHeldError(f"run {run_id!r}: the lease changed hands while it was taken")
        return record, taken[0]

    def renew_lease(self, run_id: str, token: int, ttl: timedelta) -> Lease:
        record = self.renew(run_id, token, ttl)
        assert record.lease is not None
        return record.lease

    def renew(
        self, run_id: str, token: int, ttl: timedelta, *, start: RunRecord | None = None
    ) -> RunRecord:
        """Extend lease ``token`` by ``ttl`` from now; return the record as written."""
        return self._fenced(
            run_id, token, lambda rec, now: (transitions.renewed(rec, now, ttl), ()), start=start
        )

    def release_lease(self, run_id: str, token: int, *, handoff: bool = False) -> RunRecord:
        """Give the run up so the next leg can take it at once (a hand-off)."""
        return self.append(run_id, token, (), RunUpdate(release_lease=True, handoff=handoff))

    def break_lease(self, run_id: str, token: int) -> bool:
        """Expire the lease ``token`` now, because its holder is known to be dead.

        Only a supervisor that has seen the holder's process exit may call this (the local
        emulator does, after reaping a killed leg), or the holder itself on its way out after an
        infrastructure error; otherwise wait for the lease to expire. Returns False if that lease
        is no longer the run's.
        """
        broke: list[bool] = [False]

        def expire(rec: RunRecord, now: datetime) -> _Plan | None:
            broke[0] = False
            if rec.lease is None or rec.lease.token != token:
                return None
            broke[0] = True
            return transitions.broken(rec, now), (), None

        self._cas(self.get_run(run_id), expire, what="break the lease")
        self._held.pop(run_id, None)
        return broke[0]

    # ------------------------------------------------------------------ journal

    def append(
        self,
        run_id: str,
        token: int,
        entries: Sequence[JournalEntry],
        update: RunUpdate | None = None,
        *,
        start: RunRecord | None = None,
    ) -> RunRecord:
        """Append ``entries`` (and apply ``update``) atomically, fenced by ``token``.

        ``start`` is the record as the caller last wrote it (saves a read; it is re-checked
        against the store before any refusal is believed).

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

        return self._fenced(run_id, token, build, start=start)

    def read_journal(self, run_id: str, after_seq: int = -1) -> list[JournalEntry]:
        """Entries after ``after_seq``, in seq order. A gap raises ``CorruptStateError``."""
        return list(self.iter_journal(run_id, after_seq))

    def iter_journal(
        self, run_id: str, after_seq: int = -1, *, until: int | None = None
    ) -> Iterator[JournalEntry]:
        """Entries after ``after_seq``, read a page at a time as they are consumed.

        A gap raises ``CorruptStateError``. With ``until`` (the record's ``next_seq``), the
        journal is also checked against its record: an entry at or past ``until`` is one the
        record never counted, and a journal that ends before ``until`` lost its tail.
        """
        validate_run_id(run_id)
        expected = after_seq + 1
        for entry in self._load_entries(run_id, after_seq):
            if entry.seq != expected:
                raise CorruptStateError(
                    f"journal has seq {entry.seq} where seq {expected} should be",
                    run_id=run_id,
                    seq=expected,
                    tier=self.scheme,
                )
            if until is not None and entry.seq >= until:
                raise CorruptStateError(
                    f"journal holds seq {entry.seq} but the run record counts {until} entries",
                    run_id=run_id,
                    seq=entry.seq,
                    tier=self.scheme,
                )
            yield entry
            expected += 1
        if until is not None and expected < until:
            raise CorruptStateError(
                f"journal ends at seq {expected - 1} but the run record counts {until} entries: "
                f"seq {expected} onwards are missing",
                run_id=run_id,
                seq=expected,
                tier=self.scheme,
            )

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

    def give_back(
        self,
        run_id: str,
        token: int,
        error: ErrorInfo,
        *,
        delay: timedelta,
        max_broken: int,
        start: RunRecord | None = None,
    ) -> RunRecord:
        """Release lease ``token`` after a store error; see ``transitions.gave_back``."""
        return self._fenced(
            run_id,
            token,
            lambda rec, now: (
                transitions.gave_back(rec, now, error, delay=delay, max_broken=max_broken),
                (),
            ),
            start=start,
            check_expiry=False,
        )

    def retry_run(self, run_id: str, *, keep: int | None = None) -> RunRecord:
        """Re-open a failed or blocked run, its journal cut back to ``keep`` entries.

        ``keep`` defaults to the entries before the one that failed (``error.seq``), or the whole
        journal when that is not known (a fixed non-determinism replays it all with new code).
        Cutting the journal first and re-opening second means a crash in between leaves a failed
        run that can be retried again, never a record that counts entries that are gone.
        """
        record = self.get_run(run_id)
        if record.status not in (RunStatus.FAILED, RunStatus.BLOCKED):
            raise RunConflictError(
                f"run {run_id!r} is {record.status.value}; only failed or blocked runs can be "
                "retried (fork it with a new id to re-run another one)"
            )
        if keep is None:
            failing = record.error.seq if record.error is not None else None
            keep = record.next_seq if failing is None else min(failing, record.next_seq)
        if not 0 <= keep <= record.next_seq:
            raise ValueError(
                f"run {run_id!r} has {record.next_seq} journal entries; cannot keep {keep}"
            )
        self._truncate(run_id, keep)

        def reopen(rec: RunRecord, now: datetime) -> _Plan:
            if rec.status not in (RunStatus.FAILED, RunStatus.BLOCKED):
                raise RunConflictError(f"run {run_id!r} became {rec.status.value} meanwhile")
            return transitions.retried(rec, now, keep), (), None

        written = self._cas(record, reopen, what="retry")
        self._held.pop(run_id, None)
        return written

    def cancel(self, run_id: str, reason: str = "cancelled") -> RunRecord:
        """Cancel a run that has not ended. The leg holding it loses its lease at its next write.

        Cancelling an ended run changes nothing and returns its record.
        """

        def cancel(rec: RunRecord, now: datetime) -> _Plan | None:
            if rec.status.terminal:
                return None
            return transitions.cancelled(rec, now, reason), (), None

        record = self._cas(self.get_run(run_id), cancel, what="cancel")
        self._held.pop(run_id, None)
        return record

    # ------------------------------------------------------------------ signals

    def put_signal(self, run_id: str, name: str, payload: StoredValue | None = None) -> Signal:
        """Keep a signal for the run until a leg takes it; wake the run if it waits for it.

        Raises ``RunEndedError`` if the run has ended, also when it ends while the signal is
        being written: a signal the run can never take is not kept.
        """
        if not name or len(name) > 128:
            raise ValueError("a signal name is 1-128 characters")
        record = self.get_run(run_id)
        if record.status.terminal:
            raise RunEndedError(f"run {run_id!r} has {record.status.value}; it takes no signals")
        signal = Signal(
            run_id=run_id,
            name=name,
            signal_id=self._next_signal_id(),
            payload=payload,
            sent_at=self.now(),
        )
        self._insert_signal(signal)
        # Write first, look second: the run may have ended between the look above and the
        # insert, and no leg would ever take the signal then. A run that ends after this second
        # look ended with the signal already pending, like any signal it never waited for.
        try:
            record = self.get_run(run_id)
        except RunNotFoundError:
            self._delete_signal(signal)  # the run was deleted meanwhile: keep no orphan
            raise
        if record.status.terminal:
            if self._delete_signal(signal):
                raise RunEndedError(
                    f"run {run_id!r} has {record.status.value}; it takes no signals"
                )
            # Gone already: a leg took it into the journal before the run ended, so it was
            # delivered and the send succeeded.
            return signal
        self._wake_for_signal(run_id, name, record)
        return signal

    def wake_if_signalled(self, record: RunRecord, name: str) -> RunRecord:
        """After a suspend on signal ``name`` landed: wake the run if the signal already came.

        ``put_signal`` saw no waiter if it ran before the suspend landed; both sides write first
        and look second, so at least one of them sees the other.
        """
        if not self._load_signals(record.run_id, name):
            return record
        return self._wake_for_signal(record.run_id, name) or record

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

    def _wake_for_signal(
        self, run_id: str, name: str, record: RunRecord | None = None
    ) -> RunRecord | None:
        """Make a run that waits for ``name`` due now. ``record``: the run as just read."""
        if record is None:
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
        # Time first, so ids sort by when they were sent (pending signals are taken oldest
        # first); then 64 random bits, so ids from different processes never collide. A pid and
        # counter did: every container runs as pid 1, and a backend keyed by the id would
        # silently overwrite one signal with another. ``_signal_seq`` holds the last timestamp
        # used, so one handle's ids strictly increase even within one nanosecond or when the
        # wall clock steps back. Fixed width, no ':' or '#' (the backends' key separators).
        with self._signal_lock:
            stamp = max(time.time_ns(), self._signal_seq + 1)
            self._signal_seq = stamp
        return f"{stamp:020d}-{secrets.token_hex(8)}"

    # ------------------------------------------------------------------ sweeping

    def due_runs(self, now: datetime | None = None, limit: int = 100) -> list[str]:
        """Runs a sweeper should re-drive: expired leases, passed timers, arrived signals, and
        pending or handed-off runs whose next leg never started. Uses an index, not a scan."""
        return self._due(now or self.now(), limit)

    # ------------------------------------------------------------------ retention

    @staticmethod
    def ended_at(record: RunRecord) -> datetime | None:
        """When the run ended, or None if it has not: what the backends index for retention.

        An ended run is never written again (no lease, no signals), so this stays put.
        """
        return record.updated_at if record.status.terminal else None

    def expired(self, record: RunRecord, now: datetime) -> bool:
        """Has the run ended longer than the retention ago? Never without a retention."""
        ended = self.ended_at(record)
        return self.retention is not None and ended is not None and ended + self.retention <= now

    def expired_runs(self, now: datetime | None = None, limit: int = 100) -> list[str]:
        """Ended runs kept longer than the retention, longest-ended first (an index query).

        Backends index when a run ended, not when it expires: the retention is the reader's, so
        a changed retention applies to runs that ended before, and a run ended through a handle
        opened without a retention expires all the same.
        """
        if self.retention is None or limit <= 0:
            return []
        return self._ended((now or self.now()) - self.retention, limit)

    def claim_expired(self, run_id: str, now: datetime | None = None) -> RunRecord | None:
        """Claim an expired run for deletion, or return None if it is gone, not expired (it was
        re-created), or another sweeper claimed it first.

        The claim is a version bump through the usual compare-and-set: of several sweepers that
        read the same record, one wins, so only one deletes the run's blobs while its id is
        still taken (a loser deleting them later could hit a new incarnation's blobs).
        """
        validate_run_id(run_id)
        record = self._load_run(run_id)
        if record is None or not self.expired(record, now or self.now()):
            return None
        claimed = record.model_copy(update={"version": record.version + 1})
        try:
            if self._write(record, claimed, (), None) is not None:
                return None
        except RunNotFoundError:
            return None
        return claimed

    def drop_expired(self, claimed: RunRecord) -> bool:
        """Delete a claimed run's journal, signals and (last) record; False if it changed."""
        with self._held_lock:
            self._held.pop(claimed.run_id, None)
        return self._delete_ended(claimed)

    # ------------------------------------------------------------------ fencing

    def _fenced(
        self,
        run_id: str,
        token: int,
        build: Callable[[RunRecord, datetime], tuple[RunRecord, Sequence[JournalEntry]]],
        *,
        take: Signal | None = None,
        start: RunRecord | None = None,
        check_expiry: bool = True,
    ) -> RunRecord:
        """A write that only the holder of lease ``token`` may make (fenced in the same CAS).

        ``start`` is the record as the caller last wrote it (a ``LeasedRun`` keeps it), saving
        the read; otherwise the cache of held records is tried, then the store.
        """
        validate_run_id(run_id)
        record = start if start is not None else self._held.get(run_id)
        cached = record is not None
        if record is None or record.lease is None or record.lease.token != token:
            record, cached = self.get_run(run_id), False
        unverified: list[RunRecord | None] = [record if cached else None]

        def fenced(rec: RunRecord, now: datetime) -> _Plan:
            try:
                self._check_token(rec, token, now if check_expiry else None)
                new, entries = build(rec, now)
            except (LeaseLostError, SequenceConflictError):
                if rec is not unverified[0]:
                    raise  # judged by a record the store handed back: believe it
                # The record we started from may be older than the store (a write through another
                # handle): judge by what is stored before believing the lease is gone.
                unverified[0] = None
                raise _Reread from None
            return new, entries, take

        written = self._cas(record, fenced, what="write")
        self._remember(written, keep=written.lease is not None and written.lease.token == token)
        return written

    def _cas(
        self,
        record: RunRecord,
        plan: Callable[[RunRecord, datetime], _Plan | None],
        *,
        what: str,
    ) -> RunRecord:
        """The compare-and-set loop every write goes through.

        ``plan(current, now)`` says what to write on top of ``current`` (None: nothing, return
        it), or raises to refuse. A lost race re-plans on the record the backend returned. Two
        ambiguities are settled by the write nonce (``transitions.landed``) before anything else:

        - the reply was lost (``StoreUnavailableError``) after the write may have landed: re-read;
        - a conflict that is our own write, landed by a client-side retry (botocore retries a
          transaction whose reply it did not see, and then fails its condition against itself).

        Losing a race means another writer made progress; losing many in a row means heavy
        contention, so later tries back off with jitter, up to ``_CAS_PATIENCE`` seconds.
        """
        run_id = record.run_id
        deadline = time.monotonic() + _CAS_PATIENCE
        losses = 0
        while True:
            now = self.now()
            try:
                planned = plan(record, now)
            except _Reread:
                record = self.get_run(run_id)
                continue
            if planned is None:
                return record
            new, entries, take = planned
            try:
                current = self._write(record, new, entries, take)
            except StoreUnavailableError:
                current = self._settle(record, new)
            if current is None:
                return new
            if transitions.landed(new, current):
                return current
            record = current
            losses += 1
            if time.monotonic() > deadline:
                raise StateStoreError(
                    f"run {run_id!r}: could not {what}: {losses} concurrent writes won over "
                    f"{_CAS_PATIENCE:.0f}s"
                )
            if losses > 2:
                time.sleep(random.uniform(0, min(0.05, 0.0005 * 2**losses)))

    def _settle(self, before: RunRecord, ours: RunRecord) -> RunRecord | None:
        """After a lost reply: None if our write landed as the latest, else the stored record.

        Reads are retried for a few seconds; if the store stays unreachable the outcome is
        unknown and the error propagates: the leg stops, and the next leg reads the truth.
        """
        delay = 0.02
        for attempt in range(_SETTLE_TRIES):
            try:
                stored = self._load_run(before.run_id)
            except StoreUnavailableError:
                if attempt == _SETTLE_TRIES - 1:
                    raise
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 1.0)
                continue
            if stored is None:
                raise RunNotFoundError(before.run_id)
            return (
                None
                if stored.version == ours.version and transitions.landed(ours, stored)
                else stored
            )
        raise AssertionError("unreachable")

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


# Kept as module names for code written against them; the rules live in ``transitions``.
_evolve = transitions.evolve
_renewed = transitions.renewed
_applied = transitions.applied
_why_not_runnable = transitions.why_not_runnable
