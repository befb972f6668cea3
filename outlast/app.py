"""``App``: a registry of durable functions bound to a state store, and the calls to drive runs."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError

from outlast.budget import Budget
from outlast.children import SIGNAL_PREFIX, cancel_tree, notify_parent
from outlast.dispatch import CollectingDispatcher, Dispatcher
from outlast.errors import (
    FunctionNotFoundError,
    InvalidInputError,
    RunFailedError,
    RunNotFinishedError,
)
from outlast.leg import LegOutcome, run_leg
from outlast.retry import RetryPolicy
from outlast.values import from_plain, input_adapter, rebuild, to_json_view, to_plain
from statestore import (
    EntryKind,
    EntryStatus,
    ErrorInfo,
    JournalEntry,
    LeasedRun,
    RunConflictError,
    RunCounters,
    RunEndedError,
    RunRecord,
    RunStatus,
    Signal,
    StateStore,
    canonical_hash,
    content_hash,
    open_store,
    pack,
    validate_run_id,
)

P = ParamSpec("P")
R = TypeVar("R")


class DurableFunction(Generic[R]):
    """A function registered on an ``App``. Call ``start`` to begin a run of it."""

    def __init__(self, app: App, name: str, fn: Callable[..., R]) -> None:
        self.app = app
        self.name = name
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def start(self, input: Any = None, *, run_id: str | None = None) -> str:
        return self.app.start(self.name, input, run_id=run_id)

    def validate_input(self, value: Any) -> Any:
        """``value`` as the function's declared input type; ``InvalidInputError`` if it is not.

        The input is the second positional parameter (``fn(ctx, input)``); without an
        annotation (or with ``Any``) any storable value is accepted as it is.
        """
        adapter = input_adapter(self.fn)
        if adapter is None:
            return value
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            raise InvalidInputError(
                f"input of durable function {self.name!r} is not valid: {_first_errors(exc)}"
            ) from None

    def __repr__(self) -> str:
        return f"<durable {self.name} on app {self.app.name!r}>"


def _awaited_child(record: RunRecord) -> str | None:
    """The child run a suspended run waits for, if it still takes legs."""
    waiting = record.waiting_for or ""
    if record.status is not RunStatus.SUSPENDED or not waiting.startswith(SIGNAL_PREFIX):
        return None
    return waiting.removeprefix(SIGNAL_PREFIX)


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "input"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


class RunView(BaseModel):
    """What ``App.status`` tells about a run (JSON-friendly)."""

    run_id: str
    function: str
    status: RunStatus
    result: Any = None
    error: ErrorInfo | None = None
    next_seq: int
    counters: RunCounters
    wake_at: datetime | None = None
    waiting_for: str | None = None
    created_at: datetime
    updated_at: datetime


class App:
    """Durable functions and the store their runs live in.

    The store comes from ``OUTLAST_HOT_URL`` / ``OUTLAST_COLD_URL`` when set (so one deployment
    setting re-points any app), else from ``hot_url`` / ``cold_url``, else the embedded default
    under ``.outlast/``. It is opened on first use, so importing a module that defines an app
    touches nothing.
    """

    def __init__(
        self,
        name: str,
        *,
        hot_url: str | None = None,
        cold_url: str | None = None,
        store: StateStore | None = None,
        retry: RetryPolicy | None = None,
        lease_ttl: float = 30.0,
        lease_margin: float = 10.0,
        handoff_margin: float | None = None,
        inline_wait: float = 1.0,
        max_interruptions: int = 3,
        max_broken_legs: int = 5,
        trouble_backoff: tuple[float, float] = (1.0, 300.0),
    ) -> None:
        self.name = name
        self._hot_url = hot_url
        self._cold_url = cold_url
        self._store = store
        self._store_lock = threading.Lock()
        self.retry_policy = retry or RetryPolicy()
        self.lease_ttl = lease_ttl
        self.lease_margin = lease_margin
        self.handoff_margin = (
            handoff_margin
            if handoff_margin is not None
            else float(os.environ.get("OUTLAST_HANDOFF_MARGIN", "2.0"))
        )
        self.inline_wait = inline_wait
        if max_interruptions < 1 or max_broken_legs < 1:
            raise ValueError("max_interruptions and max_broken_legs must be at least 1")
        # A step in flight when its leg died this many times fails the run, naming the step.
        self.max_interruptions = max_interruptions
        # Legs in a row that may stop on broken state before the run is blocked.
        self.max_broken_legs = max_broken_legs
        # First and largest wait (seconds) before a leg is retried after a store error.
        self.trouble_backoff = trouble_backoff
        self._functions: dict[str, DurableFunction[Any]] = {}

    def trouble_delay(self, troubles: int) -> timedelta:
        """How long a run waits after its ``troubles + 1``-th failed leg in a row (with jitter)."""
        first, largest = self.trouble_backoff
        ceiling = min(largest, first * 2 ** min(troubles, 32))
        return timedelta(seconds=random.uniform(ceiling / 2, ceiling))

    # ------------------------------------------------------------------ store

    @property
    def store(self) -> StateStore:
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = open_store(
                        os.environ.get("OUTLAST_HOT_URL") or self._hot_url,
                        os.environ.get("OUTLAST_COLD_URL") or self._cold_url,
                    )
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # ------------------------------------------------------------------ registry

    def durable(self, name: str | None = None) -> Callable[[Callable[..., R]], DurableFunction[R]]:
        """Register a durable function ``fn(ctx, input)`` (or ``fn(ctx)``) under ``name``."""

        def register(fn: Callable[..., R]) -> DurableFunction[R]:
            key = name or fn.__name__
            if key in self._functions and self._functions[key].fn is not fn:
                raise ValueError(f"app {self.name!r} already has a durable function {key!r}")
            durable = DurableFunction(self, key, fn)
            self._functions[key] = durable
            return durable

        return register

    def function(self, name: str) -> DurableFunction[Any]:
        try:
            return self._functions[name]
        except KeyError:
            known = ", ".join(sorted(self._functions)) or "none"
            raise FunctionNotFoundError(
                f"app {self.name!r} has no durable function {name!r} (registered: {known})"
            ) from None

    @property
    def functions(self) -> dict[str, DurableFunction[Any]]:
        return dict(self._functions)

    # ------------------------------------------------------------------ runs

    def start(
        self,
        function: str | DurableFunction[Any],
        input: Any = None,
        *,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Create a run (idempotent on ``run_id`` and input) and return its id.

        Nothing runs yet: a leg (``run_leg``, ``drive``, the emulator, Lambda, a worker) runs it.
        """
        name = function.name if isinstance(function, DurableFunction) else function
        durable = self.function(name)
        given = run_id is not None
        run_id = validate_run_id(run_id) if run_id is not None else uuid.uuid4().hex
        # Refused before anything is written, naming the field: not deep in user code later.
        plain = to_plain(durable.validate_input(input))
        # Canonical (map keys sorted), so a retry whose client ordered the keys differently is
        # the same start. Raises TypeError for an unstorable input before anything is written.
        input_hash = canonical_hash(plain)
        if given:
            # Refuse or answer a repeated start before the input reaches the cold tier: a
            # refused start must leave no blob behind (anyone could otherwise fill the cold
            # tier under any run id by starting it again with a large input).
            existing = self.store.hot.find_run(run_id)
            if existing is not None:
                # Runs created before canonical hashing carry the hash of the input's bytes as
                # they came; a retry with the very same bytes is still the same start.
                same = existing.input_hash in (input_hash, content_hash(pack(plain)))
                if existing.function == name and same:
                    return run_id
                raise RunConflictError(
                    f"run {run_id!r} already exists with "
                    + (
                        f"function {existing.function!r} (not {name!r})"
                        if existing.function != name
                        else "a different input"
                    )
                    + "; choose another run id"
                )
        # A start racing this one under the same id may still win between the look above and
        # create_run below; create_run then refuses and the input blob just written stays
        # behind unreferenced: garbage (content-addressed, never read), not corruption.
        stored = self.store.encode(run_id, plain)
        self.store.hot.create_run(run_id, name, input=stored, input_hash=input_hash, tags=tags)
        return run_id

    def status(self, run_id: str) -> RunView:
        record = self.store.hot.get_run(run_id)
        return self._view(record)

    def _view(self, record: RunRecord) -> RunView:
        result = to_json_view(self.store.run_result(record)) if record.result is not None else None
        return RunView(
            run_id=record.run_id,
            function=record.function,
            status=record.status,
            result=result,
            error=record.error,
            next_seq=record.next_seq,
            counters=record.counters,
            wake_at=record.wake_at,
            waiting_for=record.waiting_for,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )

    def result(self, run_id: str) -> Any:
        """The run's result, rebuilt as the function's return type. Raises if not succeeded."""
        record = self.store.hot.get_run(run_id)
        if record.status is RunStatus.SUCCEEDED:
            plain = self.store.run_result(record)
            fn = self._functions.get(record.function)
            return rebuild(fn.fn, plain) if fn else from_plain(plain)
        if record.status in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise RunFailedError(run_id, record.status.value, record.error)
        raise RunNotFinishedError(f"run {run_id!r} is {record.status.value}")

    def signal(self, run_id: str, name: str, payload: Any = None) -> Signal:
        """Send a signal; it is kept until the run waits for it, and wakes the run if it waits.

        Raises ``ValueError`` for a name that is not 1-128 characters, ``RunNotFoundError`` and
        ``RunEndedError`` for a run that does not exist or has ended, ``TypeError`` for a payload
        that cannot be stored; in each case nothing is written to either tier.
        """
        if not isinstance(name, str) or not 1 <= len(name) <= 128:
            raise ValueError("a signal name is 1-128 characters")
        # Look before the payload goes to the cold tier: a refused signal must leave no blob.
        record = self.store.hot.get_run(run_id)
        if record.status.terminal:
            raise RunEndedError(f"run {run_id!r} has {record.status.value}; it takes no signals")
        # If the run ends between this look and put_signal, put_signal refuses (and removes the
        # signal it wrote) but the payload blob stays behind unreferenced: garbage, never read.
        stored = self.store.encode(run_id, to_plain(payload)) if payload is not None else None
        return self.store.hot.put_signal(run_id, name, stored)

    def cancel(self, run_id: str) -> RunView:
        """End a run, and every child run it started that has not ended; a leg holding one stops
        at its next write. A parent waiting on the run hears that it was cancelled."""
        record = cancel_tree(self, run_id)
        notify_parent(self, record)
        return self._view(record)

    def journal(self, run_id: str) -> list[JournalEntry]:
        return self.store.hot.read_journal(run_id)

    def retry(self, run_id: str, *, from_seq: int | None = None, as_id: str | None = None) -> str:
        """Re-open a failed or blocked run with the current code; return the id that continues.

        The journal is kept up to the entry that failed (or up to ``from_seq``), and the run
        continues from there, so a non-determinism, an unstorable result or a broken blob can be
        fixed and the run finished. With ``as_id``, the run is forked instead: a new run (of any
        status) whose journal is a copy of entries ``0..from_seq-1``; the original is untouched.
        Either way nothing runs here: a leg (a worker, the sweeper, ``drive``) picks it up.
        """
        if as_id is not None:
            return self._fork(run_id, as_id, from_seq)
        if from_seq is None:
            from_seq = self._failing_attempts_start(run_id)
        self.store.hot.retry_run(run_id, keep=from_seq)
        return run_id

    def _failing_attempts_start(self, run_id: str) -> int | None:
        """Where the failed step's attempts begin, so a retry gives it all its attempts again."""
        record = self.store.hot.get_run(run_id)
        seq = record.error.seq if record.error is not None else None
        if seq is None:
            return None
        journal = self.store.hot.read_journal(run_id)[: seq + 1]
        if not journal or journal[-1].kind is not EntryKind.STEP:
            return seq
        name, start = journal[-1].name, seq
        while (
            start > 0
            and journal[start - 1].name == name
            and (journal[start - 1].status is EntryStatus.RETRY)
        ):
            start -= 1
        return start

    def _fork(self, run_id: str, new_id: str, from_seq: int | None) -> str:
        validate_run_id(new_id)
        source = self.store.hot.get_run(run_id)
        keep = source.next_seq if from_seq is None else from_seq
        if not 0 <= keep <= source.next_seq:
            raise ValueError(
                f"run {run_id!r} has {source.next_seq} journal entries; cannot fork from {keep}"
            )
        entries = self.store.hot.read_journal(run_id)[:keep]
        stored_input = self.store.copy_value(run_id, new_id, source.input)
        tags = {**source.tags, "forked_from": f"{run_id}@{keep}"}
        self.store.hot.create_run(
            new_id,
            source.function,
            input=stored_input,
            input_hash=f"fork:{run_id}:{source.incarnation}:{keep}",
            tags=tags,
        )
        if entries:
            copied = [
                e.model_copy(update={"value": self.store.copy_value(run_id, new_id, e.value)})
                for e in entries
            ]
            leased = LeasedRun.take(self.store, new_id, "fork", timedelta(seconds=60))
            size = max(1, self.store.hot.max_batch)
            record = leased.record
            for start in range(0, len(copied), size):
                record = self.store.hot.append(
                    new_id, leased.token, copied[start : start + size], start=record
                )
            self.store.hot.release_lease(new_id, leased.token)
        return new_id

    def delete(self, run_id: str) -> None:
        """Remove the run: every record, entry, signal and blob, in both tiers.

        A leg still holding it stops at its next write. The id can then be used again, as a new
        incarnation that sees nothing of this one.
        """
        self.store.delete_run(run_id)

    # ------------------------------------------------------------------ driving

    def run_leg(
        self,
        run_id: str,
        *,
        budget: Budget | None = None,
        dispatcher: Dispatcher | None = None,
        expect_leg: int | None = None,
        **kwargs: Any,
    ) -> LegOutcome:
        """Run one leg of a run in this process (see ``outlast.leg.run_leg``)."""
        return run_leg(
            self, run_id, budget=budget, dispatcher=dispatcher, expect_leg=expect_leg, **kwargs
        )

    def drive(
        self,
        run_id: str,
        *,
        leg_seconds: float | None = None,
        max_wait: float = 60.0,
        poll: float = 0.05,
    ) -> RunView:
        """Run legs in this process until the run ends (or waits longer than ``max_wait``).

        Timers shorter than ``max_wait`` are waited out here; a run waiting for a signal that
        does not come within ``max_wait`` is returned suspended. For tests, scripts and laptops.
        """
        dispatcher = CollectingDispatcher()
        waited_since: float | None = None
        while True:
            budget = (
                Budget.seconds(leg_seconds, margin=self.handoff_margin)
                if leg_seconds is not None
                else None
            )
            outcome = self.run_leg(run_id, budget=budget, dispatcher=dispatcher)
            dispatcher.pop()
            record = self.store.hot.get_run(run_id)
            if not record.status.takes_legs:
                return self._view(record)
            child = _awaited_child(record)
            found = self.store.hot.find_run(child) if child is not None else None
            if child is not None and found is not None and found.status.takes_legs:
                # Waits for a child run: drive it here too, as a worker or Lambda would.
                settled = self.drive(child, leg_seconds=leg_seconds, max_wait=max_wait, poll=poll)
                if not settled.status.takes_legs:
                    waited_since = None
                    continue
            if outcome.status in ("handed_off", "completed", "failed"):
                waited_since = None
                continue
            now = time.monotonic()
            waited_since = waited_since or now
            if now - waited_since > max_wait:
                return self._view(record)
            time.sleep(poll)
