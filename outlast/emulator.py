"""The local emulator: drive a run through legs in subprocesses, as a serverless platform would.

Each leg is a fresh Python process with a wall-clock deadline; at the deadline it gets SIGKILL,
exactly as Lambda stops a function, with no warning. Faults are injected from a seeded RNG, so a
failing seed replays exactly:

- eviction: SIGTERM at a random moment, SIGKILL after the grace period (a pod eviction);
- kill: SIGKILL at a random moment, or inside a commit (before the cold write, between the cold
  and the hot write, after the hot write) through the runtime's fault points;
- duplicate: a continuation delivered twice, at once or late.

The emulator also plays the sweeper: after a kill it breaks the dead leg's lease (it reaped the
process, so nobody holds it) and starts a recovery leg; it waits out timers.

Nothing loops forever: when ``max_idle_legs`` legs in a row commit nothing while the run is not
waiting (a step longer than a leg, a leg that crashes before its first commit), the emulator stops
and says why in ``EmulatorReport.stuck``. If the emulator itself is stopped (Ctrl-C, SIGTERM, an
error), it kills the legs it started and frees their leases on the way out; if it is SIGKILLed,
each leg ends itself at its deadline (see ``outlast.leg_main``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from outlast.app import App
from outlast.budget import StepTimings
from outlast.children import SIGNAL_PREFIX
from outlast.leg import LegOutcome
from outlast.leg_main import CONFIG_EXIT, STORE_EXIT, WATCHDOG_EXIT
from outlast.testing.faults import PHASES
from outlast.values import to_json_view
from statestore import ErrorInfo, RunStatus, StateStoreError, utcnow

EventKind = Literal[
    "leg", "done", "evict", "kill", "timeout", "duplicate", "recover", "wait", "skipped", "stuck"
]


@dataclass(frozen=True)
class Faults:
    evict_rate: float = 0.0
    kill_rate: float = 0.0
    duplicate_rate: float = 0.0
    seed: int = 0
    grace: float | None = None  # SIGTERM to SIGKILL; default: a third of the leg timeout

    def __post_init__(self) -> None:
        for label, rate in (
            ("--evict-rate", self.evict_rate),
            ("--kill-rate", self.kill_rate),
            ("--duplicate-rate", self.duplicate_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{label} must be between 0 and 1, got {rate}")
        if self.evict_rate + self.kill_rate > 1.0:
            raise ValueError("--evict-rate plus --kill-rate must be at most 1")


@dataclass
class Event:
    kind: EventKind
    leg: int | None
    detail: str = ""


class EmulatorReport(BaseModel):
    run_id: str
    status: RunStatus
    result: Any = None
    error: ErrorInfo | None = None
    waiting_for: str | None = None
    legs: int = 0
    steps_executed: int = 0
    steps_replayed: int = 0
    evictions: int = 0
    kills: int = 0
    timeouts: int = 0
    duplicates: int = 0
    step_seconds: float = 0.0
    elapsed_s: float = 0.0
    # Why the emulator gave up on a run that made no progress (None: it did not).
    stuck: str | None = None


@dataclass
class _Plan:
    kill_at: float | None = None
    evict_at: float | None = None
    commit_fault: str | None = None


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    leg: int | None
    plan: _Plan
    outcome_path: Path
    progress_path: Path
    started: float
    deadline: float
    sigkill_at: float | None = None
    killed: bool = False
    evicted: bool = False
    timed_out: bool = False
    ended_wall: float = 0.0  # wall-clock time it was seen dead


@dataclass
class _LegTrace:
    """What one delivery did, for telling a stuck run from a slow one."""

    took: bool = False  # some process of it took the lease (not every copy skipped)
    why: str = ""  # how it ended without progress, in words
    step: str | None = None  # the step in flight when it was killed, if any
    ran: float = 0.0  # how long that step had run
    timed_out: bool = False


@dataclass
class _Tally:
    report: EmulatorReport
    deliveries: deque[int | None] = field(default_factory=deque)


class Emulator:
    def __init__(
        self,
        app: App,
        target: str,
        *,
        leg_timeout: float = 10.0,
        faults: Faults | None = None,
        margin: float | None = None,
        max_wait: float = 300.0,
        max_legs: int = 10_000,
        max_idle_legs: int = 10,
        on_event: Callable[[Event, EmulatorReport], None] | None = None,
        python: str = sys.executable,
    ) -> None:
        if leg_timeout <= 0:
            raise ValueError("--leg-timeout must be positive")
        if max_idle_legs < 1:
            raise ValueError("--max-idle-legs must be at least 1")
        self.app = app
        self.target = target
        self.leg_timeout = leg_timeout
        self.faults = faults or Faults()
        self.margin = margin if margin is not None else max(0.2, leg_timeout * 0.1)
        self.grace = self.faults.grace if self.faults.grace is not None else leg_timeout / 3
        self.max_wait = max_wait
        self.max_legs = max_legs
        self.max_idle_legs = max_idle_legs
        self.on_event = on_event or (lambda event, report: None)
        self.python = python
        self.rng = random.Random(self.faults.seed)
        self._host = socket.gethostname()
        self._spawned = itertools.count()

    # ------------------------------------------------------------------ driving

    def run(self, run_id: str) -> EmulatorReport:
        hot = self.app.store.hot
        started = time.monotonic()
        tally = _Tally(report=EmulatorReport(run_id=run_id, status=hot.get_run(run_id).status))
        record = hot.get_run(run_id)
        first = record.counters.legs + 1 if record.status is RunStatus.PENDING else None
        tally.deliveries.append(first)
        idle: list[tuple[int, _LegTrace]] = []  # (leg number, trace) since the last progress
        with tempfile.TemporaryDirectory(prefix="outlast-legs-") as spool:
            while True:
                record = hot.get_run(run_id)
                if not record.status.takes_legs:
                    break
                if record.counters.legs >= self.max_legs:
                    tally.report.stuck = (
                        f"run {run_id!r} took {record.counters.legs} legs, the most this "
                        f"emulator runs for one run ({self.max_legs})"
                    )
                    break
                if not tally.deliveries and not self._find_work(run_id, tally):
                    break
                leg = tally.deliveries.popleft()
                trace = self._run_leg(run_id, leg, Path(spool), tally)
                after = hot.get_run(run_id)
                if not trace.took:
                    continue  # every copy was a stale or duplicate delivery: no leg ran
                if (
                    after.next_seq > record.next_seq
                    or after.status is RunStatus.SUSPENDED
                    or not after.status.takes_legs
                ):
                    idle.clear()
                    continue
                idle.append((after.counters.legs, trace))
                if len(idle) >= self.max_idle_legs:
                    tally.report.stuck = self._why_stuck(run_id, idle)
                    self.on_event(Event("stuck", None, tally.report.stuck), tally.report)
                    break
        record = hot.get_run(run_id)
        report = tally.report
        report.status = record.status
        report.legs = record.counters.legs
        report.error = record.error
        report.waiting_for = record.waiting_for
        if record.result is not None:
            report.result = to_json_view(self.app.store.run_result(record))
        report.elapsed_s = round(time.monotonic() - started, 3)
        self.on_event(Event("done", None, record.status.value), report)
        return report

    def _why_stuck(self, run_id: str, idle: list[tuple[int, _LegTrace]]) -> str:
        legs = [n for n, _ in idle]
        span = f"legs {legs[0]}-{legs[-1]}" if legs[0] != legs[-1] else f"leg {legs[0]}"
        head = f"run {run_id!r} made no progress in {len(idle)} legs in a row ({span})"
        traces = [t for _, t in idle]
        steps = {t.step for t in traces}
        if len(steps) == 1 and None not in steps and all(t.timed_out for t in traces):
            step = traces[-1].step
            timings = StepTimings(self.app.store.hot.read_journal(run_id))
            expected = timings.expected(step or "")
            known = (
                f"it is expected to take {expected:.1f} s"
                if expected > self.leg_timeout
                else f"it ran {max(t.ran for t in traces):.1f} s each time without finishing"
            )
            return (
                f"{head}: step {step!r} has been interrupted in {len(idle)} legs in a row: "
                f"{known} but a leg has {self.leg_timeout:.1f} s; raise --leg-timeout "
                "or split the step"
            )
        return f"{head}; the last one: {traces[-1].why or 'it committed nothing'}"

    def _find_work(self, run_id: str, tally: _Tally) -> bool:
        """Play the sweeper: decide what starts the next leg when no continuation is queued."""
        hot = self.app.store.hot
        waited = 0.0
        while True:
            record = hot.get_run(run_id)
            now = utcnow()
            if not record.status.takes_legs:
                return False
            if record.runnable(now):
                if record.status is RunStatus.RUNNING:
                    self.on_event(Event("recover", None, "no leg holds the run"), tally.report)
                tally.deliveries.append(None)
                return True
            child = (record.waiting_for or "").removeprefix(SIGNAL_PREFIX)
            if record.status is RunStatus.SUSPENDED and child != (record.waiting_for or ""):
                found = hot.find_run(child)
                if found is not None and found.status.takes_legs:
                    # It waits for a child run: drive the child (with the same faults) first.
                    self.on_event(Event("wait", None, f"for child run {child}"), tally.report)
                    self.run(child)
                    continue
            if record.status is RunStatus.SUSPENDED and (
                record.waiting_for is not None
                or record.wake_at is None
                or (record.wake_at - now).total_seconds() > self.max_wait - waited
            ):
                # Waits for a signal (someone must send it: `outlast runs signal`), or for a
                # timer further off than we are willing to wait: report it suspended.
                return False
            if waited >= self.max_wait:
                return False
            # A timer, a live lease's expiry, or the end of a failed leg's backoff.
            due = record.due_at() or now
            pause = min(max((due - now).total_seconds(), 0.01), 0.5, self.max_wait - waited)
            if waited == 0.0:
                self.on_event(Event("wait", None, f"until {due.isoformat()}"), tally.report)
            time.sleep(pause)
            waited += pause

    def _run_leg(self, run_id: str, leg: int | None, spool: Path, tally: _Tally) -> _LegTrace:
        hot = self.app.store.hot
        before = hot.get_run(run_id)
        copies = 1
        duplicate_late = False
        if leg is not None and self.rng.random() < self.faults.duplicate_rate:
            tally.report.duplicates += 1
            if self.rng.random() < 0.5:
                copies = 2
                self.on_event(Event("duplicate", leg, "delivered twice at once"), tally.report)
            else:
                duplicate_late = True
        children: list[_Child] = []
        try:
            for _ in range(copies):
                children.append(self._spawn(run_id, leg, spool, self._plan()))
            self.on_event(Event("leg", leg, f"{copies} process(es)"), tally.report)
            self._supervise(children, tally)
        except BaseException:
            # Ctrl-C, SIGTERM or an error in the emulator itself: no leg it started may run on
            # unwatched, and a leg it killed must not keep the run's lease until it expires.
            self._abandon(run_id, children)
            raise
        after = hot.get_run(run_id)
        trace = _LegTrace()
        for child in children:
            outcome = self._outcome(child)
            if outcome is None:
                # Killed: recover the way a platform would once the lease expires, but at once:
                # the process is reaped, so breaking its lease cannot let two legs write.
                self._break_dead_lease(run_id, child)
                tally.report.steps_executed += max(0, after.counters.steps - before.counters.steps)
                tally.report.steps_replayed += before.counters.steps if child.leg != 1 else 0
                self._trace_death(child, trace)
                continue
            tally.report.steps_executed += outcome.steps_executed
            tally.report.steps_replayed += outcome.steps_replayed
            tally.report.step_seconds += outcome.step_seconds
            if outcome.status == "skipped":
                self.on_event(Event("skipped", leg, outcome.detail), tally.report)
                continue
            trace.took = True
            trace.why = trace.why or f"it ended {outcome.status}: {outcome.detail}".rstrip(": ")
            if outcome.status == "handed_off" and outcome.next_leg is not None:
                tally.deliveries.append(outcome.next_leg)
        if duplicate_late:
            self.on_event(Event("duplicate", leg, "delivered again later"), tally.report)
            tally.deliveries.append(leg)
        return trace

    def _trace_death(self, child: _Child, trace: _LegTrace) -> None:
        """Say how a leg that wrote no outcome ended, and which step it was running."""
        trace.took = True
        code = child.proc.returncode
        if child.timed_out:
            trace.timed_out = True
            how = f"killed at its {self.leg_timeout:.1f} s deadline"
        elif child.killed or code == -signal.SIGKILL:
            how = "killed by an injected fault"
        elif code == STORE_EXIT:
            how = "the store failed under it (see its message above)"
        elif code == CONFIG_EXIT:
            how = "it could not load or run the target (see its message above)"
        else:
            how = f"its process exited with code {code} (see its output above)"
        try:
            running: dict[str, float] = json.loads(child.progress_path.read_text())["steps"]
        except (OSError, ValueError, KeyError, TypeError):
            running = {}
        if running:
            step, since = min(running.items(), key=lambda item: item[1])
            trace.step = step
            trace.ran = max(0.0, child.ended_wall - since)
            trace.why = f"{how} while step {step!r} ran ({trace.ran:.1f} s)"
        else:
            trace.why = how

    def _abandon(self, run_id: str, children: list[_Child]) -> None:
        for child in children:
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait()
                child.killed = True
            # If the store is what failed, the lease runs out on its own.
            with contextlib.suppress(StateStoreError):
                self._break_dead_lease(run_id, child)

    def _plan(self) -> _Plan:
        roll = self.rng.random()
        lo = min(0.1, self.leg_timeout / 2)
        if roll < self.faults.kill_rate:
            if self.rng.random() < 0.5:
                return _Plan(kill_at=self.rng.uniform(lo, self.leg_timeout))
            phase = self.rng.choice(PHASES)
            return _Plan(commit_fault=f"commit:{self.rng.randint(1, 8)}:{phase}")
        if roll < self.faults.kill_rate + self.faults.evict_rate:
            return _Plan(evict_at=self.rng.uniform(lo, self.leg_timeout))
        return _Plan()

    def _spawn(self, run_id: str, leg: int | None, spool: Path, plan: _Plan) -> _Child:
        now = time.monotonic()
        number = next(self._spawned)
        outcome_path = spool / f"outcome-{number}.json"
        progress_path = spool / f"progress-{number}.json"
        env = dict(os.environ)
        args = [
            self.python,
            "-m",
            "outlast.leg_main",
            "--target",
            self.target,
            "--run-id",
            run_id,
            "--deadline",
            repr(time.time() + self.leg_timeout),
            "--margin",
            repr(self.margin),
            "--outcome",
            str(outcome_path),
            "--progress",
            str(progress_path),
        ]
        if leg is not None:
            args += ["--leg", str(leg)]
        if plan.commit_fault:
            args += ["--fault", plan.commit_fault]
        proc = subprocess.Popen(args, env=env, stdout=sys.stderr.fileno())
        return _Child(
            proc=proc,
            leg=leg,
            plan=plan,
            outcome_path=outcome_path,
            progress_path=progress_path,
            started=now,
            deadline=now + self.leg_timeout,
        )

    def _supervise(self, children: list[_Child], tally: _Tally) -> None:
        while any(c.proc.poll() is None for c in children):
            now = time.monotonic()
            for child in children:
                if child.proc.poll() is not None:
                    continue
                elapsed = now - child.started
                if child.plan.kill_at is not None and elapsed >= child.plan.kill_at:
                    self._kill(child, tally, "kill", "SIGKILL at a random moment")
                elif child.plan.evict_at is not None and elapsed >= child.plan.evict_at:
                    if not child.evicted:
                        child.evicted = True
                        child.sigkill_at = now + self.grace
                        tally.report.evictions += 1
                        child.proc.send_signal(signal.SIGTERM)
                        self.on_event(
                            Event("evict", child.leg, f"SIGTERM, {self.grace:.1f}s grace"),
                            tally.report,
                        )
                    elif child.sigkill_at is not None and now >= child.sigkill_at:
                        self._kill(child, tally, "kill", "grace period over")
                if child.proc.poll() is None and now >= child.deadline:
                    child.timed_out = True
                    tally.report.timeouts += 1
                    self._kill(child, tally, "timeout", "leg deadline reached")
            time.sleep(0.005)
        for child in children:
            code = child.proc.wait()
            child.ended_wall = child.ended_wall or time.time()
            if code in (WATCHDOG_EXIT, -signal.SIGALRM) and not child.killed:
                # It ended itself just past its deadline before we killed it there.
                child.killed = child.timed_out = True
                tally.report.timeouts += 1
                self.on_event(
                    Event("timeout", child.leg, "leg deadline reached (it ended itself)"),
                    tally.report,
                )
            elif code == -signal.SIGKILL and not child.killed:
                # A commit fault point killed it from the inside.
                child.killed = True
                tally.report.kills += 1
                self.on_event(
                    Event(
                        "kill", child.leg, f"SIGKILL inside a commit ({child.plan.commit_fault})"
                    ),
                    tally.report,
                )

    def _kill(self, child: _Child, tally: _Tally, kind: EventKind, why: str) -> None:
        if child.proc.poll() is not None or child.killed:
            return
        child.proc.kill()
        child.proc.wait()
        child.killed = True
        child.ended_wall = time.time()
        if kind == "kill":
            tally.report.kills += 1
        self.on_event(Event(kind, child.leg, why), tally.report)

    def _outcome(self, child: _Child) -> LegOutcome | None:
        if child.killed or not child.outcome_path.exists():
            return None
        return LegOutcome.model_validate_json(child.outcome_path.read_text())

    def _break_dead_lease(self, run_id: str, child: _Child) -> None:
        hot = self.app.store.hot
        record = hot.get_run(run_id)
        lease = record.lease
        if lease is not None and lease.owner.startswith(f"{self._host}:{child.proc.pid}:"):
            hot.break_lease(run_id, lease.token)
