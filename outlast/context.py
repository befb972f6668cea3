"""``Context``: what a durable function calls to do durable things.

Every call is one journaled operation. While the journal holds an entry at the current seq, the
call *replays*: it checks that the entry is the same kind and name as the call, and returns the
stored value without running anything. Past the end of the journal the call runs *live*, and its
result is committed (cold tier first for large values, then one fenced hot append) before the
code sees it.

Clock and random reads are buffered and committed with the next write: if the leg dies before
that, nothing outside saw them, and the next leg simply draws again.
"""

from __future__ import annotations

import logging
import random as _random
import threading
import time
import traceback
import uuid as _uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from outlast.budget import Budget, StepTimings
from outlast.errors import (
    DurableControl,
    HandOff,
    LeaseLost,
    NonDeterminismError,
    StepFailedError,
    Suspend,
)
from outlast.faults import FaultPlan
from outlast.retry import RetryPolicy
from outlast.values import rebuild, to_plain
from statestore import (
    EntryKind,
    EntryStatus,
    ErrorInfo,
    JournalEntry,
    LeaseLostError,
    RunUpdate,
    StateStore,
    utcnow,
)
from statestore.routing import TierHint

T = TypeVar("T")
R = TypeVar("R")
StepHook = Callable[[str, int, str], AbstractContextManager[None]]

# Waits (retry backoff, short sleeps) up to this long happen inside the leg; longer ones suspend
# the run so no compute is held while nothing happens.
DEFAULT_INLINE_WAIT = 1.0


def error_info(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(
        type=type(exc).__qualname__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )


def step_name_of(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


@dataclass
class LegStats:
    steps_executed: int = 0
    steps_replayed: int = 0
    commits: int = 0
    commit_seconds: float = 0.0
    step_seconds: float = 0.0  # time inside live step functions (the work a restart re-spends)


@dataclass
class _Journal:
    """This leg's view of the run's journal: what was loaded plus what this leg wrote."""

    entries: list[JournalEntry]
    loaded: int  # how many entries came from the store (the replay part)
    cursor: int = 0
    pending: list[JournalEntry] = field(default_factory=list)  # buffered, not yet committed

    def peek(self) -> JournalEntry | None:
        return self.entries[self.cursor] if self.cursor < len(self.entries) else None

    @property
    def next_seq(self) -> int:
        return len(self.entries)


class _ReplayQuietLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Logs only when live: a replay re-executes the code, not the history it already logged."""

    def __init__(self, logger: logging.Logger, ctx: Context) -> None:
        super().__init__(logger, {})
        self._ctx = ctx

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's API
        return not self._ctx.is_replaying and self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("run_id", self._ctx.run_id)
        extra.setdefault("seq", self._ctx._journal.next_seq)
        kwargs["extra"] = extra
        return msg, kwargs


class Context:
    """The durable function's handle on its run. One per leg; not to be shared across runs."""

    def __init__(
        self,
        *,
        store: StateStore,
        run_id: str,
        token: int,
        leg: int,
        journal: list[JournalEntry],
        budget: Budget,
        retry: RetryPolicy,
        inline_wait: float = DEFAULT_INLINE_WAIT,
        faults: FaultPlan | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.run_id = run_id
        self.leg = leg
        self._store = store
        self._token = token
        self._journal = _Journal(entries=list(journal), loaded=len(journal))
        self._budget = budget
        self._retry = retry
        self._inline_wait = inline_wait
        self._faults = faults if faults is not None else FaultPlan()
        self._timings = StepTimings(journal)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._lost = False
        self._live = False
        self.stats = LegStats()
        # Wraps each live step attempt (platforms trace steps with it): hook(name, attempt, key).
        self.step_hook: StepHook | None = None
        self.log = _ReplayQuietLogger(logger or logging.getLogger("outlast.run"), self)

    # ------------------------------------------------------------------ properties

    @property
    def is_replaying(self) -> bool:
        """True until this leg's first live operation.

        Code between the last journaled operation and the next one may also have run in an
        earlier leg (which then suspended or handed off there), so it counts as replay too.
        """
        return not self._live and self._journal.loaded > 0

    @property
    def step_key(self) -> str:
        """A stable idempotency key for the step being run: the same on every attempt and leg."""
        key: str | None = getattr(self._local, "step_key", None)
        if key is None:
            raise RuntimeError("ctx.step_key is only available inside a step")
        return key

    def annotate(self, **meta: str | int | float | bool | None) -> None:
        """Attach small facts (token usage, model id) to the journal entry of the running step."""
        current: dict[str, Any] | None = getattr(self._local, "meta", None)
        if current is None:
            raise RuntimeError("ctx.annotate is only available inside a step")
        current.update(meta)

    @property
    def seq(self) -> int:
        """The seq the next operation will have (or replay)."""
        return self._journal.cursor

    @property
    def journal(self) -> Sequence[JournalEntry]:
        """The entries this leg knows of (loaded and written), oldest first."""
        return tuple(self._journal.entries)

    # ------------------------------------------------------------------ steps

    def step(
        self,
        fn: Callable[..., R],
        *args: Any,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        tier: TierHint = None,
        **kwargs: Any,
    ) -> R:
        """Run ``fn(*args, **kwargs)`` once, durably: a replay returns the committed result."""
        step = name or step_name_of(fn)
        start_seq = self._journal.cursor
        attempt, retry_at = 0, None
        while (entry := self._journal.peek()) is not None:
            self._expect(entry, EntryKind.STEP, step)
            self._journal.cursor += 1
            if entry.status is EntryStatus.RETRY:
                attempt, retry_at = entry.attempt, _retry_at(entry)
                continue
            self.stats.steps_replayed += 1
            if entry.status is EntryStatus.ERROR:
                assert entry.error is not None
                raise StepFailedError(step, entry.error, entry.attempt)
            return rebuild(fn, self._value(entry))  # type: ignore[no-any-return]
        return self._live_step(
            fn,
            args,
            kwargs,
            step,
            retry or self._retry,
            tier,
            attempt,
            retry_at,
            key=f"{self.run_id}:{start_seq}:{step}",
        )

    def map(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        name: str | None = None,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        tier: TierHint = None,
    ) -> list[R]:
        """Run ``fn(item)`` for each item as its own durable step, ``max_concurrency`` at once.

        Results come back in item order. Each item is journaled as ``name[i]`` when it finishes,
        so an interruption costs only the items in flight. If items fail for good, the failure of
        the lowest index is raised (as ``StepFailedError``) once every item has ended.
        """
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        work = list(items)
        base = name or step_name_of(fn)
        start_seq = self._journal.cursor
        results: dict[int, Any] = {}
        failures: dict[int, StepFailedError] = {}
        retries: dict[int, tuple[int, datetime | None]] = {}
        open_items = set(range(len(work)))
        while open_items and (entry := self._journal.peek()) is not None:
            index = _map_index(entry, base)
            if entry.kind is not EntryKind.STEP or index is None or index not in open_items:
                raise NonDeterminismError(
                    self.run_id,
                    entry.seq,
                    f"{entry.kind.value} {entry.name!r}",
                    f"step '{base}[i]' for one of the items {sorted(open_items)}",
                )
            self._journal.cursor += 1
            if entry.status is EntryStatus.RETRY:
                retries[index] = (entry.attempt, _retry_at(entry))
                continue
            open_items.discard(index)
            self.stats.steps_replayed += 1
            if entry.status is EntryStatus.ERROR:
                assert entry.error is not None
                failures[index] = StepFailedError(entry.name, entry.error, entry.attempt)
            else:
                results[index] = rebuild(fn, self._value(entry))

        stops: list[DurableControl] = []

        def run_item(index: int) -> None:
            attempt, retry_at = retries.get(index, (0, None))
            try:
                results[index] = self._live_step(
                    fn,
                    (work[index],),
                    {},
                    f"{base}[{index}]",
                    retry or self._retry,
                    tier,
                    attempt,
                    retry_at,
                    key=f"{self.run_id}:{start_seq}:{base}[{index}]",
                )
            except StepFailedError as exc:
                failures[index] = exc
            except (HandOff, Suspend, LeaseLost) as exc:
                stops.append(exc)

        if open_items:
            pending = sorted(open_items)
            if max_concurrency == 1 or len(pending) == 1:
                for index in pending:
                    if stops:
                        break
                    run_item(index)
            else:
                with ThreadPoolExecutor(
                    max_workers=min(max_concurrency, len(pending)), thread_name_prefix="outlast-map"
                ) as pool:
                    list(pool.map(run_item, pending))
        if stops:
            # Items that finished are committed; the rest run in the next leg.
            lost = [s for s in stops if isinstance(s, LeaseLost)]
            handoffs = [s for s in stops if isinstance(s, HandOff)]
            if lost:
                raise lost[0]
            if handoffs:
                raise handoffs[0]
            wakes = [s.wake_at for s in stops if isinstance(s, Suspend) and s.wake_at]
            raise Suspend(min(wakes) if wakes else None, None)
        if failures:
            raise failures[min(failures)]
        return [results[i] for i in range(len(work))]

    def _live_step(
        self,
        fn: Callable[..., R],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        step: str,
        policy: RetryPolicy,
        tier: TierHint,
        attempt: int,
        retry_at: datetime | None,
        *,
        key: str,
    ) -> R:
        self._live = True
        while True:
            attempt += 1
            if retry_at is not None:
                self._wait_until(retry_at)
            self._check_lease()
            why = self._budget.why_stop(self._timings.expected(step))
            # A leg that has not yet made progress tries its first step anyway: handing off
            # again would only repeat the same leg forever. A drain always wins.
            if why is not None and (self.stats.steps_executed > 0 or self._budget.drain.is_set()):
                raise HandOff(why)
            self._local.step_key, self._local.meta = key, {}
            started, clock = utcnow(), time.perf_counter()
            hook = self.step_hook(step, attempt, key) if self.step_hook else nullcontext()
            try:
                with hook:
                    result = fn(*args, **kwargs)
            except DurableControl:
                raise
            except Exception as exc:
                elapsed = time.perf_counter() - clock
                self._account(step, elapsed)
                info = error_info(exc)
                if attempt < policy.max_attempts and policy.retryable(exc):
                    delay = policy.delay(attempt, exc=exc)
                    ended = utcnow()
                    self._commit_step(
                        step,
                        EntryStatus.RETRY,
                        None,
                        info,
                        attempt,
                        started,
                        ended,
                        {**self._local.meta, "retry_delay_s": round(delay, 6)},
                    )
                    retry_at = ended + timedelta(seconds=delay)
                    continue
                self._commit_step(
                    step,
                    EntryStatus.ERROR,
                    None,
                    info,
                    attempt,
                    started,
                    utcnow(),
                    dict(self._local.meta),
                )
                self.stats.steps_executed += 1
                raise StepFailedError(step, info, attempt) from exc
            finally:
                self._local.step_key = None
            elapsed = time.perf_counter() - clock
            self._account(step, elapsed)
            plain = to_plain(result)
            self._faults.point("before-cold")
            try:
                stored = self._store.encode(self.run_id, plain, tier=tier)
            except TypeError as exc:
                raise TypeError(
                    f"step {step!r} returned a result that cannot be stored: {exc}"
                ) from None
            self._commit_step(
                step,
                EntryStatus.OK,
                stored,
                None,
                attempt,
                started,
                utcnow(),
                dict(self._local.meta),
            )
            self.stats.steps_executed += 1
            return rebuild(fn, plain)  # type: ignore[no-any-return]

    def _account(self, step: str, elapsed: float) -> None:
        with self._lock:
            self._timings.observe(step, elapsed)
            self.stats.step_seconds += elapsed

    def _commit_step(
        self,
        step: str,
        status: EntryStatus,
        stored: Any,
        error: ErrorInfo | None,
        attempt: int,
        started: datetime,
        ended: datetime,
        meta: dict[str, Any],
    ) -> None:
        with self._lock:
            entry = JournalEntry(
                seq=self._journal.next_seq,
                kind=EntryKind.STEP,
                name=step,
                status=status,
                value=stored,
                error=error,
                attempt=attempt,
                leg=self.leg,
                started_at=started,
                ended_at=ended,
                meta=meta,
            )
            self._commit([entry])

    # ------------------------------------------------------------------ waiting

    def sleep(
        self,
        duration: timedelta | float | None = None,
        *,
        until: datetime | None = None,
        name: str = "sleep",
    ) -> None:
        """Wait durably. A long wait suspends the run: no leg holds compute while it sleeps."""
        entry = self._journal.peek()
        if entry is not None:
            self._expect(entry, EntryKind.SLEEP, name)
            self._journal.cursor += 1
            wake_at: datetime = self._value(entry)
        else:
            if (duration is None) == (until is None):
                raise ValueError("ctx.sleep takes a duration or until=, not both")
            if until is not None:
                wake_at = until
            else:
                seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
                wake_at = utcnow() + timedelta(seconds=float(seconds or 0))
            self._buffer(EntryKind.SLEEP, name, wake_at)
        self._wait_until(wake_at)

    def wait_for_signal(
        self,
        name: str,
        *,
        timeout: timedelta | float | None = None,
        default: Any = None,
    ) -> Any:
        """Wait for the signal ``name`` and return its payload (``default`` on timeout).

        A signal sent before the wait is kept and returned at once. While waiting, the run is
        suspended and holds no compute.
        """
        deadline: datetime | None = None
        if timeout is not None:
            seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
            deadline = self._deterministic(
                EntryKind.CLOCK,
                f"deadline:{name}",
                lambda: utcnow() + timedelta(seconds=float(seconds)),
            )
        entry = self._journal.peek()
        if entry is not None:
            self._expect(entry, EntryKind.SIGNAL, name)
            self._journal.cursor += 1
            return default if entry.meta.get("timed_out") else self._value(entry)
        self._live = True
        with self._lock:
            self._flush()
            try:
                taken = self._store.hot.take_signal(
                    self.run_id, self._token, name, seq=self._journal.next_seq
                )
            except LeaseLostError as exc:
                self._lost = True
                raise LeaseLost(str(exc)) from None
            if taken is not None:
                self._journal.entries.append(taken)
                self._journal.cursor = len(self._journal.entries)
                return self._value(taken)
            if deadline is not None and utcnow() >= deadline:
                self._buffer(EntryKind.SIGNAL, name, None, meta={"timed_out": True})
                return default
        raise Suspend(deadline, name)

    def _wait_until(self, wake_at: datetime) -> None:
        wait = (wake_at - utcnow()).total_seconds()
        if wait <= 0:
            return
        fits = wait + self._budget.margin < self._budget.remaining()
        if wait <= self._inline_wait and fits:
            if self._budget.drain.wait(wait):
                raise HandOff(f"drain requested ({self._budget.drain_reason})")
            return
        raise Suspend(wake_at, None)

    # ------------------------------------------------------------------ deterministic reads

    def now(self) -> datetime:
        """The current time (UTC), journaled: replays see the time the first run saw."""
        return self._deterministic(EntryKind.CLOCK, "now", utcnow)  # type: ignore[no-any-return]

    def random(self) -> float:
        """A random float in [0, 1), journaled."""
        return float(self._deterministic(EntryKind.RANDOM, "random", _random.random))

    def uuid(self) -> str:
        """A random UUID (as a string), journaled."""
        return str(self._deterministic(EntryKind.RANDOM, "uuid", lambda: str(_uuid.uuid4())))

    def _deterministic(self, kind: EntryKind, name: str, draw: Callable[[], Any]) -> Any:
        entry = self._journal.peek()
        if entry is not None:
            self._expect(entry, kind, name)
            self._journal.cursor += 1
            return self._value(entry)
        value = draw()
        self._buffer(kind, name, value)
        return value

    # ------------------------------------------------------------------ journal plumbing

    def _expect(self, entry: JournalEntry, kind: EntryKind, name: str) -> None:
        if entry.kind is not kind or entry.name != name:
            raise NonDeterminismError(
                self.run_id,
                entry.seq,
                f"{entry.kind.value} {entry.name!r}",
                f"{kind.value} {name!r}",
            )

    def _value(self, entry: JournalEntry) -> Any:
        return self._store.decode(self.run_id, entry.value, seq=entry.seq, key=f"seq {entry.seq}")

    def _buffer(
        self, kind: EntryKind, name: str, value: Any, *, meta: dict[str, Any] | None = None
    ) -> None:
        self._live = True
        now = utcnow()
        with self._lock:
            entry = JournalEntry(
                seq=self._journal.next_seq,
                kind=kind,
                name=name,
                value=None if value is None else self._store.encode(self.run_id, value, tier="hot"),
                leg=self.leg,
                started_at=now,
                ended_at=now,
                meta=meta or {},
            )
            self._journal.entries.append(entry)
            self._journal.pending.append(entry)
            self._journal.cursor = len(self._journal.entries)

    def _commit(self, entries: list[JournalEntry], update: RunUpdate | None = None) -> None:
        """One fenced append of buffered entries plus ``entries``. Caller holds ``_lock``."""
        batch = [*self._journal.pending, *entries]
        self._faults.next_commit()
        self._faults.point("before-hot")
        clock = time.perf_counter()
        try:
            self._store.hot.append(self.run_id, self._token, batch, update)
        except LeaseLostError as exc:
            self._lost = True
            raise LeaseLost(str(exc)) from None
        self.stats.commits += 1
        self.stats.commit_seconds += time.perf_counter() - clock
        self._faults.point("after-hot")
        self._journal.pending.clear()
        self._journal.entries.extend(entries)
        self._journal.cursor = len(self._journal.entries)

    def _flush(self) -> None:
        with self._lock:
            if self._journal.pending:
                self._commit([])

    def _check_lease(self) -> None:
        if self._lost:
            raise LeaseLost(f"run {self.run_id!r}: the lease was lost")

    def mark_lease_lost(self) -> None:
        """Called by a heartbeat that failed to renew: stop before the next operation."""
        self._lost = True

    # The leg uses these to end the run with the buffered entries in the same write.
    def take_pending(self) -> list[JournalEntry]:
        with self._lock:
            pending = list(self._journal.pending)
            self._journal.pending.clear()
            return pending

    @property
    def committed_entries(self) -> list[JournalEntry]:
        with self._lock:
            n = len(self._journal.entries) - len(self._journal.pending)
            return self._journal.entries[:n]


def _retry_at(entry: JournalEntry) -> datetime | None:
    delay = entry.meta.get("retry_delay_s")
    if isinstance(delay, int | float):
        return entry.ended_at + timedelta(seconds=float(delay))
    return None


def _map_index(entry: JournalEntry, base: str) -> int | None:
    name = entry.name
    if not (name.startswith(base + "[") and name.endswith("]")):
        return None
    inner = name[len(base) + 1 : -1]
    return int(inner) if inner.isdigit() else None
