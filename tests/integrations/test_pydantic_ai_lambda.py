"""The Pydantic AI workload on the Lambda harness: short invocations that hand off many times,
continuation events lost and delivered twice, one invocation killed at its deadline inside a
parallel tool call, the sweeper re-driving what was lost.

The agent (``pydantic_ai_workload.py``) asks for ``WIDTH`` tools in parallel on each of its
``TURNS`` tool-calling turns (one ``ModelResponse`` with several ``ToolCallPart``), then answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pydantic_ai")

from outlast import App
from outlast.platforms.aws_lambda import LambdaHandler
from outlast.report import run_report
from statestore import EntryStatus, RunStatus
from tests.integrations import pydantic_ai_workload as workload
from tests.lambda_platform.support import CapturingLambda, Harness, die_at_deadline

TURNS = workload.TURNS + 1  # the tool-calling turns and the answering one
TOOL_CALLS = workload.TURNS * workload.WIDTH
KILL_AT = "t2-1"  # the second of turn 2's three parallel lookups


def counted(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(line.strip() for line in path.read_text().splitlines() if line.strip())


@pytest.fixture
def lambda_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The workload's functions on a fresh app whose legs are short: one step (or one batch of
    parallel tool calls) fits in an invocation, so a run crosses many invocations. A killed
    invocation's lease ends soon after its deadline, so the sweeper re-drives it within the test."""
    monkeypatch.setenv("PAI_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.setenv("PAI_SLOW", "0.05")
    app = App(
        "pai-lambda",
        hot_url=f"sqlite:///{tmp_path}/hot.db",
        cold_url=f"file://{tmp_path}/cold",
        handoff_margin=0.55,
        lease_margin=0.3,
        max_interruptions=10,
    )
    for name, fn in workload.app.functions.items():
        app.durable(name=name)(fn.fn)
    yield app
    monkeypatch.setattr(workload, "TOOL_HOOK", None)
    app.close()


@pytest.mark.parametrize("seed", [3, 8])
def test_the_agent_crosses_many_lambda_invocations(
    lambda_app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    app = lambda_app
    log = tmp_path / "calls.txt"

    baseline = app.start("ask", "sum them", run_id="baseline")
    expected = app.drive(baseline)
    assert expected.status is RunStatus.SUCCEEDED, expected.error
    assert expected.result == workload.plain()  # the durable run equals Pydantic AI's own
    log.unlink()

    killed: list[str] = []

    def kill_once(key: str) -> None:
        if key == KILL_AT and not killed:
            killed.append(key)
            die_at_deadline()

    monkeypatch.setattr(workload, "TOOL_HOOK", kill_once)
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
    start = {"action": "start", "function": "ask", "run_id": run_id, "input": "sum them"}
    harness.deliver({"outlast": start})
    status = harness.run(run_id, deadline_s=50)
    context = f"seed={seed} outcomes={[o.get('status') for o in harness.outcomes]}"
    assert status is RunStatus.SUCCEEDED, context
    assert app.result(run_id) == expected.result, context
    assert harness.kills == 1 and killed == [KILL_AT], context

    handed_off = sum(1 for o in harness.outcomes if o.get("status") == "handed_off")
    assert handed_off >= 5, context
    assert app.store.hot.get_run(run_id).counters.legs >= 6, context

    calls = counted(log)
    # Each turn's model request ran, and at most once more per interruption (the one kill; a
    # hand-off never loses a step). The kill landed in a tool call, so no model call ran twice.
    for turn in range(TURNS):
        assert calls[f"model {turn}"] >= 1, (context, calls)
    model_calls = sum(n for line, n in calls.items() if line.startswith("model"))
    assert model_calls <= TURNS + harness.kills, (context, calls)
    # The killed tool call ran again; its committed siblings did not (at most the batch in
    # flight is lost).
    tool_calls = sum(n for line, n in calls.items() if line.startswith("tool"))
    assert calls[f"tool {KILL_AT}"] == 2, (context, calls)
    assert TOOL_CALLS < tool_calls <= TOOL_CALLS + workload.WIDTH, (context, calls)

    # Token usage: the run's output carries Pydantic AI's usage, the report sums the model steps.
    assert run_report(app.store, run_id).tokens == run_report(app.store, baseline).tokens
    tokens = run_report(app.store, run_id).tokens
    assert tokens["total"] == expected.result["input_tokens"] + expected.result["output_tokens"]
    # The committed steps are the uninterrupted run's, in the same order.
    names = [e.name for e in app.journal(run_id) if e.status is EntryStatus.OK]
    assert names == [e.name for e in app.journal(baseline)], context
