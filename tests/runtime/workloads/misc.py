"""Small durable functions for CLI tests."""

from __future__ import annotations

from datetime import timedelta

from outlast import App, Context

app = App("misc")


@app.durable()
def returns_a_set(ctx: Context) -> object:
    # Sets (and tuples as keys) are storable now; an arbitrary object is not.
    return {"ok": object()}


@app.durable()
def approval(ctx: Context, who: str) -> dict[str, object]:
    ctx.step(lambda: who, name="prepare")
    decision = ctx.wait_for_signal("approve", timeout=timedelta(hours=1))
    return {"who": who, "decision": decision}


def not_durable(ctx: Context) -> None:
    return None
