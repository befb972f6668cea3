"""Child runs: a run started by another run's operation; the parent suspends until it ends.

How a parent learns that its child ended, without polling a store on a hot path:

1. The parent's ``run_child`` starts the child idempotently (its id is derived from the parent's
   id and seq, so a replay or a second leg starts the same child) and journals a ``child`` entry.
2. It then waits for the signal ``child:<id>``, like any signal: the run suspends, holding no
   compute.
3. The leg that ends the child sends that signal to the parent with the child's outcome, which
   wakes it. If that signal was lost (the ending leg died right after its final write), the
   parent looks at the child itself each time it reaches the wait, and sends the signal on the
   child's behalf; it also parks with a timer, so it looks again even if nothing wakes it.

Cancelling a parent cancels its children (and theirs).
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from outlast import values
from outlast.dispatch import Dispatcher
from outlast.errors import RunFailedError
from statestore import (
    EntryKind,
    ErrorInfo,
    RunEndedError,
    RunNotFoundError,
    RunRecord,
    RunStatus,
    StateStoreError,
)

if TYPE_CHECKING:
    from outlast.app import App

log = logging.getLogger("outlast.children")

PARENT_TAG = "parent"
SIGNAL_PREFIX = "child:"
# How long a parent parks before it looks at a child whose ending it was not told of.
RECHECK = timedelta(minutes=1)


def child_signal(child_id: str) -> str:
    return f"{SIGNAL_PREFIX}{child_id}"


def child_run_id(parent_id: str, op: int | str) -> str:
    """A child's id derived from its parent's id and the operation that starts it."""
    suffix = re.sub(r"[^A-Za-z0-9_-]", "_", str(op))
    candidate = f"{parent_id}-c{suffix}"
    if len(candidate) <= 64:
        return candidate
    digest = hashlib.sha256(parent_id.encode()).hexdigest()[:24]
    return f"c{digest}-{suffix}"[:64]


def child_result(outcome: Any, function: Any) -> Any:
    """The child's result rebuilt as its function's type, or its failure raised."""
    if not isinstance(outcome, dict):
        raise TypeError(f"a child run's outcome is not a mapping: {outcome!r}")
    status = str(outcome.get("status"))
    if status == RunStatus.SUCCEEDED.value:
        result = outcome.get("result")
        fn = getattr(function, "fn", None)
        return values.rebuild(fn, result) if callable(fn) else values.from_plain(result)
    error = outcome.get("error")
    info = ErrorInfo.model_validate(error) if isinstance(error, dict) else None
    raise RunFailedError(str(outcome.get("run_id")), status, info)


def outcome_of(app: App, record: RunRecord) -> dict[str, Any]:
    """What a parent receives: the child's status, and its stored result or error."""
    out: dict[str, Any] = {"run_id": record.run_id, "status": record.status.value}
    if record.status is RunStatus.SUCCEEDED and record.result is not None:
        out["result"] = app.store.run_result(record)
    if record.error is not None:
        out["error"] = record.error.model_dump(mode="json")
    return out


class ChildRuns:
    """What a leg's context needs to start children and hear from them."""

    def __init__(self, app: App, dispatcher: Dispatcher) -> None:
        self.app = app
        self.dispatcher = dispatcher

    def start(self, parent_id: str, function: str, child_input: Any, child_id: str) -> None:
        """Create the child (idempotent on its id and input) and ask for its first leg."""
        self.app.start(function, child_input, run_id=child_id, tags={PARENT_TAG: parent_id})
        self.dispatcher.continue_run(child_id, 1)

    def report_if_ended(self, parent_id: str, child_id: str) -> bool:
        """Send the parent the child's outcome now if the child already ended."""
        record = self.app.store.hot.find_run(child_id)
        if record is None or not record.status.terminal:
            return False
        notify(self.app, record, parent_id)
        return True


def notify_parent(app: App, record: RunRecord) -> None:
    """Called when a run ends: tell its parent, if it has one. Never raises."""
    parent_id = record.tags.get(PARENT_TAG)
    if parent_id:
        notify(app, record, parent_id)


def notify(app: App, record: RunRecord, parent_id: str) -> None:
    try:
        pending = app.store.hot.pending_signals(parent_id, child_signal(record.run_id))
        if not pending:
            app.signal(parent_id, child_signal(record.run_id), outcome_of(app, record))
    except (RunEndedError, RunNotFoundError):
        pass  # the parent ended (or was deleted) first: nobody waits any more
    except StateStoreError as exc:
        # The parent looks at the child itself when it reaches its wait, and parks with a timer.
        log.warning("run %s: could not tell parent %s it ended: %s", record.run_id, parent_id, exc)


def children_of(app: App, run_id: str) -> list[str]:
    """The child run ids a run started, in the order it started them."""
    return [
        str(app.store.decode(run_id, e.value))
        for e in app.store.hot.read_journal(run_id)
        if e.kind is EntryKind.CHILD
    ]


def cancel_tree(app: App, run_id: str, reason: str = "cancelled") -> RunRecord:
    """Cancel a run and, depth first, every child it started that has not ended."""
    record = app.store.hot.cancel(run_id, reason)
    for child in children_of(app, run_id):
        try:
            found = app.store.hot.find_run(child)
            if found is not None and not found.status.terminal:
                cancel_tree(app, child, f"its parent {run_id!r} was cancelled")
        except StateStoreError as exc:
            log.warning("run %s: could not cancel child %s: %s", run_id, child, exc)
    return record
