"""Which due runs a sweeper should re-drive now: one policy for every platform's sweeper.

``HotTier.due_runs`` lists every run that *could* take a leg. Some of those are already on their
way: a pending run whose start message or invoke is in flight, a handed-off run whose
continuation is queued. A sweeper that re-drove them at once would double every start, so those
wait a grace period; runs that nothing else will ever wake (an expired lease, a timer that ran
out, a signal that arrived) go at once, or after the platform's own redelivery had its chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from statestore import RunRecord, RunStatus


@dataclass(frozen=True)
class RedrivePolicy:
    """Seconds a run must have been due before a sweeper re-drives it, by why it is due."""

    pending_after: float  # never started: its creator's start message or invoke may be in flight
    unheld_after: float  # handed off: its continuation may be in flight
    expired_after: float = 0.0  # its leg died holding the lease (the platform may redeliver)

    def wants(self, record: RunRecord, now: datetime) -> bool:
        if not record.runnable(now):
            return False
        due = record.due_at()
        if due is None:
            return False
        if record.status is RunStatus.SUSPENDED:
            wait = 0.0  # a timer ran out or a signal arrived: nothing else will wake it
        elif record.status is RunStatus.PENDING:
            wait = self.pending_after
        elif record.lease is None:
            wait = self.unheld_after
        else:
            wait = self.expired_after
        return (now - due).total_seconds() >= wait
