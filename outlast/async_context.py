"""``AsyncContext``: what an ``async def`` durable function calls, each call awaited.

Concurrency through ``asyncio.gather`` / ``TaskGroup`` must replay deterministically, but
concurrent operations commit in the order they *finish*, which changes from run to run. So an
operation is identified by the order in which the code *called* it, not by its seq:

- every call claims an operation id synchronously, when it is made (``ctx.step(...)`` returns an
  awaitable that already holds its id), from a counter of its *scope* (``"3"``, or ``"5/1.2"``
  inside branch 1 of the ``ctx.parallel`` that is operation 5);
- the id is journaled with the entry (``meta["op"]``), and a replay matches each call to the
  entries of its id, whatever order their commits landed in.

Deterministic code calls in the same order every time, so ids are stable; a call whose id holds
an entry of another kind or name is a non-determinism, and entries left over when the function
returns are one too.

Sync step functions run in a thread (``asyncio.to_thread``), async ones on the leg's event loop.
Commits go through the same leased run as the sync context, in a thread so the loop keeps going.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random as _random
import time
import uuid as _uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from contextlib import nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

from outlast import values
from outlast.budget import Budget, StepTimings
from outlast.children import RECHECK, ChildRuns, child_result, child_run_id, child_signal
from outlast.context import (
    DEFAULT_INLINE_WAIT,
    LegStats,
    ReplayQuietLogger,
    StepHook,
    _check_timeout,
    _current,
    _most_serious,
    _replayed_failure,
    _retry_at,
    error_info,
    interruption_error,
    step_name_of,
    wake_time,
)
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

T = TypeVar("T")
R = TypeVar("R")

_step_key: ContextVar[str | None] = ContextVar("outlast_step_key", default=None)
_step_meta: ContextVar[dict[str, Any] | None] = ContextVar("outlast_step_meta", default=None)


@dataclass
class _Shared:
    """What every scope of one leg shares: the run, the replay index, the in-flight work."""

    leased: LeasedRun
    budget: Budget
    retry: RetryPolicy
    inline_wait: float
    max_interruptions: int
    by_op: dict[str, list[JournalEntry]]
    replayed_total: int
    timings: StepTimings
    stats: LegStats = field(default_factory=LegStats)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    lost: bool = False
    live: bool = False
    interrupted: int = 0
    interrupted_seq: int = -1
    leg_seconds: float = float("inf")
    children: ChildRuns | None = None
    local_store: bool = False


class AsyncContext:
    """The async durable function's handle on its run. One per leg (and one per branch scope)."""

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
        entries: list[JournalEntry] = []
        while journal.peek() is not None:
            entries.append(journal.advance())
        by_op: dict[str, list[JournalEntry]] = {}
        timings = StepTimings(entries)
        for entry in entries:
            op = entry.meta.get("op")
            if not isinstance(op, str):
                raise NonDeterminismError(
                    leased.run_id,
                    entry.seq,
                    f"{entry.kind.value} {entry.name!r} journaled by a sync function",
                    "an async durable function (runs keep the kind of function they started as)",
                )
            by_op.setdefault(op, []).append(entry)
        record = leased.record
        self._shared = _Shared(
            leased=leased,
            budget=budget,
            retry=retry,
            inline_wait=inline_wait,
            max_interruptions=max_interruptions,
            by_op=by_op,
            replayed_total=len(entries),
            timings=timings,
            interrupted=record.interrupted,
            interrupted_seq=record.interrupted_seq,
            leg_seconds=budget.remaining(),
            children=children,
            local_store=leased.store.hot.scheme in ("sqlite", "memory")
            and leased.store.cold.scheme in ("file", "memory"),
        )
        self._scope = ""
        self._counter = 0
        self.run_id = leased.run_id
        self.leg = leased.leg
        self.step_hook: StepHook | None = None
        self.log = ReplayQuietLogger(logger or logging.getLogger("outlast.run"), self)

    def _has_entries(self, scope: str) -> bool:
        return any(key.startswith(scope) for key in self._shared.by_op)

    def _child(self, scope: str) -> AsyncContext:
        child = object.__new__(AsyncContext)
        child._shared = self._shared
        child._scope = scope
        child._counter = 0
        child.run_id = self.run_id
        child.leg = self.leg
        child.step_hook = self.step_hook
        child.log = self.log
        return child

    # ------------------------------------------------------------------ what the leg reads

    @property
    def stats(self) -> LegStats:
        return self._shared.stats

    @property
    def leased(self) -> LeasedRun:
        return self._shared.leased

    @property
    def seq(self) -> int:
        return self._shared.leased.next_seq

    @property
    def is_replaying(self) -> bool:
        return not self._shared.live and bool(self._shared.by_op)

    @property
    def step_key(self) -> str:
        key = _step_key.get()
        if key is None:
            raise RuntimeError("ctx.step_key is only available inside a step")
        return key

    def annotate(self, **meta: str | int | float | bool | None) -> None:
        current = _step_meta.get()
        if current is None:
            raise RuntimeError("ctx.annotate is only available inside a step")
        current.update(meta)

    def mark_lease_lost(self) -> None:
        self._shared.lost = True

    def unreplayed(self) -> JournalEntry | None:
        """The earliest journaled entry no call asked for (None if all were replayed)."""
        left = [e for entries in self._shared.by_op.values() for e in entries]
        return min(left, key=lambda e: e.seq) if left else None

    # ------------------------------------------------------------------ running the function

    async def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Await ``fn(self, *args)``; then let in-flight operations settle before the leg ends.

        A suspend or hand-off in one branch must not cut off steps still running in others:
        they finish and commit (as the items of a sync ``map`` do), and the most serious way
        any of them stopped is what the leg acts on.
        """
        stops: list[DurableControl] = []
        deaths: list[BaseException] = []
        result: Any = None
        _current.set(self)  # this task's context: the tasks it starts inherit it
        try:
            result = await fn(self, *args)
        except DurableControl as exc:
            stops.append(exc)
        # Anything else from the function itself propagates at once: the user's error fails
        # the run; a kill or an interpreter exit stops the leg (the loop cancels the rest).
        while self._shared.tasks:
            pending = list(self._shared.tasks)
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            self._shared.tasks.difference_update(pending)
            stops.extend(o for o in outcomes if isinstance(o, DurableControl))
            deaths.extend(o for o in outcomes if _is_death(o))
        if deaths:
            raise deaths[0]
        if stops:
            raise _most_serious(stops)
        return result

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self._shared.tasks.add(task)
        task.add_done_callback(self._shared.tasks.discard)
        return task

    def _claim(self) -> str:
        op = f"{self._scope}{self._counter}"
        self._counter += 1
        return op

    # ------------------------------------------------------------------ steps

    @overload
    def step(
        self,
        fn: Callable[..., Awaitable[R]],
        *args: Any,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        tier: TierHint = None,
        timeout: float | None = None,
        max_interruptions: int | None = None,
        at_most_once: bool = False,
        **kwargs: Any,
    ) -> asyncio.Task[R]: ...

    @overload
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
    ) -> asyncio.Task[R]: ...

    def step(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        tier: TierHint = None,
        timeout: float | None = None,
        max_interruptions: int | None = None,
        at_most_once: bool = False,
        **kwargs: Any,
    ) -> asyncio.Task[R]:
        """Run ``fn(*args, **kwargs)`` once, durably (see ``Context.step``); await the result.

        ``fn`` may be ``async def`` (awaited on the leg's loop) or sync (run in a thread).
        """
        _check_timeout(timeout)
        op = self._claim()
        step = name or step_name_of(fn)
        return self._spawn(
            self._step(
                op,
                fn,
                args,
                kwargs,
                step,
                retry or self._shared.retry,
                tier,
                timeout,
                1 if at_most_once else max_interruptions,
                at_most_once,
            )
        )

    @overload
    async def map(
        self,
        fn: Callable[[T], Awaitable[R]],
        items: Iterable[T],
        *,
        name: str | None = None,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        tier: TierHint = None,
        timeout: float | None = None,
        collect_failures: bool = False,
        fail_fast: bool = False,
    ) -> list[R]: ...

    @overload
    async def map(
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
    ) -> list[R]: ...

    async def map(
        self,
        fn: Callable[[T], Any],
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
        """One durable step per item, ``max_concurrency`` at once; results in item order.

        A failed item raises its ``StepFailedError`` once every item has ended (the lowest
        index), or with ``collect_failures=True`` an ``ExceptionGroup`` of all of them.
        """
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        _check_timeout(timeout)
        base = name or step_name_of(fn)
        gate = asyncio.Semaphore(max_concurrency)
        work = list(items)
        ops = [self._claim() for _ in work]  # claimed now, in item order

        failed = asyncio.Event()

        async def item(index: int) -> R:
            async with gate:
                if fail_fast and failed.is_set() and ops[index] not in self._shared.by_op:
                    raise _NotStarted(index)
                try:
                    return await self._step(  # type: ignore[no-any-return]
                        ops[index],
                        fn,
                        (work[index],),
                        {},
                        f"{base}[{index}]",
                        retry or self._shared.retry,
                        tier,
                        timeout,
                        None,
                        False,
                    )
                except Exception:
                    failed.set()
                    raise

        tasks = [self._spawn(item(i)) for i in range(len(work))]
        return await _settle(tasks, collect_failures)

    async def parallel(
        self,
        *branches: Callable[[AsyncContext], Awaitable[Any]],
        max_concurrency: int | None = None,
        collect_failures: bool = False,
        fail_fast: bool = False,
    ) -> list[Any]:
        """Run different branches side by side, each with its own scope; results in order.

        Each branch is ``async def branch(ctx: AsyncContext)`` and may itself step, sleep and
        wait: its operations are numbered within its own scope, so they replay by identity
        whatever the interleaving. A failure raises once all branches ended: the first branch's
        by index, or with ``collect_failures=True`` an ``ExceptionGroup`` of every failure.
        """
        op = self._claim()
        gate = asyncio.Semaphore(max_concurrency or len(branches) or 1)

        failed = asyncio.Event()

        async def branch(index: int, body: Callable[[AsyncContext], Awaitable[Any]]) -> Any:
            async with gate:
                scope = f"{op}/{index}."
                if fail_fast and failed.is_set() and not self._has_entries(scope):
                    raise _NotStarted(index)
                child = self._child(scope)
                _current.set(child)  # inside this branch's task only
                try:
                    return await body(child)
                except Exception:
                    failed.set()
                    raise

        tasks = [self._spawn(branch(i, b)) for i, b in enumerate(branches)]
        return await _settle(tasks, collect_failures)

    async def _step(
        self,
        op: str,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        step: str,
        policy: RetryPolicy,
        tier: TierHint,
        timeout: float | None,
        cap: int | None,
        at_most_once: bool,
    ) -> Any:
        attempt, retry_at = 0, None
        for entry in self._replay(op, EntryKind.STEP, step):
            if entry.status is EntryStatus.RETRY:
                attempt, retry_at = entry.attempt, _retry_at(entry)
                continue
            self._shared.stats.steps_replayed += 1
            if entry.status is EntryStatus.ERROR:
                raise _replayed_failure(step, entry)
            return values.rebuild(fn, self._value(entry))
        self._shared.live = True
        await self._check_interruptions(op, step, cap, at_most_once)
        key = f"{self.run_id}:{op}:{step}"
        while True:
            attempt += 1
            if retry_at is not None:
                await self._wait_until(retry_at)
            self._check_lease()
            why = self._shared.budget.why_stop(self._shared.timings.expected(step))
            if why is not None and (
                self._shared.stats.steps_executed > 0 or self._shared.budget.drain.is_set()
            ):
                raise HandOff(why)
            meta: dict[str, Any] = {}
            started, clock = utcnow(), time.perf_counter()
            try:
                result = await self._call(fn, args, kwargs, step, key, meta, attempt, timeout)
            except DurableControl:
                raise
            except Exception as exc:
                self._account(step, time.perf_counter() - clock)
                info = error_info(exc)
                if attempt < policy.max_attempts and policy.retryable(exc):
                    delay = policy.delay(attempt, exc=exc)
                    meta["retry_delay_s"] = round(delay, 6)
                    await self._commit(
                        op, step, EntryStatus.RETRY, None, info, attempt, started, meta
                    )
                    retry_at = utcnow() + timedelta(seconds=delay)
                    continue
                failed = await self._commit(
                    op, step, EntryStatus.ERROR, None, info, attempt, started, meta
                )
                self._shared.stats.steps_executed += 1
                raise StepFailedError(step, info, attempt, failed.entry.seq) from exc
            self._account(step, time.perf_counter() - clock)
            try:
                plain = values.to_plain(result)
            except TypeError as exc:
                raise TypeError(
                    f"step {step!r} returned a result that cannot be stored: {exc}"
                ) from None
            committed = await self._commit(
                op, step, EntryStatus.OK, plain, None, attempt, started, meta, tier
            )
            self._shared.stats.steps_executed += 1
            return values.rebuild(fn, committed.value)

    async def _call(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        step: str,
        key: str,
        meta: dict[str, Any],
        attempt: int,
        timeout: float | None,
    ) -> Any:
        key_token, meta_token = _step_key.set(key), _step_meta.set(meta)
        try:
            with self.step_hook(step, attempt, key) if self.step_hook else nullcontext():
                if inspect.iscoroutinefunction(fn):
                    work: Awaitable[Any] = fn(*args, **kwargs)
                else:
                    work = asyncio.to_thread(fn, *args, **kwargs)
                if timeout is None:
                    return await work
                try:
                    return await asyncio.wait_for(work, timeout)
                except TimeoutError:
                    raise StepTimeoutError(
                        f"step {step!r} did not finish within {timeout:g}s"
                    ) from None
        finally:
            _step_key.reset(key_token)
            _step_meta.reset(meta_token)

    async def _check_interruptions(
        self, op: str, step: str, cap: int | None, at_most_once: bool
    ) -> None:
        shared = self._shared
        if shared.interrupted_seq < 0 or shared.leased.record.next_seq != shared.interrupted_seq:
            return
        count, shared.interrupted_seq = shared.interrupted, -1
        if count < (cap if cap is not None else shared.max_interruptions):
            return
        info = interruption_error(
            step, count, at_most_once, shared.timings.expected(step), shared.leg_seconds
        )
        failed = await self._commit(
            op, step, EntryStatus.ERROR, None, info, count, utcnow(), {"interrupted": count}
        )
        shared.stats.steps_executed += 1
        raise StepInterruptedError(step, info, count, failed.entry.seq)

    def _account(self, step: str, elapsed: float) -> None:
        self._shared.timings.observe(step, elapsed)
        self._shared.stats.step_seconds += elapsed

    async def _commit(
        self,
        op: str,
        step: str,
        status: EntryStatus,
        plain: Any,
        error: ErrorInfo | None,
        attempt: int,
        started: datetime,
        meta: dict[str, Any],
        tier: TierHint = None,
    ) -> Committed:
        operation = Operation(
            kind=EntryKind.STEP,
            name=step,
            status=status,
            value=plain,
            error=error,
            attempt=attempt,
            started_at=started,
            ended_at=utcnow(),
            meta={**meta, "op": op},
            tier=tier,
        )
        self._check_lease()
        leased = self._shared.leased
        before, clock = leased.commits, time.perf_counter()
        try:
            if self._shared.local_store:
                # A local store commits in microseconds: a thread hop would cost more than it.
                [committed] = leased.commit([operation])
            else:
                [committed] = await asyncio.to_thread(leased.commit, [operation])
        except UnstorableValueError:
            raise
        except LeaseLostError as exc:
            self._shared.lost = True
            raise LeaseLost(str(exc)) from None
        except StateStoreError as exc:
            raise StoreFailure(exc) from exc
        self._shared.stats.commits += leased.commits - before
        self._shared.stats.commit_seconds += time.perf_counter() - clock
        return committed

    # ------------------------------------------------------------------ waiting

    async def sleep(
        self,
        duration: timedelta | float | None = None,
        *,
        until: datetime | None = None,
        name: str = "sleep",
    ) -> None:
        """Wait durably; a long wait suspends the run (see ``Context.sleep``)."""
        op = self._claim()
        replayed = self._replay(op, EntryKind.SLEEP, name)
        if replayed:
            wake_at: datetime = self._value(replayed[-1])
        else:
            wake_at = self._buffer(op, EntryKind.SLEEP, name, wake_time(duration, until))
        await self._wait_until(wake_at)

    async def wait_for_signal(
        self,
        name: str,
        *,
        timeout: timedelta | float | None = None,
        default: Any = None,
    ) -> Any:
        """Wait for the signal ``name`` and return its payload (``default`` on timeout)."""
        deadline: datetime | None = None
        if timeout is not None:
            seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
            deadline = await self._deterministic(
                EntryKind.CLOCK,
                f"deadline:{name}",
                lambda: utcnow() + timedelta(seconds=float(seconds)),
            )
        op = self._claim()
        replayed = self._replay(op, EntryKind.SIGNAL, name)
        if replayed:
            entry = replayed[-1]
            if entry.meta.get("timed_out"):
                return default
            return values.from_plain(self._value(entry))
        self._shared.live = True
        self._check_lease()
        leased = self._shared.leased
        try:
            taken = leased.take_signal(name, {"op": op})
        except LeaseLostError as exc:
            self._shared.lost = True
            raise LeaseLost(str(exc)) from None
        except StateStoreError as exc:
            raise StoreFailure(exc) from exc
        if taken is not None:
            return values.from_plain(taken.value)
        if deadline is not None and utcnow() >= deadline:
            self._buffer(op, EntryKind.SIGNAL, name, None, {"timed_out": True})
            return default
        raise Suspend(deadline, name)

    async def _wait_until(self, wake_at: datetime) -> None:
        budget = self._shared.budget
        wait = (wake_at - utcnow()).total_seconds()
        if wait <= 0:
            return
        if wait <= self._shared.inline_wait and wait + budget.margin < budget.remaining():
            await asyncio.sleep(wait)
            if budget.drain.is_set():
                raise HandOff(f"drain requested ({budget.drain_reason})")
            return
        raise Suspend(wake_at, None)

    # ------------------------------------------------------------------ deterministic reads

    async def now(self) -> datetime:
        """The current time (UTC), journaled."""
        return await self._deterministic(EntryKind.CLOCK, "now", utcnow)  # type: ignore[no-any-return]

    async def random(self) -> float:
        """A random float in [0, 1), journaled."""
        return float(await self._deterministic(EntryKind.RANDOM, "random", _random.random))

    async def uuid(self) -> str:
        """A random UUID (as a string), journaled."""
        return str(await self._deterministic(EntryKind.RANDOM, "uuid", lambda: str(_uuid.uuid4())))

    async def run_child(
        self, function: str | Any, child_input: Any = None, *, run_id: str | None = None
    ) -> Any:
        """Start a child run and wait for it to end (see ``Context.run_child``)."""
        name = function if isinstance(function, str) else str(function.name)
        # Both ids are claimed before the first await, so concurrent children number alike.
        op, wait_op = self._claim(), self._claim()
        replayed = self._replay(op, EntryKind.CHILD, name)
        children = self._shared.children
        if replayed:
            child_id = str(self._value(replayed[-1]))
        else:
            if children is None:
                raise RuntimeError("child runs need a leg run by an App (run_leg gives one)")
            child_id = validate_run_id(run_id) if run_id else child_run_id(self.run_id, op)
            try:
                await asyncio.to_thread(children.start, self.run_id, name, child_input, child_id)
            except StateStoreError as exc:
                raise StoreFailure(exc) from exc
            self._buffer(op, EntryKind.CHILD, name, child_id)
        signal = child_signal(child_id)
        waited = self._replay(wait_op, EntryKind.SIGNAL, signal)
        if waited:
            return child_result(values.from_plain(self._value(waited[-1])), function)
        assert children is not None
        taken = self._take(signal, wait_op)
        if taken is None:
            try:
                ended = await asyncio.to_thread(children.report_if_ended, self.run_id, child_id)
            except StateStoreError as exc:
                raise StoreFailure(exc) from exc
            if ended:
                taken = self._take(signal, wait_op)
        if taken is None:
            raise Suspend(utcnow() + RECHECK, signal)
        return child_result(values.from_plain(taken.value), function)

    def _take(self, name: str, op: str) -> Committed | None:
        self._shared.live = True
        self._check_lease()
        try:
            return self._shared.leased.take_signal(name, {"op": op})
        except LeaseLostError as exc:
            self._shared.lost = True
            raise LeaseLost(str(exc)) from None
        except StateStoreError as exc:
            raise StoreFailure(exc) from exc

    async def patched(self, change_id: str) -> bool:
        """True for runs reaching this point with the new code (see ``Context.patched``).

        The marker takes an operation id only when it is journaled (or found): a run on the old
        path never called ``patched`` here, so the ids of its later operations must not shift.
        """
        op = f"{self._scope}{self._counter}"
        found = self._shared.by_op.get(op)
        if found and found[0].kind is EntryKind.PATCH and found[0].name == change_id:
            self._counter += 1
            self._shared.by_op.pop(op)
            return True
        if found or self._later_in_scope(self._counter):
            return False  # the journal went past this point without the marker: the old path
        self._counter += 1
        self._buffer(op, EntryKind.PATCH, change_id, None)
        return True

    def _later_in_scope(self, number: int) -> bool:
        for key in self._shared.by_op:
            if not key.startswith(self._scope):
                continue
            head = key[len(self._scope) :].split("/", 1)[0]
            if head.isdigit() and int(head) >= number:
                return True
        return False

    async def _deterministic(self, kind: EntryKind, name: str, draw: Callable[[], Any]) -> Any:
        op = self._claim()
        replayed = self._replay(op, kind, name)
        if replayed:
            return self._value(replayed[-1])
        return self._buffer(op, kind, name, draw())

    # ------------------------------------------------------------------ plumbing

    def _replay(self, op: str, kind: EntryKind, name: str) -> list[JournalEntry]:
        entries = self._shared.by_op.pop(op, [])
        for entry in entries:
            if entry.kind is not kind or entry.name != name:
                raise NonDeterminismError(
                    self.run_id,
                    entry.seq,
                    f"{entry.kind.value} {entry.name!r} (operation {op})",
                    f"{kind.value} {name!r}",
                )
        return entries

    def _value(self, entry: JournalEntry) -> Any:
        try:
            return self._shared.leased.store.decode(
                self.run_id, entry.value, seq=entry.seq, key=f"seq {entry.seq}"
            )
        except StateStoreError as exc:
            raise StoreFailure(exc) from exc

    def _buffer(
        self,
        op: str,
        kind: EntryKind,
        name: str,
        value: Any,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        self._shared.live = True
        self._check_lease()
        now = utcnow()
        operation = Operation(
            kind=kind,
            name=name,
            value=value,
            started_at=now,
            ended_at=now,
            meta={**(meta or {}), "op": op},
        )
        try:
            return self._shared.leased.buffer(operation)
        except LeaseLostError as exc:
            self._shared.lost = True
            raise LeaseLost(str(exc)) from None
        except StateStoreError as exc:
            raise StoreFailure(exc) from exc

    def _check_lease(self) -> None:
        if self._shared.lost:
            raise LeaseLost(f"run {self.run_id!r}: the lease was lost")


class _NotStarted(Exception):  # noqa: N818 - a marker, never seen by user code
    """An item or branch that ``fail_fast`` kept from starting after another one failed."""


async def _settle(tasks: list[asyncio.Task[Any]], collect_failures: bool) -> list[Any]:
    """Wait for every task; raise the way the caller chose, control flow first."""
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    outcomes = (
        [o for o in outcomes if not isinstance(o, _NotStarted)]
        if any(isinstance(o, _NotStarted) for o in outcomes)
        else outcomes
    )
    deaths = [o for o in outcomes if _is_death(o)]
    if deaths:
        raise deaths[0]  # a kill (or an interpreter exit) outranks any way a branch stopped
    stops = [o for o in outcomes if isinstance(o, DurableControl)]
    if stops:
        raise _most_serious(stops)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        if collect_failures:
            raise ExceptionGroup(
                f"{len(failures)} of {len(outcomes)} failed",
                [f for f in failures if isinstance(f, Exception)],
            )
        raise failures[0]
    return list(outcomes)


def _is_death(outcome: object) -> bool:
    """A ``BaseException`` that is neither the user's error nor the runtime's control flow."""
    return isinstance(outcome, BaseException) and not isinstance(
        outcome, Exception | DurableControl | asyncio.CancelledError
    )


def is_async(fn: Callable[..., Any]) -> bool:
    """Is ``fn`` an ``async def`` durable function (it then gets an ``AsyncContext``)?"""
    return inspect.iscoroutinefunction(getattr(fn, "__wrapped__", fn))
