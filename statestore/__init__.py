"""Bi-tier persistence for durable runs: a hot tier for records, journals and leases, a cold tier
for large immutable values, and the routing between them.

``statestore`` knows runs, journals and leases as data; it knows nothing of Python functions,
Lambda or agents. Backend modules (redis, boto3) are imported only when their URL is opened.
"""

from statestore.codec import canonical_hash, content_hash, pack
from statestore.cold import ColdTier
from statestore.errors import (
    BatchTooLargeError,
    BlobNotFoundError,
    CorruptStateError,
    InvalidRunIdError,
    InvalidStoreUrlError,
    LeaseHeldError,
    LeaseLostError,
    RunConflictError,
    RunNotFoundError,
    SchemaVersionError,
    SequenceConflictError,
    StateStoreError,
    StoreFullError,
    StoreUnavailableError,
)
from statestore.hot import HotTier, ListedRun, RunCursor, RunEndedError
from statestore.ids import validate_run_id
from statestore.leased_run import Committed, LeasedRun, Operation, UnstorableValueError
from statestore.logs import LogContentionError, LogInfo, LogRecord
from statestore.models import (
    BlobRef,
    CorruptRun,
    EntryKind,
    EntryStatus,
    ErrorInfo,
    JournalEntry,
    Lease,
    RunCounters,
    RunRecord,
    RunStatus,
    RunUpdate,
    Signal,
    StoredValue,
    entry_memory,
    utcnow,
)
from statestore.routing import StateStore, TierHint
from statestore.urls import (
    COLD_ENV,
    DEFAULT_COLD_URL,
    DEFAULT_HOT_URL,
    HOT_ENV,
    open_cold,
    open_hot,
    open_store,
)

__all__ = [
    "COLD_ENV",
    "DEFAULT_COLD_URL",
    "DEFAULT_HOT_URL",
    "HOT_ENV",
    "BatchTooLargeError",
    "BlobNotFoundError",
    "BlobRef",
    "ColdTier",
    "Committed",
    "CorruptRun",
    "CorruptStateError",
    "EntryKind",
    "EntryStatus",
    "ErrorInfo",
    "HotTier",
    "InvalidRunIdError",
    "InvalidStoreUrlError",
    "JournalEntry",
    "Lease",
    "LeaseHeldError",
    "LeaseLostError",
    "LeasedRun",
    "ListedRun",
    "LogContentionError",
    "LogInfo",
    "LogRecord",
    "Operation",
    "RunConflictError",
    "RunCounters",
    "RunCursor",
    "RunEndedError",
    "RunNotFoundError",
    "RunRecord",
    "RunStatus",
    "RunUpdate",
    "SchemaVersionError",
    "SequenceConflictError",
    "Signal",
    "StateStore",
    "StateStoreError",
    "StoreFullError",
    "StoreUnavailableError",
    "StoredValue",
    "TierHint",
    "UnstorableValueError",
    "canonical_hash",
    "content_hash",
    "entry_memory",
    "open_cold",
    "open_hot",
    "open_store",
    "pack",
    "utcnow",
    "validate_run_id",
]
