"""A small durable function for trying the emulator: N steps, each a little work."""

from __future__ import annotations

import time

from outlast import App, Context

app = App("countdown")


def tick(i: int, work_s: float) -> int:
    time.sleep(work_s)
    return i * i


@app.durable()
def countdown(ctx: Context, args: dict[str, float]) -> dict[str, int]:
    n, work = int(args.get("steps", 50)), float(args.get("work_s", 0.02))
    total = 0
    for i in range(n):
        total += ctx.step(tick, i, work, name="tick")
    return {"steps": n, "total": total}
