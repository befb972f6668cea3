"""The LangGraph agent on the Lambda harness: short invocations that hand off between supersteps
many times, continuation events lost and delivered twice, one invocation killed at its deadline
inside a tool call, the sweeper re-driving what was lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("langgraph")

from outlast import App
from outlast.integrations.langgraph import durable_graph
from outlast.platforms.aws_lambda import LambdaHandler
from outlast.report import run_report
from statestore import EntryStatus, RunStatus
from tests.integrations import langgraph_agent_app as lga
from tests.integrations.test_langgraph_agent import QUESTION, model_calls
from tests.lambda_platform.support import CapturingLambda, Harness, die_at_deadline


@pytest.fixture
def lambda_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("LGA_CALL_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("LGA_TURNS", "6")
    monkeypatch.setenv("LGA_MODEL_SECONDS", "0.1")
    monkeypatch.setenv("LGA_TOOL_SECONDS", "0.05")
    monkeypatch.delenv("LGA_ASK_AT", raising=False)
    app = App("lga-lambda", hot_url=f"sqlite:///{tmp_path}/hot.db", cold_url=f"file://{tmp_path}/c")
    durable_graph(app, lga.graph, name="agent", output=lga.result)
    yield app
    app.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4, 9])
def test_the_graph_crosses_many_lambda_invocations(
    lambda_app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    app = lambda_app
    log = tmp_path / "calls.log"

    baseline = app.start("agent", QUESTION, run_id="baseline")
    expected = app.drive(baseline)
    assert expected.status is RunStatus.SUCCEEDED, expected.error
    turns = model_calls(log)
    assert turns == dict.fromkeys(range(7), 1)
    log.unlink()

    killed: list[str] = []

    def kill_once(city: str) -> None:
        if city == "Perth" and not killed:  # the time tool of the fourth turn
            killed.append(city)
            die_at_deadline()

    monkeypatch.setattr(lga, "TOOL_HOOK", kill_once)
    lam = CapturingLambda()
    harness = Harness(
        LambdaHandler(app, lambda_client=lam),
        lam,
        app.store.hot,
        timeout_s=0.6,
        seed=seed,
        drop_rate=0.1,
        duplicate_rate=0.2,
    )
    run_id = "on-lambda"
    harness.deliver(
        {"outlast": {"action": "start", "function": "agent", "run_id": run_id, "input": QUESTION}}
    )
    context = f"harness seed {seed}"
    assert harness.run(run_id, deadline_s=120) is RunStatus.SUCCEEDED, context
    assert app.result(run_id) == expected.result, context
    assert harness.kills == 1 and killed == ["Perth"], context

    record = app.store.hot.get_run(run_id)
    handed_off = sum(1 for o in harness.outcomes if o.get("status") == "handed_off")
    assert handed_off >= 5, ([o.get("status") for o in harness.outcomes], context)
    assert record.counters.legs >= 6, context

    calls = model_calls(log)
    assert set(calls) == set(turns), context
    assert sum(calls.values()) <= len(turns) + harness.kills, (calls, context)
    assert run_report(app.store, run_id).tokens == run_report(app.store, baseline).tokens
    names = [e.name for e in app.journal(run_id) if e.status is EntryStatus.OK]
    assert names == [e.name for e in app.journal(baseline)], context
