"""The leased run: what taking a run's lease returns, and the only way a run's journal grows.

Where is a step committed? Here, in ``LeasedRun.commit``. One call:

1. encodes each operation's value (msgpack, compressed when large, framed) and checks that it
   reads back: a value that packs but cannot be unpacked (a tuple as a dict key) is refused with
   ``UnstorableValueError`` before anything is written;
2. writes values larger than the hot tier's inline limit to the cold tier first, as immutable
   blobs named by their hash (a blob whose leg then dies is garbage, never corruption);
3. appends the entries to the hot tier in one fenced compare-and-set per batch: the write lands
   only if the lease token is still ours and the seqs run on from the run's ``next_seq``. Entries
   beyond what the backend writes atomically are split into batches, written in order, the run
   update going with the last one;
4. returns exactly what was written (the entries, and each value as a replay will decode it).
   Only that feeds the journal cache.

Nothing here knows Python functions, Lambda or agents: values arrive as plain msgpack-able data.
A leased run serves one leg; threads of that leg (a ``ctx.map``, a lease heartbeat) share it, and
its lock orders their hot writes, so a renewal never races the leg's own appends.

After a failed write the run's state in this process is no longer known (the write may or may not
have landed, or the lease is gone): the leased run refuses further writes, and the leg stops. The
next leg reads the truth from the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from statestore import codec
from statestore.errors import LeaseLostError, StateStoreError
from statestore.models import (
    EntryKind,
    EntryStatus,
    ErrorInfo,
    JournalEntry,
    Lease,
    RunRecord,
    RunStatus,
    RunUpdate,
    StoredValue,
    entry_memory,
)
from statestore.routing import StateStore

TierHint = Literal["hot", "cold"] | None

# The journal entries a leased run keeps for the process cache, in bytes of stored values. A run
# whose leg writes more than this is simply not cached (the next leg reads its journal instead).
DEFAULT_KEEP_BYTES = 8 * 1024 * 1024


class UnstorableValueError(TypeError):
    """A value that cannot be stored so that it reads back as itself; nothing was written."""


@dataclass(frozen=True)
class Operation:
    """One operation to journal. ``value`` is plain data (msgpack-able); None stores nothing."""

    kind: EntryKind
    name: str
    started_at: datetime
    ended_at: datetime
    value: Any = None
    status: EntryStatus = EntryStatus.OK
    error: ErrorInfo | None = None
    attempt: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    tier: TierHint = None


@dataclass(frozen=True)
class Committed:
    """A journal entry as written, and its value as a replay will decode it."""

    entry: JournalEntry
    value: Any


@dataclass(frozen=True)
class _Encoded:
    op: Operation
    stored: StoredValue | None
    value: Any


class LeasedRun:
    """A run whose lease this leg holds: token, next seq, the record as last written."""

    def __init__(
        self,
        store: StateStore,
        record: RunRecord,
        lease: Lease,
        *,
        keep_bytes: int = DEFAULT_KEEP_BYTES,
        fault: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        # Test doubles only (the emulator's kill points, the chaos suite): called at the commit
        # path's phases "before-cold", "before-hot" and "after-hot". None in production.
        self._fault = fault
        self.lease = lease
        self._record = record
        self._lock = threading.RLock()
        self._pending: list[Committed] = []  # deterministic reads seen by code, not yet written
        self._written: list[JournalEntry] | None = []
        self._written_bytes = 0
        self._keep_bytes = keep_bytes
        self._broken: BaseException | None = None
        self.commits = 0

    @classmethod
    def take(
        cls,
        store: StateStore,
        run_id: str,
        owner: str,
        ttl: timedelta,
        *,
        expect_leg: int | None = None,
        keep_bytes: int = DEFAULT_KEEP_BYTES,
        fault: Callable[[str], None] | None = None,
    ) -> LeasedRun:
        """Take the run's lease (``LeaseHeldError`` if it is not runnable now)."""
        record, lease = store.hot.take_lease(run_id, owner, ttl, expect_leg=expect_leg)
        return cls(store, record, lease, keep_bytes=keep_bytes, fault=fault)

    # ------------------------------------------------------------------ what it holds

    @property
    def run_id(self) -> str:
        return self._record.run_id

    @property
    def token(self) -> int:
        return self.lease.token

    @property
    def leg(self) -> int:
        return self._record.counters.legs

    @property
    def incarnation(self) -> str:
        return self._record.incarnation

    @property
    def record(self) -> RunRecord:
        """The run record as this leg last wrote it."""
        return self._record

    @property
    def next_seq(self) -> int:
        """The seq the next operation gets (buffered reads count: the code has seen them)."""
        with self._lock:
            return self._record.next_seq + len(self._pending)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def written(self) -> list[JournalEntry] | None:
        """Entries this leg committed, oldest first; None if there were too many to keep."""
        with self._lock:
            return None if self._written is None else list(self._written)

    @property
    def broken(self) -> BaseException | None:
        """The error that made this leased run refuse writes, if any."""
        return self._broken

    # ------------------------------------------------------------------ encoding

    def encode(
        self, value: Any, *, tier: TierHint = None, what: str = "value", point: bool = False
    ) -> _Stored:
        """Encode ``value`` (cold tier first if large) and decode it back as a replay would."""
        body, back = _pack_checked(value, what)
        data = codec.frame(body, compress_threshold=self.store.compress_threshold)
        if point:
            self._point("before-cold")
        return _Stored(self.store.place(self.run_id, data, tier=tier), back)

    def _encode(self, op: Operation, *, point: bool = False) -> _Encoded:
        if op.value is None:
            return _Encoded(op, None, None)
        what = f"{op.kind.value} {op.name!r}"
        stored = self.encode(op.value, tier=op.tier, what=what, point=point)
        return _Encoded(op, stored.stored, stored.value)

    def _point(self, phase: str) -> None:
        if self._fault is not None:
            self._fault(phase)

    # ------------------------------------------------------------------ commit

    def buffer(self, op: Operation) -> Any:
        """Keep a deterministic read (clock, random) to be written with the next commit.

        Returns the value as a replay will decode it. If the leg dies before the next commit,
        nothing outside saw the value and the next leg draws again. Reads pile up only to the
        backend's batch size; then they are written.
        """
        encoded = self._encode(replace(op, tier="hot"))
        with self._lock:
            self._check()
            entry = self._entry(encoded, self._record.next_seq + len(self._pending))
            self._pending.append(Committed(entry, encoded.value))
            if len(self._pending) >= self.store.hot.max_batch:
                self._append([], None)
        return encoded.value

    def commit(
        self, ops: Sequence[Operation] = (), update: RunUpdate | None = None
    ) -> list[Committed]:
        """Journal ``ops`` after the buffered reads, and apply ``update``; see the module doc.

        Raises ``UnstorableValueError`` (nothing written), ``LeaseLostError`` (another leg owns
        the run), or another ``StateStoreError`` (the outcome may be unknown; stop the leg).
        """
        # Outside the lock: the cold puts of a map's items run in parallel.
        encoded = [self._encode(op, point=True) for op in ops]
        with self._lock:
            self._check()
            first = self._record.next_seq + len(self._pending)
            made = [
                Committed(self._entry(enc, first + i), enc.value) for i, enc in enumerate(encoded)
            ]
            self._point("before-hot")
            self._append(made, update)
            self._point("after-hot")
            return made

    def end(
        self,
        status: RunStatus,
        *,
        result: Any = None,
        error: ErrorInfo | None = None,
        wake_at: datetime | None = None,
        waiting_for: str | None = None,
    ) -> RunRecord:
        """Commit how the leg ends the run (or parks it), with the buffered reads."""
        stored = None
        if result is not None:
            stored = self.encode(result, what="the run's result", point=True).stored
        update = RunUpdate(
            status=status, result=stored, error=error, wake_at=wake_at, waiting_for=waiting_for
        )
        self.commit((), update)
        if status is RunStatus.SUSPENDED and waiting_for is not None:
            # The signal may have come before the suspend landed: the hot tier wakes the run.
            self._record = self.store.hot.wake_if_signalled(self._record, waiting_for)
        return self._record

    def hand_off(self) -> RunRecord:
        """Release the lease for the next leg, counting a hand-off, with the buffered reads."""
        self.commit((), RunUpdate(release_lease=True, handoff=True))
        return self._record

    def take_signal(
        self, name: str, meta: dict[str, str | int | float | bool | None] | None = None
    ) -> Committed | None:
        """Move the oldest pending signal ``name`` into the journal (after the buffered reads)."""
        with self._lock:
            self._check()
            if self._pending:
                self._append([], None)
            try:
                entry = self.store.hot.take_signal(
                    self.run_id, self.token, name, self._record.next_seq, meta
                )
            except StateStoreError as exc:
                self._broken = exc
                raise
            if entry is None:
                return None
            # take_signal wrote through the tier's own compare-and-set; read where it left us.
            self._record = self.store.hot.get_run(self.run_id)
            value = self.store.decode(self.run_id, entry.value, seq=entry.seq, key="signal")
            self._kept([entry])
            self.commits += 1
            return Committed(entry, value)

    @property
    def writable(self) -> bool:
        """False once a write or a renewal of this leg failed (a lost lease among them): the
        leg writes nothing more, and neither should anything acting for it."""
        return self._broken is None

    def renew(self, ttl: timedelta) -> Lease:
        """Extend the lease; ordered with the leg's commits, so the two never contend."""
        with self._lock:
            self._check()
            try:
                self._record = self.store.hot.renew(
                    self.run_id, self.token, ttl, start=self._record
                )
            except LeaseLostError as exc:
                self._broken = exc
                raise
            # Any other failure leaves the record in hand possibly stale, which is harmless: the
            # next write's compare-and-set re-plans on what is stored.
            assert self._record.lease is not None
            self.lease = self._record.lease
            return self.lease

    def give_back(self, error: ErrorInfo, *, delay: timedelta, max_broken: int) -> RunRecord | None:
        """Release our lease after a store error, for a retry after ``delay`` (or block the run).

        See ``transitions.gave_back``. Best effort: if the store cannot be reached, the lease
        simply runs out and the run is retried then. Returns the record as written, if it was.
        """
        try:
            return self.store.hot.give_back(
                self.run_id, self.token, error, delay=delay, max_broken=max_broken
            )
        except StateStoreError:
            return None

    # ------------------------------------------------------------------ plumbing

    def _check(self) -> None:
        if self._broken is not None:
            raise LeaseLostError(
                f"run {self.run_id!r}: an earlier write of this leg failed "
                f"({type(self._broken).__name__}); it writes nothing more"
            )

    def _entry(self, enc: _Encoded, seq: int) -> JournalEntry:
        op = enc.op
        return JournalEntry(
            seq=seq,
            kind=op.kind,
            name=op.name,
            status=op.status,
            value=enc.stored,
            error=op.error,
            attempt=op.attempt,
            leg=self.leg,
            started_at=op.started_at,
            ended_at=op.ended_at,
            meta=op.meta,
        )

    def _append(self, made: list[Committed], update: RunUpdate | None) -> None:
        """Write the buffered reads and ``made`` in batches the backend takes (lock held)."""
        entries = [c.entry for c in self._pending] + [c.entry for c in made]
        size = max(1, self.store.hot.max_batch)
        batches = [entries[i : i + size] for i in range(0, len(entries), size)] or [[]]
        hot = self.store.hot
        try:
            for index, batch in enumerate(batches):
                last = index == len(batches) - 1

                self._record = hot.append(
                    self.run_id,
                    self.token,
                    batch,
                    update if last else None,
                    start=self._record,
                )
                done = len(batch)
                self._kept(batch)
                self.commits += 1
                # Buffered reads leave the buffer as their batch lands, not before.
                del self._pending[: min(done, len(self._pending))]
        except StateStoreError as exc:
            self._broken = exc
            raise

    def _kept(self, entries: Sequence[JournalEntry]) -> None:
        if self._written is None:
            return
        self._written_bytes += sum(entry_memory(entry) for entry in entries)
        if self._written_bytes > self._keep_bytes:
            self._written = None
            return
        self._written.extend(entries)


@dataclass(frozen=True)
class _Stored:
    stored: StoredValue
    value: Any


def _pack_checked(value: Any, what: str) -> tuple[bytes, Any]:
    """msgpack ``value`` and read it back; refuse what does not survive the round trip."""
    try:
        body = codec.pack(value)
    except TypeError as exc:
        raise UnstorableValueError(f"{what} cannot be stored: {exc}") from None
    except RecursionError:
        raise UnstorableValueError(
            f"{what} cannot be stored: it refers to itself (or nests too deep)"
        ) from None
    try:
        back = codec.unpack(body)
    except (ValueError, TypeError) as exc:
        raise UnstorableValueError(
            f"{what} cannot be stored so that it reads back: {type(exc).__name__}: {exc} "
            "(a dict key that is a tuple or another container reads back as a list, which "
            "cannot be a key)"
        ) from None
    return body, back
