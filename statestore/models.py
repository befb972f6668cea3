"""The data the store keeps: run records, journal entries, leases, signals, blob references.

Values (inputs, step results, signal payloads, outputs) appear here already encoded: either an
inline codec frame (``bytes``) or a ``BlobRef`` to the cold tier. Decoding them is the routing
layer's job (``statestore.routing``), so the hot tier never pays for values it only moves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


def _require_aware(value: datetime) -> datetime:
    # Naive timestamps silently shift by the host's offset; refuse them at the boundary.
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return value.astimezone(UTC)


AwareDatetime = Annotated[datetime, AfterValidator(_require_aware)]


SCHEMA_MAJOR = 1
"""The major schema version this code writes and reads. Records carry ``schema`` ("MAJOR.MINOR")
only when it differs from "1.0"; a reader refuses a newer *major* version and ignores fields it
does not know, so a peer one minor version ahead (an older Lambda version still draining runs
beside a newer one) reads what it needs and leaves the rest alone."""


class _Frozen(BaseModel):
    # Stored documents: unknown fields are a newer peer's additions, not corruption.
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Stored(_Frozen):
    schema_: str = Field(default="1.0", alias="schema", pattern=r"^[0-9]+\.[0-9]+$")

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class BlobRef(_Frozen):
    """Where a large value lives in the cold tier; named by content, so writes are idempotent."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    codec: str


StoredValue = bytes | BlobRef
"""An encoded value: an inline codec frame, or a reference to a cold-tier blob."""


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUSPENDED = "suspended"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Stopped on broken state (corrupt or missing data, a value the store refuses, a full disk, an
    # unknown function) after a bounded number of legs: takes no more legs until a person fixes
    # the cause and retries it. Not ended: it keeps its signals and can be retried or cancelled.
    BLOCKED = "blocked"

    @property
    def terminal(self) -> bool:
        """Ended for good: succeeded, failed or cancelled."""
        return self in _TERMINAL

    @property
    def takes_legs(self) -> bool:
        """Can a leg ever run it again without a person acting?"""
        return self not in _TERMINAL and self is not RunStatus.BLOCKED


_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class Lease(_Frozen):
    """The right to write a run's journal. ``token`` only ever grows, run by run."""

    owner: str
    token: int = Field(ge=1)
    expires_at: AwareDatetime

    def live(self, now: datetime) -> bool:
        return self.expires_at > now


class ErrorInfo(_Frozen):
    type: str
    message: str
    traceback: str = ""
    # Where it happened, when known: the journal seq of the failing operation (a retry keeps the
    # journal up to it), and whether it is infrastructure trouble that clears by itself.
    seq: int | None = None
    transient: bool = False


class RunCounters(_Frozen):
    legs: int = 0
    steps: int = 0
    handoffs: int = 0
    recoveries: int = 0  # legs that took over from a leg whose lease had expired (it died)


class RunRecord(_Stored):
    run_id: str
    function: str
    # One life of this run id. A run deleted (or expired) and created again is a new incarnation:
    # caches are keyed by it, so nothing of the old life can reach the new one.
    incarnation: str = ""
    status: RunStatus = RunStatus.PENDING
    input: StoredValue | None = None
    input_hash: str = ""
    lease: Lease | None = None
    fence: int = 0  # the last lease token handed out; the next one is fence + 1
    next_seq: int = 0
    wake_at: AwareDatetime | None = None
    waiting_for: str | None = None
    result: StoredValue | None = None
    error: ErrorInfo | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    counters: RunCounters = RunCounters()
    version: int = 0  # bumped by every write; the backends' compare-and-set condition
    # Nonces of the last few writes. A writer whose reply was lost (a timeout after the write may
    # have landed) re-reads the record and finds its own nonce here, or knows it did not land.
    recent_writes: tuple[str, ...] = ()
    tags: dict[str, str] = Field(default_factory=dict)
    # Journal epoch: bumped when a retry cuts the journal back, so caches of the longer journal
    # are never mistaken for the new one.
    epoch: int = 0
    # Legs that stopped on a store error in a row (reset by any append), the last such error,
    # and when the next leg may start (exponential backoff). See ``transitions.gave_back``.
    troubles: int = 0
    broken: int = 0  # of those, legs that stopped on broken state (not transient trouble)
    trouble: ErrorInfo | None = None
    retry_after: AwareDatetime | None = None
    # Legs that died holding the lease with the journal at ``interrupted_seq``: the operation at
    # that seq was in flight each time. Capped per step by the runtime.
    interrupted: int = 0
    interrupted_seq: int = -1

    def due_at(self) -> datetime | None:
        """When a sweeper should next look at this run, or None if nothing will make it runnable.

        pending: at once (its start may never have been dispatched); running: when its lease
        expires, or at once if no leg holds it (a hand-off whose next leg was lost); suspended:
        at its timer (a signal's arrival moves the timer to "now"); ended or blocked: never. A
        run backing off after a failed leg is not due before ``retry_after``.
        """
        if self.status is RunStatus.PENDING:
            due = self.created_at
        elif self.status is RunStatus.RUNNING:
            due = self.lease.expires_at if self.lease else self.updated_at
        elif self.status is RunStatus.SUSPENDED and self.wake_at is not None:
            due = self.wake_at
        else:
            return None
        return max(due, self.retry_after) if self.retry_after is not None else due

    def runnable(self, now: datetime) -> bool:
        """May a new leg take the lease now?"""
        if not self.status.takes_legs:
            return False
        if self.lease is not None and self.lease.live(now):
            return False
        if self.retry_after is not None and self.retry_after > now:
            return False
        if self.status is RunStatus.SUSPENDED:
            return self.wake_at is not None and self.wake_at <= now
        return True


class CorruptRun(BaseModel):
    """A run whose stored record cannot be read: listed as such, so it hides no other run."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    error: str


class EntryKind(StrEnum):
    STEP = "step"
    SLEEP = "sleep"
    SIGNAL = "signal"
    CLOCK = "clock"
    RANDOM = "random"
    CHILD = "child"
    PATCH = "patch"  # ctx.patched(id) reached by code that has the change


class EntryStatus(StrEnum):
    OK = "ok"  # the operation completed; ``value`` holds its result
    RETRY = "retry"  # one failed attempt of a step that will be tried again
    ERROR = "error"  # the operation failed for good; replays raise ``error`` again


MetaValue = str | int | float | bool | None


class JournalEntry(_Stored):
    seq: int = Field(ge=0)
    kind: EntryKind
    name: str
    status: EntryStatus = EntryStatus.OK
    value: StoredValue | None = None
    error: ErrorInfo | None = None
    attempt: int = 1
    leg: int = 0  # the leg that committed it (0: unknown)
    started_at: AwareDatetime
    ended_at: AwareDatetime
    meta: dict[str, MetaValue] = Field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


class Signal(_Stored):
    """A message sent to a run; kept until a leg takes it into the journal."""

    run_id: str
    name: str
    signal_id: str  # sortable: the order signals of one name are taken in
    payload: StoredValue | None = None
    sent_at: AwareDatetime


class RunUpdate(BaseModel):
    """Field changes written together with an append, in the same atomic write."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: RunStatus | None = None
    wake_at: AwareDatetime | None = None
    waiting_for: str | None = None
    result: StoredValue | None = None
    error: ErrorInfo | None = None
    release_lease: bool = False
    handoff: bool = False  # count this release as a hand-off
    tags: dict[str, str] | None = None


# What a decoded journal entry costs in memory besides its value (a pydantic model, two datetimes,
# a dict): about 1.5 KB on CPython 3.11. Caches of entries count it, so a 100,000-step leg that
# writes tiny values does not keep every entry.
ENTRY_OVERHEAD = 1536


def entry_memory(entry: JournalEntry) -> int:
    """Roughly what ``entry`` holds in memory, in bytes: its overhead plus its inline value."""
    return ENTRY_OVERHEAD + (len(entry.value) if isinstance(entry.value, bytes) else 0)
