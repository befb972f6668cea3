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

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


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

    def due_at(self) -> datetime | None:
        """When a sweeper should next look at this run, or None if nothing will make it runnable.

        pending: at once (its start may never have been dispatched); running: when its lease
        expires, or at once if no leg holds it (a hand-off whose next leg was lost); suspended:
        at its timer (a signal's arrival moves the timer to "now"); ended: never.
        """
        if self.status is RunStatus.PENDING:
            return self.created_at
        if self.status is RunStatus.RUNNING:
            return self.lease.expires_at if self.lease else self.updated_at
        if self.status is RunStatus.SUSPENDED:
            return self.wake_at
        return None

    def runnable(self, now: datetime) -> bool:
        """May a new leg take the lease now?"""
        if self.status.terminal:
            return False
        if self.lease is not None and self.lease.live(now):
            return False
        if self.status is RunStatus.SUSPENDED:
            return self.wake_at is not None and self.wake_at <= now
        return True


class EntryKind(StrEnum):
    STEP = "step"
    SLEEP = "sleep"
    SIGNAL = "signal"
    CLOCK = "clock"
    RANDOM = "random"
    CHILD = "child"


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
