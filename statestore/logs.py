"""Record logs: append-only logs in the hot tier that belong to no run.

A run's journal is written only by the leg holding the run's lease, one seq at a time. Some state
has no run and no lease: a LangGraph thread's checkpoints, written by whichever process runs the
graph. A *record log* is the hot tier's home for such state: an ordered list of opaque records
under a log id, appended at dense positions 0, 1, 2, ... and read from any position on.

- An append is one conditional insert ("position p is still free"), so concurrent writers never
  overwrite each other: the loser re-reads the tail and takes the next position. The tier
  remembers each log's tail, so a single writer pays no read per append.
- Positions are dense, so a reader that has applied records ``0..n-1`` asks for ``start=n`` and
  can never miss a record that another writer was still inserting at a lower position.
- A record is bytes inline, or a ``BlobRef`` to the cold tier (``StateStore.place`` decides), so
  a log has no size cap beyond the cold tier's.
- A log carries a label (for example the LangGraph thread id, which need not be a legal id),
  written with its first record, and ``list_logs`` finds logs by id prefix without a scan.

Log ids follow the run-id rule (1-64 of ``A-Za-z0-9_-``): every backend can use them in keys.
Callers name their logs with a prefix of their own (``lgt-`` for LangGraph threads), so logs of
different users never meet; a log never shares a key with a run.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import msgpack

from statestore.errors import CorruptStateError, StateStoreError
from statestore.ids import validate_run_id
from statestore.models import BlobRef, StoredValue

_INLINE = b"\x00"
_COLD = b"\x01"
_APPEND_PATIENCE = 10.0  # seconds of lost races before an append gives up
_MAX_LABEL = 1024


@dataclass(frozen=True)
class LogRecord:
    """One record of a log: its position and its payload (inline bytes, or a cold reference)."""

    position: int
    payload: StoredValue


@dataclass(frozen=True)
class LogInfo:
    """A log found by ``list_logs``: its id and the label it was created with."""

    log_id: str
    label: str


class LogContentionError(StateStoreError):
    """An append kept losing its position to other writers for too long."""

    transient = True


def pack_payload(payload: StoredValue) -> bytes:
    """The stored form of a record: a tag byte, then the bytes or the reference."""
    if isinstance(payload, BlobRef):
        return _COLD + bytes(msgpack.packb(payload.model_dump(mode="json"), use_bin_type=True))
    return _INLINE + bytes(payload)


def unpack_payload(data: bytes, *, tier: str, log_id: str, position: int) -> StoredValue:
    tag, body = data[:1], data[1:]
    if tag == _INLINE:
        return bytes(body)
    if tag == _COLD:
        try:
            return BlobRef(**msgpack.unpackb(body, raw=False))
        except Exception as exc:  # any decoding failure is damage, named below
            raise CorruptStateError(
                f"log record {position} holds a damaged cold reference: {exc}",
                tier=tier,
                key=f"logs/{log_id}/{position}",
            ) from exc
    raise CorruptStateError(
        f"log record {position} has an unknown tag {tag!r}",
        tier=tier,
        key=f"logs/{log_id}/{position}",
    )


class RecordLogs(ABC):
    """The record-log half of a hot tier: the policy here, five primitives per backend."""

    scheme: ClassVar[str] = "abstract"

    def __init__(self) -> None:
        self._log_tails: dict[str, int] = {}  # log id -> the next free position, as last seen
        self._log_lock = threading.Lock()

    # ------------------------------------------------------------------ primitives

    @abstractmethod
    def _log_insert(self, log_id: str, position: int, data: bytes, label: str) -> bool:
        """Insert record ``position`` (and, at position 0, the log's label) if it is the log's
        tail: ``position`` is free and ``position - 1`` is taken. False otherwise. Atomic.

        Both halves matter: the first keeps writers from overwriting each other, the second
        keeps a writer whose remembered tail predates a ``delete_log`` from leaving a gap."""

    @abstractmethod
    def _log_tail(self, log_id: str) -> int:
        """The number of records in the log (its next free position), read consistently."""

    @abstractmethod
    def _log_load(self, log_id: str, start: int) -> Iterable[tuple[int, bytes]]:
        """The stored records from ``start`` on, in position order."""

    @abstractmethod
    def _log_delete(self, log_id: str) -> None:
        """Remove the log, its records and its label."""

    @abstractmethod
    def _log_list(self, prefix: str) -> list[tuple[str, str]]:
        """(log id, label) of every log whose id starts with ``prefix``, in id order."""

    # ------------------------------------------------------------------ policy

    def append_log(self, log_id: str, payload: StoredValue, *, label: str = "") -> int:
        """Append ``payload`` to the log (created by its first append); return its position."""
        validate_run_id(log_id)
        if len(label) > _MAX_LABEL:
            raise ValueError(f"a log label is at most {_MAX_LABEL} characters, not {len(label)}")
        data = pack_payload(payload)
        with self._log_lock:
            position = self._log_tails.get(log_id)
        if position is None:
            position = self._log_tail(log_id)
        deadline = time.monotonic() + _APPEND_PATIENCE
        losses = 0
        while not self._log_insert(log_id, position, data, label):
            # Another writer took the position (or our remembered tail is stale): look again.
            losses += 1
            if time.monotonic() > deadline:
                raise LogContentionError(
                    f"log {log_id!r}: an append lost its position {losses} times in "
                    f"{_APPEND_PATIENCE:.0f} s"
                )
            if losses > 2:
                time.sleep(random.uniform(0, min(0.05, 0.002 * 2**losses)))
            position = self._log_tail(log_id)
        with self._log_lock:
            self._log_tails[log_id] = max(self._log_tails.get(log_id, 0), position + 1)
        return position

    def read_log(self, log_id: str, start: int = 0, *, limit: int | None = None) -> list[LogRecord]:
        """The log's records from position ``start`` on, in order, at most ``limit`` of them (the
        backends read a page at a time, so a limit also bounds what is read); [] for a log that
        is empty or does not exist."""
        validate_run_id(log_id)
        if start < 0:
            raise ValueError(f"a log position is 0 or more, not {start}")
        if limit is not None and limit < 0:
            raise ValueError(f"a read limit is 0 or more, not {limit}")
        records = [
            LogRecord(p, unpack_payload(d, tier=self.scheme, log_id=log_id, position=p))
            for p, d in itertools.islice(self._log_load(log_id, start), limit)
        ]
        for expected, record in enumerate(records, start):
            if record.position != expected:
                raise CorruptStateError(
                    f"log {log_id!r} has no record at position {expected} (the next is "
                    f"{record.position})",
                    tier=self.scheme,
                    key=f"logs/{log_id}/{expected}",
                )
        if records:
            with self._log_lock:
                tail = records[-1].position + 1
                self._log_tails[log_id] = max(self._log_tails.get(log_id, 0), tail)
        return records

    def delete_log(self, log_id: str) -> None:
        """Remove a log (records and label). Deleting a log that does not exist does nothing."""
        validate_run_id(log_id)
        self._log_delete(log_id)
        with self._log_lock:
            self._log_tails.pop(log_id, None)

    def list_logs(self, prefix: str = "") -> list[LogInfo]:
        """Every log whose id starts with ``prefix``, in id order, with its label."""
        return [LogInfo(log_id, label) for log_id, label in self._log_list(prefix)]
