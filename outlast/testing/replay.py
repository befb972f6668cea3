"""A context over a run's whole journal, for tests that check a function replays without work."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from outlast.budget import Budget
from outlast.context import Context
from outlast.journal_cache import JournalCache
from outlast.retry import RetryPolicy
from statestore import Lease, LeasedRun, utcnow

if TYPE_CHECKING:
    from outlast.app import App


def replay_context(app: App, run_id: str) -> Context:
    """A ``Context`` that replays ``run_id``'s journal and can write nothing.

    Its lease token is one the run never handed out, so any write is refused by fencing: a
    function that tries to run a step live fails with ``LeaseLost`` instead of changing the run.
    """
    record = app.store.hot.get_run(run_id)
    lease = Lease(
        owner="replay-only",
        token=record.fence + 1_000_000,
        expires_at=utcnow() - timedelta(seconds=1),
    )
    leased = LeasedRun(app.store, record, lease)
    return Context(
        leased=leased,
        journal=JournalCache().open(app.store.hot, record),
        budget=Budget.unlimited(),
        retry=RetryPolicy(),
    )
