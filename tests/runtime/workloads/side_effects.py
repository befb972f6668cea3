"""The crash-test workload: N steps, each appending one line to a side-effect file."""

from __future__ import annotations

import os
import time

from outlast import App, Context

app = App("crash-test")


def effect(path: str, i: int, work_s: float) -> int:
    # O_APPEND writes of one short line are atomic, so concurrent legs cannot interleave bytes.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    time.sleep(work_s)
    return i * 7 + 1


@app.durable()
def side_effects(ctx: Context, args: dict[str, object]) -> dict[str, int]:
    steps = int(args["steps"])  # type: ignore[call-overload]
    path = str(args["file"])
    work = float(args.get("work_s", 0.004))  # type: ignore[arg-type]
    total = 0
    for i in range(steps):
        total += ctx.step(effect, path, i, work, name="effect")
    return {"steps": steps, "total": total}


def expected(steps: int) -> dict[str, int]:
    return {"steps": steps, "total": sum(i * 7 + 1 for i in range(steps))}
