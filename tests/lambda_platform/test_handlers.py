"""The deployed handlers (functions/*/app.py) invoked in-process with the events/ files.

The agent and API functions serve the research agent example; DynamoDB and S3 are moto_server's
(through OUTLAST_HOT_URL / OUTLAST_COLD_URL, as on Lambda); async invokes are captured.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aws_lambda_powertools import Logger

import examples.research_agent as research_agent
import functions.agent.app as agent_function
import functions.api.app as api_function
import functions.sweeper.app as sweeper_function
from outlast import App
from outlast.platforms.aws_lambda import LambdaHandler, Observability
from outlast.platforms.lambda_events import BadEventError, StartRequest
from statestore import RunStatus, StateStoreError
from tests.conftest import unique
from tests.lambda_platform.conftest import Tiers
from tests.lambda_platform.support import (
    AGENT,
    CapturingLambda,
    Harness,
    LambdaContext,
    load_event,
)
from tests.lambda_platform.workloads import make_app
from tests.support.servers import free_port


@pytest.fixture
def deployed(
    tiers: Tiers, lam: CapturingLambda, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[ModuleType]:
    """The functions' module-level handlers, pointed at moto and at the invoke capture."""
    monkeypatch.setenv("OUTLAST_HOT_URL", tiers.hot_url)
    monkeypatch.setenv("OUTLAST_COLD_URL", tiers.cold_url)
    monkeypatch.setenv("OUTLAST_AGENT_FUNCTION", AGENT)
    monkeypatch.setattr(research_agent, "NOTES_DIR", tmp_path / "notes")
    app = agent_function.app
    app.close()
    monkeypatch.setattr(app, "handoff_margin", 0.3)
    monkeypatch.setattr(agent_function.handler, "lambda_client", lam)
    monkeypatch.setattr(api_function.handler, "lambda_client", lam)
    monkeypatch.setattr(sweeper_function.handler, "lambda_client", lam)
    yield agent_function
    app.close()


def test_start_direct_event_runs_the_research_agent_across_legs(
    deployed: ModuleType, lam: CapturingLambda
) -> None:
    app: App = deployed.app
    harness = Harness(deployed.handler, lam, app.store.hot, timeout_s=1.5)
    first = harness.deliver(load_event("start-direct.json"))
    assert first is not None
    assert (first["run_id"], first["leg"], first["status"]) == ("demo-1", 1, "handed_off")

    assert harness.run("demo-1", deadline_s=60) is RunStatus.SUCCEEDED
    result = app.result("demo-1")
    assert result["topic"] == "durable agents"
    assert result["sources"] and result["stop"] == "completed"
    assert app.store.hot.get_run("demo-1").counters.legs >= 3

    # events/continuation.json is leg 2 of demo-1: long stale now, so it does nothing.
    before = app.store.hot.get_run("demo-1")
    stale = deployed.handler(load_event("continuation.json"), LambdaContext(2.0))
    assert stale["status"] == "skipped"
    assert app.store.hot.get_run("demo-1").version == before.version


def test_sqs_batch_starts_every_run_and_reports_only_bad_messages(
    deployed: ModuleType, lam: CapturingLambda, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: App = deployed.app
    monkeypatch.setattr(deployed.handler, "min_leg_seconds", 0.5)
    event = load_event("sqs-start.json")
    bad = dict(event["Records"][0], messageId="bad-1", body='{"function": "research", "run_id": ')
    unknown = dict(event["Records"][0], messageId="bad-2", body='{"function": "nosuch"}')
    event["Records"] += [bad, unknown]

    response = deployed.handler(event, LambdaContext(1.2))

    assert response == {
        "batchItemFailures": [{"itemIdentifier": "bad-1"}, {"itemIdentifier": "bad-2"}]
    }
    first, second = (app.store.hot.get_run(r) for r in ("sqs-demo-1", "sqs-demo-2"))
    # The first run's leg took the invocation's time; the second is dispatched to its own.
    assert first.counters.legs == 1 and first.counters.steps >= 1
    assert second.counters.legs == 0
    events = [i.event["outlast"] for i in lam.take()]
    assert {"action": "continue", "run_id": "sqs-demo-1", "leg": 2} in events
    assert {"action": "continue", "run_id": "sqs-demo-2", "leg": 1} in events
    assert len(app.store.hot.list_runs()) == 2


def test_api_events_start_and_report_a_run(deployed: ModuleType, lam: CapturingLambda) -> None:
    response = api_function.handler(load_event("api-start.json"), None)
    assert response["statusCode"] == 202
    assert json.loads(response["body"])["run_id"] == "demo-1"
    [dispatch] = lam.take()
    assert dispatch.function == AGENT
    assert dispatch.event == {"outlast": {"action": "continue", "run_id": "demo-1", "leg": 1}}

    response = api_function.handler(load_event("api-status.json"), None)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["status"] == "pending"

    # The run does not wait for "approval", so the signal is kept and wakes nothing.
    response = api_function.handler(load_event("api-signal.json"), None)
    assert response["statusCode"] == 202
    assert json.loads(response["body"])["woke"] is False
    assert len(deployed.app.store.hot.pending_signals("demo-1", "approval")) == 1


def test_schedule_event_drives_the_sweeper(
    deployed: ModuleType, lam: CapturingLambda, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: App = deployed.app
    app.start("research", "fresh", run_id="fresh-1")
    report = sweeper_function.handler(load_event("schedule.json"), LambdaContext(60))
    # A pending run is its creator's to dispatch until the grace period passes.
    assert (report["due"], report["dispatched"], report["not_yet"]) == (1, [], 1)
    monkeypatch.setattr(sweeper_function.handler, "grace", 0.0)
    report = sweeper_function.handler(load_event("schedule.json"), LambdaContext(60))
    assert report["dispatched"] == ["fresh-1"]
    assert [i.event for i in lam.take()] == [
        {"outlast": {"action": "continue", "run_id": "fresh-1"}}
    ]


def test_a_schedule_event_needs_a_mapper_and_starts_one_run_per_mapped_id(
    app: App, lam: CapturingLambda
) -> None:
    schedule = load_event("schedule.json")
    with pytest.raises(BadEventError, match="event_mapper"):
        LambdaHandler(app, lambda_client=lam)(schedule, LambdaContext(2.0))
    assert app.store.hot.list_runs() == []

    def nightly(event: dict[str, Any]) -> StartRequest | None:
        if event.get("detail-type") != "Scheduled Event":
            return None
        return StartRequest(function="squares", run_id=f"nightly-{event['time'][:10]}", input=4)

    handler = LambdaHandler(app, lambda_client=lam, event_mapper=nightly)
    done = handler(schedule, LambdaContext(5.0))
    assert (done["run_id"], done["status"]) == ("nightly-2025-01-01", "completed")
    assert app.result("nightly-2025-01-01") == {"n": 4, "total": 14}
    # EventBridge delivers at least once: the second copy starts nothing and runs nothing.
    again = handler(schedule, LambdaContext(5.0))
    assert again["status"] == "skipped"
    assert app.store.hot.get_run("nightly-2025-01-01").counters.legs == 1
    assert handler({"detail-type": "Other", "source": "x", "detail": {}}, LambdaContext(1.0)) == {
        "status": "ignored"
    }


@pytest.mark.parametrize(
    "event",
    [
        {"outlast": {"action": "start", "function": "nosuch"}},
        {"outlast": {"action": "start", "function": "squares", "run_id": "bad id"}},
        {"outlast": {"action": "launch", "run_id": "x"}},
        {"outlast": {"action": "continue", "run_id": "x", "leg": 0}},
        {"outlast": "start"},
        {"hello": "world"},
    ],
)
def test_bad_direct_events_raise_and_write_nothing(
    app: App, lam: CapturingLambda, event: dict[str, Any]
) -> None:
    with pytest.raises(BadEventError):
        LambdaHandler(app, lambda_client=lam)(event, LambdaContext(2.0))
    assert app.store.hot.list_runs() == []
    assert lam.invokes == []


def test_a_continuation_for_a_missing_run_is_skipped(app: App, lam: CapturingLambda) -> None:
    event = {"outlast": {"action": "continue", "run_id": "ghost", "leg": 3}}
    assert LambdaHandler(app, lambda_client=lam)(event, LambdaContext(2.0))["status"] == "skipped"


def test_the_runs_own_failure_is_committed_and_the_handler_returns(
    app: App, lam: CapturingLambda
) -> None:
    event = {"outlast": {"action": "start", "function": "broken", "run_id": "b-1"}}
    outcome = LambdaHandler(app, lambda_client=lam)(event, LambdaContext(2.0))
    assert outcome["status"] == "failed"
    record = app.store.hot.get_run("b-1")
    assert record.status is RunStatus.FAILED
    assert record.error is not None and "own bug" in record.error.message


def test_an_unreachable_store_raises_so_lambda_retries(
    tiers: Tiers, lam: CapturingLambda, moto_server: object
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    app = make_app(
        f"dynamodb://{unique('gone')}?region=us-east-1&endpoint_url={dead}",
        f"s3://{unique('gone')}/o?region=us-east-1&endpoint_url={dead}",
    )
    event = {"outlast": {"action": "continue", "run_id": "r-1", "leg": 2}}
    with pytest.raises(StateStoreError):
        LambdaHandler(app, lambda_client=lam)(event, LambdaContext(2.0))


def test_log_lines_carry_run_leg_and_seq_and_metrics_are_emf(
    app: App, lam: CapturingLambda, capsys: pytest.CaptureFixture[str]
) -> None:
    service = unique("logs")
    stream = io.StringIO()
    obs = Observability(service, logger=Logger(service=service, stream=stream))
    handler = LambdaHandler(app, lambda_client=lam, observability=obs)
    runtime = logging.getLogger("outlast")
    before = (list(runtime.handlers), runtime.propagate, runtime.level)

    handed = handler(
        {"outlast": {"action": "start", "function": "squares", "run_id": "log-1", "input": 400}},
        LambdaContext(0.3),
    )
    assert handed["status"] == "handed_off"
    done = handler(
        {"outlast": {"action": "start", "function": "squares", "run_id": "log-2", "input": 3}},
        LambdaContext(5.0),
    )
    assert done["status"] == "completed"

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {line["message"] for line in lines} >= {"leg ended", "summed 3 squares"}
    for line in lines:
        assert line["run_id"] in ("log-1", "log-2"), line
        assert line["leg"] == 1, line
        assert isinstance(line["seq"], int), line
    summed = next(line for line in lines if line["message"] == "summed 3 squares")
    assert (summed["run_id"], summed["seq"]) == ("log-2", 3)
    # The runtime's logger is left as it was found.
    assert (list(runtime.handlers), runtime.propagate, runtime.level) == before

    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(emf) == 2  # one flush per invocation
    names = [{m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]} for doc in emf]
    assert names[0] >= {"Legs", "StepsExecuted", "StepsReplayed", "HandOffs", "CommitLatency"}
    assert names[1] >= {"Legs", "StepsExecuted", "RunsSucceeded", "CommitLatency"}
    assert emf[0]["StepsExecuted"] == [handed["steps_executed"]]
    assert handed["steps_executed"] > 0
    assert emf[1]["StepsExecuted"] == [3]
    assert emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Outlast"
