"""``ctx.parallel`` in sync durable functions: branches with scopes of their own replay as their
own sequences, whatever the interleaving; failures come back as the caller chose."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from outlast import App, Context, RetryPolicy, RunStatus, StepFailedError
from outlast.journal_cache import JournalCache
from outlast.testing.store_faults import SimulatedKill

ONCE = RetryPolicy(max_attempts=1)


def test_branches_step_sleep_and_wait_in_their_own_scopes(app: App) -> None:
    effects = Counter[str]()

    def work(tag: str) -> str:
        effects[tag] += 1
        time.sleep(0.01)
        return tag

    def fetch_a(ctx: Context) -> str:
        first = ctx.step(work, "a1", name="work")
        ctx.sleep(0.02)
        return first + ctx.step(work, "a2", name="work")

    def fetch_b(ctx: Context) -> str:
        ctx.wait_for_signal("b-go")
        return ctx.step(work, "b1", name="work") + str(len(ctx.uuid()))

    @app.durable()
    def both(ctx: Context) -> list[str]:
        before = ctx.step(work, "before", name="work")
        got = ctx.parallel(fetch_a, fetch_b)
        return [before, *got, ctx.step(work, "after", name="work")]

    run_id = app.start("both")
    assert app.run_leg(run_id).status == "suspended"
    assert effects == Counter({"before": 1, "a1": 1, "a2": 1})  # a finished before the suspend
    app.signal(run_id, "b-go")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == ["before", "a1a2", "b136", "after"]
    assert effects == Counter({"before": 1, "a1": 1, "a2": 1, "b1": 1, "after": 1})
    scopes = [e.meta.get("scope") for e in app.journal(run_id)]
    assert scopes[0] is None and scopes[-1] is None
    assert {"1.0/", "1.1/"} <= set(scopes)


def test_a_branch_killed_mid_step_costs_only_its_step(app: App) -> None:
    effects = Counter[str]()

    def work(tag: str) -> str:
        effects[tag] += 1
        if tag == "b2" and effects[tag] == 1:
            time.sleep(0.05)
            raise SimulatedKill("evicted")
        return tag

    def branch(prefix: str):  # type: ignore[no-untyped-def]
        def body(ctx: Context) -> str:
            return "".join(ctx.step(work, f"{prefix}{i}", name="w") for i in range(3))

        return body

    @app.durable()
    def flow(ctx: Context) -> list[str]:
        return ctx.parallel(branch("a"), branch("b"), max_concurrency=2)

    run_id = app.start("flow")
    with pytest.raises(SimulatedKill):
        app.run_leg(run_id, cache=JournalCache())
    record = app.store.hot.get_run(run_id)
    assert record.lease is not None
    app.store.hot.break_lease(run_id, record.lease.token)
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == ["a0a1a2", "b0b1b2"]
    assert effects["b2"] == 2 and all(effects[t] == 1 for t in ("a0", "a1", "a2", "b0", "b1"))


def test_failures_raise_the_first_branch_or_a_group(app: App) -> None:
    def ok(ctx: Context) -> str:
        return str(ctx.step(lambda: "ok", name="ok"))

    def bad(tag: str):  # type: ignore[no-untyped-def]
        def body(ctx: Context) -> str:
            return str(
                ctx.step(lambda: (_ for _ in ()).throw(ValueError(tag)), name=tag, retry=ONCE)
            )

        return body

    @app.durable()
    def first(ctx: Context) -> str:
        try:
            ctx.parallel(ok, bad("x"), bad("y"))
        except StepFailedError as exc:
            return exc.step
        return "none"

    @app.durable()
    def group(ctx: Context) -> list[str]:
        try:
            ctx.parallel(ok, bad("x"), bad("y"), collect_failures=True)
        except ExceptionGroup as eg:
            return sorted(e.step for e in eg.exceptions if isinstance(e, StepFailedError))
        return []

    run_first, run_group = app.start("first"), app.start("group")
    app.drive(run_first)
    app.drive(run_group)
    assert app.result(run_first) == "x"
    assert app.result(run_group) == ["x", "y"]


def test_a_changed_branch_count_is_a_non_determinism(app: App) -> None:
    def one(ctx: Context) -> str:
        ctx.step(lambda: 1, name="one")
        ctx.wait_for_signal("go")
        return "1"

    def v1(ctx: Context) -> list[str]:
        return ctx.parallel(lambda c: str(c.step(lambda: 0, name="s")), one, one)

    def v2(ctx: Context) -> list[str]:
        return ctx.parallel(lambda c: str(c.step(lambda: 0, name="s")))

    app.durable("flow")(v1)
    run_id = app.start("flow")
    assert app.run_leg(run_id).status == "suspended"
    app._functions.pop("flow")
    app.durable("flow")(v2)
    app.signal(run_id, "go")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None and view.error.type == "NonDeterminismError"


def test_a_sync_map_collects_every_failure_when_asked(app: App) -> None:
    def check(i: int) -> int:
        if i in (1, 3):
            raise ValueError(f"item {i}")
        return i

    @app.durable()
    def audit(ctx: Context) -> list[int]:
        try:
            ctx.map(check, range(5), retry=ONCE, collect_failures=True)
        except ExceptionGroup as eg:
            return [
                int(str(e.error.message).split()[-1])
                for e in eg.exceptions
                if isinstance(e, StepFailedError)
            ]
        return []

    run_id = app.start("audit")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == [1, 3]


def test_fail_fast_starts_no_more_items_or_branches_after_a_failure(app: App) -> None:
    import asyncio

    from outlast.async_context import AsyncContext

    ran = Counter[str]()

    def check(i: int) -> int:
        ran[f"item{i}"] += 1
        if i == 1:
            raise ValueError("item 1")
        return i

    def branch(i: int):  # type: ignore[no-untyped-def]
        def body(ctx: Context) -> int:
            return int(ctx.step(check, i, name=f"b{i}", retry=ONCE))

        return body

    @app.durable()
    def sync_flow(ctx: Context) -> str:
        try:
            ctx.map(check, range(5), max_concurrency=1, retry=ONCE, fail_fast=True)
        except StepFailedError as exc:
            first = exc.step
        try:
            ctx.parallel(*(branch(i) for i in range(4)), max_concurrency=1, fail_fast=True)
        except StepFailedError as exc:
            return f"{first}|{exc.step}"
        return "no failure"

    @app.durable()
    async def async_flow(ctx: AsyncContext) -> str:
        try:
            await ctx.map(check, range(5), max_concurrency=1, retry=ONCE, fail_fast=True)
        except StepFailedError as exc:
            await asyncio.sleep(0)
            return exc.step
        return "no failure"

    run_id = app.start("sync_flow")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert str(app.result(run_id)).endswith("check[1]|b1")
    assert ran == Counter({"item0": 2, "item1": 2})  # map: 0, 1; branches: b0, b1
    ran.clear()
    run_id = app.start("async_flow")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert ran == Counter({"item0": 1, "item1": 1})
