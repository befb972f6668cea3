"""A leg in a subprocess, as the local emulator runs it: ``python -m outlast.leg_main``.

It behaves like one Lambda invocation: a wall-clock deadline it must not outlive, SIGTERM meaning
"drain and hand off", and an outcome written atomically to a file when it ends on its own.

The deadline is enforced twice. The emulator SIGKILLs the leg there; and the leg enforces it on
itself, because the emulator may be gone (``kill -9`` of ``outlast run``) and a leg nobody
watches must not go on running steps and committing long after its deadline:

- a daemon timer thread hard-exits the process (``os._exit(WATCHDOG_EXIT)``) just past the
  deadline, whatever the main thread is doing;
- a kernel interval timer (SIGALRM with its default action, which terminates the process) backs
  the thread up a moment later, for a main thread stuck in C code that never releases the GIL.

Exit codes: 0 the leg ended on its own (see the outcome file), ``WATCHDOG_EXIT`` the deadline
passed, ``STORE_EXIT`` the store failed under the leg, ``CONFIG_EXIT`` the target cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from outlast.budget import Budget
from outlast.context import Context
from outlast.dispatch import NullDispatcher
from outlast.errors import OutlastError
from outlast.targets import load_target
from outlast.testing.faults import FaultPlan
from statestore import StateStoreError

WATCHDOG_EXIT = 124  # as timeout(1): the process outlived its deadline and ended itself
STORE_EXIT = 75  # EX_TEMPFAIL: the store failed; another leg may well succeed
CONFIG_EXIT = 78  # EX_CONFIG: the target cannot be loaded or run here

# How far past the deadline the watchdog fires. The emulator kills at the deadline itself; the
# slack lets that (counted as a timeout) win when the emulator is alive.
WATCHDOG_SLACK = 0.25
# How much later the kernel timer fires, if the watchdog thread could not run.
ALARM_SLACK = 1.0


def _expire() -> None:
    # os.write, not print: the main thread may hold sys.stderr's lock, and this must not wait.
    try:
        os.write(2, b"outlast leg: deadline passed; the leg ends itself\n")
    finally:
        os._exit(WATCHDOG_EXIT)


def arm_watchdog(deadline: float, slack: float = WATCHDOG_SLACK) -> threading.Timer:
    """End this process ``slack`` seconds after ``deadline`` (wall-clock epoch seconds)."""
    delay = max(0.0, deadline - time.time()) + slack
    timer = threading.Timer(delay, _expire)
    timer.daemon = True
    timer.start()
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, delay + ALARM_SLACK)
    return timer


class _StepProgress:
    """Writes which steps are in flight to a file, so the emulator can name the step a killed
    leg was running (nothing of it reaches the journal) when it reports a stuck run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.running: dict[str, float] = {}

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"steps": self.running}))
        os.replace(tmp, self.path)

    @contextmanager
    def hook(self, step: str, attempt: int, key: str) -> Iterator[None]:
        with self.lock:
            self.running[step] = time.time()
            self._write()
        try:
            yield
        finally:
            with self.lock:
                self.running.pop(step, None)
                self._write()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="outlast-leg")
    parser.add_argument("--target", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--leg", type=int, default=None)
    parser.add_argument("--deadline", type=float, required=True, help="wall-clock epoch seconds")
    parser.add_argument("--margin", type=float, default=0.5)
    parser.add_argument("--outcome", required=True)
    parser.add_argument("--progress", default=None, help="file naming the steps in flight")
    parser.add_argument(
        "--fault", default="", help="commit:N:PHASE: SIGKILL this leg there (emulator tests)"
    )
    args = parser.parse_args(argv)

    # First of all: nothing below (imports of user code included) may outlive the deadline.
    arm_watchdog(args.deadline)
    budget = Budget(lambda: args.deadline - time.time(), margin=args.margin)
    signal.signal(signal.SIGTERM, lambda *_: budget.request_drain("SIGTERM"))
    # A terminal's Ctrl-C reaches the whole foreground process group; the emulator that started
    # this leg decides its fate (it kills it and frees its lease), so the leg itself ignores it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    progress = _StepProgress(Path(args.progress)) if args.progress else None

    def on_context(ctx: Context) -> None:
        if progress is not None:
            ctx.step_hook = progress.hook

    try:
        durable = load_target(args.target)
        fault = FaultPlan(args.fault).point if args.fault else None
        outcome = durable.app.run_leg(
            args.run_id,
            budget=budget,
            dispatcher=NullDispatcher(),
            expect_leg=args.leg,
            fault=fault,
            on_context=on_context,
        )
    except StateStoreError as exc:
        print(f"outlast leg: store error: {exc}", file=sys.stderr)
        return STORE_EXIT
    except OutlastError as exc:
        print(f"outlast leg: {exc}", file=sys.stderr)
        return CONFIG_EXIT
    path = Path(args.outcome)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(outcome.model_dump_json())
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
