"""The Lambda sweeper: on a schedule, re-drive the runs nobody else will.

A run is due (``HotTier.due_runs``, an index query) when its lease expired (its leg was killed
without handing off), its timer passed, a signal it waits for arrived, or it is pending or handed
off with no leg running. For each, the sweeper asynchronously invokes the agent function with a
recovery event (a continuation without a leg number). Duplicates are harmless: two legs cannot
both take the lease, and the loser returns ``skipped``.

Runs that are pending, or handed off with no lease, are normally being started by whoever created
them or by the hand-off's own invoke; the sweeper leaves them alone for ``grace`` seconds so a
minute's tick does not double every start. Expired leases and due timers are sent at once.

One invocation does at most ``limit`` runs and stops early when its own time runs short; what is
left is still due at the next tick.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from outlast.platforms.aws_lambda import InvokeClient, LambdaDispatcher, default_lambda_client
from outlast.sweep import RedrivePolicy
from statestore import HotTier

__all__ = ["SweepReport", "SweeperHandler", "sweep"]

log = logging.getLogger("outlast.sweeper")

DEFAULT_LIMIT = 200
DEFAULT_GRACE = 60.0


class SweepReport(BaseModel):
    due: int = 0
    dispatched: list[str] = Field(default_factory=list)
    not_yet: int = 0  # pending / handed off within the grace period
    failed: list[str] = Field(default_factory=list)
    stopped_early: bool = False


def sweep(
    hot: HotTier,
    dispatcher: LambdaDispatcher,
    *,
    limit: int = DEFAULT_LIMIT,
    grace: float = DEFAULT_GRACE,
    time_left: Callable[[], float] | None = None,
    reserve: float = 3.0,
) -> SweepReport:
    """Dispatch a recovery for each due run (at most ``limit``); see the module doc."""
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
    return report


class SweeperHandler:
    """``handler(event, context)`` for the scheduled sweeper function.

    The store is the hot tier named by ``OUTLAST_HOT_URL`` (the sweeper reads no blobs); legs are
    dispatched to ``OUTLAST_AGENT_FUNCTION``. ``lambda_client`` may be replaced (tests).
    """

    def __init__(
        self,
        *,
        hot: HotTier | None = None,
        agent_function: str | None = None,
        lambda_client: InvokeClient | None = None,
        limit: int = DEFAULT_LIMIT,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self._hot = hot
        self._opened: tuple[str, HotTier] | None = None
        self.agent_function = agent_function
        self.lambda_client = lambda_client
        self.limit = limit
        self.grace = grace

    @property
    def hot(self) -> HotTier:
        """The given tier, else the one ``OUTLAST_HOT_URL`` names (kept while the URL stays)."""
        if self._hot is not None:
            return self._hot
        from statestore import open_hot
        from statestore.urls import DEFAULT_HOT_URL, HOT_ENV

        url = os.environ.get(HOT_ENV) or DEFAULT_HOT_URL
        if self._opened is None or self._opened[0] != url:
            if self._opened is not None:
                self._opened[1].close()
            self._opened = (url, open_hot(url))
        return self._opened[1]

    def _client(self) -> InvokeClient:
        return self.lambda_client if self.lambda_client is not None else default_lambda_client()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        function = self.agent_function or os.environ.get("OUTLAST_AGENT_FUNCTION")
        if not function:
            raise RuntimeError("OUTLAST_AGENT_FUNCTION names no agent function to dispatch to")
        dispatcher = LambdaDispatcher(self._client, function)
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        report = sweep(
            self.hot,
            dispatcher,
            limit=self.limit,
            grace=self.grace,
            time_left=(lambda: float(remaining()) / 1000.0) if remaining else None,
        )
        level = logging.WARNING if report.failed else logging.INFO
        log.log(
            level,
            "sweep: %d due, %d dispatched, %d within grace, %d failed%s",
            report.due,
            len(report.dispatched),
            report.not_yet,
            len(report.failed),
            " (stopped early: out of time)" if report.stopped_early else "",
        )
        return report.model_dump()
