"""``durable_graph``: a LangGraph graph run across legs, killed, evicted and interrupted.

The workload below is also the target of ``outlast run`` (this file is importable on its own):
a loop of supersteps that each append a line to a side-effect file, with an ``interrupt()``
halfway that the test answers with ``outlast runs signal RUN resume``.
"""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph")

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from outlast import App, RunStatus
from outlast.integrations.langgraph import OutlastSaver, durable_graph
from statestore import open_store

STEPS = int(os.environ.get("LG_STEPS", "12"))
WORK_S = float(os.environ.get("LG_WORK_S", "0.01"))


class State(TypedDict, total=False):
    count: int
    log: Annotated[list[str], operator.add]
    answer: str


def work(state: State) -> State:
    count = state.get("count", 0)
    time.sleep(WORK_S)
    effects = os.environ.get("LG_EFFECTS")
    if effects:
        with open(effects, "a") as f:
            f.write(f"{count}\n")
    return {"count": count + 1, "log": [f"step {count}"]}


def ask(state: State) -> State:
    answer = interrupt({"question": f"continue after {state['count']} steps?"})
    return {"answer": str(answer), "log": [f"answer {answer}"]}


def route(state: State) -> str:
    if state["count"] >= STEPS:
        return END
    if state["count"] == STEPS // 2 and "answer" not in state:
        return "ask"
    return "work"


builder = StateGraph(State)
builder.add_node("work", work)
builder.add_node("ask", ask)
builder.add_edge(START, "work")
builder.add_conditional_edges("work", route)
builder.add_edge("ask", "work")
graph = builder.compile()

app = App("lg-durable")
agent = durable_graph(app, graph, name="agent")


def expected(steps: int, answer: str) -> dict[str, Any]:
    log = [f"step {i}" for i in range(steps // 2)] + [f"answer {answer}"]
    log += [f"step {i}" for i in range(steps // 2, steps)]
    return {"count": steps, "log": log, "answer": answer}


def test_drive_in_process_with_interrupt(tmp_path: Path) -> None:
    local = App("lg-local", hot_url=f"sqlite:///{tmp_path}/hot.db", cold_url=f"file://{tmp_path}/c")
    fn = durable_graph(local, graph, name="agent")
    run_id = local.start(fn, {"count": 0}, run_id="lg-1")
    # A short max_wait: the run waits for a signal only this test sends (drive's default, 60 s,
    # would idle here for a minute).
    view = local.drive(run_id, max_wait=0.5)
    assert view.status is RunStatus.SUSPENDED and view.waiting_for == "resume"
    local.signal(run_id, "resume", "yes")
    view = local.drive(run_id)
    assert view.status is RunStatus.SUCCEEDED, view
    assert local.result(run_id) == expected(STEPS, "yes")
    # The thread id is the run id: the checkpoints are readable with the plain saver.
    saver = OutlastSaver(local.store)
    latest = saver.get_tuple({"configurable": {"thread_id": run_id}})
    assert latest is not None and latest.checkpoint["channel_values"]["count"] == STEPS
    local.close()


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outlast.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **env},
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_outlast_run_with_kills_evictions_and_resume(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from tests.conftest import unique
    from tests.support.servers import RedisServer

    if kind == "sqlite":
        hot = f"sqlite:///{tmp_path}/hot.db"
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        hot = f"{server.url}?prefix={unique('lgrun')}"
    cold = f"file://{tmp_path}/cold"
    effects = tmp_path / "effects.log"
    env = {"LG_EFFECTS": str(effects), "LG_STEPS": "16", "LG_WORK_S": "0.3"}
    target = f"{Path(__file__)}:agent"
    faults = ["--evict-rate", "0.3", "--kill-rate", "0.2", "--leg-timeout", "4", "--seed", "7"]
    stores = ["--hot", hot, "--cold", cold]
    args = ["run", target, "--run-id", "lg-run", "--input", '{"count": 0}', *faults, *stores]
    first = _cli([*args, "--json"], tmp_path, env)
    assert first.returncode == 3, first.stdout + first.stderr  # suspended on the interrupt
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert report["waiting_for"] == "resume"
    sent = _cli(
        ["runs", "signal", "lg-run", "resume", "--payload", '"yes"', *stores], tmp_path, env
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    second = _cli([*args, "--seed", "8", "--json"], tmp_path, env)
    assert second.returncode == 0, second.stdout + second.stderr
    final = json.loads(second.stdout.strip().splitlines()[-1])
    assert final["result"] == expected(16, "yes")
    legs = report["legs"] + final["legs"]
    assert legs > 2  # hand-offs, evictions or kills split the run
    # Every superstep ran at least once; more than once only when its leg died under it.
    done = [int(line) for line in effects.read_text().split()]
    assert sorted(set(done)) == list(range(16))
    faults_seen = sum(r.get("kills", 0) + r.get("evictions", 0) for r in (report, final))
    assert len(done) - 16 <= faults_seen
    store = open_store(hot, cold)
    try:
        tup = OutlastSaver(store).get_tuple({"configurable": {"thread_id": "lg-run"}})
        assert tup is not None and tup.checkpoint["channel_values"]["count"] == 16
    finally:
        store.close()


def test_example_runs_through_outlast_run(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "examples" / "langgraph_agent.py"
    proc = _cli(
        [
            "run",
            f"{example}:agent",
            "--input",
            '{"messages": [{"role": "user", "content": "hi!"}]}',
            "--evict-rate",
            "0.2",
            "--json",
        ],
        tmp_path,
        {},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])["result"]
    assert result[0] == {"role": "human", "content": "hi!"}
    assert [m["content"] for m in result[1:]] == [f"hello world ({i})" for i in range(1, 6)]
