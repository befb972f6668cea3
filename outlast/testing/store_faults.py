"""Store tiers that fail on purpose: chaos tests wrap a real hot and cold tier in these.

Every backend primitive is delegated to a real tier. Per call, a seeded ``random.Random`` decides
whether to fail it, and how:

- ``error_before``: ``StoreUnavailableError`` before the primitive runs (nothing was written);
- ``lost_reply``: ``StoreUnavailableError`` after a *write* primitive returned (the write landed,
  the caller cannot know it did);
- ``read_error``: ``StoreUnavailableError`` instead of a read;
- ``kill_before`` / ``kill_after``: ``SimulatedKill`` before or after the primitive, the in-process
  stand-in for ``kill -9`` at that point. It is a ``BaseException``, so nothing in the runtime
  that handles store errors handles it, and a run whose leg was "killed" stays dead (every later
  call of that leg raises ``SimulatedKill`` again) until the driver calls ``revive``: a dead
  process does not go on writing from its other threads.

Faults are drawn per thread *mode*: ``leg`` (everything), ``control`` (errors, no kills: API calls
and lease heartbeats) and ``off`` (the invariant checker reads through the same store). Threads
the runtime starts inside a leg (``ctx.map`` workers, cold-tier fetchers) have no mode of their
own and count as ``leg``; heartbeat threads count as ``control``.

This is test infrastructure: nothing in production may import it.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from statestore import (
    ColdTier,
    HotTier,
    JournalEntry,
    ListedRun,
    RunCursor,
    RunRecord,
    Signal,
    StoreUnavailableError,
)

T = TypeVar("T")
Mode = Literal["leg", "control", "off"]

FAULT_KINDS = ("error_before", "lost_reply", "read_error", "kill_before", "kill_after")

# Primitive names that change stored state. Unknown primitives (added after this was written)
# are classified by their name's verb; anything else is treated as a read.
_WRITE_VERBS = (
    "_insert",
    "_write",
    "_delete",
    "_put",
    "_claim",
    "_drop",
    "_take",
    "_expire",
    "_log_insert",
    "_log_delete",
)


class SimulatedKill(BaseException):
    """The leg's process died at this point (an in-process ``kill -9``)."""


@dataclass(frozen=True)
class FaultRates:
    """Per-call probabilities. Write primitives draw from all five, reads from the others."""

    error_before: float = 0.0
    lost_reply: float = 0.0
    read_error: float = 0.0
    kill_before: float = 0.0
    kill_after: float = 0.0

    def scaled(self, factor: float) -> FaultRates:
        return FaultRates(
            error_before=self.error_before * factor,
            lost_reply=self.lost_reply * factor,
            read_error=self.read_error * factor,
            kill_before=self.kill_before * factor,
            kill_after=self.kill_after * factor,
        )


class FaultInjector:
    """Decides, counts and scopes faults; shared by a hot and a cold wrapper."""

    def __init__(self, seed: int, rates: FaultRates, *, quota_per_run: int | None = None) -> None:
        self.seed = seed
        self.rates = rates
        # A run that has had this many faults gets no more, so every run can end: a run that
        # is still stuck afterwards is the runtime's doing, not bad luck.
        self.quota_per_run = quota_per_run
        self.armed = True
        self.counts: Counter[str] = Counter()  # "hot.error_before._write" style keys
        self.by_run: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._dead: set[str] = set()

    # ------------------------------------------------------------------ scoping

    def mode(self) -> Mode:
        mode: Mode | None = getattr(self._local, "mode", None)
        if mode is not None:
            return mode
        if threading.current_thread().name.startswith("outlast-heartbeat"):
            return "control"
        return "leg"

    @contextmanager
    def scope(self, mode: Mode) -> Iterator[None]:
        """Run the block with this thread's faults set to ``mode``."""
        previous = getattr(self._local, "mode", None)
        self._local.mode = mode
        try:
            yield
        finally:
            self._local.mode = previous

    def disarm(self) -> None:
        self.armed = False

    def arm(self) -> None:
        self.armed = True

    def revive(self, run_id: str) -> None:
        """The killed leg of ``run_id`` is gone; the next leg may talk to the store again."""
        with self._lock:
            self._dead.discard(run_id)

    def is_dead(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._dead

    def total(self) -> int:
        return sum(self.counts.values())

    def by_kind(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for key, n in self.counts.items():
            out[key.split(".")[1]] += n
        return out

    # ------------------------------------------------------------------ decisions

    def _draw(self, tier: str, op: str, run_id: str | None, write: bool, phase: str) -> str | None:
        if not self.armed:
            return None
        mode = self.mode()
        if mode == "off":
            return None
        if run_id is not None and self.is_dead(run_id):
            # A dead leg's stragglers (its heartbeat, its map workers) die with it.
            if mode == "leg":
                raise SimulatedKill(f"run {run_id}: this leg is dead")
            raise StoreUnavailableError(f"chaos: run {run_id}: this leg's process is dead")
        if run_id is None:
            return None
        r = self.rates
        if phase == "before":
            choices = [
                (
                    "error_before" if write else "read_error",
                    r.error_before if write else r.read_error,
                ),
                ("kill_before", r.kill_before if mode == "leg" else 0.0),
            ]
        else:
            if not write:
                return None
            choices = [
                ("lost_reply", r.lost_reply),
                ("kill_after", r.kill_after if mode == "leg" else 0.0),
            ]
        with self._lock:
            if self.quota_per_run is not None and self.by_run[run_id] >= self.quota_per_run:
                return None
            x = self._rng.random()
            for kind, p in choices:
                if x < p:
                    self.counts[f"{tier}.{kind}.{op}"] += 1
                    self.by_run[run_id] += 1
                    if kind.startswith("kill"):
                        self._dead.add(run_id)
                    return kind
                x -= p
        return None

    def _fire(self, kind: str | None, tier: str, op: str, run_id: str | None) -> None:
        if kind is None:
            return
        what = f"chaos: {kind} in {tier}.{op}" + (f" for run {run_id}" if run_id else "")
        if kind.startswith("kill"):
            raise SimulatedKill(what)
        raise StoreUnavailableError(what)

    def call(self, tier: str, op: str, run_id: str | None, write: bool, fn: Callable[[], T]) -> T:
        self._fire(self._draw(tier, op, run_id, write, "before"), tier, op, run_id)
        result = fn()
        self._fire(self._draw(tier, op, run_id, write, "after"), tier, op, run_id)
        return result

    def call_iter(
        self, tier: str, op: str, run_id: str | None, fn: Callable[[], Iterable[T]]
    ) -> Iterator[T]:
        """A lazy read (a paged journal): the fault is drawn when the caller starts reading."""
        self._fire(self._draw(tier, op, run_id, False, "before"), tier, op, run_id)
        yield from fn()


def _is_write(name: str) -> bool:
    return name.startswith(_WRITE_VERBS)


def _run_of(args: Sequence[Any]) -> str | None:
    if not args:
        return None
    first = args[0]
    if isinstance(first, str):
        return first
    run_id = getattr(first, "run_id", None)
    return run_id if isinstance(run_id, str) else None


class FaultyHotTier(HotTier):
    """A hot tier whose primitives go to ``inner`` through a ``FaultInjector``.

    The policy (leases, fencing, signals) is ``HotTier``'s own, run on this object, so the faults
    land exactly between the policy and the storage, where a network would put them.
    """

    def __init__(self, inner: HotTier, injector: FaultInjector) -> None:
        kwargs: dict[str, Any] = {"inline_limit": inner.inline_limit, "clock": inner._clock}
        if hasattr(inner, "retention"):
            kwargs["retention"] = inner.retention
        super().__init__(**kwargs)
        self.inner = inner
        self.injector = injector
        # Class-level settings of the backend (its name in errors, its atomic batch size) are
        # what the runtime must see; copy them onto the instance.
        for name in ("scheme", "max_batch", "default_inline_limit"):
            object.__setattr__(self, name, getattr(inner, name))

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this wrapper lacks: backend extras (url, prefix, table).
        if name in ("inner", "injector"):
            raise AttributeError(name)
        value = getattr(self.inner, name)
        if name.startswith("_") and callable(value):
            return self._delegate(name, value)
        return value

    def _delegate(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return self.injector.call(
                "hot", name, _run_of(args), _is_write(name), lambda: fn(*args, **kwargs)
            )

        return call

    def _c(self, op: str, run_id: str | None, fn: Callable[[], T]) -> T:
        return self.injector.call("hot", op, run_id, _is_write(op), fn)

    def _insert_run(self, record: RunRecord) -> RunRecord | None:
        return self._c("_insert_run", record.run_id, lambda: self.inner._insert_run(record))

    def _load_run(self, run_id: str) -> RunRecord | None:
        return self._c("_load_run", run_id, lambda: self.inner._load_run(run_id))

    def _write(
        self,
        old: RunRecord,
        new: RunRecord,
        entries: Sequence[JournalEntry],
        take: Signal | None,
    ) -> RunRecord | None:
        return self._c("_write", old.run_id, lambda: self.inner._write(old, new, entries, take))

    def _load_entries(self, run_id: str, after_seq: int) -> Iterable[JournalEntry]:
        return self.injector.call_iter(
            "hot", "_load_entries", run_id, lambda: self.inner._load_entries(run_id, after_seq)
        )

    def _insert_signal(self, signal: Signal) -> None:
        self._c("_insert_signal", signal.run_id, lambda: self.inner._insert_signal(signal))

    def _delete_signal(self, signal: Signal) -> bool:
        return self._c("_delete_signal", signal.run_id, lambda: self.inner._delete_signal(signal))

    def _load_signals(self, run_id: str, name: str | None) -> list[Signal]:
        return self._c("_load_signals", run_id, lambda: self.inner._load_signals(run_id, name))

    def _due(self, now: datetime, limit: int) -> list[str]:
        return self._c("_due", None, lambda: self.inner._due(now, limit))

    def _list_runs(self, limit: int, before: RunCursor | None) -> list[ListedRun]:
        return self._c("_list_runs", None, lambda: self.inner._list_runs(limit, before))

    def _delete_run(self, run_id: str) -> None:
        self._c("_delete_run", run_id, lambda: self.inner._delete_run(run_id))

    def _truncate(self, run_id: str, keep: int) -> None:
        self._c("_truncate", run_id, lambda: self.inner._truncate(run_id, keep))

    def _ended(self, before: datetime, limit: int) -> list[str]:
        return self._c("_ended", None, lambda: self.inner._ended(before, limit))

    def _delete_ended(self, claimed: RunRecord) -> bool:
        return self._c("_delete_ended", claimed.run_id, lambda: self.inner._delete_ended(claimed))

    def _log_insert(self, log_id: str, position: int, data: bytes, label: str) -> bool:
        return self._c(
            "_log_insert", log_id, lambda: self.inner._log_insert(log_id, position, data, label)
        )

    def _log_tail(self, log_id: str) -> int:
        return self._c("_log_tail", log_id, lambda: self.inner._log_tail(log_id))

    def _log_load(self, log_id: str, start: int) -> Iterable[tuple[int, bytes]]:
        return self.injector.call_iter(
            "hot", "_log_load", log_id, lambda: self.inner._log_load(log_id, start)
        )

    def _log_delete(self, log_id: str) -> None:
        self._c("_log_delete", log_id, lambda: self.inner._log_delete(log_id))

    def _log_list(self, prefix: str) -> list[tuple[str, str]]:
        return self._c("_log_list", None, lambda: self.inner._log_list(prefix))

    def close(self) -> None:
        self.inner.close()


class FaultyColdTier(ColdTier):
    """A cold tier whose primitives go to ``inner`` through a ``FaultInjector``.

    It also logs every blob put (run id, hash), so a test can tell which requests wrote blobs.
    """

    def __init__(self, inner: ColdTier, injector: FaultInjector) -> None:
        self.inner = inner
        self.injector = injector
        self.scheme = inner.scheme
        self.fetch_concurrency = inner.fetch_concurrency
        self.puts: list[tuple[str, str]] = []
        self._puts_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "injector"):
            raise AttributeError(name)
        value = getattr(self.inner, name)
        if name.startswith("_") and callable(value):

            def call(*args: Any, **kwargs: Any) -> Any:
                return self.injector.call(
                    "cold", name, _run_of(args), _is_write(name), lambda: value(*args, **kwargs)
                )

            return call
        return value

    def key(self, run_id: str, sha256: str) -> str:
        return self.inner.key(run_id, sha256)

    def _put(self, run_id: str, sha256: str, data: bytes) -> None:
        def put() -> None:
            with self._puts_lock:
                self.puts.append((run_id, sha256))
            self.inner._put(run_id, sha256, data)

        self.injector.call("cold", "_put", run_id, True, put)

    def _get(self, run_id: str, sha256: str) -> bytes:
        return self.injector.call(
            "cold", "_get", run_id, False, lambda: self.inner._get(run_id, sha256)
        )

    def _delete_run(self, run_id: str) -> int:
        return self.injector.call(
            "cold", "_delete_run", run_id, True, lambda: self.inner._delete_run(run_id)
        )

    def put_log(self) -> list[tuple[str, str]]:
        with self._puts_lock:
            return list(self.puts)

    def close(self) -> None:
        self.inner.close()


def _delegate_missing(cls: type[Any], base: type[Any], tier: str) -> None:
    """Give ``cls`` a delegating method for every primitive ``base`` declares that ``cls`` does
    not: the store gains primitives while its tests run, and a new one must not make the wrapper
    abstract (it would refuse to be built) or bypass the faults."""
    missing = [
        name for name in getattr(base, "__abstractmethods__", ()) if name not in cls.__dict__
    ]
    for name in missing:

        def method(self: Any, *args: Any, __name: str = name, **kwargs: Any) -> Any:
            fn = getattr(self.inner, __name)
            return self.injector.call(
                tier, __name, _run_of(args), _is_write(__name), lambda: fn(*args, **kwargs)
            )

        method.__name__ = name
        setattr(cls, name, method)
    if missing:
        cls.__abstractmethods__ = frozenset()


_delegate_missing(FaultyHotTier, HotTier, "hot")
_delegate_missing(FaultyColdTier, ColdTier, "cold")
