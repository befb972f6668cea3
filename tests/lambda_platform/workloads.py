"""Durable functions for the Lambda platform tests (registered on ``make_app``'s App)."""

from __future__ import annotations

import time
from typing import Any

from outlast import App, Context
from tests.lambda_platform.support import die_at_deadline

# Step runs by (run_id, index), to tell a re-run step (after a kill) from a replayed one.
executions: dict[tuple[str, int], int] = {}


def square(i: int) -> int:
    time.sleep(0.002)
    return i * i


def make_app(hot_url: str, cold_url: str, *, lease_margin: float = 0.3) -> App:
    # Short margins: a leg of a 0.4 s invocation hands off ~0.1 s before its deadline, and a
    # killed leg's lease runs out 0.3 s after it.
    app = App(
        "lambda-test",
        hot_url=hot_url,
        cold_url=cold_url,
        lease_margin=lease_margin,
        handoff_margin=0.1,
        inline_wait=0.05,
    )

    @app.durable()
    def stash(ctx: Context, data: Any) -> int:
        # Takes any input: the API tests that send large or odd values start this one.
        return len(str(data))

    @app.durable()
    def squares(ctx: Context, n: int) -> dict[str, int]:
        total = 0
        for i in range(n):
            total += ctx.step(square, i, name="square")
        ctx.log.info("summed %d squares", n)
        return {"n": n, "total": total}

    @app.durable()
    def fragile(ctx: Context, args: dict[str, int]) -> int:
        total = 0
        for i in range(args["n"]):
            total += ctx.step(_fragile_step, ctx.run_id, i, args["kill_at"], name="fragile")
        return total

    @app.durable()
    def napper(ctx: Context, seconds: float) -> str:
        before = ctx.step(lambda: "before", name="before")
        ctx.sleep(seconds)
        after = ctx.step(lambda: "after", name="after")
        return f"{before}-{after}"

    @app.durable()
    def approver(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
        asked = ctx.step(lambda: f"asked for {request['what']}", name="ask")
        decision = ctx.wait_for_signal("approval")
        return {"asked": asked, "decision": decision}

    @app.durable()
    def broken(ctx: Context) -> None:
        ctx.step(lambda: 1, name="fine")
        raise RuntimeError("the durable function's own bug")

    return app


def _fragile_step(run_id: str, i: int, kill_at: int) -> int:
    key = (run_id, i)
    executions[key] = executions.get(key, 0) + 1
    if i == kill_at and executions[key] == 1:
        die_at_deadline()
    time.sleep(0.002)
    return i
