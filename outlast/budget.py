"""The leg's time budget: how long it may still run, and whether the next step fits.

A leg hands off *before* its platform kills it: before each new step it asks whether the step's
expected duration plus a safety margin fits in the time left. The expected duration is learned
from the journal: the slowest of the recent runs of that step name (a step that took 40 s last
time will likely take about that again; the slowest recent one errs on the side of handing off).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable

from statestore import EntryKind, JournalEntry

_RECENT = 5


class StepTimings:
    """Durations of recent runs of each step name, from the journal and from this leg."""

    def __init__(self, entries: Iterable[JournalEntry] = ()) -> None:
        self._recent: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=_RECENT))
        for entry in entries:
            self.observe_entry(entry)

    def observe_entry(self, entry: JournalEntry) -> None:
        if entry.kind is EntryKind.STEP:
            self.observe(_base_name(entry.name), entry.duration_s)

    def observe(self, name: str, seconds: float) -> None:
        self._recent[_base_name(name)].append(max(0.0, seconds))

    def expected(self, name: str) -> float:
        recent = self._recent.get(_base_name(name))
        return max(recent) if recent else 0.0


def _base_name(name: str) -> str:
    # Items of ctx.map are journaled as "fn[3]"; they share one estimate.
    cut = name.find("[")
    return name if cut < 0 else name[:cut]


class Budget:
    """Time left in this leg, a safety margin, and a drain flag (set by SIGTERM handlers)."""

    def __init__(
        self,
        remaining: Callable[[], float] | None = None,
        *,
        margin: float = 2.0,
    ) -> None:
        self._remaining = remaining
        self.margin = margin
        self.drain = threading.Event()
        self.drain_reason = ""

    @classmethod
    def unlimited(cls) -> Budget:
        return cls(None, margin=0.0)

    @classmethod
    def until(cls, deadline: float, *, margin: float = 2.0) -> Budget:
        """A budget ending at ``deadline`` on the ``time.monotonic()`` clock."""
        return cls(lambda: deadline - time.monotonic(), margin=margin)

    @classmethod
    def seconds(cls, seconds: float, *, margin: float = 2.0) -> Budget:
        return cls.until(time.monotonic() + seconds, margin=margin)

    @classmethod
    def from_lambda_context(cls, context: object, *, margin: float = 2.0) -> Budget:
        """Lambda tells the time left in each invocation; it stops the function with no warning."""
        get = getattr(context, "get_remaining_time_in_millis")  # noqa: B009 - duck-typed context
        return cls(lambda: float(get()) / 1000.0, margin=margin)

    def remaining(self) -> float:
        return float("inf") if self._remaining is None else self._remaining()

    def request_drain(self, reason: str) -> None:
        self.drain_reason = reason
        self.drain.set()

    def why_stop(self, expected: float) -> str | None:
        """Why the leg must hand off instead of starting a step of ``expected`` seconds, or None."""
        if self.drain.is_set():
            return f"drain requested ({self.drain_reason or 'signal'})"
        left = self.remaining()
        if expected + self.margin > left:
            return (
                f"budget: {left:.2f}s left, next step expected {expected:.2f}s "
                f"+ {self.margin:.2f}s margin"
            )
        return None
