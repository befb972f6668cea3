"""Runs driven through the Lambda handler by an unreliable async delivery and the sweeper.

Store: DynamoDB and S3 on moto_server (the ``tiers`` fixture).
"""

from __future__ import annotations

import json
import time

from outlast import App
from outlast.platforms.api import ApiHandler
from outlast.platforms.aws_lambda import LambdaHandler
from statestore import RunStatus
from tests.lambda_platform.conftest import Tiers
from tests.lambda_platform.support import AGENT, AGENT_ARN, CapturingLambda, Harness, load_event
from tests.lambda_platform.workloads import executions


def start_event(function: str, run_id: str, input: object) -> dict[str, object]:
    return {"outlast": {"action": "start", "function": function, "run_id": run_id, "input": input}}


def test_300_step_run_crosses_many_legs_despite_lost_and_duplicate_handoffs(
    app: App, lam: CapturingLambda
) -> None:
    handler = LambdaHandler(app, lambda_client=lam)
    harness = Harness(
        handler, lam, app.store.hot, timeout_s=0.4, seed=3, drop_rate=0.15, duplicate_rate=0.2
    )
    first = harness.deliver(start_event("squares", "big-1", 300))
    assert first is not None and first["status"] == "handed_off" and first["leg"] == 1
    [handoff] = lam.invokes
    # The qualified ARN: the next leg runs the same version.
    assert handoff.function == f"{AGENT_ARN}:$LATEST"
    assert handoff.event == {"outlast": {"action": "continue", "run_id": "big-1", "leg": 2}}

    assert harness.run("big-1", deadline_s=90) is RunStatus.SUCCEEDED

    assert app.result("big-1") == {"n": 300, "total": sum(i * i for i in range(300))}
    record = app.store.hot.get_run("big-1")
    # Many legs; how many depends on how fast this machine commits (each step sleeps 2 ms, a
    # leg has about 0.3 s), so only a floor that no speed-up can break is asserted.
    assert record.counters.legs >= 4 and record.counters.handoffs >= 2
    assert record.counters.steps == 300
    # Each step is journaled once, whatever was lost or delivered twice.
    steps = [e for e in app.journal("big-1") if e.name == "square"]
    assert [e.seq for e in steps] == list(range(300))
    assert harness.dropped >= 1 and harness.duplicated >= 1
    # Duplicates and stale copies did nothing.
    assert any(o["status"] == "skipped" for o in harness.outcomes)
    # Lost hand-offs were re-driven by the sweeper (recovery events carry no leg number).
    assert any(s["dispatched"] for s in harness.sweeps)


def test_a_leg_killed_at_its_deadline_is_recovered_by_the_sweeper(
    app: App, lam: CapturingLambda
) -> None:
    handler = LambdaHandler(app, lambda_client=lam)
    harness = Harness(handler, lam, app.store.hot, timeout_s=0.5)
    assert harness.deliver(start_event("fragile", "kill-1", {"n": 12, "kill_at": 5})) is None
    assert harness.kills == 1
    assert lam.invokes == []  # killed: no hand-off was sent

    record = app.store.hot.get_run("kill-1")
    assert record.status is RunStatus.RUNNING and record.lease is not None
    assert record.next_seq == 5  # steps 0-4 committed, step 5 was in flight
    # Until the lease runs out (deadline + lease margin) the sweeper leaves the run alone.
    assert harness.sweep()["dispatched"] == []

    time.sleep(0.4)
    assert harness.sweep()["dispatched"] == ["kill-1"]
    [recovery] = lam.invokes
    assert recovery.function == AGENT
    assert recovery.event == {"outlast": {"action": "continue", "run_id": "kill-1"}}

    assert harness.run("kill-1", deadline_s=30) is RunStatus.SUCCEEDED
    assert app.result("kill-1") == sum(range(12))
    assert app.store.hot.get_run("kill-1").counters.recoveries == 1
    # The step in flight at the kill ran again; the committed ones did not.
    assert executions[("kill-1", 5)] == 2
    assert all(executions[("kill-1", i)] == 1 for i in range(12) if i != 5)


def test_a_run_sleeping_on_a_timer_is_woken_by_the_sweeper(app: App, lam: CapturingLambda) -> None:
    handler = LambdaHandler(app, lambda_client=lam)
    harness = Harness(handler, lam, app.store.hot, timeout_s=2.0)
    outcome = harness.deliver(start_event("napper", "nap-1", 1.0))
    assert outcome is not None and outcome["status"] == "suspended"
    assert lam.invokes == []  # a suspended run holds no compute and asks for nothing

    assert harness.sweep()["dispatched"] == []  # not due yet
    time.sleep(1.1)
    assert harness.sweep()["dispatched"] == ["nap-1"]
    assert harness.run("nap-1", deadline_s=20) is RunStatus.SUCCEEDED
    assert app.result("nap-1") == "before-after"
    assert app.store.hot.get_run("nap-1").counters.legs == 2


def test_a_run_waiting_for_a_signal_is_woken_by_the_api(
    app: App, lam: CapturingLambda, tiers: Tiers
) -> None:
    api = ApiHandler(app, agent_function=AGENT, lambda_client=lam)
    agent = LambdaHandler(app, lambda_client=lam)
    harness = Harness(agent, lam, app.store.hot, timeout_s=2.0)

    start = load_event("api-start.json")
    start["body"] = json.dumps({"function": "approver", "run_id": "ok-1", "input": {"what": "x"}})
    response = api(start, None)
    assert response["statusCode"] == 202
    assert json.loads(response["body"]) == {
        "run_id": "ok-1",
        "status": "pending",
        "dispatched": True,
    }
    harness.collect()
    assert harness.queue == [{"outlast": {"action": "continue", "run_id": "ok-1", "leg": 1}}]
    outcome = harness.deliver(harness.queue.pop(0))
    assert outcome is not None and outcome["status"] == "suspended"
    assert harness.sweep()["dispatched"] == []  # waiting for a signal is not due

    signal = load_event("api-signal.json")
    signal["pathParameters"] = {"run_id": "ok-1", "name": "approval"}
    signal["rawPath"] = signal["requestContext"]["http"]["path"] = "/runs/ok-1/signals/approval"
    response = api(signal, None)
    assert response["statusCode"] == 202
    assert json.loads(response["body"])["woke"] is True
    harness.collect()
    assert harness.queue == [{"outlast": {"action": "continue", "run_id": "ok-1"}}]

    assert harness.run("ok-1", deadline_s=20) is RunStatus.SUCCEEDED
    status = load_event("api-status.json")
    status["pathParameters"] = {"run_id": "ok-1"}
    status["rawPath"] = status["requestContext"]["http"]["path"] = "/runs/ok-1"
    response = api(status, None)
    assert response["statusCode"] == 200
    view = json.loads(response["body"])
    assert view["status"] == "succeeded"
    assert view["result"] == {
        "asked": "asked for x",
        "decision": {"approved": True, "by": "reviewer"},
    }
