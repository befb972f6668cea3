"""The Lambda sweeper: on a schedule, re-drive the runs nobody else will.

A run is due (``HotTier.due_runs``, an index query) when its lease expired (its leg was killed
without handing off), its timer passed, a signal it waits for arrived, or it is pending or handed
off with no leg running. For each, the sweeper asynchronously invokes the agent function with a
recovery event (a continuation without a leg number). Duplicates are harmless: two legs cannot
both take the lease, and the loser returns ``skipped``.

Runs that are pending, or handed off with no lease, are normally being started by whoever created
them or by the hand-off's own invoke; the sweeper leaves them alone for ``grace`` seconds so a
minute's tick does not double every start. Expired leases and due timers are sent at once.
Each goes to the function version the run is pinned to (its ``lambda_version`` tag), else to
``OUTLAST_AGENT_FUNCTION``.

One invocation does at most ``limit`` runs and stops early when its own time runs short; what is
left is still due at the next tick.

When the hot tier has a retention (``?retention_days=N``), each tick then deletes up to
``expire_limit`` runs that ended longer ago than that (``StateStore.expire_runs``: their blobs,
journal, signals and record), again only while time is left; the rest go at later ticks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from outlast.platforms.aws_lambda import (
    InvokeClient,
    LambdaDispatcher,
    default_lambda_client,
    pin_of,
)
from outlast.sweep import RedrivePolicy
from statestore import ColdTier, HotTier, StateStore, StateStoreError

__all__ = ["SweepReport", "SweeperHandler", "sweep"]

log = logging.getLogger("outlast.sweeper")

DEFAULT_LIMIT = 200
DEFAULT_GRACE = 60.0
DEFAULT_EXPIRE_LIMIT = 50
_EXPIRE_BATCH = 10  # runs per expire_runs call, so the time left is checked between batches


class SweepReport(BaseModel):
    due: int = 0
    dispatched: list[str] = Field(default_factory=list)
    not_yet: int = 0  # pending / handed off within the grace period
    failed: list[str] = Field(default_factory=list)
    stopped_early: bool = False
    expired: list[str] = Field(default_factory=list)  # ended runs deleted (retention)
    expire_error: str = ""


def sweep(
    hot: HotTier,
    dispatcher: LambdaDispatcher,
    *,
    limit: int = DEFAULT_LIMIT,
    grace: float = DEFAULT_GRACE,
    time_left: Callable[[], float] | None = None,
    reserve: float = 3.0,
    cold: ColdTier | None = None,
    expire_limit: int = DEFAULT_EXPIRE_LIMIT,
) -> SweepReport:
    """Dispatch a recovery for each due run (at most ``limit``), then, given the cold tier,
    delete expired runs (at most ``expire_limit``); see the module doc."""
    report = SweepReport()
    policy = RedrivePolicy(pending_after=grace, unheld_after=grace)
    now = hot.now()
    for run_id in hot.due_runs(now=now, limit=limit):
        report.due += 1
        if time_left is not None and time_left() < reserve:
            report.stopped_early = True
            break
        record = hot.find_run(run_id)
        if record is None or not record.runnable(now):
            continue
        if not policy.wants(record, now):
            report.not_yet += 1
            continue
        if dispatcher.recover(run_id):
            report.dispatched.append(run_id)
        else:
            report.failed.append(run_id)
    if cold is not None and hot.retention is not None and not report.stopped_early:
        _expire(StateStore(hot, cold), report, expire_limit, time_left, reserve)
    return report


def _expire(
    store: StateStore,
    report: SweepReport,
    limit: int,
    time_left: Callable[[], float] | None,
    reserve: float,
) -> None:
    """Delete expired runs in small batches while time is left; a failure waits for next tick."""
    while len(report.expired) < limit:
        if time_left is not None and time_left() < reserve:
            report.stopped_early = True
            return
        try:
            batch = store.expire_runs(limit=min(_EXPIRE_BATCH, limit - len(report.expired)))
        except StateStoreError as exc:
            # Dispatching is the sweeper's first job and is done; expiry is retried next tick.
            report.expire_error = str(exc)
            return
        report.expired.extend(batch)
        if not batch:
            return


class SweeperHandler:
    """``handler(event, context)`` for the scheduled sweeper function.

    The store is the hot tier named by ``OUTLAST_HOT_URL`` (the sweeper reads no blobs); legs are
    dispatched to ``OUTLAST_AGENT_FUNCTION``. ``lambda_client`` may be replaced (tests).
    """

    def __init__(
        self,
        *,
        hot: HotTier | None = None,
        cold: ColdTier | None = None,
        agent_function: str | None = None,
        lambda_client: InvokeClient | None = None,
        limit: int = DEFAULT_LIMIT,
        grace: float = DEFAULT_GRACE,
        expire_limit: int = DEFAULT_EXPIRE_LIMIT,
    ) -> None:
        self._hot = hot
        self._opened: tuple[str, HotTier] | None = None
        self._cold = cold
        self._opened_cold: tuple[str, ColdTier] | None = None
        self.agent_function = agent_function
        self.lambda_client = lambda_client
        self.limit = limit
        self.grace = grace
        self.expire_limit = expire_limit

    @property
    def hot(self) -> HotTier:
        """The given tier, else the one ``OUTLAST_HOT_URL`` names (kept while the URL stays)."""
        if self._hot is not None:
            return self._hot
        from statestore import DEFAULT_HOT_URL, HOT_ENV, open_hot

        url = os.environ.get(HOT_ENV) or DEFAULT_HOT_URL
        if self._opened is None or self._opened[0] != url:
            if self._opened is not None:
                self._opened[1].close()
            self._opened = (url, open_hot(url))
        return self._opened[1]

    @property
    def cold(self) -> ColdTier:
        """The given cold tier, else the one ``OUTLAST_COLD_URL`` names (for expiring runs)."""
        if self._cold is not None:
            return self._cold
        from statestore import COLD_ENV, DEFAULT_COLD_URL, open_cold

        url = os.environ.get(COLD_ENV) or DEFAULT_COLD_URL
        if self._opened_cold is None or self._opened_cold[0] != url:
            if self._opened_cold is not None:
                self._opened_cold[1].close()
            self._opened_cold = (url, open_cold(url))
        return self._opened_cold[1]

    def _client(self) -> InvokeClient:
        return self.lambda_client if self.lambda_client is not None else default_lambda_client()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        function = self.agent_function or os.environ.get("OUTLAST_AGENT_FUNCTION")
        if not function:
            raise RuntimeError("OUTLAST_AGENT_FUNCTION names no agent function to dispatch to")
        hot = self.hot

        def pin(run_id: str) -> str | None:
            record = hot.find_run(run_id)
            return pin_of(record.tags) if record is not None else None

        # A re-driven run goes back to the function version it started on.
        dispatcher = LambdaDispatcher(self._client, function, pins=pin)
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        report = sweep(
            hot,
            dispatcher,
            limit=self.limit,
            grace=self.grace,
            time_left=(lambda: float(remaining()) / 1000.0) if remaining else None,
            # Without a retention nothing expires, and the cold tier is not even opened.
            cold=self.cold if hot.retention is not None else None,
            expire_limit=self.expire_limit,
        )
        level = logging.WARNING if report.failed or report.expire_error else logging.INFO
        log.log(
            level,
            "sweep: %d due, %d dispatched, %d within grace, %d failed, %d expired%s%s",
            report.due,
            len(report.dispatched),
            report.not_yet,
            len(report.failed),
            len(report.expired),
            f" (expiry failed: {report.expire_error})" if report.expire_error else "",
            " (stopped early: out of time)" if report.stopped_early else "",
        )
        return report.model_dump()
