"""A local stand-in for the Lambda service around Outlast's handlers.

- ``LambdaContext``: the context object, whose remaining time shrinks with the wall clock.
- ``CapturingLambda``: stands in for the Invoke API only. It records each asynchronous invoke
  (the hand-offs, the API's and the sweeper's dispatches); it runs nothing itself.
- ``Harness``: delivers the captured invokes to the agent handler like Lambda's async queue,
  except that it loses some and delivers some twice; when nothing is queued it runs the sweeper,
  as the one-minute schedule would.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outlast.platforms.sweeper import SweeperHandler
from statestore import HotTier, RunStatus

EVENTS = Path(__file__).resolve().parents[2] / "events"
ACCOUNT = "123456789012"
AGENT = "outlast-agent"
AGENT_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{AGENT}"


def load_event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return data


class LambdaContext:
    """The attributes and the one method of Lambda's context object that handlers use."""

    def __init__(self, timeout_s: float, *, function_name: str = AGENT) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{function_name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "2025/01/01/[$LATEST]test"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Invoke:
    function: str
    event: dict[str, Any]


class CapturingLambda:
    """Records ``invoke(InvocationType="Event")`` calls; answers 202 like Lambda does."""

    def __init__(self) -> None:
        self.invokes: list[Invoke] = []
        self._lock = threading.Lock()

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["InvocationType"] == "Event", kwargs
        event = json.loads(kwargs["Payload"])
        with self._lock:
            self.invokes.append(Invoke(kwargs["FunctionName"], event))
        return {"StatusCode": 202}

    def take(self) -> list[Invoke]:
        with self._lock:
            taken, self.invokes = self.invokes, []
        return taken


class Killed(BaseException):
    """Lambda stopping the process at its deadline: nothing after it runs, nothing is committed."""


# The context of the invocation in progress, for steps that simulate running past the deadline.
current: dict[str, LambdaContext] = {}


def die_at_deadline() -> None:
    """Block like a step that hangs, until the invocation's time is up; then the process dies."""
    context = current["context"]
    while context.get_remaining_time_in_millis() > 0:
        time.sleep(0.01)
    raise Killed


@dataclass
class Harness:
    """Lambda's async delivery, made unreliable on purpose, plus the scheduled sweeper."""

    handler: Callable[[dict[str, Any], Any], dict[str, Any]]
    lam: CapturingLambda
    hot: HotTier
    timeout_s: float
    seed: int = 0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    sweeper_grace: float = 0.0
    queue: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    kills: int = 0
    dropped: int = 0
    duplicated: int = 0
    sweeps: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.sweeper = SweeperHandler(
            hot=self.hot, agent_function=AGENT, lambda_client=self.lam, grace=self.sweeper_grace
        )

    def collect(self) -> None:
        for invoke in self.lam.take():
            assert invoke.function.startswith(AGENT) or invoke.function.startswith(AGENT_ARN)
            roll = self._rng.random()
            if roll < self.drop_rate:
                self.dropped += 1
                continue
            self.queue.append(invoke.event)
            if roll < self.drop_rate + self.duplicate_rate:
                self.duplicated += 1
                # The copy comes later, often after the run has moved on: it must do nothing.
                self.queue.insert(self._rng.randrange(len(self.queue) + 1), invoke.event)

    def deliver(self, event: dict[str, Any]) -> dict[str, Any] | None:
        context = LambdaContext(self.timeout_s)
        current["context"] = context
        try:
            outcome = self.handler(event, context)
        except Killed:
            self.kills += 1
            return None
        finally:
            current.pop("context", None)
        self.outcomes.append(outcome)
        return outcome

    def sweep(self) -> dict[str, Any]:
        report = self.sweeper({"detail-type": "Scheduled Event", "source": "aws.events"}, None)
        self.sweeps.append(report)
        return report

    def run(self, run_id: str, *, deadline_s: float = 60.0, poll: float = 0.05) -> RunStatus:
        """Deliver, sweep when idle, until the run ends (or the test's own deadline)."""
        until = time.monotonic() + deadline_s
        while time.monotonic() < until:
            self.collect()
            if self.queue:
                self.deliver(self.queue.pop(0))
                continue
            status = self.hot.get_run(run_id).status
            if status.terminal:
                return status
            self.sweep()
            self.collect()
            if not self.queue:
                time.sleep(poll)
        return self.hot.get_run(run_id).status
