"""The issue's four shapes on the Lambda harness: many short invocations, lost and duplicated
hand-offs, legs killed at their deadline, the sweeper re-driving what was lost.

- an async durable function with ``asyncio.gather`` over steps;
- ``parallel`` (sync and async) whose branches sleep (timers the sweeper wakes) and step;
- a parent with two child runs, whose first legs go out through the ``LambdaDispatcher`` as
  continuation events and run as invocations of their own;
- a patched function: runs started on v1 code finish on v2, old ones on the old path.

Store: DynamoDB and S3 on moto_server (the ``tiers`` fixture). Each step execution is counted;
only a step whose invocation was killed under it runs twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import pytest

from outlast import App, AsyncContext, Context
from outlast.children import children_of
from outlast.platforms.aws_lambda import LambdaHandler
from statestore import EntryKind, RunStatus
from tests.lambda_platform.conftest import Tiers
from tests.lambda_platform.support import (
    AGENT_ARN,
    CapturingLambda,
    Harness,
    die_at_deadline,
)

# Executions of each step, by tag; tags in KILL die at the invocation's deadline the first time.
executions: Counter[str] = Counter()
KILL: set[str] = set()


def work(tag: str, n: int) -> int:
    executions[tag] += 1
    if tag in KILL and executions[tag] == 1:
        die_at_deadline()
    time.sleep(0.02)
    return n * n


async def awork(tag: str, n: int) -> int:
    executions[tag] += 1
    if tag in KILL and executions[tag] == 1:
        die_at_deadline()  # blocks the loop, as a process that hangs would, then dies
    await asyncio.sleep(0.02)
    return n * n + 1


class RecordingLambda(CapturingLambda):
    """Also keeps every invoke it was ever sent (the harness takes them off ``invokes``)."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[dict[str, Any]] = []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        answer = super().invoke(**kwargs)
        with self._lock:
            self.history.append(
                {"function": kwargs["FunctionName"], **self.invokes[-1].event["outlast"]}
            )
        return answer


class TracingHarness(Harness):
    """Also keeps each delivered event next to its outcome (None: the invocation was killed)."""

    delivered: list[tuple[dict[str, Any], dict[str, Any] | None]]

    def deliver(self, event: dict[str, Any]) -> dict[str, Any] | None:
        outcome = super().deliver(event)
        if not hasattr(self, "delivered"):
            self.delivered = []
        self.delivered.append((event, outcome))
        return outcome


def new_app(tiers: Tiers) -> App:
    return App(
        "lambda-shapes",
        hot_url=tiers.hot_url,
        cold_url=tiers.cold_url,
        lease_margin=0.3,
        handoff_margin=0.1,
        inline_wait=0.05,
    )


def register_shapes(app: App) -> None:
    @app.durable()
    async def gathered(ctx: AsyncContext, tag: str) -> list[int]:
        out = []
        for batch in range(8):
            got = await asyncio.gather(
                *(
                    ctx.step(awork if i % 2 else work, f"{tag}:g{batch}.{i}", batch * 4 + i)
                    for i in range(4)
                )
            )
            out.append(sum(cast(list[int], got)))
        return out

    def branch(ctx: Context, tag: str, base: int) -> int:
        total = 0
        for i in range(3):
            total += int(ctx.step(work, f"{tag}{i}", base + i, name="w"))
            ctx.sleep(0.1)  # longer than inline_wait: the run suspends on a timer
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
            await ctx.sleep(0.1)
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
    def child(ctx: Context, spec: list[Any]) -> int:
        tag, base = str(spec[0]), int(spec[1])
        return sum(int(ctx.step(work, f"{tag}{i}", base + i, name=f"s{i}")) for i in range(6))

    @app.durable()
    async def achild(ctx: AsyncContext, spec: list[Any]) -> int:
        tag, base = str(spec[0]), int(spec[1])
        got = await asyncio.gather(
            *(ctx.step(awork, f"{tag}{i}", base + i, name=f"s{i}") for i in range(6))
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


def expected(shape: str) -> list[int]:
    def sq(n: int) -> int:
        return n * n

    def asq(n: int) -> int:
        return n * n + 1

    if shape == "gathered":
        return [sum((asq if i % 2 else sq)(b * 4 + i) for i in range(4)) for b in range(8)]
    if shape == "fanned":
        return [sum(sq(base + i) for i in range(3)) for base in (10, 20, 30)] + [1]
    if shape == "afanned":
        return [sum(asq(base + i) for i in range(3)) for base in (10, 20, 30)] + [2]
    return [sum(sq(i) for i in range(6)), sum(asq(100 + i) for i in range(6))]


def tags_of(shape: str, tag: str) -> set[str]:
    if shape == "gathered":
        return {f"{tag}:g{b}.{i}" for b in range(8) for i in range(4)}
    if shape.endswith("fanned"):
        return {f"{tag}:{x}{i}" for x in "abc" for i in range(3)} | {f"{tag}:end"}
    return {f"{tag}:{x}{i}" for x in "xy" for i in range(6)}


@pytest.fixture
def shapes_app(tiers: Tiers) -> Iterator[App]:
    app = new_app(tiers)
    register_shapes(app)
    executions.clear()
    KILL.clear()
    yield app
    app.close()


def start_event(function: str, run_id: str, input: object) -> dict[str, object]:
    return {"outlast": {"action": "start", "function": function, "run_id": run_id, "input": input}}


# (shape, the step whose first execution is killed at the deadline, harness seed)
CASES = [
    ("gathered", "g3.1", 3),  # an async step, mid-gather
    ("fanned", "b1", 5),
    ("afanned", "a2", 7),
    ("parent", "y2", 11),  # inside the async child
    ("aparent", "x3", 13),  # inside the sync child
]


@pytest.mark.parametrize(("shape", "killed", "seed"), CASES)
def test_shapes_cross_many_legs_despite_kills_drops_and_duplicates(
    shapes_app: App, shape: str, killed: str, seed: int
) -> None:
    app = shapes_app
    lam = RecordingLambda()
    harness = TracingHarness(
        LambdaHandler(app, lambda_client=lam),
        lam,
        app.store.hot,
        timeout_s=0.4,
        seed=seed,
        drop_rate=0.1,
        duplicate_rate=0.2,
    )
    run_id = f"{shape}-1"
    tag = shape
    KILL.add(f"{tag}:{killed}")
    harness.deliver(start_event(shape, run_id, tag))
    assert harness.run(run_id, deadline_s=60) is RunStatus.SUCCEEDED
    assert app.result(run_id) == expected(shape)

    # The step in KILL died with its invocation (see the report: in async code a sibling's
    # suspend used to swallow the death, and the leg went on to write).
    assert harness.kills >= 1, [
        (o["status"], o.get("leg"), o.get("detail")) for o in harness.outcomes
    ]
    assert set(executions) == tags_of(shape, tag)
    # The killed step ran again; steps in flight beside it (gather) may too; the rest ran once.
    assert executions[f"{tag}:{killed}"] == 2
    in_flight = {"gathered": 4, "fanned": 2, "afanned": 3}.get(shape, 6)
    again = sum(n - 1 for n in executions.values())
    assert 1 <= again <= harness.kills * in_flight, executions
    runs = [app.store.hot.get_run(run_id)]

    if shape.endswith("parent"):
        kids = children_of(app, run_id)
        assert len(kids) == 2
        for kid in kids:
            record = app.store.hot.get_run(kid)
            assert record.status is RunStatus.SUCCEEDED and record.tags["parent"] == run_id
            runs.append(record)
            # Its first leg went out through the LambdaDispatcher, to this function version...
            firsts = [i for i in lam.history if i.get("run_id") == kid and i.get("leg") == 1]
            assert firsts and all(i["function"] == f"{AGENT_ARN}:$LATEST" for i in firsts)
            # ... and ran as an invocation of its own (or, if that event was lost, the sweeper's).
            ran = [
                out
                for ev, out in harness.delivered
                if ev["outlast"].get("run_id") == kid and out is not None
            ]
            assert any(o["status"] != "skipped" for o in ran), ran
            assert record.counters.legs >= 1
    else:
        # More than one leg: the kill cost one (hand-offs and timers add more when timing
        # allows, which depends on the machine's load, so only the kill is counted on).
        assert runs[0].counters.legs >= 2
    journal_names = [(e.seq, e.name) for e in app.journal(run_id)]
    assert len({seq for seq, _ in journal_names}) == len(journal_names)  # no seq twice


def test_first_legs_of_children_run_from_their_dispatched_events(shapes_app: App) -> None:
    """No drops: the parent's dispatcher sends each child's first leg, and that event runs it."""
    app = shapes_app
    lam = RecordingLambda()
    harness = TracingHarness(
        LambdaHandler(app, lambda_client=lam), lam, app.store.hot, timeout_s=1.0, seed=1
    )
    harness.deliver(start_event("parent", "p-1", "p"))
    assert harness.run("p-1", deadline_s=60) is RunStatus.SUCCEEDED
    kids = children_of(app, "p-1")
    first_events = [i for i in lam.history if i.get("leg") == 1 and i["run_id"] != "p-1"]
    assert sorted(i["run_id"] for i in first_events) == sorted(kids) and len(kids) == 2
    for kid in kids:
        outcomes = [
            o
            for ev, o in harness.delivered
            if ev["outlast"] == {"action": "continue", "run_id": kid, "leg": 1}
        ]
        assert outcomes and outcomes[0] is not None
        assert outcomes[0]["status"] == "completed" and outcomes[0]["leg"] == 1
    assert app.result("p-1") == expected("parent")
    assert all(n == 1 for n in executions.values()) and len(executions) == 12


PATCH_N = 3


def flow_v1(ctx: Context, n: int) -> list[str]:
    rid = ctx.run_id
    out = [str(ctx.step(patch_work, f"{rid}:pre{i}", name=f"pre{i}")) for i in range(n)]
    ctx.wait_for_signal("go")
    out += [str(ctx.step(patch_work, f"{rid}:old{i}", name=f"old{i}")) for i in range(n)]
    ctx.wait_for_signal("done")
    return out


def flow_v2(ctx: Context, n: int) -> list[str]:
    rid = ctx.run_id
    out: list[str] = []
    if ctx.patched("audit-head"):
        out.append(str(ctx.step(patch_work, f"{rid}:audit", name="audit")))
    out += [str(ctx.step(patch_work, f"{rid}:pre{i}", name=f"pre{i}")) for i in range(n)]
    ctx.wait_for_signal("go")
    if ctx.patched("new-tail"):
        out += [str(ctx.step(patch_work, f"{rid}:new{i}", name=f"new{i}")) for i in range(n)]
    else:
        out += [str(ctx.step(patch_work, f"{rid}:old{i}", name=f"old{i}")) for i in range(n)]
    ctx.wait_for_signal("done")
    return out


async def aflow_v1(ctx: AsyncContext, n: int) -> list[str]:
    rid = ctx.run_id
    out = [str(await ctx.step(patch_work, f"{rid}:pre{i}", name=f"pre{i}")) for i in range(n)]
    await ctx.wait_for_signal("go")
    out += [str(await ctx.step(patch_work, f"{rid}:old{i}", name=f"old{i}")) for i in range(n)]
    await ctx.wait_for_signal("done")
    return out


async def aflow_v2(ctx: AsyncContext, n: int) -> list[str]:
    rid = ctx.run_id
    out: list[str] = []
    if await ctx.patched("audit-head"):
        out.append(str(await ctx.step(patch_work, f"{rid}:audit", name="audit")))
    out += [str(await ctx.step(patch_work, f"{rid}:pre{i}", name=f"pre{i}")) for i in range(n)]
    await ctx.wait_for_signal("go")
    if await ctx.patched("new-tail"):
        got = await asyncio.gather(
            *(ctx.step(patch_work, f"{rid}:new{i}", name=f"new{i}") for i in range(n))
        )
        out += [str(g) for g in got]
    else:
        out += [str(await ctx.step(patch_work, f"{rid}:old{i}", name=f"old{i}")) for i in range(n)]
    await ctx.wait_for_signal("done")
    return out


VERSIONS: dict[str, tuple[Any, Any]] = {"sync": (flow_v1, flow_v2), "async": (aflow_v1, aflow_v2)}


def patch_work(tag: str) -> str:
    executions[tag] += 1
    if tag in KILL and executions[tag] == 1:
        die_at_deadline()
    time.sleep(0.02)
    return tag.split(":", 1)[1]


@pytest.mark.parametrize("style", ["sync", "async"])
def test_patched_code_finishes_old_and_new_runs(tiers: Tiers, style: str) -> None:
    """Runs keep the kind of function they started as: v1 and v2 are both sync, or both async."""
    first, second = VERSIONS[style]
    executions.clear()
    KILL.clear()
    KILL.update({"old-a:pre1", "old-b:old1", "old-a:new2", "new-c:audit", "old-b:pre2"})
    v1 = new_app(tiers)
    v1.durable("flow")(first)
    lam = RecordingLambda()

    def harness_for(app: App, seed: int) -> TracingHarness:
        return TracingHarness(
            LambdaHandler(app, lambda_client=lam),
            lam,
            app.store.hot,
            timeout_s=0.4,
            seed=seed,
            drop_rate=0.1,
            duplicate_rate=0.2,
        )

    def until_waiting(h: TracingHarness, run_id: str, name: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            record = h.hot.get_run(run_id)
            if record.status is RunStatus.SUSPENDED and record.waiting_for == name:
                return
            h.collect()
            if h.queue:
                h.deliver(h.queue.pop(0))
            else:
                h.sweep()
                time.sleep(0.05)
        raise AssertionError(f"{run_id} never waited for {name}: {h.hot.get_run(run_id)}")

    old = harness_for(v1, 3)
    for run_id in ("old-a", "old-b"):
        old.deliver(start_event("flow", run_id, PATCH_N))
        until_waiting(old, run_id, "go")
    v1.signal("old-b", "go")
    until_waiting(old, "old-b", "done")  # old-b got past the tail's change on v1
    v1.close()

    v2 = new_app(tiers)
    v2.durable("flow")(second)
    try:
        new = harness_for(v2, 5)
        new.deliver(start_event("flow", "new-c", PATCH_N))
        until_waiting(new, "new-c", "go")
        for run_id, names in (("old-a", ["go", "done"]), ("old-b", ["done"])):
            for name in names:
                v2.signal(run_id, name)
        v2.signal("new-c", "go")
        until_waiting(new, "new-c", "done")
        v2.signal("new-c", "done")
        for run_id in ("old-a", "old-b", "new-c"):
            assert new.run(run_id, deadline_s=30) is RunStatus.SUCCEEDED

        pre = [f"pre{i}" for i in range(PATCH_N)]
        new_tail = [f"new{i}" for i in range(PATCH_N)]
        assert v2.result("old-a") == [*pre, *new_tail]
        assert v2.result("old-b") == [*pre, *(f"old{i}" for i in range(PATCH_N))]
        assert v2.result("new-c") == ["audit", *pre, *new_tail]
        assert old.kills + new.kills == len(KILL)
        for run_id in ("old-a", "old-b", "new-c"):
            ran = {t: n for t, n in executions.items() if t.startswith(f"{run_id}:")}
            assert set(ran) == {f"{run_id}:{s}" for s in v2.result(run_id)}
            for tag, count in ran.items():
                # An async new tail is a gather: a kill under one of its steps may redo the others.
                gathered = style == "async" and run_id == "old-a" and "new" in tag
                bound = 2 if tag in KILL or gathered else 1
                assert 1 <= count <= bound, (tag, count)
        patches = {
            r: [e.name for e in v2.journal(r) if e.kind is EntryKind.PATCH]
            for r in ("old-a", "old-b", "new-c")
        }
        assert patches == {
            "old-a": ["new-tail"],
            "old-b": [],
            "new-c": ["audit-head", "new-tail"],
        }
    finally:
        v2.close()
