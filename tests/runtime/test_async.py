"""Async durable functions: gather and parallel branches replay by call order, whatever order
their commits landed in; suspend, hand-off, non-determinism and kills behave as in sync code."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from outlast import App, Context, RunStatus, StepFailedError
from outlast.async_context import AsyncContext
from outlast.journal_cache import JournalCache
from outlast.testing.store_faults import SimulatedKill
from statestore import EntryKind

ROOT = Path(__file__).resolve().parents[2]


def test_gather_replays_by_call_order_not_commit_order(app: App) -> None:
    calls = Counter[str]()

    async def slow(x: str) -> str:
        calls[f"slow:{x}"] += 1
        await asyncio.sleep(0.05)
        return x.upper()

    def fast(x: str) -> str:  # a sync step runs in a thread
        calls[f"fast:{x}"] += 1
        return x * 2

    @app.durable()
    async def triage(ctx: AsyncContext, text: str) -> list[str]:
        a, b = await asyncio.gather(ctx.step(slow, text), ctx.step(fast, text))
        await ctx.wait_for_signal("go")
        c = await ctx.step(fast, a + b, name="combine")
        return [a, b, c]

    run_id = app.start("triage", "ab")
    assert app.run_leg(run_id).status == "suspended"
    journal = app.journal(run_id)
    assert [e.name for e in journal] == [
        "test_gather_replays_by_call_order_not_commit_order.<locals>.fast",
        "test_gather_replays_by_call_order_not_commit_order.<locals>.slow",
    ]
    assert [e.meta["op"] for e in journal] == ["1", "0"]  # committed out of call order
    app.signal(run_id, "go")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == ["AB", "abab", "ABababABabab"]
    assert calls == Counter({"slow:ab": 1, "fast:ab": 1, "fast:ABabab": 1})


def test_parallel_branches_sleep_and_step_in_their_own_scopes(app: App) -> None:
    effects = Counter[str]()

    def work(tag: str) -> str:
        effects[tag] += 1
        return tag

    async def fetch_a(ctx: AsyncContext) -> str:
        first = await ctx.step(work, "a1")
        await ctx.sleep(0.02)
        return first + await ctx.step(work, "a2")

    async def fetch_b(ctx: AsyncContext) -> str:
        await ctx.wait_for_signal("b-go")
        return await ctx.step(work, "b1")

    @app.durable()
    async def both(ctx: AsyncContext) -> list[str]:
        return await ctx.parallel(fetch_a, fetch_b)

    run_id = app.start("both")
    assert app.run_leg(run_id).status == "suspended"  # b waits; a's steps finished and committed
    assert effects == Counter({"a1": 1, "a2": 1})
    app.signal(run_id, "b-go")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == ["a1a2", "b1"]
    assert effects == Counter({"a1": 1, "a2": 1, "b1": 1})
    ops = {e.meta["op"] for e in app.journal(run_id)}
    assert {"0/0.0", "0/0.2", "0/1.1"} <= ops


def test_collected_failures_come_back_as_an_exception_group(app: App) -> None:
    def boom(i: int) -> int:
        if i % 2:
            raise ValueError(f"item {i}")
        return i

    @app.durable()
    async def many(ctx: AsyncContext) -> str:
        try:
            await ctx.map(boom, range(4), collect_failures=True)
        except ExceptionGroup as group:
            return ",".join(
                sorted(str(e.step) for e in group.exceptions if isinstance(e, StepFailedError))
            )
        return "no failure"

    run_id = app.start("many")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert str(app.result(run_id)).split(",") == [
        f"{boom.__qualname__}[1]",
        f"{boom.__qualname__}[3]",
    ]


def test_changed_async_code_is_a_non_determinism(app: App) -> None:
    async def v1(ctx: AsyncContext) -> str:
        await ctx.step(lambda: 1, name="one")
        await ctx.wait_for_signal("go")
        return "v1"

    async def v2(ctx: AsyncContext) -> str:
        await ctx.step(lambda: 1, name="uno")
        await ctx.wait_for_signal("go")
        return "v2"

    app.durable("flow")(v1)
    run_id = app.start("flow")
    assert app.run_leg(run_id).status == "suspended"
    app._functions.pop("flow")
    app.durable("flow")(v2)
    app.signal(run_id, "go")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None and view.error.type == "NonDeterminismError"


def test_a_sync_function_refuses_an_async_step_at_once(app: App) -> None:
    async def fetch() -> str:
        return "x"

    @app.durable()
    def flow(ctx: Context) -> object:
        return ctx.step(fetch)

    run_id = app.start("flow")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None and "use an" not in view.error.message
    assert "Make the durable function `async def`" in view.error.message
    assert app.journal(run_id) == []


def test_an_async_run_survives_a_kill_mid_gather(app: App) -> None:
    effects = Counter[str]()

    async def step(tag: str) -> str:
        effects[tag] += 1
        if tag == "b" and effects[tag] == 1:
            await asyncio.sleep(0.05)  # "a" commits first, then the leg dies in "b"
            raise SimulatedKill("the pod was evicted without notice")
        return tag

    @app.durable()
    async def flow(ctx: AsyncContext) -> list[str]:
        ids = [await ctx.uuid() for _ in range(3)]
        got = list(await asyncio.gather(ctx.step(step, "a"), ctx.step(step, "b")))
        return [*got, str(len(set(ids)))]

    run_id = app.start("flow")
    with pytest.raises(SimulatedKill):
        app.run_leg(run_id, cache=JournalCache())
    record = app.store.hot.get_run(run_id)
    assert record.lease is not None
    app.store.hot.break_lease(run_id, record.lease.token)
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == ["a", "b", "3"]
    assert effects == Counter({"a": 1, "b": 2})
    kinds = [e.kind for e in app.journal(run_id)]
    assert kinds.count(EntryKind.RANDOM) == 3 and kinds.count(EntryKind.STEP) == 2


ASYNC_WORKLOAD = """
import asyncio
from outlast import App
from outlast.async_context import AsyncContext

app = App("async-crash")


def work(i: int) -> int:
    import time
    time.sleep(0.05)
    with open("effects.log", "a") as log:
        log.write(f"{i}\\n")
    return i * i


async def branch(ctx: AsyncContext, base: int) -> int:
    total = 0
    for i in range(base, base + 5):
        total += await ctx.step(work, i, name=f"work{i}")
    await ctx.sleep(0.01)
    return total


@app.durable()
async def crunch(ctx: AsyncContext, n: int) -> list[int]:
    squares = await asyncio.gather(*(ctx.step(work, i, name=f"sq{i}") for i in range(n)))
    a, b = await ctx.parallel(lambda c: branch(c, 100), lambda c: branch(c, 200))
    return [sum(squares), a, b]
"""


@pytest.mark.parametrize("seed", [3, 11])
def test_async_runs_survive_emulator_kills_and_evictions(tmp_path: Path, seed: int) -> None:
    module = tmp_path / "crunch.py"
    module.write_text(textwrap.dedent(ASYNC_WORKLOAD))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "outlast.cli",
            "run",
            f"{module}:crunch",
            "--input",
            "12",
            "--run-id",
            f"async-{seed}",
            "--leg-timeout",
            "1",
            "--evict-rate",
            "0.3",
            "--kill-rate",
            "0.3",
            "--seed",
            str(seed),
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = [
        sum(i * i for i in range(12)),
        sum(i * i for i in range(100, 105)),
        sum(i * i for i in range(200, 205)),
    ]
    assert f'"result": {expected}'.replace(" ", "") in proc.stdout.replace(" ", "")
    effects = (tmp_path / "effects.log").read_text().split()
    steps = 12 + 10
    assert len(set(effects)) == steps
    assert '"kills"' in proc.stdout
