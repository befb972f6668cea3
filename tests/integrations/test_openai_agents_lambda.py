"""The OpenAI Agents SDK agent on the Lambda harness: short invocations that hand off many times,
continuation events lost and delivered twice, one invocation killed at its deadline inside a tool
call, the sweeper re-driving what was lost."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from outlast.app import DurableFunction
from outlast.platforms.aws_lambda import LambdaHandler
from outlast.report import run_report
from outlast.targets import load_target
from statestore import EntryStatus, RunStatus
from tests.integrations.test_openai_agents import APP, QUESTION, model_calls
from tests.lambda_platform.support import CapturingLambda, Harness, die_at_deadline


@pytest.fixture
def lambda_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[DurableFunction[Any], Any]]:
    monkeypatch.setenv("OUTLAST_HOT_URL", f"sqlite:///{tmp_path}/hot.db")
    monkeypatch.setenv("OUTLAST_COLD_URL", f"file://{tmp_path}/cold")
    monkeypatch.setenv("OA_CALL_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("OA_TURNS", "6")
    monkeypatch.setenv("OA_MODEL_SECONDS", "0.1")
    monkeypatch.setenv("OA_TOOL_SECONDS", "0.05")
    function = load_target(f"{APP}:assist")
    function.app.close()  # the module is shared between tests; open this test's store
    module = sys.modules[function.fn.__module__]
    yield function, module
    setattr(module, "TOOL_HOOK", None)  # noqa: B010 - a module loaded by path, not by import
    function.app.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 8])
def test_the_agent_crosses_many_lambda_invocations(
    lambda_app: tuple[DurableFunction[Any], Any], tmp_path: Path, seed: int
) -> None:
    function, module = lambda_app
    app = function.app
    log = tmp_path / "calls.log"

    baseline = app.start("assist", QUESTION, run_id="baseline")
    expected = app.drive(baseline)
    assert expected.status is RunStatus.SUCCEEDED, expected.error
    turns = model_calls(log)
    log.unlink()

    killed: list[str] = []

    def kill_once(city: str) -> None:
        if city == "Hanoi" and not killed:
            killed.append(city)
            die_at_deadline()

    setattr(module, "TOOL_HOOK", kill_once)  # noqa: B010
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
        {"outlast": {"action": "start", "function": "assist", "run_id": run_id, "input": QUESTION}}
    )
    assert harness.run(run_id, deadline_s=120) is RunStatus.SUCCEEDED
    assert app.result(run_id) == expected.result
    assert harness.kills == 1 and killed == ["Hanoi"]

    record = app.store.hot.get_run(run_id)
    handed_off = sum(1 for o in harness.outcomes if o.get("status") == "handed_off")
    assert handed_off >= 5, [o.get("status") for o in harness.outcomes]
    assert record.counters.legs >= 6

    calls = model_calls(log)
    assert set(calls) == set(turns)
    assert sum(calls.values()) <= len(turns) + harness.kills
    assert run_report(app.store, run_id).tokens == run_report(app.store, baseline).tokens
    names = [e.name for e in app.journal(run_id) if e.status is EntryStatus.OK]
    assert names == [e.name for e in app.journal(baseline)]
