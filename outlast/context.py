"""``Context``: what a durable function calls to do durable things.

Every call is one journaled operation. While the journal holds an entry at the current seq, the
call *replays*: it checks that the entry is the same kind and name as the call, and returns the
stored value without running anything. Past the end of the journal the call runs *live*, and its
result is committed through the leased run (``statestore.LeasedRun.commit``) before the code sees
it. What live code sees is the committed value read back, so a replay can only ever give the same.

Clock and random reads are buffered and committed with the next write: if the leg dies before
that, nothing outside saw them, and the next leg simply draws again.

Failures of the store under these calls are not the user's: they unwind the function as
``StoreFailure`` (a ``BaseException``), which ``except Exception`` in user code cannot swallow.
Only exceptions raised by the user's own step functions are the user's.
"""

from __future__ import annotations

import copy
import inspect
import logging
import random as _random
import threading
import time
import traceback
import uuid as _uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from outlast import values
from outlast.budget import Budget, StepTimings
from outlast.children import RECHECK, ChildRuns, child_result, child_run_id, child_signal
from outlast.errors import (
    DurableControl,
    HandOff,
    LeaseLost,
    NonDeterminismError,
    StepFailedError,
    StepInterruptedError,
    StepTimeoutError,
    StoreFailure,
    Suspend,
)
from outlast.journal_cache import ReplayJournal
from outlast.retry import RetryPolicy
from statestore import (
    Committed,
    EntryKind,
    EntryStatus,
    ErrorInfo,
    JournalEntry,
    LeasedRun,
    LeaseLostError,
    Operation,
    StateStoreError,
    TierHint,
    UnstorableValueError,
    utcnow,
    validate_run_id,
)

if TYPE_CHECKING:
    from outlast.async_context import AsyncContext

T = TypeVar("T")
R = TypeVar("R")
StepHook = Callable[[str, int, str], AbstractContextManager[None]]

# Waits (retry backoff, short sleeps) up to this long happen inside the leg; longer ones suspend
# the run so no compute is held while nothing happens.
DEFAULT_INLINE_WAIT = 1.0

# What an error's stored form keeps: enough to read, never enough to make a run unstorable.
MAX_ERROR_MESSAGE = 8 * 1024
MAX_TRACEBACK = 32 * 1024


def error_info(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(
        type=type(exc).__qualname__,
        message=_clip(str(exc), MAX_ERROR_MESSAGE),
        traceback=_clip("".join(traceback.format_exception(exc)), MAX_TRACEBACK),
    )


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return text[: limit // 2] + f"\n... [{cut} characters cut] ...\n" + text[-limit // 2 :]


def step_name_of(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


@dataclass
class LegStats:
    steps_executed: int = 0
    steps_replayed: int = 0
    commits: int = 0
    commit_seconds: float = 0.0
    step_seconds: float = 0.0  # time inside live step functions (the work a restart re-spends)


# The context of the durable function running on this thread or task, for libraries that are
# called from inside one (integrations) and cannot be handed it.
_current: ContextVar[Any] = ContextVar("outlast_current_context", default=None)


def current_context() -> Context | AsyncContext:
    """The ``Context`` (or ``AsyncContext``) of the durable function this code runs inside.

    Set around the durable function, each ``parallel`` branch and each ``map`` item, so code a
    durable function calls (an agent framework's wrapper, a helper) can reach its run.
    """
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError(
            "not inside a durable function: current_context() works only in code that a "
            "durable function (or one of its parallel branches or map items) calls"
        )
    return ctx  # type: ignore[no-any-return]


@contextmanager
def entered(ctx: Context | AsyncContext) -> Iterator[None]:
    """Make ``ctx`` the current context for the code run inside this block."""
    token = _current.set(ctx)
    try:
        yield
    finally:
        _current.reset(token)


class ReplayQuietLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Logs only when live: a replay re-executes the code, not the history it already logged."""

    def __init__(self, logger: logging.Logger, ctx: Context | AsyncContext) -> None:
        super().__init__(logger, {})
        self._ctx = ctx

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's API
        return not self._ctx.is_replaying and self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("run_id", self._ctx.run_id)
        extra.setdefault("seq", self._ctx.seq)
        kwargs["extra"] = extra
        return msg, kwargs


class Context:
    """The durable function's handle on its run. One per leg; not to be shared across runs."""

    def __init__(
        self,
        *,
        leased: LeasedRun,
        journal: ReplayJournal,
        budget: Budget,
        retry: RetryPolicy,
        inline_wait: float = DEFAULT_INLINE_WAIT,
        logger: logging.Logger | None = None,
        max_interruptions: int = 3,
        children: ChildRuns | None = None,
    ) -> None:
        self.run_id = leased.run_id
        self._children = children
        self.leg = leased.leg
        self._leased = leased
        self._store = leased.store
        self._replay = journal
        self._budget = budget
        self._retry = retry
        self._inline_wait = inline_wait
        self._timings = StepTimings()  # fed by the replay, then by live steps
        record = leased.record
        # Legs that died with the journal at ``_interrupted_seq``: the operation there was in
        # flight each time. Checked once, when this leg reaches that seq live.
        self._interrupted = record.interrupted
        self._interrupted_seq = record.interrupted_seq
        self._max_interruptions = max_interruptions
        self._leg_seconds = budget.remaining()
        self._lock = threading.RLock()
        self._local = threading.local()
        self._lost = False
        self._live = False
        # A branch of ctx.parallel journals its operations with meta["scope"] (e.g. "7.1/": the
        # parallel at seq 7, branch 1); the root context has none. Branches share the root's
        # lease state and stats.
        self._scope = ""
        self._root = self
        self.stats = LegStats()
        # Wraps each live step attempt (platforms trace steps with it): hook(name, attempt, key).
        self.step_hook: StepHook | None = None
        self.log = ReplayQuietLogger(logger or logging.getLogger("outlast.run"), self)

    # ------------------------------------------------------------------ properties

    @property
    def is_replaying(self) -> bool:
        """True until this leg's first live operation.

        Code between the last journaled operation and the next one may also have run in an
        earlier leg (which then suspended or handed off there), so it counts as replay too.
        """
        return not self._live and self._replay.total > 0

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
        entry = self._peek()
        return entry.seq if entry is not None else self._leased.next_seq

    @property
    def leased(self) -> LeasedRun:
        return self._leased

    # ------------------------------------------------------------------ steps

    def step(
        self,
        fn: Callable[..., R],
        *args: Any,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        tier: TierHint = None,
        timeout: float | None = None,
        max_interruptions: int | None = None,
        at_most_once: bool = False,
        **kwargs: Any,
    ) -> R:
        """Run ``fn(*args, **kwargs)`` once, durably: a replay returns the committed result.

        ``timeout`` (seconds) fails an attempt that runs longer with ``StepTimeoutError``, which
        the retry policy treats like any other failure. ``max_interruptions`` caps the attempts
        cut short by their leg dying (default: the app's); then the step fails with
        ``StepInterruptedError`` naming its expected duration and the leg's budget.
        ``at_most_once=True`` is for side effects that must not repeat (a payment, an email): if
        a leg died while it was in flight, the next leg raises ``StepInterruptedError`` instead
        of running it again.
        """
        _check_timeout(timeout)
        _refuse_coroutine(fn)
        step = name or step_name_of(fn)
        start_seq = self.seq
        attempt, retry_at = 0, None
        while (entry := self._peek()) is not None:
            self._expect(entry, EntryKind.STEP, step)
            self._advance()
            if entry.status is EntryStatus.RETRY:
                attempt, retry_at = entry.attempt, _retry_at(entry)
                continue
            self.stats.steps_replayed += 1
            if entry.status is EntryStatus.ERROR:
                raise _replayed_failure(step, entry)
            return values.rebuild(fn, self._value(entry))  # type: ignore[no-any-return]
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
            timeout=timeout,
            max_interruptions=max_interruptions,
            at_most_once=at_most_once,
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
        timeout: float | None = None,
        collect_failures: bool = False,
        fail_fast: bool = False,
    ) -> list[R]:
        """Run ``fn(item)`` for each item as its own durable step, ``max_concurrency`` at once.

        Results come back in item order. Each item is journaled as ``name[i]`` when it finishes,
        so an interruption costs only the items in flight. If items fail for good, the failure of
        the lowest index is raised (as ``StepFailedError``) once every item has ended, or with
        ``collect_failures=True`` an ``ExceptionGroup`` of every failed item's. ``fail_fast=True``
        starts no further item once one has failed (items already running finish and commit).
        """
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        _check_timeout(timeout)
        _refuse_coroutine(fn)
        work = list(items)
        base = name or step_name_of(fn)
        start_seq = self.seq
        results: dict[int, Any] = {}
        failures: dict[int, StepFailedError] = {}
        retries: dict[int, tuple[int, datetime | None]] = {}
        open_items = set(range(len(work)))
        while open_items and (entry := self._peek()) is not None:
            index = _map_index(entry, base)
            if entry.kind is not EntryKind.STEP or index is None or index not in open_items:
                raise NonDeterminismError(
                    self.run_id,
                    entry.seq,
                    f"{entry.kind.value} {entry.name!r}",
                    f"step '{base}[i]' for one of the items {sorted(open_items)}",
                )
            self._advance()
            if entry.status is EntryStatus.RETRY:
                retries[index] = (entry.attempt, _retry_at(entry))
                continue
            open_items.discard(index)
            self.stats.steps_replayed += 1
            if entry.status is EntryStatus.ERROR:
                assert entry.error is not None
                failures[index] = _replayed_failure(entry.name, entry)
            else:
                results[index] = values.rebuild(fn, self._value(entry))

        stops: list[DurableControl] = []

        def run_item(index: int) -> None:
            if stops:
                return  # the leg is stopping: start no more items
            if fail_fast and failures:
                return  # an item failed: the caller asked to start no more
            attempt, retry_at = retries.get(index, (0, None))
            try:
                with entered(self):
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
                        timeout=timeout,
                    )
            except StepFailedError as exc:
                failures[index] = exc
            except DurableControl as exc:
                stops.append(exc)

        if open_items:
            pending = sorted(open_items)
            if max_concurrency == 1 or len(pending) == 1:
                for index in pending:
                    run_item(index)
            else:
                with ThreadPoolExecutor(
                    max_workers=min(max_concurrency, len(pending)), thread_name_prefix="outlast-map"
                ) as pool:
                    list(pool.map(run_item, pending))
        if stops:
            raise _most_serious(stops)
        if failures:
            if collect_failures:
                raise ExceptionGroup(
                    f"{len(failures)} of {len(work)} items failed",
                    [failures[i] for i in sorted(failures)],
                )
            raise failures[min(failures)]
        return [results[i] for i in range(len(work))]

    def parallel(
        self,
        *branches: Callable[[Context], Any],
        max_concurrency: int | None = None,
        collect_failures: bool = False,
        fail_fast: bool = False,
    ) -> list[Any]:
        """Run different branches side by side; results come back in branch order.

        Each branch is ``def branch(ctx: Context)`` called with a context of its own (a scope):
        it may step, map, sleep and wait, and its operations replay as its own sequence,
        whatever the interleaving with other branches. Branches run on threads,
        ``max_concurrency`` at once. A failure raises once every branch ended: the first
        branch's by index, or with ``collect_failures=True`` an ``ExceptionGroup`` of all.
        ``fail_fast=True`` starts no further branch once one has failed (a branch that already
        journaled operations still replays them, so a replay takes the same course).
        """
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        at = self.seq
        prefix = f"{self._scope}{at}."
        owned: list[list[JournalEntry]] = [[] for _ in branches]
        # A parallel's entries follow its call as one block (the code after it runs only when
        # every branch ended), each marked with its branch's scope.
        while (entry := self._peek()) is not None:
            scope = entry.meta.get("scope")
            if not (isinstance(scope, str) and scope.startswith(prefix)):
                break
            head = scope[len(prefix) :].split("/", 1)[0]
            if not head.isdigit() or int(head) >= len(branches):
                raise NonDeterminismError(
                    self.run_id,
                    entry.seq,
                    f"{entry.kind.value} {entry.name!r} of branch {head}",
                    f"a parallel of {len(branches)} branches",
                )
            owned[int(head)].append(entry)
            self._replay.advance()
        children = [self._branch(f"{prefix}{i}/", owned[i]) for i in range(len(branches))]
        results: dict[int, Any] = {}
        failures: dict[int, Exception] = {}
        stops: list[DurableControl] = []

        def run_branch(index: int) -> None:
            if stops or (fail_fast and failures and not owned[index]):
                return
            try:
                with entered(children[index]):
                    results[index] = branches[index](children[index])
                left = children[index].unreplayed()
                if left is not None:
                    raise NonDeterminismError(
                        self.run_id,
                        left.seq,
                        f"{left.kind.value} {left.name!r}",
                        f"branch {index} returned before it",
                    )
            except DurableControl as exc:
                stops.append(exc)
            except Exception as exc:  # noqa: BLE001 - reported below as the caller chose
                failures[index] = exc

        width = min(max_concurrency or len(branches), len(branches)) or 1
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="outlast-branch") as pool:
            list(pool.map(run_branch, range(len(branches))))
        if stops:
            raise _most_serious(stops)
        if failures:
            if collect_failures:
                raise ExceptionGroup(
                    f"{len(failures)} of {len(branches)} branches failed",
                    [failures[i] for i in sorted(failures)],
                )
            raise failures[min(failures)]
        return [results[i] for i in range(len(branches))]

    def _branch(self, scope: str, entries: list[JournalEntry]) -> Context:
        child = copy.copy(self)
        child._scope = scope
        child._replay = _Entries(entries)  # type: ignore[assignment]
        child._local = threading.local()
        child._timings = StepTimings(entries)
        return child

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
        timeout: float | None = None,
        max_interruptions: int | None = None,
        at_most_once: bool = False,
    ) -> R:
        self._live = True
        self._check_interruptions(step, 1 if at_most_once else max_interruptions, at_most_once)
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
                    if timeout is None:
                        result = fn(*args, **kwargs)
                    else:
                        result = self._with_timeout(fn, args, kwargs, step, timeout)
            except DurableControl:
                raise
            except Exception as exc:
                elapsed = time.perf_counter() - clock
                self._account(step, elapsed)
                info = error_info(exc)
                meta = dict(self._local.meta)
                if attempt < policy.max_attempts and policy.retryable(exc):
                    delay = policy.delay(attempt, exc=exc)
                    ended = utcnow()
                    meta["retry_delay_s"] = round(delay, 6)
                    self._commit_step(step, EntryStatus.RETRY, None, info, attempt, started, meta)
                    retry_at = ended + timedelta(seconds=delay)
                    continue
                failed = self._commit_step(
                    step, EntryStatus.ERROR, None, info, attempt, started, meta
                )
                self.stats.steps_executed += 1
                raise StepFailedError(step, info, attempt, failed.entry.seq) from exc
            finally:
                self._local.step_key = None
            elapsed = time.perf_counter() - clock
            self._account(step, elapsed)
            plain = self._plain(result, f"step {step!r} returned a result that")
            committed = self._commit_step(
                step, EntryStatus.OK, plain, None, attempt, started, dict(self._local.meta), tier
            )
            self.stats.steps_executed += 1
            return values.rebuild(fn, committed.value)  # type: ignore[no-any-return]

    def _check_interruptions(self, step: str, cap: int | None, at_most_once: bool) -> None:
        """Fail the step if its leg died under it too often (once per leg, at that seq)."""
        if self._interrupted_seq < 0 or self._leased.record.next_seq != self._interrupted_seq:
            return
        count, self._interrupted_seq = self._interrupted, -1
        cap = cap if cap is not None else self._max_interruptions
        if count < cap:
            return
        info = interruption_error(
            step, count, at_most_once, self._timings.expected(step), self._leg_seconds
        )
        failed = self._commit_step(
            step, EntryStatus.ERROR, None, info, count, utcnow(), {"interrupted": count}
        )
        self.stats.steps_executed += 1
        raise StepInterruptedError(step, info, count, failed.entry.seq)

    def _with_timeout(
        self,
        fn: Callable[..., R],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        step: str,
        timeout: float,
    ) -> R:
        """Run ``fn`` on its own thread and stop waiting for it after ``timeout`` seconds."""
        done: list[R] = []
        failed: list[BaseException] = []
        key, meta = self._local.step_key, self._local.meta

        def call() -> None:
            _current.set(self)
            self._local.step_key, self._local.meta = key, meta
            try:
                done.append(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                failed.append(exc)

        worker = threading.Thread(target=call, daemon=True, name=f"outlast-step-{step}")
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise StepTimeoutError(f"step {step!r} did not finish within {timeout:g}s")
        if failed:
            raise failed[0]
        return done[0]

    def _plain(self, value: Any, what: str) -> Any:
        try:
            return values.to_plain(value)
        except TypeError as exc:
            raise TypeError(f"{what} cannot be stored: {exc}") from None

    def _account(self, step: str, elapsed: float) -> None:
        with self._lock:
            self._timings.observe(step, elapsed)
            self.stats.step_seconds += elapsed

    def _commit_step(
        self,
        step: str,
        status: EntryStatus,
        plain: Any,
        error: ErrorInfo | None,
        attempt: int,
        started: datetime,
        meta: dict[str, Any],
        tier: TierHint = None,
    ) -> Committed:
        """Commit one step entry; return it as written, with its value as a replay decodes it."""
        op = Operation(
            kind=EntryKind.STEP,
            name=step,
            status=status,
            value=plain,
            error=error,
            attempt=attempt,
            started_at=started,
            ended_at=utcnow(),
            meta=self._scoped(meta),
            tier=tier,
        )
        [committed] = self._write(lambda: self._leased.commit([op]))
        return committed

    # ------------------------------------------------------------------ waiting

    def sleep(
        self,
        duration: timedelta | float | None = None,
        *,
        until: datetime | None = None,
        name: str = "sleep",
    ) -> None:
        """Wait durably. A long wait suspends the run: no leg holds compute while it sleeps."""
        entry = self._peek()
        if entry is not None:
            self._expect(entry, EntryKind.SLEEP, name)
            self._advance()
            wake_at: datetime = self._value(entry)
        else:
            wake_at = self._buffer(EntryKind.SLEEP, name, wake_time(duration, until))
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
        entry = self._peek()
        if entry is not None:
            self._expect(entry, EntryKind.SIGNAL, name)
            self._advance()
            if entry.meta.get("timed_out"):
                return default
            return values.from_plain(self._value(entry))
        self._live = True
        with self._lock:
            scope = self._scoped({})
            taken = self._write(lambda: self._leased.take_signal(name, scope or None))
            if taken is not None:
                return values.from_plain(taken.value)
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

    def run_child(
        self, function: str | Any, child_input: Any = None, *, run_id: str | None = None
    ) -> Any:
        """Start a child run of ``function`` (a durable function or its name), durably and
        idempotently, and suspend until it ends; return its result or raise its failure
        (``RunFailedError``). The child runs in legs of its own, on the same platform.

        Its id is ``run_id``, or one derived from this run's id and seq, so a replay or a later
        leg finds the same child instead of starting another.
        """
        name = function if isinstance(function, str) else str(function.name)
        entry = self._peek()
        if entry is not None:
            self._expect(entry, EntryKind.CHILD, name)
            self._advance()
            child_id = str(self._value(entry))
        else:
            children = self._need_children()
            child_id = validate_run_id(run_id) if run_id else child_run_id(self.run_id, self.seq)
            with self._infrastructure():
                children.start(self.run_id, name, child_input, child_id)
            self._buffer(EntryKind.CHILD, name, child_id)
        outcome = self._wait_child(child_id)
        return child_result(outcome, function)

    def _need_children(self) -> ChildRuns:
        if self._children is None:
            raise RuntimeError("child runs need a leg run by an App (run_leg gives one)")
        return self._children

    def _wait_child(self, child_id: str) -> Any:
        name = child_signal(child_id)
        entry = self._peek()
        if entry is not None:
            self._expect(entry, EntryKind.SIGNAL, name)
            self._advance()
            return values.from_plain(self._value(entry))
        self._live = True
        children = self._need_children()
        scope = self._scoped({}) or None
        with self._lock:
            taken = self._write(lambda: self._leased.take_signal(name, scope))
            if taken is None:
                with self._infrastructure():
                    ended = children.report_if_ended(self.run_id, child_id)
                if ended:
                    taken = self._write(lambda: self._leased.take_signal(name, scope))
            if taken is not None:
                return values.from_plain(taken.value)
        # Woken by the child's signal; the timer is a fallback if that signal was lost.
        raise Suspend(utcnow() + RECHECK, name)

    def patched(self, change_id: str) -> bool:
        """Has this run reached this point with code that has the change ``change_id``?

        True for runs that get here with the new code (a marker is journaled), False for runs
        whose journal already passed this point with the old code: they keep the old path, as
        DBOS's ``patch()`` and Temporal's ``patched()`` let them. Once no run on the old path is
        left, the check (and the old path) can go.
        """
        entry = self._peek()
        if entry is None:
            self._buffer(EntryKind.PATCH, change_id, None)
            return True
        if entry.kind is EntryKind.PATCH and entry.name == change_id:
            self._advance()
            return True
        return False

    def uuid(self) -> str:
        """A random UUID (as a string), journaled."""
        return str(self._deterministic(EntryKind.RANDOM, "uuid", lambda: str(_uuid.uuid4())))

    def _deterministic(self, kind: EntryKind, name: str, draw: Callable[[], Any]) -> Any:
        entry = self._peek()
        if entry is not None:
            self._expect(entry, kind, name)
            self._advance()
            return self._value(entry)
        return self._buffer(kind, name, draw())

    # ------------------------------------------------------------------ journal plumbing

    def _peek(self) -> JournalEntry | None:
        with self._infrastructure():  # the replay reads the store a page at a time
            return self._replay.peek()

    def _advance(self) -> None:
        self._timings.observe_entry(self._replay.advance())

    def _expect(self, entry: JournalEntry, kind: EntryKind, name: str) -> None:
        if entry.kind is not kind or entry.name != name:
            raise NonDeterminismError(
                self.run_id,
                entry.seq,
                f"{entry.kind.value} {entry.name!r}",
                f"{kind.value} {name!r}",
            )

    def unreplayed(self) -> JournalEntry | None:
        """The first journaled entry the code has not asked for (None if it replayed them all).

        A function that returns while entries remain did fewer operations than the journal
        holds: its code changed under the run.
        """
        return self._peek()

    def _value(self, entry: JournalEntry) -> Any:
        with self._infrastructure():
            return self._store.decode(
                self.run_id, entry.value, seq=entry.seq, key=f"seq {entry.seq}"
            )

    def _buffer(
        self, kind: EntryKind, name: str, value: Any, *, meta: dict[str, Any] | None = None
    ) -> Any:
        self._live = True
        now = utcnow()
        op = Operation(
            kind=kind,
            name=name,
            value=value,
            started_at=now,
            ended_at=now,
            meta=self._scoped(meta or {}),
        )
        with self._lock:
            return self._write(lambda: self._leased.buffer(op))

    def _write(self, write: Callable[[], T]) -> T:
        """Run a write of the leased run, turning store failures into control flow."""
        self._check_lease()
        before = self._leased.commits
        clock = time.perf_counter()
        with self._infrastructure():
            result = write()
        if self._leased.commits != before:
            self.stats.commits += self._leased.commits - before
            self.stats.commit_seconds += time.perf_counter() - clock
        return result

    @contextmanager
    def _infrastructure(self) -> Iterator[None]:
        try:
            yield
        except UnstorableValueError:
            raise
        except LeaseLostError as exc:
            self._root._lost = True
            raise LeaseLost(str(exc)) from None
        except StateStoreError as exc:
            raise StoreFailure(exc) from exc

    def _scoped(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {**meta, "scope": self._scope} if self._scope else meta

    def _check_lease(self) -> None:
        if self._root._lost:
            raise LeaseLost(f"run {self.run_id!r}: the lease was lost")

    def mark_lease_lost(self) -> None:
        """Called by a heartbeat that failed to renew: stop before the next operation."""
        self._root._lost = True


class _Entries:
    """A branch's share of the journal, replayed in order (the ``ReplayJournal`` interface)."""

    def __init__(self, entries: list[JournalEntry]) -> None:
        self._entries = entries
        self._index = 0
        self.total = len(entries)

    def peek(self) -> JournalEntry | None:
        return self._entries[self._index] if self._index < self.total else None

    def advance(self) -> JournalEntry:
        entry = self._entries[self._index]
        self._index += 1
        return entry


def _refuse_coroutine(fn: Callable[..., Any]) -> None:
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"{step_name_of(fn)} is an async function: a sync durable function cannot await it. "
            "Make the durable function `async def` (it then gets an AsyncContext) and "
            "`await ctx.step(...)`"
        )


def interruption_error(
    step: str, count: int, at_most_once: bool, expected: float, leg_seconds: float
) -> ErrorInfo:
    """Why a step whose leg kept dying under it is not run again (sync and async alike)."""
    if at_most_once:
        message = (
            f"step {step!r} is at_most_once and was in flight when its leg died; whether it "
            "took effect is unknown, so it is not run again"
        )
    else:
        known = f"{expected:.1f}s" if expected > 0 else "unknown: it never finished"
        budget = "no time limit" if leg_seconds == float("inf") else f"{leg_seconds:.1f}s"
        message = (
            f"step {step!r} was interrupted {count} times (its leg died, was killed or timed "
            f"out while it ran); expected duration {known}, leg budget {budget}. Give the leg "
            "more time, split the step, or give it a timeout"
        )
    return ErrorInfo(type=StepInterruptedError.__qualname__, message=message)


def wake_time(duration: timedelta | float | None, until: datetime | None) -> datetime:
    """When a ``ctx.sleep(duration)`` or ``ctx.sleep(until=...)`` ends."""
    if (duration is None) == (until is None):
        raise ValueError("ctx.sleep takes a duration or until=, not both")
    if until is not None:
        return until
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
    return utcnow() + timedelta(seconds=float(seconds or 0))


def _replayed_failure(step: str, entry: JournalEntry) -> StepFailedError:
    assert entry.error is not None
    kind = StepInterruptedError if entry.error.type == "StepInterruptedError" else StepFailedError
    return kind(step, entry.error, entry.attempt, entry.seq)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (0 < timeout < float("inf")):
        raise ValueError(f"a step timeout is a positive number of seconds, not {timeout!r}")


def _most_serious(stops: list[DurableControl]) -> DurableControl:
    """Of the ways the items of a map stopped, the one the leg must act on."""
    for kind in (LeaseLost, StoreFailure, NonDeterminismError, HandOff):
        found = [s for s in stops if isinstance(s, kind)]
        if found:
            return found[0]
    suspends = [s for s in stops if isinstance(s, Suspend)]
    if not suspends:
        return stops[0]
    # Parked until the earliest timer, or until the signal the first waiter waits for: whatever
    # comes first wakes the run, and every branch looks again. (A record names one signal; a
    # second branch waiting for another name is woken by the timer or the first signal.)
    wakes = [s.wake_at for s in suspends if s.wake_at is not None]
    names = [s.waiting_for for s in suspends if s.waiting_for is not None]
    return Suspend(min(wakes) if wakes else None, names[0] if names else None)


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
