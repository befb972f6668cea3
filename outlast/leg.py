"""One leg: take the lease, load the journal, replay, run live until done or the budget ends.

Ends, and what is committed for each:

- completed: the result (and buffered entries) in one fenced write;
- failed: the error, likewise; a non-deterministic replay fails the run too;
- suspended: a timer or a signal wait; the lease is released, no compute is held;
- handed_off: budget nearly spent or drain requested; lease released, next leg dispatched;
- skipped: the lease could not be taken (a duplicate or stale delivery): nothing done;
- lease_lost / cancelled: another leg or a cancel took the run away mid-leg: stop, write nothing.

A store failure (``StoreFailure`` inside the function, a ``StateStoreError`` around it) is not an
end: the leg gives its lease back and re-raises the store's error, so the platform retries the
leg at once instead of after the lease runs out. On every path but a clean suspend or hand-off the
journal cache forgets the run: only a leg that ended cleanly knows exactly what the store holds.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from outlast.async_context import AsyncContext, is_async
from outlast.budget import Budget
from outlast.children import ChildRuns, notify_parent
from outlast.context import Context, entered, error_info
from outlast.dispatch import Dispatcher, NullDispatcher
from outlast.errors import (
    FunctionNotFoundError,
    HandOff,
    LeaseLost,
    NonDeterminismError,
    StepFailedError,
    StoreFailure,
    Suspend,
)
from outlast.journal_cache import PROCESS_CACHE, JournalCache, ReplayJournal
from outlast.values import from_plain, input_adapter, to_plain
from statestore import (
    LeasedRun,
    LeaseHeldError,
    LeaseLostError,
    RunStatus,
    StateStoreError,
    UnstorableValueError,
)

if TYPE_CHECKING:
    from outlast.app import App

LegStatus = Literal[
    "completed", "failed", "suspended", "handed_off", "skipped", "lease_lost", "cancelled"
]

log = logging.getLogger("outlast.leg")

_HOST = socket.gethostname()


class LegOutcome(BaseModel):
    run_id: str
    leg: int | None = None
    status: LegStatus
    detail: str = ""
    steps_executed: int = 0
    steps_replayed: int = 0
    commits: int = 0
    step_seconds: float = 0.0
    next_leg: int | None = None


def default_owner() -> str:
    return f"{_HOST}:{os.getpid()}:{threading.get_ident() % 100000}"


def run_leg(
    app: App,
    run_id: str,
    *,
    budget: Budget | None = None,
    dispatcher: Dispatcher | None = None,
    expect_leg: int | None = None,
    owner: str | None = None,
    lease_ttl: float | None = None,
    heartbeat: float | None = None,
    cache: JournalCache = PROCESS_CACHE,
    fault: Callable[[str], None] | None = None,
    on_context: Callable[[Context | AsyncContext], None] | None = None,
) -> LegOutcome:
    """Run one leg of ``run_id`` and say how it ended.

    ``lease_ttl`` defaults to the budget's time left plus a margin (so a platform with a hard
    deadline, like Lambda, needs no heartbeat), or to ``app.lease_ttl`` with a heartbeat every
    third of it when the budget is unlimited. ``fault`` is a test double's hook into the commit
    path (see ``outlast.testing.faults``); production passes none.
    """
    budget = budget if budget is not None else Budget.unlimited()
    # Not `or`: an empty collecting dispatcher is falsy (it has a length).
    dispatcher = dispatcher if dispatcher is not None else NullDispatcher()
    store = app.store
    remaining = budget.remaining()
    if lease_ttl is None:
        if remaining == float("inf"):
            lease_ttl = app.lease_ttl
            heartbeat = heartbeat or lease_ttl / 3
        else:
            lease_ttl = max(remaining, 0.0) + app.lease_margin
    try:
        leased = LeasedRun.take(
            store,
            run_id,
            owner or default_owner(),
            timedelta(seconds=lease_ttl),
            expect_leg=expect_leg,
            fault=fault,
        )
    except LeaseHeldError as exc:
        return LegOutcome(run_id=run_id, status="skipped", detail=str(exc))
    record = leased.record
    leg = leased.leg
    try:
        durable = app.function(record.function)
    except FunctionNotFoundError as exc:
        # Broken state for this deployment: give the run back, blocked after a few such legs.
        _give_back(app, leased, exc, transient=False)
        raise

    try:
        journal = cache.open(store.hot, record)
        run_input = from_plain(store.run_input(record))
    except StateStoreError as exc:
        cache.forget(run_id)
        _give_back(app, leased, exc, transient=exc.transient)
        raise
    ctx: Context | AsyncContext
    try:
        ctx = (AsyncContext if is_async(durable.fn) else Context)(
            leased=leased,
            journal=journal,
            budget=budget,
            retry=app.retry_policy,
            inline_wait=app.inline_wait,
            max_interruptions=app.max_interruptions,
            children=ChildRuns(app, dispatcher),
        )
    except StateStoreError as exc:  # an async context reads the whole journal up front
        cache.forget(run_id)
        _give_back(app, leased, exc, transient=exc.transient)
        raise
    except NonDeterminismError as exc:
        leased.end(RunStatus.FAILED, error=error_info(exc))
        cache.forget(run_id)
        return LegOutcome(run_id=run_id, leg=leg, status="failed", detail=str(exc))
    if on_context is not None:
        on_context(ctx)
    beat = _Heartbeat(leased, lease_ttl, heartbeat, ctx) if heartbeat else None

    def outcome(status: LegStatus, detail: str = "", next_leg: int | None = None) -> LegOutcome:
        if status in ("suspended", "handed_off"):
            _keep_journal(cache, leased, journal)
        else:
            cache.forget(run_id)
        return LegOutcome(
            run_id=run_id,
            leg=leg,
            status=status,
            detail=detail,
            steps_executed=ctx.stats.steps_executed,
            steps_replayed=ctx.stats.steps_replayed,
            commits=ctx.stats.commits,
            step_seconds=ctx.stats.step_seconds,
            next_leg=next_leg,
        )

    try:
        try:
            ended = _finish(
                ctx, leased, durable.fn, record.function, run_input, dispatcher, outcome
            )
            if leased.record.status.terminal:
                notify_parent(app, leased.record)  # a parent waiting on this child wakes
            return ended
        finally:
            if beat is not None:
                beat.stop()
    except (LeaseLost, LeaseLostError) as exc:
        current = store.hot.find_run(run_id)
        if current is not None and current.status is RunStatus.CANCELLED:
            return outcome("cancelled", "the run was cancelled")
        return outcome("lease_lost", str(exc))
    except StoreFailure as exc:
        cache.forget(run_id)
        _give_back(app, leased, exc.error, transient=exc.error.transient)
        raise exc.error from exc
    except StateStoreError as exc:
        cache.forget(run_id)
        _give_back(app, leased, exc, transient=exc.transient)
        raise
    except BaseException:
        # A crash (or a test's simulated kill): the lease stays held and runs out, as it would.
        cache.forget(run_id)
        raise


def _give_back(app: App, leased: LeasedRun, exc: BaseException, *, transient: bool) -> None:
    """Give the run back after ``exc``, to be retried after a backoff, or blocked.

    The platform's retry (or the sweeper) then starts the next leg when the run is due again:
    never in a tight loop, and never more than ``app.max_broken_legs`` times on broken state.
    """
    info = error_info(exc).model_copy(
        update={"transient": transient, "seq": getattr(exc, "seq", None)}
    )
    written = leased.give_back(
        info, delay=app.trouble_delay(leased.record.troubles), max_broken=app.max_broken_legs
    )
    if written is not None and written.status is RunStatus.BLOCKED:
        log.error("run %s blocked after %d legs: %s", leased.run_id, written.broken, info.message)


def _keep_journal(cache: JournalCache, leased: LeasedRun, journal: ReplayJournal) -> None:
    replayed, written = journal.kept, leased.written
    if replayed is None or written is None or journal.replayed != journal.total:
        cache.forget(leased.run_id)
    else:
        cache.store(leased.record, replayed + written)


def _finish(
    ctx: Context | AsyncContext,
    leased: LeasedRun,
    fn: Callable[..., Any],
    function: str,
    run_input: Any,
    dispatcher: Dispatcher,
    outcome: Callable[..., LegOutcome],
) -> LegOutcome:
    """Run the function and commit how it ended. Store errors propagate: the platform retries."""
    run_id = leased.run_id
    try:
        result = _call(fn, ctx, run_input)
        left = ctx.unreplayed()
        if left is not None:
            raise NonDeterminismError(
                run_id, left.seq, f"{left.kind.value} {left.name!r}", "returned before it"
            )
        try:
            plain = to_plain(result)
        except TypeError as exc:
            raise TypeError(
                f"durable function {function!r} returned a result that cannot be stored: {exc}"
            ) from None
    except Suspend as exc:
        leased.end(RunStatus.SUSPENDED, wake_at=exc.wake_at, waiting_for=exc.waiting_for)
        what = f"signal {exc.waiting_for!r}" if exc.waiting_for else "timer"
        until = f" until {exc.wake_at.isoformat()}" if exc.wake_at else ""
        return outcome("suspended", f"waiting for {what}{until}")
    except HandOff as exc:
        leased.hand_off()
        dispatcher.continue_run(run_id, leased.leg + 1)
        return outcome("handed_off", exc.reason, next_leg=leased.leg + 1)
    except (LeaseLost, StoreFailure):
        raise
    except NonDeterminismError as exc:
        return _failed(leased, error_info(exc), str(exc), outcome)
    except StepFailedError as exc:
        info = exc.error.model_copy(
            update={"message": f"step {exc.step!r}: {exc.error.message}", "seq": exc.seq}
        )
        return _failed(leased, info, str(exc), outcome)
    except Exception as exc:  # noqa: BLE001 - the run's own failure is committed, not raised
        return _failed(leased, error_info(exc), f"{type(exc).__name__}: {exc}", outcome)
    try:
        leased.end(RunStatus.SUCCEEDED, result=plain)
    except UnstorableValueError as exc:
        error = TypeError(f"durable function {function!r} returned a result that {exc}")
        return _failed(leased, error_info(error), str(error), outcome)
    return outcome("completed")


def _failed(
    leased: LeasedRun, info: Any, detail: str, outcome: Callable[..., LegOutcome]
) -> LegOutcome:
    leased.end(RunStatus.FAILED, error=info)
    return outcome("failed", detail)


def _call(fn: Callable[..., Any], ctx: Context | AsyncContext, run_input: Any) -> Any:
    adapter = input_adapter(fn)
    if adapter is not None:
        # The declared type, live and on every replay (an input stored before the annotation
        # changed fails the run here, clearly, instead of deep in the code).
        run_input = adapter.validate_python(run_input)
    if isinstance(ctx, AsyncContext):
        args = (run_input,) if _takes_input(fn) else ()
        return _run_coroutine(ctx.run(fn, *args))
    return _call_with(fn, ctx, run_input)


def _run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run the leg's event loop in this thread, or in a thread of its own if one already runs."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outlast-leg-loop") as pool:
        return pool.submit(asyncio.run, coro).result()


def _takes_input(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in params.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return not (len(positional) == 1 and positional[0].kind is not inspect.Parameter.VAR_POSITIONAL)


def _call_with(fn: Callable[..., Any], ctx: Context, run_input: Any) -> Any:
    # A durable function may take (ctx) or (ctx, input).
    with entered(ctx):
        return fn(ctx, run_input) if _takes_input(fn) else fn(ctx)


class _Heartbeat:
    """Renews the lease while a leg runs without a hard deadline (workers, long steps).

    It renews through the leg's leased run, whose lock orders renewals with the leg's commits:
    the two never race each other's compare-and-set.
    """

    def __init__(
        self, leased: LeasedRun, ttl: float, every: float, ctx: Context | AsyncContext
    ) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop,
            args=(leased, ttl, every, ctx),
            daemon=True,
            name=f"outlast-heartbeat-{leased.run_id}",
        )
        self._thread.start()

    def _loop(
        self, leased: LeasedRun, ttl: float, every: float, ctx: Context | AsyncContext
    ) -> None:
        while not self._stop.wait(every):
            try:
                leased.renew(timedelta(seconds=ttl))
            except LeaseLostError:
                ctx.mark_lease_lost()
                return
            except StateStoreError as exc:
                log.warning("run %s: lease renewal failed, will retry: %s", leased.run_id, exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
