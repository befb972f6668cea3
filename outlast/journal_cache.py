"""The journal a leg replays, and a process-wide cache of journals for warm processes.

A warm Lambda container (or a worker) that ran a run's previous leg keeps its journal entries;
the next leg reads only entries after the last cached seq. The cache holds only what a commit
returned (``LeasedRun.written``) or what was read from the store, never what a leg merely meant
to write.

- Keyed by run *incarnation* and journal epoch: a run deleted and created again under the same
  id is another run, and a retry that cut the journal back starts a new epoch; neither finds
  anything of the old journal here.
- Bounded by (estimated) bytes, least recently used out first; a run too large for it is simply
  read from the store each leg.
- Checked against the record: the entries must end exactly at the record's ``next_seq``. A
  journal shorter (or longer) than its record is corruption, reported before anything re-runs.
- Dropped by the leg on every path but a clean hand-off or suspend.

The replay reads the store a page at a time as the code consumes it, so resuming a journal of
100,000 entries never holds them all in memory. Decoded values are not cached: user code may
mutate what a step returned, and a later replay must see what was committed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from statestore import HotTier, JournalEntry, RunRecord, entry_memory

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def entries_size(entries: Sequence[JournalEntry]) -> int:
    return sum(entry_memory(e) for e in entries)


class ReplayJournal:
    """The entries of a run up to its record's ``next_seq``, read as they are replayed."""

    def __init__(
        self,
        record: RunRecord,
        cached: list[JournalEntry],
        stream: Iterator[JournalEntry],
        keep_bytes: int,
    ) -> None:
        self.total = record.next_seq
        self._cached = cached
        self._stream = stream
        self._index = 0  # entries consumed
        self._head: JournalEntry | None = None
        self._kept: list[JournalEntry] | None = list(cached)
        self._kept_bytes = entries_size(cached)
        self._keep_bytes = keep_bytes

    def peek(self) -> JournalEntry | None:
        """The next entry to replay, or None when the journal is replayed in full."""
        if self._head is None and self._index < self.total:
            if self._index < len(self._cached):
                self._head = self._cached[self._index]
            else:
                # The store's iterator checks density and the record's count as it goes.
                self._head = next(self._stream, None)
        return self._head

    def advance(self) -> JournalEntry:
        entry = self.peek()
        assert entry is not None, "advance past the end of the journal"
        self._head = None
        self._index += 1
        if self._kept is not None and self._index > len(self._cached):
            self._kept_bytes += entry_memory(entry)
            if self._kept_bytes > self._keep_bytes:
                self._kept = None  # too large to cache: the next leg reads the store
            else:
                self._kept.append(entry)
        return entry

    @property
    def replayed(self) -> int:
        return self._index

    @property
    def kept(self) -> list[JournalEntry] | None:
        """The entries replayed so far, if they fit the cache's budget."""
        return self._kept


class JournalCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        # run id -> (life, entries, size), where life names the incarnation and the journal's
        # epoch (a retry that cut the journal back moves it); one life per id at a time.
        self._runs: OrderedDict[str, tuple[str, list[JournalEntry], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0  # entries served from memory, for tests and metrics

    def open(self, hot: HotTier, record: RunRecord) -> ReplayJournal:
        """The run's journal to replay: cached entries, then the store's after them."""
        with self._lock:
            life, cached, _ = self._runs.get(record.run_id, ("", [], 0))
        if life != _life(record) or len(cached) > record.next_seq:
            # Another life of this id or its journal, or more than the record counts.
            cached = []
        with self._lock:
            self.hits += len(cached)
        stream = hot.iter_journal(record.run_id, after_seq=len(cached) - 1, until=record.next_seq)
        return ReplayJournal(record, cached, stream, keep_bytes=self.max_bytes // 4)

    def load(self, hot: HotTier, record: RunRecord) -> list[JournalEntry]:
        """The run's whole journal as a list (checked against the record)."""
        journal = self.open(hot, record)
        out: list[JournalEntry] = []
        while journal.peek() is not None:
            out.append(journal.advance())
        return out

    def store(self, record: RunRecord, entries: list[JournalEntry]) -> None:
        """Keep ``entries`` (the journal up to ``record.next_seq``) for the run's next leg."""
        if len(entries) != record.next_seq:
            self.forget(record.run_id)
            return
        size = entries_size(entries)
        with self._lock:
            self._drop_locked(record.run_id)
            if size > self.max_bytes // 4:
                return
            self._runs[record.run_id] = (_life(record), list(entries), size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._runs:
                _, (_, _, dropped) = self._runs.popitem(last=False)
                self._bytes -= dropped

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._drop_locked(run_id)

    def _drop_locked(self, run_id: str) -> None:
        kept = self._runs.pop(run_id, None)
        if kept is not None:
            self._bytes -= kept[2]

    def __len__(self) -> int:
        return len(self._runs)


def _life(record: RunRecord) -> str:
    return f"{record.incarnation}/{record.epoch}"


PROCESS_CACHE = JournalCache()
