"""The issue's four shapes under ``outlast run`` kills and evictions, on Redis (and SQLite):

- an async durable function with ``asyncio.gather`` over steps;
- a ``parallel`` (sync and async) whose branches sleep and step;
- a parent with two child runs (sync and async parents);
- a patched function finishing old and new runs: runs started on v1 code, finished on v2.

Each faulty run's result equals the same run's result without faults; each step's side effect is
counted (one O_APPEND line per execution, written before the step's work), and re-executions are
bounded by the legs that died under steps in flight.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from outlast import App
from tests.conftest import unique
from tests.support.servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]

SHAPES = textwrap.dedent(
    """
    import asyncio
    import os
    import time

    from outlast import App, AsyncContext, Context

    app = App("platform-shapes")


    def _effect(tag: str) -> None:
        fd = os.open("effects.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{tag}\\n".encode())
        finally:
            os.close(fd)


    def work(tag: str, n: int) -> int:
        _effect(tag)
        time.sleep(0.12)
        return n * n


    async def awork(tag: str, n: int) -> int:
        _effect(tag)
        await asyncio.sleep(0.12)
        return n * n + 1


    @app.durable()
    async def gathered(ctx: AsyncContext, tag: str) -> list[int]:
        out = []
        for batch in range(6):  # at most 4 steps in flight at a time
            got = await asyncio.gather(
                *(
                    ctx.step(awork if i % 2 else work, f"{tag}:g{batch}.{i}", batch * 4 + i)
                    for i in range(4)
                )
            )
            out.append(sum(got))
        out.append(await ctx.step(work, f"{tag}:end", 7, name="end"))
        return out


    def branch(ctx: Context, tag: str, base: int) -> int:
        total = 0
        for i in range(3):
            total += int(ctx.step(work, f"{tag}{i}", base + i, name="w"))
            ctx.sleep(0.15)
        return total


    @app.durable()
    def fanned(ctx: Context, tag: str) -> list[int]:
        got = ctx.parallel(
            lambda c: branch(c, f"{tag}:a", 10),
            lambda c: branch(c, f"{tag}:b", 20),
            lambda c: branch(c, f"{tag}:c", 30),
            max_concurrency=2,
        )
        return [*got, int(ctx.step(work, f"{tag}:end", 1, name="end"))]


    async def abranch(ctx: AsyncContext, tag: str, base: int) -> int:
        total = 0
        for i in range(3):
            total += int(await ctx.step(awork, f"{tag}{i}", base + i, name="w"))
            await ctx.sleep(0.15)
        return total


    @app.durable()
    async def afanned(ctx: AsyncContext, tag: str) -> list[int]:
        got = await ctx.parallel(
            lambda c: abranch(c, f"{tag}:a", 10),
            lambda c: abranch(c, f"{tag}:b", 20),
            lambda c: abranch(c, f"{tag}:c", 30),
        )
        return [*got, int(await ctx.step(awork, f"{tag}:end", 1, name="end"))]


    @app.durable()
    def child(ctx: Context, spec: list[object]) -> int:
        tag, base = str(spec[0]), int(str(spec[1]))
        return sum(int(ctx.step(work, f"{tag}{i}", base + i, name=f"s{i}")) for i in range(5))


    @app.durable()
    async def achild(ctx: AsyncContext, spec: list[object]) -> int:
        tag, base = str(spec[0]), int(str(spec[1]))
        got = await asyncio.gather(
            *(ctx.step(awork, f"{tag}{i}", base + i, name=f"s{i}") for i in range(5))
        )
        return sum(got)


    @app.durable()
    def parent(ctx: Context, tag: str) -> list[int]:
        return [ctx.run_child(child, [f"{tag}:x", 0]), ctx.run_child(achild, [f"{tag}:y", 100])]


    @app.durable()
    async def aparent(ctx: AsyncContext, tag: str) -> list[int]:
        got = await asyncio.gather(
            ctx.run_child(child, [f"{tag}:x", 0]), ctx.run_child(achild, [f"{tag}:y", 100])
        )
        return list(got)
    """
)

# Executions per shape (each tag once when nothing dies), and most steps in flight at a time.
SHAPE_STEPS = {"gathered": (25, 4), "fanned": (10, 2), "afanned": (10, 3)}
SHAPE_STEPS |= {"parent": (10, 5), "aparent": (10, 5)}


def cli(
    cwd: Path, *args: str, hot: str | None = None, cold: str | None = None
) -> tuple[int, dict[str, Any], str]:
    """Run ``python -m outlast.cli ARGS`` (with the store flags); exit code, JSON, stderr."""
    stores = [*(["--hot", hot] if hot else []), *(["--cold", cold] if cold else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLAST_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "outlast.cli", *args, *stores, "--json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    data: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return proc.returncode, data, proc.stderr


def faults(seed: int) -> list[str]:
    return ["--leg-timeout", "1", "--evict-rate", "0.4", "--kill-rate", "0.4", "--seed", str(seed)]


def deaths(report: dict[str, Any]) -> int:
    return int(report["kills"]) + int(report["evictions"]) + int(report.get("timeouts", 0))


def effects(cwd: Path, prefix: str) -> Counter[str]:
    path = cwd / "effects.log"
    lines = path.read_text().split() if path.exists() else []
    return Counter(line for line in lines if line.startswith(f"{prefix}:"))


@pytest.fixture
def redis_tiers(redis_server: RedisServer, tmp_path: Path) -> tuple[str, str]:
    return f"{redis_server.url}?prefix={unique('shapes')}", f"file://{tmp_path}/cold"


@pytest.mark.parametrize(
    ("shape", "seed"),
    [("gathered", 3), ("fanned", 5), ("afanned", 7), ("parent", 11), ("aparent", 13)],
)
def test_shapes_survive_kills_and_evictions_on_redis(
    tmp_path: Path, redis_tiers: tuple[str, str], shape: str, seed: int
) -> None:
    hot, cold = redis_tiers
    module = tmp_path / "shapes.py"
    module.write_text(SHAPES)
    target = f"{module}:{shape}"

    rc, calm, err = cli(tmp_path, "run", target, "--input", '"calm"', hot=hot, cold=cold)
    assert rc == 0, err[-3000:]
    assert calm["kills"] == calm["evictions"] == 0
    assert sorted(effects(tmp_path, "calm").values()) == [1] * SHAPE_STEPS[shape][0]

    # The faults are drawn per leg, and how many legs a run takes depends on timing: a seed
    # that happened to hit none of this run's legs is tried again with another seed.
    for attempt in range(4):
        name = f"rough{attempt}"
        rough = check_rough_run(tmp_path, target, hot, cold, name, seed + 100 * attempt, calm)
        if deaths(rough) >= 1 or shape.endswith("parent"):
            break
    assert deaths(rough) >= 1 or shape.endswith("parent"), rough


def check_rough_run(
    tmp_path: Path, target: str, hot: str, cold: str, name: str, seed: int, calm: dict[str, Any]
) -> dict[str, Any]:
    """Run ``target`` with kills and evictions as ``name``; check it against the calm run."""
    shape = target.rpartition(":")[2]
    steps, in_flight = SHAPE_STEPS[shape]
    rc, rough, err = cli(
        tmp_path,
        "run",
        target,
        "--input",
        f'"{name}"',
        "--run-id",
        f"{name}-{shape}",
        *faults(seed),
        hot=hot,
        cold=cold,
    )
    assert rc == 0, err[-3000:]
    assert rough["status"] == "succeeded"
    assert rough["result"] == calm["result"]
    done = effects(tmp_path, name)
    assert set(done) == {tag.replace("calm:", f"{name}:") for tag in effects(tmp_path, "calm")}
    app = App("look", hot_url=hot, cold_url=cold)
    try:
        runs = [app.store.hot.get_run(f"{name}-{shape}")]
        if shape.endswith("parent"):
            # Both children ran in legs of their own, on this store, and ended.
            kids = [
                r
                for r in app.store.hot.list_runs(limit=50)
                if r.tags.get("parent") == f"{name}-{shape}"
            ]
            assert len(kids) == 2 and all(k.status.value == "succeeded" for k in kids)
            runs += kids
    finally:
        app.close()
    # A step runs again only if the leg that took the run and started it died; each such death
    # costs a later leg (legs killed before they took the run count in the report, not here).
    later_legs = sum(r.counters.legs - 1 for r in runs)
    extra = sum(done.values()) - steps
    assert 0 <= extra <= later_legs * in_flight, (rough, done)
    return rough


PATCH_V1 = textwrap.dedent(
    """
    import os
    import time

    from outlast import App, Context

    app = App("patching")


    def work(tag: str) -> str:
        fd = os.open("effects.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{tag}\\n".encode())
        finally:
            os.close(fd)
        time.sleep(0.05)
        return tag.split(":", 1)[1]


    @app.durable()
    def flow(ctx: Context, n: int) -> list[str]:
        rid = ctx.run_id
        out = [str(ctx.step(work, f"{rid}:pre{i}", name=f"pre{i}")) for i in range(n)]
        ctx.wait_for_signal("go")
        out += [str(ctx.step(work, f"{rid}:old{i}", name=f"old{i}")) for i in range(n)]
        ctx.wait_for_signal("done")
        return out
    """
)

PATCH_V2 = PATCH_V1.replace(
    """    rid = ctx.run_id
    out = [str(ctx.step(work, f"{rid}:pre{i}", name=f"pre{i}")) for i in range(n)]
    ctx.wait_for_signal("go")
    out += [str(ctx.step(work, f"{rid}:old{i}", name=f"old{i}")) for i in range(n)]
""",
    """    rid = ctx.run_id
    out = []
    if ctx.patched("audit-head"):
        out.append(str(ctx.step(work, f"{rid}:audit", name="audit")))
    out += [str(ctx.step(work, f"{rid}:pre{i}", name=f"pre{i}")) for i in range(n)]
    ctx.wait_for_signal("go")
    if ctx.patched("new-tail"):
        out += [str(ctx.step(work, f"{rid}:new{i}", name=f"new{i}")) for i in range(n)]
    else:
        out += [str(ctx.step(work, f"{rid}:old{i}", name=f"old{i}")) for i in range(n)]
""",
)


@pytest.mark.parametrize("tier", ["sqlite", "redis"])
def test_patched_code_finishes_old_and_new_runs_under_kills(
    tmp_path: Path, redis_server: RedisServer, tier: str
) -> None:
    assert PATCH_V2 != PATCH_V1
    hot = (
        f"sqlite:///{tmp_path}/hot.db"
        if tier == "sqlite"
        else f"{redis_server.url}?prefix={unique('patch')}"
    )
    cold = f"file://{tmp_path}/cold"
    module = tmp_path / "flow.py"
    target = f"{module}:flow"
    n = 4
    died = 0
    app = App("steer", hot_url=hot, cold_url=cold)
    try:
        module.write_text(PATCH_V1)
        # old-a: v1 stops at "go", before either change. old-b: v1 got past the tail's change.
        rc, report, err = cli(
            tmp_path,
            "run",
            target,
            "--input",
            str(n),
            "--run-id",
            "old-a",
            *faults(3),
            hot=hot,
            cold=cold,
        )
        assert rc == 3 and report["waiting_for"] == "go", err[-3000:]
        died += deaths(report)
        rc, report, err = cli(
            tmp_path,
            "run",
            target,
            "--input",
            str(n),
            "--run-id",
            "old-b",
            *faults(4),
            hot=hot,
            cold=cold,
        )
        assert rc == 3, err[-3000:]
        died += deaths(report)
        app.signal("old-b", "go")
        rc, report, err = cli(
            tmp_path,
            "run",
            target,
            "--input",
            str(n),
            "--run-id",
            "old-b",
            *faults(5),
            hot=hot,
            cold=cold,
        )
        assert rc == 3 and report["waiting_for"] == "done", err[-3000:]
        died += deaths(report)

        module.write_text(PATCH_V2)  # the deploy: same target, new code
        rc, report, err = cli(
            tmp_path,
            "run",
            target,
            "--input",
            str(n),
            "--run-id",
            "new-c",
            *faults(6),
            hot=hot,
            cold=cold,
        )
        assert rc == 3 and report["waiting_for"] == "go", err[-3000:]
        died += deaths(report)
        for run_id, names in (("old-a", ("go", "done")), ("old-b", ("done",))):
            for name in names:
                app.signal(run_id, name)
        app.signal("new-c", "go")
        app.signal("new-c", "done")

        rc, a, err = cli(
            tmp_path,
            "runs",
            "resume",
            "old-a",
            "--target",
            target,
            "--leg-timeout",
            "2",
            hot=hot,
            cold=cold,
        )
        assert rc == 0, err[-3000:]
        rc, b, err = cli(
            tmp_path,
            "run",
            target,
            "--input",
            str(n),
            "--run-id",
            "old-b",
            *faults(7),
            hot=hot,
            cold=cold,
        )
        assert rc == 0, err[-3000:]
        died += deaths(b)
        rc, c, err = cli(
            tmp_path,
            "run",
            target,
            "--input",
            str(n),
            "--run-id",
            "new-c",
            *faults(8),
            hot=hot,
            cold=cold,
        )
        assert rc == 0, err[-3000:]
        died += deaths(c)

        pre = [f"pre{i}" for i in range(n)]
        # old-a had passed the head's change (its journal held pre0 there) but not the tail's.
        assert a["result"] == [*pre, *(f"new{i}" for i in range(n))]
        # old-b had passed both: it finishes on the old path, as v1 would have.
        assert b["result"] == [*pre, *(f"old{i}" for i in range(n))]
        # new-c reached both changes with v2.
        assert c["result"] == ["audit", *pre, *(f"new{i}" for i in range(n))]
        for run_id, view in (("old-a", a), ("old-b", b), ("new-c", c)):
            assert view["status"] == "succeeded"
            assert app.status(run_id).status.value == "succeeded"
            ran = effects(tmp_path, run_id)
            assert set(ran) == {f"{run_id}:{step}" for step in view["result"]}
            # A kill or an eviction costs at most the one step in flight.
            assert all(count >= 1 for count in ran.values())
        total_extra = sum(
            sum(effects(tmp_path, r).values()) - len(v["result"])
            for r, v in (("old-a", a), ("old-b", b), ("new-c", c))
        )
        assert died >= 1  # faults were injected into the legs
        assert 0 <= total_extra <= died
        patches = {
            run_id: [e.name for e in app.journal(run_id) if e.kind.value == "patch"]
            for run_id in ("old-a", "old-b", "new-c")
        }
        assert patches["old-b"] == []
        assert patches["new-c"][:1] == ["audit-head"] and "new-tail" in patches["new-c"]
    finally:
        app.close()


def _memory_app() -> App:
    from statestore import StateStore
    from statestore.backends.memory import MemoryColdTier, MemoryHotTier

    return App("deaths", store=StateStore(MemoryHotTier(), MemoryColdTier()), inline_wait=0.05)


@pytest.mark.parametrize("shape", ["sync-parallel", "async-parallel", "async-gather"])
def test_a_death_under_a_step_is_not_swallowed_by_a_sibling_that_suspends(shape: str) -> None:
    """A ``BaseException`` that is not the runtime's control flow (the in-process stand-in for
    ``kill -9`` that the chaos suite and the Lambda harness raise, or ``KeyboardInterrupt``)
    must end the leg, as it does in a sync ``parallel``; the leg must not go on to commit a
    sibling branch's suspend as if the step had never run."""
    import asyncio
    import time

    from outlast import AsyncContext, Context
    from outlast.journal_cache import JournalCache
    from outlast.testing.store_faults import SimulatedKill

    app = _memory_app()

    async def dies() -> int:
        await asyncio.sleep(0.1)
        raise SimulatedKill("the process died under this step")

    def dies_sync() -> int:
        time.sleep(0.1)
        raise SimulatedKill("the process died under this step")

    async def a(ctx: AsyncContext) -> int:
        return int(await ctx.step(dies, name="dies"))

    async def b(ctx: AsyncContext) -> int:
        await ctx.sleep(5)
        return 2

    def sa(ctx: Context) -> int:
        return int(ctx.step(dies_sync, name="dies"))

    def sb(ctx: Context) -> int:
        ctx.sleep(5)
        return 2

    if shape == "sync-parallel":

        @app.durable("flow")
        def flow(ctx: Context) -> list[int]:
            return ctx.parallel(sa, sb)

    elif shape == "async-parallel":

        @app.durable("flow")
        async def aflow(ctx: AsyncContext) -> list[int]:
            return list(await ctx.parallel(a, b))

    else:

        @app.durable("flow")
        async def gflow(ctx: AsyncContext) -> list[int]:
            got, _ = await asyncio.gather(ctx.step(dies, name="dies"), ctx.sleep(5))
            return [int(got)]

    run_id = app.start("flow")
    try:
        outcome = app.run_leg(run_id, cache=JournalCache())
    except SimulatedKill:
        return
    pytest.fail(f"the leg ended {outcome.status} ({outcome.detail}): the death was swallowed")
