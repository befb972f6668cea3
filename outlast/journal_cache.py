"""A process-wide cache of run journals, so a warm process loads only what is new.

A warm Lambda container (or a worker) that ran a run's previous leg keeps its journal entries;
the next leg reads only entries after the last cached seq. Entries are immutable and seqs are
dense, so the cache can never be stale, only short. Decoded values are *not* cached: user code
may mutate what a step returned, and a later replay must see what was committed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from statestore import HotTier, JournalEntry


class JournalCache:
    def __init__(self, max_runs: int = 64) -> None:
        self.max_runs = max_runs
        self._runs: OrderedDict[str, list[JournalEntry]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0  # entries served from memory, for tests and metrics

    def load(self, hot: HotTier, run_id: str) -> list[JournalEntry]:
        with self._lock:
            cached = list(self._runs.get(run_id, ()))
        fresh = hot.read_journal(run_id, after_seq=len(cached) - 1)
        self.hits += len(cached)
        entries = cached + fresh
        self.store(run_id, entries)
        return entries

    def store(self, run_id: str, entries: list[JournalEntry]) -> None:
        with self._lock:
            self._runs[run_id] = list(entries)
            self._runs.move_to_end(run_id)
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)


PROCESS_CACHE = JournalCache()
