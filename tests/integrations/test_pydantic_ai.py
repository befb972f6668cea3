"""Pydantic AI agents made durable by ``OutlastAgent``: real pydantic_ai code, offline models.

The workload (``pydantic_ai_workload.py``) is a multi-turn agent whose ``FunctionModel`` asks for
parallel tool calls each turn. It runs in-process (``app.drive``) for the API's shapes, and through
``outlast run`` with evictions, kills and duplicate deliveries for the guarantees: the same output
and token usage as an uninterrupted run, and the model called at most once per turn plus once per
interruption.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from pydantic_ai.exceptions import UserError

from outlast import App, RunStatus
from statestore import JournalEntry
from tests.conftest import unique
from tests.integrations import pydantic_ai_workload as workload
from tests.support.servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]
WORKLOAD = Path(workload.__file__).resolve()
TURNS = workload.TURNS + 1  # the tool-calling turns and the answering one
TOOL_CALLS = workload.TURNS * workload.WIDTH


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calls.txt"
    monkeypatch.setenv("PAI_CALLS", str(path))
    return path


def counted(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(line.strip() for line in path.read_text().splitlines() if line.strip())


def kinds(counts: Counter[str], prefix: str) -> int:
    return sum(n for line, n in counts.items() if line.startswith(prefix))


def tokens(entries: list[JournalEntry], kind: str) -> int:
    """The tokens the entries' annotations count (``ctx.annotate(input_tokens=...)``)."""
    total = 0
    for entry in entries:
        value = entry.meta.get(f"{kind}_tokens", 0)
        assert isinstance(value, int)
        total += value
    return total


@pytest.fixture
def app(tmp_path: Path) -> App:
    """A fresh app on SQLite with the workload's functions registered under their names."""
    fresh = App("pai-test", hot_url=f"sqlite:///{tmp_path}/hot.db", cold_url=f"file://{tmp_path}/c")
    for name, fn in workload.app.functions.items():
        fresh.durable(name=name)(fn.fn)
    return fresh


@pytest.fixture(scope="module")
def uninterrupted() -> dict[str, Any]:
    os.environ.pop("PAI_CALLS", None)
    return workload.plain()


# ---------------------------------------------------------------------------------- in-process


def test_run_journals_each_model_response_and_tool_result(
    app: App, calls: Path, uninterrupted: dict[str, Any]
) -> None:
    run_id = app.start("ask", "sum them")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == uninterrupted
    assert uninterrupted["output"] == "total=132 from 12 lookups"

    entries = app.journal(run_id)
    models = [e for e in entries if e.name == "lookup_agent__model.request"]
    tools = [e for e in entries if e.name.endswith(".call_tool:lookup")]
    assert len(models) == TURNS and len(tools) == TOOL_CALLS
    assert len(entries) == TURNS + TOOL_CALLS  # nothing else: no history, no discovery
    # Each model step is annotated with its tokens, which add up to the run's usage.
    assert tokens(models, "input") == uninterrupted["input_tokens"]
    assert tokens(models, "output") == uninterrupted["output_tokens"]
    # Only what each step added is stored: the last model step is no bigger than the first.
    sizes = [len(e.value) if isinstance(e.value, bytes) else 0 for e in models]
    assert max(sizes) < 2 * min(sizes) + 200
    assert counted(calls) == Counter(
        [f"model {t}" for t in range(TURNS)]
        + [f"tool t{t}-{i}" for t in range(workload.TURNS) for i in range(workload.WIDTH)]
    )

    # Replaying the finished run's journal calls nothing: the history is rebuilt from it.
    calls.unlink()
    retried = app.retry(run_id, as_id=f"{run_id}-fork", from_seq=len(entries))
    assert app.drive(retried).status is RunStatus.SUCCEEDED
    assert app.result(retried) == uninterrupted
    assert counted(calls) == Counter()


def test_a_replay_after_a_lost_leg_does_not_call_the_model_again(
    app: App, calls: Path, uninterrupted: dict[str, Any]
) -> None:
    run_id = app.start("ask", "sum them")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    # Fork keeping turns 0-1 and turn 2's model response: only the rest runs again.
    cut = 3 + 2 * workload.WIDTH
    calls.unlink()
    fork = app.retry(run_id, as_id=f"{run_id}-mid", from_seq=cut)
    assert app.drive(fork).status is RunStatus.SUCCEEDED
    assert app.result(fork) == uninterrupted
    again = counted(calls)
    assert kinds(again, "model") == TURNS - 3
    assert kinds(again, "tool") == TOOL_CALLS - 2 * workload.WIDTH


def test_iter_steps_through_the_nodes_durably(
    app: App, calls: Path, uninterrupted: dict[str, Any]
) -> None:
    run_id = app.start("ask_iter", "sum them")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    result = app.result(run_id)
    nodes = result.pop("nodes")
    assert result == uninterrupted
    assert nodes.count("ModelRequestNode") == TURNS
    assert nodes[-1] == "End"
    assert kinds(counted(calls), "model") == TURNS


def test_run_sync_inside_a_sync_durable_function(
    app: App, calls: Path, uninterrupted: dict[str, Any]
) -> None:
    run_id = app.start("ask_sync", "sum them")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == uninterrupted
    entries = app.journal(run_id)
    assert len(entries) == TURNS + TOOL_CALLS
    assert tokens(entries, "input") == uninterrupted["input_tokens"]


def test_event_stream_handler_sees_tool_events(
    app: App, calls: Path, uninterrupted: dict[str, Any]
) -> None:
    run_id = app.start("ask_streamed", "sum them")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    result = app.result(run_id)
    same = ("output", "requests", "tool_calls", "messages")
    assert {k: result[k] for k in same} == {k: uninterrupted[k] for k in same}
    # Streamed usage is FunctionModel's estimate; the model steps' annotations add up to it.
    models = [e for e in app.journal(run_id) if "model.request" in e.name]
    assert len(models) == TURNS
    assert tokens(models, "input") == result["input_tokens"]
    assert tokens(models, "output") == result["output_tokens"]
    seen = counted(calls)
    assert seen["event FunctionToolCallEvent"] == TOOL_CALLS
    assert seen["event FunctionToolResultEvent"] == TOOL_CALLS
    # Tool events are handled in steps of their own, so a replay does not handle them again.
    names = Counter(e.name for e in app.journal(run_id))
    assert names["lookup_streamed__event_stream_handler"] >= TOOL_CALLS


def test_a_runs_own_event_stream_handler_streams_durably(
    app: App, calls: Path, uninterrupted: dict[str, Any]
) -> None:
    run_id = app.start("ask_with_handler", "sum them")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    result = app.result(run_id)
    same = ("output", "requests", "tool_calls", "messages")
    assert {k: result[k] for k in same} == {k: uninterrupted[k] for k in same}
    seen = counted(calls)
    # The model's events reached the handler live, from inside each (streamed) model request.
    assert seen["event PartStartEvent"] >= TURNS
    assert seen["event FunctionToolCallEvent"] == TOOL_CALLS
    assert seen["event FunctionToolResultEvent"] == TOOL_CALLS
    entries = app.journal(run_id)
    names = Counter(e.name for e in entries)
    # The handler went to the wrapper's capability (same step names), not to the agent.
    assert names["lookup_agent__model.request_stream"] == TURNS
    assert names["lookup_agent__event_stream_handler"] == 2 * TOOL_CALLS
    # A replay of the whole journal delivers no event again, and calls nothing.
    calls.unlink()
    fork = app.retry(run_id, as_id=f"{run_id}-fork", from_seq=len(entries))
    assert app.drive(fork).status is RunStatus.SUCCEEDED
    assert app.result(fork) == result
    assert counted(calls) == Counter()


def test_run_stream_is_refused_in_a_durable_function(app: App, calls: Path) -> None:
    run_id = app.start("ask_run_stream", "sum them")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None
    assert "run_stream() cannot be used in a durable function" in view.error.message
    assert "event_stream_handler" in view.error.message  # what to use instead
    assert app.journal(run_id) == []  # refused before anything ran
    assert counted(calls) == Counter()
    with pytest.raises(UserError, match="run_stream_events"):
        workload.durable.run_stream_events("x")


def test_two_agent_runs_in_parallel_branches(
    app: App, calls: Path, uninterrupted: dict[str, Any]
) -> None:
    run_id = app.start("ask_two", "sum them")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    doubled, tripled = app.result(run_id)
    assert doubled == uninterrupted
    assert tripled == {**uninterrupted, "output": "total=198 from 12 lookups"}
    entries = app.journal(run_id)
    # Each run's `timeout=` counts from a journaled clock read; everything else is a step.
    assert len(entries) == 2 * (TURNS + TOOL_CALLS + 1)
    # A replay of the whole journal (both branches) calls nothing again.
    calls.unlink()
    fork = app.retry(run_id, as_id=f"{run_id}-fork", from_seq=len(entries))
    assert app.drive(fork).status is RunStatus.SUCCEEDED
    assert app.result(fork) == [doubled, tripled]
    assert counted(calls) == Counter()


def test_model_retry_is_journaled_and_a_failing_tool_follows_the_step_policy(
    app: App, calls: Path
) -> None:
    run_id = app.start("ask_retrying", "check")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == "checked"
    entries = app.journal(run_id)
    steps = [(e.name.rsplit(".", 1)[-1], e.status.value) for e in entries]
    assert steps == [
        ("request", "ok"),
        ("call_tool:check", "ok"),  # the ModelRetry, journaled as Pydantic AI's retry value
        ("request", "ok"),
        ("call_tool:check", "ok"),
        ("request", "ok"),
        ("call_tool:explode", "retry"),  # a plain exception: Outlast's retry policy
        ("call_tool:explode", "retry"),
        ("call_tool:explode", "ok"),
        ("request", "ok"),
    ]
    # A replay calls nothing again, the retries included.
    calls.unlink()
    fork = app.retry(run_id, as_id=f"{run_id}-fork", from_seq=len(entries))
    assert app.drive(fork).status is RunStatus.SUCCEEDED
    assert counted(calls) == Counter()


def test_deps_are_not_journaled(app: App, calls: Path, tmp_path: Path) -> None:
    run_id = app.start("ask", "sum them")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    env = {**os.environ, "OUTLAST_HOT_URL": f"sqlite:///{tmp_path}/hot.db"}
    env["OUTLAST_COLD_URL"] = f"file://{tmp_path}/c"
    shown = json.dumps(cli(tmp_path, "runs", "show", run_id, env=env))
    assert "lookup_agent__model.request" in shown
    assert "Deps" not in shown
    assert "scale" not in shown


def test_a_tool_result_that_cannot_be_stored_fails_naming_the_tool(app: App, calls: Path) -> None:
    run_id = app.start("ask_bad", "go")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None
    message = view.error.message
    assert "make_socket" in message
    assert "cannot be stored" in message
    # What was committed before is kept: the first model turn, its tool call, the second turn.
    entries = app.journal(run_id)
    assert [e.name for e in entries[:3]] == [
        "bad_agent__model.request",
        "bad_agent__function_toolset__<agent>.call_tool:lookup",
        "bad_agent__model.request",
    ]
    assert all(e.status.value == "ok" for e in entries[:3])
    assert entries[3].name.endswith("call_tool:make_socket")
    assert entries[3].status.value == "error"
    with pytest.raises(Exception, match="make_socket"):
        app.result(run_id)
    assert kinds(counted(calls), "model") == 2


def test_outside_a_durable_function_the_wrapper_says_so() -> None:
    # Without a context given first, the wrapper looks for the running durable function's.
    with pytest.raises(RuntimeError, match="not inside a durable function"):
        workload.durable.run_sync("x")


# ---------------------------------------------------------------------------------- with faults


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "outlast.cli", *args, "--json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


def faulty_run(
    tmp_path: Path,
    hot: str,
    cold: str,
    seed: int,
    leg_timeout: float,
    function: str = "ask",
    *,
    rate: float = 0.3,
) -> tuple[dict[str, Any], Counter[str], dict[str, Any]]:
    """A run under faults (evictions and kills each at ``rate`` per leg, duplicates at 0.2).
    Whether a seed's faults land depends on timing (a fast machine can finish between them), so
    a seed whose faults all missed is followed by another, up to 4."""
    for attempt in range(4):
        run, seen, shown = _faulty_run_once(
            tmp_path, hot, cold, seed + 100 * attempt, leg_timeout, function, rate
        )
        if run["kills"] + run["evictions"] + run["timeouts"] >= 1:
            break
    return run, seen, shown


def _faulty_run_once(
    tmp_path: Path, hot: str, cold: str, seed: int, leg_timeout: float, function: str, rate: float
) -> tuple[dict[str, Any], Counter[str], dict[str, Any]]:
    calls = tmp_path / f"calls-{seed}.txt"
    env = {
        **os.environ,
        "OUTLAST_HOT_URL": hot,
        "OUTLAST_COLD_URL": cold,
        "PAI_CALLS": str(calls),
        "PAI_SLOW": "0.15",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    run_id = unique(f"pai-{seed}")
    run = cli(
        tmp_path,
        "run",
        f"{WORKLOAD}:{function}",
        "--input",
        '"sum them"',
        "--run-id",
        run_id,
        "--leg-timeout",
        str(leg_timeout),
        "--evict-rate",
        str(rate),
        "--kill-rate",
        str(rate),
        "--duplicate-rate",
        "0.2",
        "--seed",
        str(seed),
        env=env,
    )
    shown = cli(tmp_path, "runs", "show", run_id, env=env)
    return run, counted(calls), shown


def check_faulty(
    run: dict[str, Any], seen: Counter[str], shown: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert run["status"] == "succeeded", run
    assert run["result"] == expected
    assert run["kills"] + run["evictions"] + run["timeouts"] >= 1, run  # the seed injects faults
    # Every leg but the last was cut short (killed, evicted, timed out or handed off), and each
    # such leg can have lost at most the one model call (and the parallel tool calls) in flight.
    interruptions = run["legs"] - 1
    assert interruptions >= 1
    # Each turn's model call runs once, plus at most once more per interrupted leg.
    for turn in range(TURNS):
        assert seen[f"model {turn}"] >= 1
    assert kinds(seen, "model") <= TURNS + interruptions, (seen, run)
    assert kinds(seen, "tool") <= TOOL_CALLS + workload.WIDTH * interruptions, (seen, run)
    # The run's report counts the tokens of committed model steps: exactly the run's usage.
    assert shown["tokens"]["total"] == expected["input_tokens"] + expected["output_tokens"]


@pytest.mark.slow
# A leg needs about 1.5 s to start (Python, Pydantic AI) before its first step, more on a busy
# machine: shorter legs than these can be cut short before any progress, again and again.
@pytest.mark.parametrize(("seed", "leg_timeout"), [(1, 2.5), (3, 3.0), (7, 2.5)])
def test_faults_on_sqlite_give_the_uninterrupted_result(
    tmp_path: Path, uninterrupted: dict[str, Any], seed: int, leg_timeout: float
) -> None:
    run, seen, shown = faulty_run(
        tmp_path, f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold", seed, leg_timeout
    )
    check_faulty(run, seen, shown, uninterrupted)


@pytest.mark.slow
def test_faults_on_redis_give_the_uninterrupted_result(
    tmp_path: Path, uninterrupted: dict[str, Any], redis_server: RedisServer
) -> None:
    run, seen, shown = faulty_run(tmp_path, redis_server.url, f"file://{tmp_path}/cold", 1, 3.0)
    check_faulty(run, seen, shown, uninterrupted)


@pytest.mark.slow
def test_event_stream_handler_survives_faults(tmp_path: Path) -> None:
    run, seen, _ = faulty_run(
        tmp_path, f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold", 6, 2.5, "ask_streamed"
    )
    assert run["status"] == "succeeded", run
    assert run["result"]["output"] == "total=132 from 12 lookups"
    assert run["kills"] + run["evictions"] + run["timeouts"] >= 1, run
    interruptions = run["legs"] - 1
    assert kinds(seen, "model") <= TURNS + interruptions
    # Tool result events are handled once each, plus at most a leg's worth again per interruption.
    assert seen["event FunctionToolResultEvent"] >= TOOL_CALLS
    assert seen["event FunctionToolResultEvent"] <= TOOL_CALLS + workload.WIDTH * interruptions


@pytest.mark.slow
def test_run_sync_survives_faults(tmp_path: Path, uninterrupted: dict[str, Any]) -> None:
    run, seen, shown = faulty_run(
        tmp_path, f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold", 3, 3.0, "ask_sync"
    )
    check_faulty(run, seen, shown, uninterrupted)
