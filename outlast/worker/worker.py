"""The worker: take runs from a queue, drive their legs, drain on SIGTERM, exit within the grace.

Threads of one worker process::

    main        signal handlers, waits for a drain, then for the legs in flight, then exits
    consumer*N  receive a message -> app.run_leg(...) -> ack / release
    keeper      touches held messages so the queue does not redeliver them while a leg runs
    sweeper     (queue modes) enqueues due runs that no message names: woken timers and
                signals, hand-offs whose continuation was lost, runs of workers that died
    health      GET /healthz
    heartbeats  one per leg, started by run_leg: renews the lease while a step runs

A drain (SIGTERM, a spot notice) stops the consumers from taking messages and asks every leg in
flight to stop before its next step. A leg then commits what it did, hands off (the hand-off
enqueues its continuation) and returns; the worker exits 0 once no leg is left, or when the grace
runs out, whichever comes first. A leg still inside a step at that moment is abandoned: its lease
expires and another worker recovers the run, repeating only that step.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from outlast.app import App
from outlast.budget import Budget
from outlast.errors import FunctionNotFoundError, TargetError
from outlast.leg import LegOutcome
from outlast.sweep import RedrivePolicy
from outlast.worker.health import HealthServer
from outlast.worker.queues import BadMessageError, Message, QueueError, WorkQueue, recovery_key
from statestore import StateStoreError, utcnow

log = logging.getLogger("outlast.worker")

DEFAULT_LEASE_TTL = 30.0
DEFAULT_HEARTBEAT = 10.0
DEFAULT_GRACE = 25.0
_EXPIRE_PER_SWEEP = 50  # expired runs one sweep deletes at most
# After a leg of a run raised (a store error, a crash outside the durable function), this worker
# gives its message back for at least 1 s, doubling with each error in a row, up to a minute;
# longer when the run itself says it is not due before then.
_RETRY_FIRST = 1.0
_RETRY_MAX = 60.0


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int = 1
    grace: float = DEFAULT_GRACE
    lease_ttl: float = DEFAULT_LEASE_TTL
    heartbeat: float = DEFAULT_HEARTBEAT
    #: How long a receive waits, and how often the queue-less mode polls the due runs.
    poll: float = 0.5
    #: How often the sweeper looks at the due runs (queue modes).
    sweep: float = 5.0
    #: How long a run must have been due before the sweeper enqueues it. Defaults to the lease
    #: TTL: by then a message that names it would have been delivered or reclaimed.
    stale_after: float | None = None
    health_host: str = "0.0.0.0"  # noqa: S104 - probes come from the kubelet, not loopback
    health_port: int | None = 8080

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        if self.grace < 0:
            raise ValueError("--grace must not be negative")
        if self.lease_ttl <= 0 or self.heartbeat <= 0:
            raise ValueError("--lease-ttl and --heartbeat must be positive")
        if self.heartbeat >= self.lease_ttl:
            raise ValueError(
                f"--heartbeat ({self.heartbeat:g}s) must be shorter than --lease-ttl "
                f"({self.lease_ttl:g}s); a third of it or less keeps one late renewal harmless"
            )
        if self.poll <= 0 or self.sweep <= 0:
            raise ValueError("poll and sweep intervals must be positive")


@dataclass
class _Held:
    message: Message
    budget: Budget
    started: float = field(default_factory=time.monotonic)


class Worker:
    """Drives legs of ``app``'s runs from ``queue`` until drained.

    Each leg keeps its lease with ``run_leg``'s heartbeat (renewed every ``config.heartbeat``
    seconds, for ``config.lease_ttl``), so a step may run longer than the lease TTL.
    """

    def __init__(
        self,
        app: App,
        queue: WorkQueue,
        config: WorkerConfig | None = None,
    ) -> None:
        self.app = app
        self.queue = queue
        self.config = config or WorkerConfig()
        self._legs = itertools.count(1)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._draining = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._held: dict[int, _Held] = {}
        self._deadline: float | None = None
        self._drain_reason = ""
        self._signalled: tuple[str, float] | None = None
        self._unknown: dict[str, float] = {}
        self._swept: dict[str, Any] = {}
        self._errors: dict[str, int] = {}  # run id -> legs in a row that raised
        self.outcomes: dict[str, int] = {}
        self.health: HealthServer | None = None

    # ------------------------------------------------------------------ state

    @property
    def taking_runs(self) -> bool:
        return not self._draining.is_set()

    @property
    def legs_in_flight(self) -> int:
        with self._lock:
            return len(self._held)

    def signal_drain(self, reason: str) -> None:
        """Ask for a drain from a signal handler: the main loop does it within 50 ms.

        A handler runs on the main thread between two bytecodes, possibly while that thread
        holds a lock that ``drain`` needs (an Event's, the logging module's): it must only
        record the request. The grace counts from now.
        """
        if self._signalled is None:
            self._signalled = (reason, time.monotonic())

    def drain(self, reason: str, grace: float | None = None, *, since: float | None = None) -> None:
        """Stop taking runs and ask every leg in flight to hand off. Safe from any thread (not
        from a signal handler: use ``signal_drain``); a second call can only bring the
        deadline closer."""
        grace = self.config.grace if grace is None else min(grace, self.config.grace)
        start = time.monotonic() if since is None else since
        deadline = start + max(0.0, grace)
        with self._lock:
            first = not self._draining.is_set()
            if self._deadline is None or deadline < self._deadline:
                self._deadline = deadline
            if first:
                self._drain_reason = reason
            self._draining.set()
            held = list(self._held.values())
        for item in held:
            item.budget.request_drain(reason)
        if first:
            log.info("draining (%s): %d leg(s) in flight, %.1fs of grace", reason, len(held), grace)

    # ------------------------------------------------------------------ main loop

    def serve(self) -> int:
        """Run until drained; return how many legs were still running when the grace ended."""
        if self.config.health_port is not None:
            self.health = HealthServer(
                self.config.health_host, self.config.health_port, lambda: self.taking_runs
            )
            self.health.start()
        threads = [
            threading.Thread(target=self._consume, name=f"outlast-consumer-{i}", daemon=True)
            for i in range(self.config.concurrency)
        ]
        threads.append(threading.Thread(target=self._keep, name="outlast-keeper", daemon=True))
        if self.queue.needs_sweeper:
            threads.append(
                threading.Thread(target=self._sweep, name="outlast-sweeper", daemon=True)
            )
        for thread in threads:
            thread.start()
        log.info(
            "worker %s ready: queue %s, %d consumer(s), lease %gs, heartbeat %gs, grace %gs%s",
            self.name,
            self.queue.url or "none (polling due runs)",
            self.config.concurrency,
            self.config.lease_ttl,
            self.config.heartbeat,
            self.config.grace,
            f", health on :{self.health.port}" if self.health else "",
        )
        # Poll rather than block on the event: a signal handler interrupting Event.wait must not
        # touch that event's lock, so it only records the request, and this loop acts on it.
        while not self._draining.is_set():
            signalled = self._signalled
            if signalled is not None:
                self.drain(signalled[0], since=signalled[1])
                break
            time.sleep(0.05)
        while True:
            with self._lock:
                left = len(self._held)
                deadline = self._deadline
            assert deadline is not None
            if left == 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        self._stopping.set()
        for thread in threads:
            thread.join(timeout=max(0.0, min(deadline - time.monotonic(), 1.5)))
        with self._lock:
            stragglers = len(self._held)
        if stragglers:
            log.warning(
                "grace over with %d leg(s) still in a step; their leases expire and the runs "
                "are recovered by other workers",
                stragglers,
            )
        else:
            log.info("drained: every leg handed off or ended; exiting")
        if self.health is not None:
            self.health.stop()
        return stragglers

    # ------------------------------------------------------------------ consumers

    def _consume(self) -> None:
        backoff = 0.0
        while not self._draining.is_set():
            try:
                message = self.queue.receive(self.config.poll)
            except BadMessageError:
                continue
            except (QueueError, StateStoreError) as exc:
                backoff = min(5.0, max(0.2, backoff * 2))
                log.warning("receive failed, retrying in %.1fs: %s", backoff, exc)
                self._draining.wait(backoff)
                continue
            backoff = 0.0
            if message is not None:
                self._handle(message)

    def _handle(self, message: Message) -> None:
        if self._unknown_function(message.run_id):
            self._release(message, self.config.lease_ttl)
            return
        budget = Budget.unlimited()
        key = threading.get_ident()
        with self._lock:
            if self._draining.is_set():
                draining = True
            else:
                draining = False
                self._held[key] = _Held(message, budget)
        if draining:
            self._release(message, 0.0)
            return
        owner = f"{self.name}/{threading.current_thread().name}/{next(self._legs)}"
        try:
            outcome = self.app.run_leg(
                message.run_id,
                budget=budget,
                dispatcher=self.queue,
                expect_leg=message.leg,
                owner=owner,
                lease_ttl=self.config.lease_ttl,
                heartbeat=self.config.heartbeat,
            )
        except FunctionNotFoundError as exc:
            log.error("run %s: %s; leaving it to a worker that has it", message.run_id, exc)
            self._unknown[message.run_id] = time.monotonic() + 60.0
            self._release(message, self.config.lease_ttl)
        except (StateStoreError, QueueError) as exc:
            delay = self._retry_delay(message.run_id)
            log.warning(
                "run %s: leg interrupted by a store or queue error (%s: %s); %s",
                message.run_id,
                type(exc).__name__,
                exc,
                "dropping its message: it is not due again"
                if delay is None
                else f"trying again in {delay:.1f}s",
            )
            self._retry(message, delay)
        except Exception:
            delay = self._retry_delay(message.run_id)
            log.exception("run %s: leg crashed outside the durable function", message.run_id)
            self._retry(message, delay)
        else:
            self._settle(message, outcome)
        finally:
            with self._lock:
                self._held.pop(key, None)

    def _retry_delay(self, run_id: str) -> float | None:
        """How long to keep a run's message back after its leg raised; None: drop it.

        A run whose state is broken would otherwise come straight back (the leg gave its lease
        back on the way out) and fail again in a tight loop. The wait is the later of this
        worker's backoff and the run's own due time: the runtime may have pushed that into the
        future (or blocked the run, which is never due).
        """
        with self._lock:
            errors = self._errors[run_id] = self._errors.get(run_id, 0) + 1
            if len(self._errors) > 10_000:
                self._errors = {run_id: errors}
        backoff = min(_RETRY_MAX, _RETRY_FIRST * 2.0 ** min(errors - 1, 16))
        hot = self.app.store.hot
        try:
            record = hot.find_run(run_id)
            now = hot.now()
        except StateStoreError:
            return backoff
        if record is None:
            return None
        due = record.due_at()
        if due is None or record.status.terminal:
            return None
        return max(backoff, float((due - now).total_seconds()))

    def _retry(self, message: Message, delay: float | None) -> None:
        if delay is None:
            with self._lock:
                self._errors.pop(message.run_id, None)
            self._ack(message)
        else:
            self._release(message, delay)

    def _unknown_function(self, run_id: str) -> bool:
        until = self._unknown.get(run_id)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        self._unknown.pop(run_id, None)
        return False

    def _settle(self, message: Message, outcome: LegOutcome) -> None:
        status = outcome.status
        with self._lock:
            self.outcomes[status] = self.outcomes.get(status, 0) + 1
            if status != "skipped":
                self._errors.pop(message.run_id, None)
        level = logging.DEBUG if status == "skipped" else logging.INFO
        log.log(
            level,
            "run %s leg %s: %s (%d step(s) run, %d replayed) %s",
            outcome.run_id,
            outcome.leg,
            status,
            outcome.steps_executed,
            outcome.steps_replayed,
            outcome.detail,
        )
        if status == "lease_lost":
            # Another leg owns the run, and the message may already be in its hands: acking
            # it here could drop the message that worker depends on. Let it be.
            return
        if status != "skipped":
            # Ended, suspended (the sweeper wakes it) or handed off (the continuation is queued).
            self._ack(message)
            return
        try:
            record = self.app.store.hot.find_run(message.run_id)
        except StateStoreError as exc:
            log.warning("run %s: cannot look at it after a skip: %s", message.run_id, exc)
            self._release(message, 1.0)
            return
        if record is None or record.status.terminal or record.lease is None:
            # Ended, gone, a stale continuation (a newer leg has its own message), or asleep
            # (the sweeper wakes it): this message has nothing left to do.
            self._ack(message)
            return
        # Another leg holds the run. If its worker dies, this message is what brings the run
        # back, so keep it and look again after that lease would have run out.
        left = (record.lease.expires_at - utcnow()).total_seconds()
        self._release(message, max(0.5, left + 0.1))

    def _ack(self, message: Message) -> None:
        try:
            self.queue.ack(message)
        except QueueError as exc:
            log.warning(
                "run %s: ack failed (it will come back and be skipped): %s", message.run_id, exc
            )

    def _release(self, message: Message, delay: float) -> None:
        try:
            self.queue.release(message, delay)
        except QueueError as exc:
            log.warning(
                "run %s: release failed (it comes back after its timeout): %s", message.run_id, exc
            )

    # ------------------------------------------------------------------ keeper and sweeper

    def _keep(self) -> None:
        # Touch at the heartbeat: a message untouched for the visibility timeout (the lease TTL)
        # is taken to belong to a dead worker.
        while not self._stopping.wait(self.config.heartbeat):
            with self._lock:
                held = [item.message for item in self._held.values()]
            for message in held:
                try:
                    self.queue.touch(message)
                except QueueError as exc:
                    log.warning("run %s: could not keep its message: %s", message.run_id, exc)

    def _sweep(self) -> None:
        stale_after = self.config.stale_after
        if stale_after is None:
            stale_after = self.config.lease_ttl
        while not self._draining.wait(self.config.sweep):
            try:
                self._sweep_once(stale_after)
            except (StateStoreError, QueueError) as exc:
                log.warning("sweep failed: %s", exc)

    def _sweep_once(self, stale_after: float) -> None:
        hot = self.app.store.hot
        # A start message is the creator's job: only a long-lost one is replaced, so a backlog
        # in the queue does not fill it with copies. A dead worker's message is reclaimed after
        # about the lease TTL; past that, the hand-off or the message was lost.
        policy = RedrivePolicy(
            pending_after=stale_after * 10, unheld_after=stale_after, expired_after=stale_after
        )
        now = hot.now()
        for run_id in hot.due_runs(now=now, limit=200):
            record = hot.find_run(run_id)
            if record is None or not policy.wants(record, now):
                continue
            due_at = record.due_at()
            assert due_at is not None  # policy.wants said it is due
            overdue = (now - due_at).total_seconds()
            marker = (record.version, record.fence)
            if self._swept.get(run_id) == marker:
                continue
            self._swept[run_id] = marker
            log.info(
                "sweeper: run %s is %s and %.1fs overdue; enqueueing it",
                run_id,
                record.status.value,
                overdue,
            )
            # Keyed by the state it recovers: on a FIFO queue, sweeps of one state by several
            # workers are one message, and a sweep of a later state is never taken for one.
            self.queue.enqueue(run_id, None, recovers=recovery_key(record))
        if len(self._swept) > 10_000:
            self._swept.clear()
        # Retention (a no-op without one): bounded per pass, the rest goes at the next. Several
        # workers may sweep at once; each run is claimed by one of them before it is deleted.
        expired = self.app.store.expire_runs(now=now, limit=_EXPIRE_PER_SWEEP)
        if expired:
            log.info("sweeper: deleted %d expired runs: %s", len(expired), ", ".join(expired))


# ---------------------------------------------------------------------- targets


def resolve_app(targets: list[str]) -> App:
    """The App behind the CLI targets: ``module:function``, ``file.py:function`` or ``...:app``.

    Targets of one App give that App. Targets of several Apps give one App that registers all
    their functions, on the first App's store and settings.
    """
    from outlast.targets import load_target

    if not targets:
        raise TargetError("give at least one target (module:function or path/to/file.py:app)")
    apps: list[App] = []
    for target in targets:
        try:
            durable = load_target(target)
        except TargetError:
            found = _attribute(target)
            if not isinstance(found, App):
                raise
            apps.append(found)
            continue
        apps.append(durable.app)
    unique = list({id(app): app for app in apps}.values())
    if len(unique) == 1:
        return unique[0]
    first = unique[0]
    merged = App(
        "+".join(app.name for app in unique),
        store=first.store,
        retry=first.retry_policy,
        lease_ttl=first.lease_ttl,
        lease_margin=first.lease_margin,
        handoff_margin=first.handoff_margin,
        inline_wait=first.inline_wait,
    )
    try:
        for app in unique:
            for name, durable in app.functions.items():
                merged.durable(name)(durable.fn)
    except ValueError as exc:
        raise TargetError(f"the targets' apps cannot share one worker: {exc}") from None
    return merged


def _attribute(target: str) -> Any:
    """What ``target`` names once its module is loaded (load_target has imported it by now)."""
    import importlib

    from outlast import targets as target_mod

    module_part, _, attr = target.rpartition(":")
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        from pathlib import Path

        module = target_mod._load_file(Path(module_part), target)
    else:
        module = importlib.import_module(module_part)
    return getattr(module, attr, None)
