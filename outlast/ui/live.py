"""Server-sent events for the console's live pages.

A page in progress subscribes to ``/api/runs/{id}/events`` (or ``/api/runs/events`` for the
listing) and is sent a small state document each time what it shows changed. Each watched thing
is read by one poller, however many pages watch it, and only while one does: the store has no
change feed, so the cost of following a run is one record read every ``RUN_POLL_S``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

# A commit shows on the page within about a second: half of it is this, the rest the page's fetch.
RUN_POLL_S = 0.5
# A listing costs more to read (a filtered one up to the scan cap): it is read at most every
# second, and never more often than five times its last read took, so a costly listing keeps the
# store busy at most a sixth of the time.
LIST_POLL_S = 1.0
LIST_COST_FACTOR = 5.0
# How often a stream looks at its feed, at the server's stop flag and at its client.
TICK_S = 0.2
# A comment line now and then: proxies keep the connection, and a dead client is noticed.
PING_S = 15.0
# A stream ends after this long and the browser's EventSource reconnects by itself; under a
# server that never tells the feeds to stop, this bounds how long a stream can hold up shutdown.
STREAM_MAX_S = 300.0
# Sent first in each stream: how long the browser waits before reconnecting.
RETRY_MS = 1000


@dataclass
class _Feed:
    read: Callable[[], dict[str, Any]]
    interval: float
    cost_factor: float
    state: dict[str, Any] | None = None
    changes: int = 0
    watchers: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Feeds:
    """The pollers behind the event streams, keyed by what they watch."""

    def __init__(self) -> None:
        self._feeds: dict[str, _Feed] = {}
        # Set by ``ConsoleServer`` as shutdown starts: uvicorn waits for every open response to
        # end before it stops, and an event stream never ends by itself.
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def watched(self) -> int:
        """How many things are being polled now (for tests: a closed page stops its poller)."""
        return len(self._feeds)

    async def _poll(self, key: str, feed: _Feed) -> None:
        try:
            while feed.watchers > 0 and not self.stopping:
                started = time.monotonic()
                state = await run_in_threadpool(feed.read)
                took = time.monotonic() - started
                if state != feed.state:
                    feed.state = state
                    feed.changes += 1
                await asyncio.sleep(max(feed.interval, took * feed.cost_factor))
        finally:
            # No await between the loop's last check and here: a watcher that arrives later
            # finds no feed and starts a new one, never one whose poller has gone.
            if self._feeds.get(key) is feed:
                del self._feeds[key]

    async def stream(
        self,
        key: str,
        read: Callable[[], dict[str, Any]],
        disconnected: Callable[[], Awaitable[bool]],
        *,
        interval: float = RUN_POLL_S,
        cost_factor: float = 0.0,
        last: Callable[[dict[str, Any]], bool] = lambda state: False,
    ) -> AsyncIterator[str]:
        """The text of one event stream: the current state, then each change, until the client
        goes, the server stops, ``last(state)`` says nothing more will change, or
        ``STREAM_MAX_S`` passes."""
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = _Feed(read, interval, cost_factor)
            feed.task = asyncio.create_task(self._poll(key, feed))
        feed.watchers += 1
        try:
            yield f"retry: {RETRY_MS}\n\n"
            seen = -1
            started = sent = time.monotonic()
            while not self.stopping and time.monotonic() - started < STREAM_MAX_S:
                if feed.changes != seen and feed.state is not None:
                    seen = feed.changes
                    yield f"id: {seen}\nevent: state\ndata: {json.dumps(feed.state)}\n\n"
                    sent = time.monotonic()
                    if last(feed.state):
                        return
                elif time.monotonic() - sent >= PING_S:
                    yield ": ping\n\n"
                    sent = time.monotonic()
                if await disconnected():
                    return
                await asyncio.sleep(TICK_S)
        finally:
            feed.watchers -= 1
