"""Runs made through the app, in-process, for the console's tests and its bench."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from outlast import App, Context, RetryPolicy
from statestore import StateStore


def fetch(topic: str) -> dict[str, Any]:
    return {"topic": topic, "notes": [f"{topic} note {i}" for i in range(3)]}


def summarize(notes: dict[str, Any]) -> str:
    return f"summary of {notes['topic']}"


def big(n: int) -> str:
    # Random, so it does not compress below the inline limit: the value goes to the cold tier.
    return os.urandom(n // 2).hex()


def flaky(label: str) -> str:
    raise ValueError(f"the service refused {label}")


def make_app(store: StateStore) -> App:
    """An app on ``store`` with the workload's durable functions."""
    # No inline waits: every timer suspends the run, so each sleep starts a new leg.
    app = App("ui-tests", store=store, inline_wait=0.0)

    @app.durable()
    def research(ctx: Context, topic: str) -> str:
        notes = ctx.step(fetch, topic)
        # A short timer suspends the leg; `drive` waits it out, so the run spans several legs.
        ctx.sleep(timedelta(milliseconds=20))
        blob = ctx.step(big, 300_000)
        ctx.sleep(timedelta(milliseconds=20))
        return ctx.step(summarize, notes) + f" ({len(blob)} bytes)"

    @app.durable()
    def failing(ctx: Context, label: str) -> str:
        ctx.step(fetch, label)
        return ctx.step(
            flaky, label, retry=RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=False)
        )

    @app.durable()
    def approval(ctx: Context, what: str) -> str:
        ctx.step(fetch, what)
        answer = ctx.wait_for_signal("approve")
        return f"{what}: {answer}"

    @app.durable()
    def slow(ctx: Context, n: int) -> int:
        total = 0
        for i in range(n):
            total += ctx.step(lambda i=i: i, name=f"tick[{i}]")
            ctx.sleep(timedelta(milliseconds=400))
        return total

    @app.durable()
    def many(ctx: Context, n: int) -> int:
        return sum(ctx.step(lambda i=i: i, name=f"item[{i}]") for i in range(n))

    return app
