"""The durable function the worker tests run: ``steps`` short steps, each an O_APPEND side effect.

Each execution of a step appends ``run_id seq leg pid`` to the side-effect file before it
sleeps, so the tests can count executions (a kill between start and commit shows up as a
repeated line) and tell which process and leg ran each one.
"""

from __future__ import annotations

import os
import time
from typing import Any

from outlast import App, Context

app = App("worker-tests")


def effect(path: str, run_id: str, seq: int, leg: int, pause: float) -> int:
    line = f"{run_id} {seq} {leg} {os.getpid()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    time.sleep(pause)
    return seq * seq


@app.durable()
def counter(ctx: Context, spec: dict[str, Any]) -> int:
    total = 0
    for seq in range(int(spec["steps"])):
        pause = float(spec.get("long", {}).get(str(seq), spec["pause"]))
        total += ctx.step(effect, spec["effects"], ctx.run_id, seq, ctx.leg, pause, name="effect")
    return total


def expected_total(steps: int) -> int:
    return sum(seq * seq for seq in range(steps))
