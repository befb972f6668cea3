"""A leg in a subprocess, as the local emulator runs it: ``python -m outlast.leg_main``.

It behaves like one Lambda invocation: a wall-clock deadline it must not outlive (the parent
SIGKILLs it there), SIGTERM meaning "drain and hand off", and an outcome written atomically to a
file when it ends on its own.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from outlast.budget import Budget
from outlast.dispatch import NullDispatcher
from outlast.targets import load_target
from outlast.testing.faults import FaultPlan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="outlast-leg")
    parser.add_argument("--target", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--leg", type=int, default=None)
    parser.add_argument("--deadline", type=float, required=True, help="wall-clock epoch seconds")
    parser.add_argument("--margin", type=float, default=0.5)
    parser.add_argument("--outcome", required=True)
    parser.add_argument(
        "--fault", default="", help="commit:N:PHASE: SIGKILL this leg there (emulator tests)"
    )
    args = parser.parse_args(argv)

    budget = Budget(lambda: args.deadline - time.time(), margin=args.margin)
    signal.signal(signal.SIGTERM, lambda *_: budget.request_drain("SIGTERM"))
    durable = load_target(args.target)
    fault = FaultPlan(args.fault).point if args.fault else None
    outcome = durable.app.run_leg(
        args.run_id, budget=budget, dispatcher=NullDispatcher(), expect_leg=args.leg, fault=fault
    )
    path = Path(args.outcome)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(outcome.model_dump_json())
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
