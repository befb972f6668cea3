"""In-memory tiers, for unit tests and for trying things in one process."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from statestore.cold import ColdTier
from statestore.errors import BlobNotFoundError, RunNotFoundError
from statestore.hot import HotTier, ListedRun, RunCursor
from statestore.models import JournalEntry, RunRecord, Signal


class MemoryHotTier(HotTier):
    scheme = "memory"

    def __init__(self, *, share: MemoryHotTier | None = None, **kwargs: Any) -> None:
        """``share``: another handle whose data this one sees (as a second connection would)."""
        super().__init__(**kwargs)
        self._lock: threading.Lock = share._lock if share else threading.Lock()
        self._runs: dict[str, RunRecord] = share._runs if share else {}
        self._entries: dict[str, list[JournalEntry]] = share._entries if share else {}
        self._signals: dict[str, dict[str, Signal]] = share._signals if share else {}
        # log id -> (label, records)
        self._logs: dict[str, tuple[str, list[bytes]]] = share._logs if share else {}

    def _insert_run(self, record: RunRecord) -> RunRecord | None:
        with self._lock:
            existing = self._runs.get(record.run_id)
            if existing is not None:
                return existing
            self._runs[record.run_id] = record
            self._entries[record.run_id] = []
            return None

    def _load_run(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)

    def _write(
        self,
        old: RunRecord,
        new: RunRecord,
        entries: Sequence[JournalEntry],
        take: Signal | None,
    ) -> RunRecord | None:
        with self._lock:
            current = self._runs.get(old.run_id)
            if current is None:
                raise RunNotFoundError(old.run_id)
            if current.version != old.version:
                return current
            self._runs[old.run_id] = new
            self._entries[old.run_id].extend(entries)
            if take is not None:
                self._signals.get(old.run_id, {}).pop(take.signal_id, None)
            return None

    def _truncate(self, run_id: str, keep: int) -> None:
        with self._lock:
            if run_id in self._entries:
                del self._entries[run_id][keep:]

    def _load_entries(self, run_id: str, after_seq: int) -> Iterable[JournalEntry]:
        with self._lock:
            return list(self._entries.get(run_id, [])[after_seq + 1 :])

    def _insert_signal(self, signal: Signal) -> None:
        with self._lock:
            self._signals.setdefault(signal.run_id, {})[signal.signal_id] = signal

    def _delete_signal(self, signal: Signal) -> bool:
        with self._lock:
            return self._signals.get(signal.run_id, {}).pop(signal.signal_id, None) is not None

    def _load_signals(self, run_id: str, name: str | None) -> list[Signal]:
        with self._lock:
            found = self._signals.get(run_id, {}).values()
            return sorted(
                (s for s in found if name is None or s.name == name), key=lambda s: s.signal_id
            )

    def _due(self, now: datetime, limit: int) -> list[str]:
        with self._lock:
            due = [
                (at, r.run_id)
                for r in self._runs.values()
                if (at := r.due_at()) is not None and at <= now
            ]
        return [run_id for _, run_id in sorted(due)[:limit]]

    def _list_runs(self, limit: int, before: RunCursor | None) -> list[ListedRun]:
        with self._lock:
            keyed = [((r.created_at.timestamp(), r.run_id), r) for r in self._runs.values()]
        keyed.sort(key=lambda pair: pair[0], reverse=True)
        listed: list[ListedRun] = [
            (cursor, r) for cursor, r in keyed if before is None or cursor < before
        ]  # objects: never corrupt
        return listed[:limit]

    def _delete_run(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)
            self._entries.pop(run_id, None)
            self._signals.pop(run_id, None)

    def _ended(self, before: datetime, limit: int) -> list[str]:
        # A scan, like _due: this tier is for tests and single processes, not for big stores.
        with self._lock:
            ended = [
                (at, r.run_id)
                for r in self._runs.values()
                if (at := self.ended_at(r)) is not None and at <= before
            ]
        return [run_id for _, run_id in sorted(ended)[:limit]]

    def _log_insert(self, log_id: str, position: int, data: bytes, label: str) -> bool:
        with self._lock:
            _, records = self._logs.setdefault(log_id, (label, []))
            if len(records) != position:
                return False
            records.append(bytes(data))
            return True

    def _log_tail(self, log_id: str) -> int:
        with self._lock:
            return len(self._logs.get(log_id, ("", []))[1])

    def _log_load(self, log_id: str, start: int) -> Iterable[tuple[int, bytes]]:
        with self._lock:
            records = list(self._logs.get(log_id, ("", []))[1][start:])
        return list(enumerate(records, start))

    def _log_delete(self, log_id: str) -> None:
        with self._lock:
            self._logs.pop(log_id, None)

    def _log_list(self, prefix: str) -> list[tuple[str, str]]:
        with self._lock:
            found = [(i, label) for i, (label, _) in self._logs.items() if i.startswith(prefix)]
        return sorted(found)

    def _delete_ended(self, claimed: RunRecord) -> bool:
        with self._lock:
            current = self._runs.get(claimed.run_id)
            if current is None or (current.incarnation, current.version) != (
                claimed.incarnation,
                claimed.version,
            ):
                return False
            self._entries.pop(claimed.run_id, None)
            self._signals.pop(claimed.run_id, None)
            del self._runs[claimed.run_id]
            return True


class MemoryColdTier(ColdTier):
    scheme = "memory"

    def __init__(self) -> None:
        self._blobs: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def _put(self, run_id: str, sha256: str, data: bytes) -> None:
        with self._lock:
            self._blobs.setdefault((run_id, sha256), bytes(data))

    def _get(self, run_id: str, sha256: str) -> bytes:
        try:
            return self._blobs[(run_id, sha256)]
        except KeyError:
            raise BlobNotFoundError(f"no blob {self.key(run_id, sha256)} in memory") from None

    def _delete_run(self, run_id: str) -> int:
        with self._lock:
            keys = [k for k in self._blobs if k[0] == run_id]
            for k in keys:
                del self._blobs[k]
            return len(keys)
