"""How a leg asks for the next one: ``Dispatcher.continue_run(run_id, leg)``.

Lambda re-invokes itself asynchronously, a worker pushes to its queue, the local emulator starts a
subprocess. Whatever the transport, a continuation may be lost or delivered twice: a lost one is
found again by the sweeper (the run is due), a duplicate dies at the lease.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol


class Dispatcher(Protocol):
    def continue_run(self, run_id: str, leg: int) -> None:
        """Arrange for leg ``leg`` of ``run_id`` to start soon. May be called more than once."""


class CollectingDispatcher:
    """Keeps continuations in memory for a driver loop in the same process to consume."""

    def __init__(self) -> None:
        self._queue: deque[tuple[str, int]] = deque()
        self._lock = threading.Lock()

    def continue_run(self, run_id: str, leg: int) -> None:
        with self._lock:
            self._queue.append((run_id, leg))

    def pop(self) -> tuple[str, int] | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)


class NullDispatcher:
    """Dispatches nothing: the caller drives the next leg itself (or the sweeper will)."""

    def continue_run(self, run_id: str, leg: int) -> None:
        return None
