"""The store's own exceptions.

Backends translate client errors (``redis.RedisError``, ``botocore.exceptions.ClientError``,
``sqlite3.Error``) into these, so nothing above ``statestore`` ever sees a driver exception.
"""

from __future__ import annotations


class StateStoreError(Exception):
    """Base of every error raised by ``statestore``.

    ``transient`` says whether retrying later can succeed with nothing fixed (a store briefly
    unreachable, throttling). Anything else is broken state that a person must fix: a run gets a
    bounded number of legs on it, then is blocked.
    """

    transient: bool = False


class InvalidRunIdError(StateStoreError, ValueError):
    """A run id that does not match ``^[A-Za-z0-9_-]{1,64}$``."""


class InvalidStoreUrlError(StateStoreError, ValueError):
    """A store URL with an unknown scheme or missing parts."""


class RunNotFoundError(StateStoreError, KeyError):
    """No run with that id exists."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id

    def __str__(self) -> str:
        return f"run {self.run_id!r} does not exist"


class RunConflictError(StateStoreError):
    """``create_run`` for an existing run id with a different function or input."""


class LeaseHeldError(StateStoreError):
    """The run is not runnable now: another leg holds a live lease, or it waits, or it ended."""


class LeaseLostError(StateStoreError):
    """A fenced write whose token is no longer the run's current lease: another leg owns the run.

    Nothing was written. The caller must stop at once.
    """


class SequenceConflictError(StateStoreError):
    """An append whose first seq is not the run's next seq."""


class BatchTooLargeError(StateStoreError, ValueError):
    """An append batch larger than the backend can write atomically."""


class CorruptStateError(StateStoreError):
    """Stored bytes that fail their checksum, hash or format check.

    The message names the run, the seq (when the value belongs to a journal entry), the tier and
    the key, so an operator can find the damaged record.
    """

    def __init__(
        self,
        reason: str,
        *,
        run_id: str | None = None,
        seq: int | None = None,
        tier: str | None = None,
        key: str | None = None,
    ) -> None:
        self.reason = reason
        self.run_id = run_id
        self.seq = seq
        self.tier = tier
        self.key = key
        where = ", ".join(
            f"{label}={value}"
            for label, value in (("run", run_id), ("seq", seq), ("tier", tier), ("key", key))
            if value is not None
        )
        super().__init__(
            f"corrupt state ({where}): {reason}" if where else f"corrupt state: {reason}"
        )


class SchemaVersionError(StateStoreError):
    """A stored record written by a newer major schema version than this code reads."""


class StoreUnavailableError(StateStoreError):
    """The backing server cannot be reached (connection refused, timed out, reset).

    Retrying later is safe: the write either happened whole or not at all.
    """

    transient = True


class StoreFullError(StoreUnavailableError):
    """The store has no room (a full disk, a quota): retrying will not help until it is freed."""

    transient = False


class BlobNotFoundError(StateStoreError, KeyError):
    """A blob reference that points at nothing in the cold tier."""

    seq: int | None = None  # the journal entry that references it, when known

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "blob not found"
