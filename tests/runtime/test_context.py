"""Context semantics: replay, live, retries, non-determinism, values, deterministic reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel

from outlast import (
    App,
    Context,
    NonDeterminismError,
    RetryPolicy,
    RunFailedError,
    StepFailedError,
)
from outlast.errors import DurableControl, HandOff, LeaseLost, Suspend
from outlast.testing.replay import replay_context
from statestore import EntryKind, EntryStatus, RunStatus


class Plan(BaseModel):
    topic: str
    items: list[str]


def make_plan(topic: str) -> Plan:
    return Plan(topic=topic, items=[f"{topic}-{i}" for i in range(3)])


def test_step_results_replay_without_running(app: App) -> None:
    calls: list[str] = []

    def work(x: str) -> str:
        calls.append(x)
        return x.upper()

    @app.durable()
    def flow(ctx: Context, words: list[str]) -> list[str]:
        return [ctx.step(work, w) for w in words]

    run_id = app.start("flow", ["a", "b", "c"])
    view = app.drive(run_id)
    assert view.status is RunStatus.SUCCEEDED
    assert view.result == ["A", "B", "C"]
    assert calls == ["a", "b", "c"]
    # Re-running the function over the full journal replays everything and runs nothing.

    ctx = replay_context(app, run_id)
    assert flow.fn(ctx, ["a", "b", "c"]) == ["A", "B", "C"]
    assert calls == ["a", "b", "c"]
    assert ctx.stats.steps_replayed == 3 and ctx.stats.steps_executed == 0


def test_pydantic_result_comes_back_as_the_model(app: App) -> None:
    seen: list[type] = []

    @app.durable()
    def flow(ctx: Context, topic: str) -> dict[str, Any]:
        plan = ctx.step(make_plan, topic)
        seen.append(type(plan))
        ctx.sleep(0.0)
        return {"items": plan.items}

    run_id = app.start("flow", "x")
    app.drive(run_id)
    assert seen == [Plan]
    assert app.result(run_id) == {"items": ["x-0", "x-1", "x-2"]}


def test_model_is_rebuilt_on_replay_in_a_later_leg(app: App) -> None:
    seen: list[type] = []

    @app.durable()
    def flow(ctx: Context, topic: str) -> str:
        plan = ctx.step(make_plan, topic)
        seen.append(type(plan))
        ctx.wait_for_signal("go")
        return plan.topic

    run_id = app.start("flow", "t")
    assert app.drive(run_id, max_wait=0.0).status is RunStatus.SUSPENDED
    app.signal(run_id, "go")
    assert app.drive(run_id).result == "t"
    assert seen == [Plan, Plan]  # live, then replayed: the same type both times


def test_unserializable_result_is_a_clear_type_error_and_nothing_is_committed(app: App) -> None:
    @app.durable()
    def flow(ctx: Context) -> None:
        ctx.step(lambda: {"handle": object()}, name="make_set")

    run_id = app.start("flow")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None and view.error.type == "TypeError"
    assert "step 'make_set' returned a result that cannot be stored" in view.error.message
    assert "object" in view.error.message
    assert app.journal(run_id) == []


def test_retries_are_journaled_then_succeed(app: App) -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    @app.durable()
    def flow(ctx: Context) -> str:
        return ctx.step(flaky)

    run_id = app.start("flow")
    assert app.drive(run_id).result == "ok"
    journal = app.journal(run_id)
    assert [(e.status, e.attempt) for e in journal] == [
        (EntryStatus.RETRY, 1),
        (EntryStatus.RETRY, 2),
        (EntryStatus.OK, 3),
    ]
    assert journal[0].error is not None and journal[0].error.type == "ConnectionError"
    assert "try again" in journal[0].error.traceback
    assert app.status(run_id).counters.steps == 1


def test_retries_running_out_fail_the_run_with_the_error(app: App) -> None:
    def broken() -> None:
        raise RuntimeError("always")

    @app.durable()
    def flow(ctx: Context) -> None:
        ctx.step(broken, retry=RetryPolicy(max_attempts=2, initial_delay=0.0))

    run_id = app.start("flow")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None
    assert view.error.type == "RuntimeError"
    assert (
        "step 'test_retries_running_out_fail_the_run_with_the_error.<locals>.broken'"
        in view.error.message
    )
    assert "always" in view.error.traceback
    with pytest.raises(RunFailedError, match="RuntimeError"):
        app.result(run_id)
    assert [e.status for e in app.journal(run_id)] == [EntryStatus.RETRY, EntryStatus.ERROR]


def test_non_retryable_errors_fail_at_once(app: App) -> None:
    class Fatal(Exception):
        retryable = False

    count = 0

    def bad() -> None:
        nonlocal count
        count += 1
        raise Fatal("no")

    @app.durable()
    def flow(ctx: Context) -> str:
        try:
            ctx.step(bad)
        except StepFailedError as exc:
            return f"caught {exc.error.type}"
        return "unreachable"

    run_id = app.start("flow")
    assert (
        app.drive(run_id).result == "caught test_non_retryable_errors_fail_at_once.<locals>.Fatal"
    )
    assert count == 1


def test_step_failure_is_the_same_exception_on_replay(app: App) -> None:
    outcomes: list[str] = []

    def bad() -> None:
        raise ValueError("bad value")

    @app.durable()
    def flow(ctx: Context) -> str:
        try:
            ctx.step(bad, retry=RetryPolicy(max_attempts=1))
        except StepFailedError as exc:
            outcomes.append(exc.error.message)
        ctx.wait_for_signal("next")
        return "done"

    run_id = app.start("flow")
    app.drive(run_id, max_wait=0.0)
    app.signal(run_id, "next")
    assert app.drive(run_id).result == "done"
    assert outcomes == ["bad value", "bad value"]


def test_a_durable_function_that_raises_fails_the_run(app: App) -> None:
    @app.durable()
    def flow(ctx: Context) -> None:
        raise KeyError("missing thing")

    run_id = app.start("flow")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None and view.error.type == "KeyError"
    assert "missing thing" in view.error.traceback


def test_non_determinism_names_the_seq_the_journal_and_the_code(app: App) -> None:
    version = {"v": 1}

    def a() -> int:
        return 1

    def b() -> int:
        return 2

    @app.durable()
    def flow(ctx: Context) -> int:
        first = ctx.step(a) if version["v"] == 1 else ctx.step(b)
        ctx.wait_for_signal("go")
        return first

    run_id = app.start("flow")
    app.drive(run_id, max_wait=0.0)
    version["v"] = 2  # the code changed under a running run
    app.signal(run_id, "go")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None and view.error.type == "NonDeterminismError"
    message = view.error.message
    assert "seq 0" in message
    assert (
        "journal has step 'test_non_determinism_names_the_seq_the_journal_and_the_code.<locals>.a'"
        in message
    )
    assert (
        "code called step 'test_non_determinism_names_the_seq_the_journal_and_the_code.<locals>.b'"
        in message
    )


def test_control_flow_cannot_be_swallowed_by_except_exception() -> None:
    for kind in (Suspend, HandOff, LeaseLost, NonDeterminismError):
        assert issubclass(kind, DurableControl)
        assert issubclass(kind, BaseException)
        assert not issubclass(kind, Exception)


def test_user_except_exception_does_not_eat_a_suspend(app: App) -> None:
    @app.durable()
    def flow(ctx: Context) -> str:
        try:
            ctx.wait_for_signal("go")
        except Exception:  # user code being careless
            return "swallowed"
        return "waited"

    run_id = app.start("flow")
    assert app.drive(run_id, max_wait=0.0).status is RunStatus.SUSPENDED
    app.signal(run_id, "go", {"ok": 1})
    assert app.drive(run_id).result == "waited"


def test_now_random_uuid_are_journaled(app: App) -> None:
    draws: list[tuple[datetime, float, str]] = []

    @app.durable()
    def flow(ctx: Context) -> None:
        draws.append((ctx.now(), ctx.random(), ctx.uuid()))
        ctx.wait_for_signal("go")

    run_id = app.start("flow")
    app.drive(run_id, max_wait=0.0)
    app.signal(run_id, "go")
    app.drive(run_id)
    assert len(draws) == 2 and draws[0] == draws[1]
    kinds = [e.kind for e in app.journal(run_id)]
    assert kinds[:3] == [EntryKind.CLOCK, EntryKind.RANDOM, EntryKind.RANDOM]


def test_step_key_is_stable_across_attempts_and_legs(app: App) -> None:
    keys: list[str] = []

    def charge(ctx: Context) -> str:
        keys.append(ctx.step_key)
        if len(keys) == 1:
            raise ConnectionError("flaky")
        return ctx.step_key

    outside: list[str] = []

    @app.durable()
    def flow(ctx: Context) -> str:
        try:
            _ = ctx.step_key
        except RuntimeError as exc:
            outside.append(str(exc))
        ctx.step(lambda: 1, name="before")
        return ctx.step(charge, ctx)

    run_id = app.start("flow")
    result = app.drive(run_id).result
    assert keys[0] == keys[1] == result
    assert result == f"{run_id}:1:test_step_key_is_stable_across_attempts_and_legs.<locals>.charge"
    assert outside == ["ctx.step_key is only available inside a step"]


def test_map_runs_items_in_parallel_in_order_and_journals_each(app: App) -> None:
    import threading
    import time

    active = {"now": 0, "max": 0}
    lock = threading.Lock()

    def square(x: int) -> int:
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        time.sleep(0.02)
        with lock:
            active["now"] -= 1
        return x * x

    @app.durable()
    def flow(ctx: Context, n: int) -> list[int]:
        return ctx.map(square, range(n), max_concurrency=3)

    run_id = app.start("flow", 7)
    assert app.drive(run_id).result == [i * i for i in range(7)]
    assert active["max"] == 3
    names = sorted(e.name for e in app.journal(run_id))
    assert names == sorted(
        f"test_map_runs_items_in_parallel_in_order_and_journals_each.<locals>.square[{i}]"
        for i in range(7)
    )


def test_replay_is_quiet_in_the_log(app: App, caplog: pytest.LogCaptureFixture) -> None:
    @app.durable()
    def flow(ctx: Context) -> None:
        ctx.step(lambda: 1, name="one")
        ctx.log.warning("after step one")
        ctx.wait_for_signal("go")

    run_id = app.start("flow")
    with caplog.at_level("WARNING", logger="outlast.run"):
        app.drive(run_id, max_wait=0.0)
        app.signal(run_id, "go")
        app.drive(run_id)
    assert [r.getMessage() for r in caplog.records if r.name == "outlast.run"] == ["after step one"]


def test_retry_after_from_the_server_is_honoured() -> None:
    class Throttled(Exception):
        retry_after = 7.5

    policy = RetryPolicy(initial_delay=0.1, max_delay=60)
    assert policy.delay(1, exc=Throttled()) == 7.5
    assert policy.delay(1, exc=ValueError()) <= 0.1
    assert RetryPolicy(max_delay=5).delay(1, exc=Throttled()) == 5


def test_before_cold_fault_point_fires_at_the_right_commit(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = (
        "from outlast.testing.faults import FaultPlan\n"
        "plan = FaultPlan('commit:2:before-cold')\n"
        "plan.point('before-cold'); plan.point('before-hot'); plan.point('after-hot')\n"
        "print('first commit survived', flush=True)\n"
        "plan.point('before-cold'); print('not reached', flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert proc.returncode == -9
    assert proc.stdout == "first commit survived\n"


def test_step_hook_wraps_each_live_attempt(app: App) -> None:
    from collections.abc import Iterator
    from contextlib import contextmanager

    seen: list[tuple[str, int, str, str]] = []

    @contextmanager
    def hook(name: str, attempt: int, key: str) -> Iterator[None]:
        seen.append(("enter", attempt, name, key))
        try:
            yield
        finally:
            seen.append(("exit", attempt, name, key))

    calls = {"n": 0}

    def flaky() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("once")
        return 5

    @app.durable()
    def flow(ctx: Context) -> int:
        return ctx.step(flaky, name="flaky")

    run_id = app.start("flow")

    def attach(ctx: Context) -> None:
        ctx.step_hook = hook

    assert app.run_leg(run_id, on_context=attach).status == "completed"
    key = f"{run_id}:0:flaky"
    assert seen == [
        ("enter", 1, "flaky", key),
        ("exit", 1, "flaky", key),
        ("enter", 2, "flaky", key),
        ("exit", 2, "flaky", key),
    ]
