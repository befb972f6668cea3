"""Child runs: started idempotently by an operation, run in legs of their own; the parent
suspends until each ends, then gets its result or its failure. Cancelling a parent cancels them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from outlast import App, Context, RunFailedError, RunStatus
from outlast.async_context import AsyncContext
from outlast.children import children_of


def test_a_parent_with_two_children_gets_their_results(app: App) -> None:
    effects = Counter[str]()

    @app.durable()
    def child(ctx: Context, n: int) -> int:
        return int(ctx.step(lambda: effects.update([f"child{n}"]) or n * n, name="square"))

    @app.durable()
    def parent(ctx: Context) -> list[int]:
        first = ctx.run_child(child, 3)
        second = ctx.run_child("child", 4)
        return [first, second]

    run_id = app.start("parent")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == [9, 16]
    kids = children_of(app, run_id)
    assert len(kids) == 2 and all(app.status(k).status is RunStatus.SUCCEEDED for k in kids)
    assert all(app.store.hot.get_run(k).tags["parent"] == run_id for k in kids)
    assert effects == Counter({"child3": 1, "child4": 1})


def test_a_failed_child_raises_in_the_parent(app: App) -> None:
    @app.durable()
    def fragile(ctx: Context) -> None:
        raise ValueError("no such customer")

    @app.durable()
    def parent(ctx: Context) -> str:
        try:
            ctx.run_child(fragile)
        except RunFailedError as exc:
            return f"child failed: {exc.error.message if exc.error else ''}"
        return "ok"

    run_id = app.start("parent")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == "child failed: no such customer"


def test_cancelling_a_parent_cancels_its_children(app: App) -> None:
    @app.durable()
    def waiter(ctx: Context) -> str:
        return str(ctx.wait_for_signal("never"))

    @app.durable()
    def parent(ctx: Context) -> object:
        return ctx.run_child(waiter)

    run_id = app.start("parent")
    app.drive(run_id, max_wait=0.2)
    [kid] = children_of(app, run_id)
    assert app.status(kid).status is RunStatus.SUSPENDED
    app.cancel(run_id)
    assert app.status(run_id).status is RunStatus.CANCELLED
    assert app.status(kid).status is RunStatus.CANCELLED


def test_async_parents_gather_children(app: App) -> None:
    @app.durable()
    async def double(ctx: AsyncContext, n: int) -> int:
        return int(await ctx.step(lambda: n * 2, name="double"))

    @app.durable()
    async def fan(ctx: AsyncContext) -> list[int]:
        return list(await asyncio.gather(*(ctx.run_child(double, i) for i in range(3))))

    run_id = app.start("fan")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == [0, 2, 4]
    assert len(children_of(app, run_id)) == 3


def test_children_survive_emulator_kills(tmp_path: Path) -> None:
    module = tmp_path / "family.py"
    module.write_text(
        textwrap.dedent(
            """
            import time
            from outlast import App, Context

            app = App("family")

            def slow(i: int) -> int:
                time.sleep(0.05)
                with open("effects.log", "a") as log:
                    log.write(f"{i}\\n")
                return i

            @app.durable()
            def child(ctx: Context, base: int) -> int:
                return sum(ctx.step(slow, base + i, name=f"s{i}") for i in range(8))

            @app.durable()
            def parent(ctx: Context) -> list[int]:
                return [ctx.run_child(child, 0), ctx.run_child(child, 100)]
            """
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "outlast.cli",
            "run",
            f"{module}:parent",
            "--run-id",
            "fam",
            "--leg-timeout",
            "1",
            "--kill-rate",
            "0.3",
            "--evict-rate",
            "0.3",
            "--seed",
            "5",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"result": [28, 828]' in proc.stdout
    effects = (tmp_path / "effects.log").read_text().split()
    assert len(set(effects)) == 16


def test_runs_show_lists_the_parent_and_the_children(app: App) -> None:
    from outlast.report import run_report

    @app.durable()
    def leaf(ctx: Context) -> str:
        return "leaf"

    @app.durable()
    def root(ctx: Context) -> list[str]:
        return [str(ctx.run_child(leaf)), str(ctx.run_child(leaf, run_id="named-leaf"))]

    run_id = app.start("root")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    report = run_report(app.store, run_id)
    assert report.children[1] == "named-leaf" and len(report.children) == 2
    assert run_report(app.store, "named-leaf").parent == run_id
