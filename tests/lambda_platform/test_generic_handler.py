"""The generic handlers (``OUTLAST_APP``) and runs that stay on the version they started on.

The apps here are small agents written to a temporary directory, not the example: the handlers
must find them through ``OUTLAST_APP`` alone. State is on moto_server's DynamoDB and S3.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outlast.platforms import aws_lambda, lambda_entry
from outlast.platforms.api import ApiHandler
from outlast.platforms.aws_lambda import PIN_TAG, LambdaHandler, load_app
from outlast.platforms.sweeper import SweeperHandler
from statestore import RunStatus
from tests.lambda_platform.conftest import Tiers
from tests.lambda_platform.support import (
    AGENT,
    AGENT_ARN,
    CapturingLambda,
    Harness,
    Invoke,
    LambdaContext,
)

AGENT_CODE = """
import time
from outlast import App, Context

VERSION = "{version}"
app = App("own-agent", lease_margin=0.3, handoff_margin=0.1, inline_wait=0.05)


def work(i: int) -> str:
    time.sleep(0.04)
    return f"{{VERSION}}:{{i}}"


@app.durable()
def chores(ctx: Context, n: int) -> list[str]:
    return [ctx.step(work, i, name="work") for i in range(n)]


@app.durable()
def gated(ctx: Context, n: int) -> dict:
    first = ctx.step(work, 0, name="work")
    go = ctx.wait_for_signal("go")
    rest = [ctx.step(work, i, name="work") for i in range(1, n)]
    return {{"steps": [first, *rest], "go": go}}
"""


def write_agent(directory: Path, version: str) -> str:
    """A module ``own_agent_<random>`` in ``directory``; its name."""
    name = f"own_agent_{version}_{uuid.uuid4().hex[:8]}"
    (directory / f"{name}.py").write_text(
        textwrap.dedent(AGENT_CODE.format(version=version)), encoding="utf-8"
    )
    return name


@pytest.fixture
def fresh_handlers(tiers: Tiers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Empty handler caches, the store on moto, the code directory as the task root."""
    monkeypatch.setattr(aws_lambda, "_apps", {})
    monkeypatch.setattr(aws_lambda, "_handlers", {})
    monkeypatch.setenv("OUTLAST_HOT_URL", tiers.hot_url)
    monkeypatch.setenv("OUTLAST_COLD_URL", tiers.cold_url)
    monkeypatch.setenv("OUTLAST_AGENT_FUNCTION", AGENT)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(tmp_path))
    # LAMBDA_TASK_ROOT would switch X-Ray tracing on; there is no daemon here.
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.delenv("OUTLAST_AGENT_VERSION_ARN", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for app in aws_lambda._apps.values():
        app.close()


def start(function: str, run_id: str, value: Any) -> dict[str, Any]:
    return {"outlast": {"action": "start", "function": function, "run_id": run_id, "input": value}}


def test_outlast_app_names_the_app_every_generic_handler_serves(
    fresh_handlers: Path, monkeypatch: pytest.MonkeyPatch, lam: CapturingLambda
) -> None:
    module = write_agent(fresh_handlers, "v1")
    monkeypatch.setenv("OUTLAST_APP", f"{module}:app")
    app = load_app()
    assert app.name == "own-agent" and set(app.functions) == {"chores", "gated"}
    lambda_entry.agent  # the entry point template.yaml names  # noqa: B018
    aws_lambda.agent_handler().lambda_client = lam
    aws_lambda.api_handler().lambda_client = lam
    aws_lambda.sweeper_handler().lambda_client = lam

    # Agent: a run of 24 slow-ish steps in 0.5 s invocations takes several legs.
    harness = Harness(lambda_entry.agent, lam, app.store.hot, timeout_s=0.5)
    first = harness.deliver(start("chores", "own-1", 24))
    assert first is not None and first["status"] == "handed_off"
    assert harness.run("own-1", deadline_s=60) is RunStatus.SUCCEEDED
    assert app.result("own-1") == [f"v1:{i}" for i in range(24)]
    assert app.store.hot.get_run("own-1").counters.legs >= 3

    # API: the same app's functions, and nothing else, can be started.
    body = json.dumps({"function": "chores", "run_id": "own-2", "input": 2})
    event = {
        "version": "2.0",
        "routeKey": "POST /runs",
        "rawPath": "/runs",
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/runs"}, "stage": "$default"},
        "isBase64Encoded": False,
        "body": body,
    }
    answer = lambda_entry.api(event, None)
    assert answer["statusCode"] == 202, answer
    [dispatch] = lam.take()
    assert dispatch.function == AGENT
    unknown = dict(event, body=json.dumps({"function": "research"}))
    assert lambda_entry.api(unknown, None)["statusCode"] == 400

    # Sweeper: re-drives the pending run the API started (no grace here).
    monkeypatch.setattr(aws_lambda.sweeper_handler(), "grace", 0.0)
    report = lambda_entry.sweeper({"detail-type": "Scheduled Event", "source": "x"}, None)
    assert report["dispatched"] == ["own-2"]


def test_a_missing_or_wrong_app_is_named(
    fresh_handlers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTLAST_APP", raising=False)
    with pytest.raises(RuntimeError, match="OUTLAST_APP names no app"):
        load_app()
    with pytest.raises(RuntimeError, match="cannot import 'no_such_module_here'"):
        load_app("no_such_module_here:app")
    module = write_agent(fresh_handlers, "v1")
    with pytest.raises(RuntimeError, match="not an outlast App"):
        load_app(f"{module}:VERSION")
    # A durable function names its app; a bare module means its `app`.
    assert load_app(f"{module}:chores") is load_app(module)


class VersionedLambda:
    """Lambda's versions and one alias ("live") of the agent function, each version its own
    code (its own handler); async invokes are captured and delivered by qualifier."""

    def __init__(self, versions: dict[str, LambdaHandler], lam: CapturingLambda) -> None:
        self.versions = versions
        self.lam = lam
        self.live = "1"
        self.ran: list[tuple[str, str, str]] = []  # (run id, version, status)

    def context(self, qualifier: str, timeout: float) -> LambdaContext:
        version = self.live if qualifier == "live" else qualifier
        context = LambdaContext(timeout)
        context.function_version = version
        context.invoked_function_arn = f"{AGENT_ARN}:{qualifier}"
        return context

    def deliver(self, invoke: Invoke, timeout: float = 0.5) -> dict[str, Any]:
        target = invoke.function
        qualifier = target.rsplit(":", 1)[1] if target.count(":") in (1, 7) else "live"
        context = self.context(qualifier, timeout)
        outcome = self.versions[context.function_version](invoke.event, context)
        self.ran.append(
            (str(outcome.get("run_id")), context.function_version, str(outcome.get("status")))
        )
        return outcome

    def pump(self, until: Any, sweeper: SweeperHandler, rounds: int = 400) -> None:
        for _ in range(rounds):
            if until():
                return
            taken = self.lam.take()
            for invoke in taken:
                self.deliver(invoke)
            if not taken:
                sweeper({"detail-type": "Scheduled Event", "source": "x"}, None)
        raise AssertionError("the runs did not end")


def test_a_run_stays_on_the_version_it_started_on_across_a_deploy(
    fresh_handlers: Path, monkeypatch: pytest.MonkeyPatch, lam: CapturingLambda
) -> None:
    v1, v2 = (load_app(f"{write_agent(fresh_handlers, v)}:app") for v in ("v1", "v2"))
    service = VersionedLambda(
        {
            "1": LambdaHandler(v1, lambda_client=lam),
            "2": LambdaHandler(v2, lambda_client=lam),
        },
        lam,
    )
    hot = v1.store.hot
    sweeper = SweeperHandler(hot=hot, agent_function=f"{AGENT}:live", lambda_client=lam, grace=0)

    # Started through the alias while it points at version 1: pinned to version 1.
    first = service.deliver(Invoke(f"{AGENT}:live", start("chores", "old", 10)))
    assert first["status"] == "handed_off"
    assert hot.get_run("old").tags[PIN_TAG] == f"{AGENT_ARN}:1"
    # The API of the same deploy pins what it starts to the version deployed with it.
    monkeypatch.setenv("OUTLAST_AGENT_VERSION_ARN", f"{AGENT_ARN}:1")
    api = ApiHandler(v1, agent_function=f"{AGENT}:live", lambda_client=lam)
    body = json.dumps({"function": "gated", "run_id": "waits", "input": 3})
    post = {
        "version": "2.0",
        "routeKey": "POST /runs",
        "rawPath": "/runs",
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/runs"}, "stage": "$default"},
        "isBase64Encoded": False,
        "body": body,
    }
    assert api(post, None)["statusCode"] == 202
    assert hot.get_run("waits").tags[PIN_TAG] == f"{AGENT_ARN}:1"

    # Deploy: the alias moves to version 2 (and the API with it) while both runs are going.
    service.live = "2"
    monkeypatch.setenv("OUTLAST_AGENT_VERSION_ARN", f"{AGENT_ARN}:2")
    # A dead-letter redrive of "old" through the alias reaches version 2, which forwards it.
    dead_letter = {"outlast": {"action": "continue", "run_id": "old"}}
    redrive = service.deliver(Invoke(f"{AGENT}:live", dead_letter))
    assert redrive["status"] == "forwarded" and redrive["to"] == f"{AGENT_ARN}:1"
    # New runs start on version 2.
    service.deliver(Invoke(f"{AGENT}:live", start("chores", "new", 6)))
    assert hot.get_run("new").tags[PIN_TAG] == f"{AGENT_ARN}:2"

    def waiting() -> bool:
        record = hot.get_run("waits")
        return hot.get_run("old").status.terminal and record.waiting_for == "go"

    service.pump(waiting, sweeper)
    # The API's wake after a signal goes to the run's version, not to the alias.
    lam.take()
    signal = dict(
        post,
        routeKey="POST /runs/{run_id}/signals/{name}",
        rawPath="/runs/waits/signals/go",
        requestContext={
            "http": {"method": "POST", "path": "/runs/waits/signals/go"},
            "stage": "$default",
        },
        pathParameters={"run_id": "waits", "name": "go"},
        body=json.dumps({"payload": "yes"}),
    )
    answer = api(signal, None)
    assert json.loads(answer["body"])["dispatched"] is True
    [wake] = lam.invokes
    assert wake.function == f"{AGENT_ARN}:1"

    service.pump(
        lambda: all(hot.get_run(r).status.terminal for r in ("old", "new", "waits")), sweeper
    )
    assert v1.result("old") == [f"v1:{i}" for i in range(10)]
    assert v1.result("waits") == {"steps": ["v1:0", "v1:1", "v1:2"], "go": "yes"}
    assert v2.result("new") == [f"v2:{i}" for i in range(6)]
    # Every leg that ran a step of a version-1 run ran on version 1 (version 2 only forwarded).
    for run_id, version, status in service.ran:
        if run_id in ("old", "waits") and status != "forwarded":
            assert version == "1", (run_id, version, status)
        if run_id == "new":
            assert version == "2"
    assert hot.get_run("old").counters.legs >= 2

    # Rolling forward on purpose: a fork (or a retry) with "version": "current" runs on the
    # version deployed now, replaying the entries it keeps; without it, it keeps the old one.
    def retry(body: dict[str, Any]) -> dict[str, Any]:
        event = dict(
            post,
            routeKey="POST /runs/{run_id}/retry",
            rawPath="/runs/old/retry",
            requestContext={
                "http": {"method": "POST", "path": "/runs/old/retry"},
                "stage": "$default",
            },
            pathParameters={"run_id": "old"},
            body=json.dumps(body),
        )
        answer = api(event, None)
        assert answer["statusCode"] == 202, answer
        return dict(json.loads(answer["body"]))

    lam.take()
    retry({"as": "old-kept", "from_seq": 4})
    assert hot.get_run("old-kept").tags[PIN_TAG] == f"{AGENT_ARN}:1"
    retry({"as": "old-moved", "from_seq": 4, "version": "current"})
    assert hot.get_run("old-moved").tags[PIN_TAG] == f"{AGENT_ARN}:2"
    assert [i.function for i in lam.invokes] == [f"{AGENT_ARN}:1", f"{AGENT_ARN}:2"]
    service.pump(
        lambda: all(hot.get_run(r).status.terminal for r in ("old-kept", "old-moved")), sweeper
    )
    assert v1.result("old-kept") == [f"v1:{i}" for i in range(10)]
    assert v2.result("old-moved") == [f"v1:{i}" for i in range(4)] + [
        f"v2:{i}" for i in range(4, 10)
    ]
