"""One leg: take the lease, load the journal, replay, run live until done or the budget ends.

Ends, and what is committed for each:

- completed: the result (and buffered entries) in one fenced write;
- failed: the error, likewise; a non-deterministic replay fails the run too;
- suspended: a timer or a signal wait; the lease is released, no compute is held;
- handed_off: budget nearly spent or drain requested; lease released, next leg dispatched;
- skipped: the lease could not be taken (a duplicate or stale delivery): nothing done;
- lease_lost / cancelled: another leg or a cancel took the run away mid-leg: stop, write nothing.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from outlast.budget import Budget
from outlast.context import Context, error_info
from outlast.dispatch import Dispatcher, NullDispatcher
from outlast.errors import (
    FunctionNotFoundError,
    HandOff,
    LeaseLost,
    NonDeterminismError,
    StepFailedError,
    Suspend,
)
from outlast.faults import FaultPlan
from outlast.journal_cache import PROCESS_CACHE, JournalCache
from outlast.values import to_plain
from statestore import (
    LeaseHeldError,
    LeaseLostError,
    RunRecord,
    RunStatus,
    RunUpdate,
    StateStoreError,
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
    faults: FaultPlan | None = None,
    on_context: Callable[[Context], None] | None = None,
) -> LegOutcome:
    """Run one leg of ``run_id`` and say how it ended.

    ``lease_ttl`` defaults to the budget's time left plus a margin (so a platform with a hard
    deadline, like Lambda, needs no heartbeat), or to ``app.lease_ttl`` with a heartbeat every
    third of it when the budget is unlimited.
    """
    budget = budget if budget is not None else Budget.unlimited()
    # Not `or`: an empty collecting dispatcher is falsy (it has a length).
    dispatcher = dispatcher if dispatcher is not None else NullDispatcher()
    store = app.store
    hot = store.hot
    remaining = budget.remaining()
    if lease_ttl is None:
        if remaining == float("inf"):
            lease_ttl = app.lease_ttl
            heartbeat = heartbeat or lease_ttl / 3
        else:
            lease_ttl = max(remaining, 0.0) + app.lease_margin
    try:
        lease = hot.acquire_lease(
            run_id, owner or default_owner(), timedelta(seconds=lease_ttl), expect_leg=expect_leg
        )
    except LeaseHeldError as exc:
        return LegOutcome(run_id=run_id, status="skipped", detail=str(exc))
    record = hot.get_run(run_id)
    leg = record.counters.legs
    token = lease.token
    try:
        durable = app.function(record.function)
    except FunctionNotFoundError:
        # This process cannot run it; give the run back untouched for a process that can.
        hot.release_lease(run_id, token)
        raise

    journal = cache.load(hot, run_id)
    ctx = Context(
        store=store,
        run_id=run_id,
        token=token,
        leg=leg,
        journal=journal,
        budget=budget,
        retry=app.retry,
        inline_wait=app.inline_wait,
        faults=faults,
    )
    if on_context is not None:
        on_context(ctx)
    beat = _Heartbeat(app, run_id, token, lease_ttl, heartbeat, ctx) if heartbeat else None

    def outcome(status: LegStatus, detail: str = "", next_leg: int | None = None) -> LegOutcome:
        cache.store(run_id, ctx.committed_entries)
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
            return _finish(app, run_id, token, leg, ctx, durable.fn, record, dispatcher, outcome)
        finally:
            if beat is not None:
                beat.stop()
    except (LeaseLost, LeaseLostError) as exc:
        current = hot.find_run(run_id)
        if current is not None and current.status is RunStatus.CANCELLED:
            return outcome("cancelled", "the run was cancelled")
        return outcome("lease_lost", str(exc))


def _finish(
    app: App,
    run_id: str,
    token: int,
    leg: int,
    ctx: Context,
    fn: Callable[..., Any],
    record: RunRecord,
    dispatcher: Dispatcher,
    outcome: Callable[..., LegOutcome],
) -> LegOutcome:
    """Run the function and commit how it ended. Store errors propagate: the platform retries."""
    store = app.store
    hot = store.hot
    try:
        result = _call(fn, ctx, store.run_input(record))
        try:
            stored = store.encode(run_id, to_plain(result))
        except TypeError as exc:
            raise TypeError(
                f"durable function {record.function!r} returned a result that cannot be "
                f"stored: {exc}"
            ) from None
    except Suspend as exc:
        hot.suspend(
            run_id,
            token,
            wake_at=exc.wake_at,
            waiting_for=exc.waiting_for,
            entries=ctx.take_pending(),
        )
        what = f"signal {exc.waiting_for!r}" if exc.waiting_for else "timer"
        until = f" until {exc.wake_at.isoformat()}" if exc.wake_at else ""
        return outcome("suspended", f"waiting for {what}{until}")
    except HandOff as exc:
        hot.append(run_id, token, ctx.take_pending(), RunUpdate(release_lease=True, handoff=True))
        dispatcher.continue_run(run_id, leg + 1)
        return outcome("handed_off", exc.reason, next_leg=leg + 1)
    except (LeaseLost, LeaseLostError, StateStoreError):
        raise
    except NonDeterminismError as exc:
        hot.fail(run_id, token, error_info(exc), ctx.take_pending())
        return outcome("failed", str(exc))
    except StepFailedError as exc:
        info = exc.error.model_copy(update={"message": f"step {exc.step!r}: {exc.error.message}"})
        hot.fail(run_id, token, info, ctx.take_pending())
        return outcome("failed", str(exc))
    except Exception as exc:  # noqa: BLE001 - the run's own failure is committed, not raised
        hot.fail(run_id, token, error_info(exc), ctx.take_pending())
        return outcome("failed", f"{type(exc).__name__}: {exc}")
    hot.complete(run_id, token, stored, ctx.take_pending())
    return outcome("completed")


def _call(fn: Callable[..., Any], ctx: Context, run_input: Any) -> Any:
    # A durable function may take (ctx) or (ctx, input).
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(ctx, run_input)
    positional = [
        p
        for p in params.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if len(positional) == 1 and positional[0].kind is not inspect.Parameter.VAR_POSITIONAL:
        return fn(ctx)
    return fn(ctx, run_input)


class _Heartbeat:
    """Renews the lease while a leg runs without a hard deadline (workers, long steps)."""

    def __init__(
        self, app: App, run_id: str, token: int, ttl: float, every: float, ctx: Context
    ) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop,
            args=(app, run_id, token, ttl, every, ctx),
            daemon=True,
            name=f"outlast-heartbeat-{run_id}",
        )
        self._thread.start()

    def _loop(
        self, app: App, run_id: str, token: int, ttl: float, every: float, ctx: Context
    ) -> None:
        while not self._stop.wait(every):
            try:
                app.store.hot.renew_lease(run_id, token, timedelta(seconds=ttl))
            except LeaseLostError:
                ctx.mark_lease_lost()
                return
            except StateStoreError as exc:
                log.warning("run %s: lease renewal failed, will retry: %s", run_id, exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
