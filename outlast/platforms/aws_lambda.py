"""Outlast on AWS Lambda: one invocation runs one leg of a run, and hands off by invoking itself.

How a leg behaves here:

- its budget is ``context.get_remaining_time_in_millis()`` less ``OUTLAST_HANDOFF_MARGIN``;
- its lease lasts until the invocation's deadline plus ``app.lease_margin``, so no heartbeat runs:
  Lambda kills the process at the deadline, and the lease runs out soon after;
- a hand-off is an asynchronous invoke of the *qualified* ARN this invocation was called by (the
  next leg runs the same code version), carrying ``{"outlast": {"action": "continue", ...}}``;
- a stale or duplicate continuation finds the lease refused and returns ``skipped``.

What raises and what returns (Lambda retries an async invocation that raises, then sends it to the
on-failure destination):

- store errors (``StateStoreError``: unreachable, throttled, corrupt) raise: a retry may succeed,
  and a corrupt run must be seen;
- an event that names no run it can drive raises ``BadEventError``: it ends in the dead-letter
  queue instead of vanishing (from SQS, the message is reported as a batch-item failure, so the
  queue's redrive policy does the same);
- the run's own failure (an exception from the durable function) is committed to the run and the
  handler returns normally: retrying would replay to the same failure.

A hand-off whose invoke fails is not raised either: the run is already handed off in the store,
a retry of this event would be stale, and the sweeper re-drives the run (it is due at once).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from outlast.budget import Budget
from outlast.platforms.lambda_events import (
    BadEventError,
    Continuation,
    Request,
    StartRequest,
    classify,
    continuation_event,
    parse_eventbridge,
    parse_outlast,
    parse_request,
)
from statestore import RunNotFoundError, StateStoreError

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics, Tracer

    from outlast.app import App
    from outlast.context import Context
    from outlast.leg import LegOutcome

__all__ = [
    "EventMapper",
    "InvokeClient",
    "LambdaDispatcher",
    "LambdaHandler",
    "Observability",
    "default_lambda_client",
    "qualified_arn",
]

EventMapper = Callable[[dict[str, Any]], StartRequest | None]

log = logging.getLogger("outlast.lambda")

# The runtime's loggers whose lines are routed through the powertools logger during a leg.
_RUNTIME_LOGGER = "outlast"


class InvokeClient(Protocol):
    """The one call of a boto3 Lambda client that Outlast uses."""

    def invoke(self, **kwargs: Any) -> Any: ...


_default_client: InvokeClient | None = None


def default_lambda_client() -> InvokeClient:
    """A boto3 Lambda client, made once per process (a warm container reuses it)."""
    global _default_client  # noqa: PLW0603 - one client per container, made on first hand-off
    if _default_client is None:
        import boto3
        from botocore.config import Config

        _default_client = boto3.client(
            "lambda",
            config=Config(
                retries={"mode": "standard", "max_attempts": 4},
                connect_timeout=3,
                read_timeout=10,
            ),
        )
    return _default_client


def qualified_arn(context: Any) -> str:
    """The ARN to hand off to: the invoked ARN, pinned to this version if it was unqualified.

    ``arn:aws:lambda:R:A:function:NAME`` has 7 parts; with a version or alias it has 8. An
    invocation through a published version hands off to that version, so a deploy in the middle
    of a run does not change the code its journal replays through.
    """
    arn = str(context.invoked_function_arn)
    if arn.count(":") >= 7:
        return arn
    version = str(getattr(context, "function_version", "") or "$LATEST")
    return f"{arn}:{version}"


class LambdaDispatcher:
    """``Dispatcher`` over asynchronous Lambda invokes of ``function`` (a name or an ARN)."""

    def __init__(self, client: InvokeClient | Callable[[], InvokeClient], function: str) -> None:
        self._client = client
        self.function = function
        self.sent = 0
        self.failed = 0

    def continue_run(self, run_id: str, leg: int) -> None:
        self.send(continuation_event(run_id, leg))

    def recover(self, run_id: str) -> bool:
        """Ask for whatever leg is next (the sweeper's and the API's wake-up)."""
        return self.send(continuation_event(run_id, None))

    def send(self, event: dict[str, Any]) -> bool:
        """Invoke asynchronously; False (logged) if Lambda did not accept the event."""
        client = self._client() if callable(self._client) else self._client
        payload = json.dumps(event, separators=(",", ":")).encode()
        try:
            response = client.invoke(
                FunctionName=self.function, InvocationType="Event", Payload=payload
            )
        except Exception as exc:  # noqa: BLE001 - botocore's errors; the sweeper re-drives the run
            self.failed += 1
            log.error("could not invoke %s with %s: %s", self.function, event, exc)
            return False
        status = response.get("StatusCode") if isinstance(response, dict) else None
        if status != 202:
            self.failed += 1
            log.error("invoking %s with %s answered status %s", self.function, event, status)
            return False
        self.sent += 1
        return True


class _LegFields(logging.Filter):
    """Stamps run_id, leg and seq on every record while a leg runs (lines that lack them)."""

    def __init__(self) -> None:
        super().__init__()
        self.run_id: str | None = None
        self.leg: int | None = None
        self.ctx: Context | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if self.run_id is not None:
            fields.setdefault("run_id", self.run_id)
        if self.leg is not None:
            fields.setdefault("leg", self.leg)
        if self.ctx is not None:
            fields.setdefault("seq", self.ctx.seq)
        return True

    def clear(self) -> None:
        self.run_id, self.leg, self.ctx = None, None, None


class Observability:
    """Powertools Logger, Metrics (EMF) and Tracer for the legs of one function.

    Tracing is off outside Lambda (powertools turns it off when ``LAMBDA_TASK_ROOT`` is unset,
    under ``sam local``, or with ``POWERTOOLS_TRACE_DISABLED=true``), so a laptop needs no X-Ray
    daemon.
    """

    def __init__(
        self,
        service: str | None = None,
        *,
        logger: Logger | None = None,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        from aws_lambda_powertools import Logger, Metrics, Tracer
        from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
            AmazonCloudWatchEMFProvider,
        )

        service = service or os.environ.get("POWERTOOLS_SERVICE_NAME") or "outlast-lambda"
        namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Outlast"
        self.logger = logger or Logger(service=service)
        # A provider with its own sets: powertools' Metrics otherwise shares one set per process.
        self.metrics = metrics or Metrics(
            provider=AmazonCloudWatchEMFProvider(namespace=namespace, service=service)
        )
        self.tracer = tracer or Tracer(service=service)
        self._fields = _LegFields()

    @property
    def tracing(self) -> bool:
        return not bool(self.tracer._config.get("disabled"))

    @contextmanager
    def invocation(self) -> Iterator[None]:
        """Route the runtime's log lines through the JSON logger; flush metrics at the end."""
        handler = self.logger.registered_handler
        runtime = logging.getLogger(_RUNTIME_LOGGER)
        # A service named "outlast" makes powertools' logger the runtime's logger itself: its
        # lines reach the handler already.
        route = self.logger.name.split(".")[0] != _RUNTIME_LOGGER
        saved = (runtime.level, runtime.propagate)
        handler.addFilter(self._fields)
        if route:
            runtime.addHandler(handler)
            # Lambda's own root handler would print every runtime line a second time, as text.
            runtime.propagate = False
            runtime.setLevel(self.logger.log_level)
        try:
            yield
        finally:
            if route:
                runtime.removeHandler(handler)
                runtime.setLevel(saved[0])
                runtime.propagate = saved[1]
            handler.removeFilter(self._fields)
            self._fields.clear()
            if self.metrics.provider.metric_set:
                self.metrics.flush_metrics()

    @contextmanager
    def leg(self, run_id: str) -> Iterator[Callable[[Context], None]]:
        """Scope of one leg: yields the ``on_context`` hook for ``run_leg``."""
        self._fields.run_id = run_id

        def attach(ctx: Context) -> None:
            self._fields.leg, self._fields.ctx = ctx.leg, ctx
            if self.tracing:
                ctx.step_hook = self._step_subsegment

        try:
            if not self.tracing:
                yield attach
                return
            with self.tracer.provider.in_subsegment(name=f"## leg {run_id}") as segment:
                segment.put_annotation(key="run_id", value=run_id)
                yield attach
                if self._fields.ctx is not None:
                    segment.put_annotation(key="leg", value=str(self._fields.ctx.leg))
        finally:
            self._fields.clear()

    @contextmanager
    def _step_subsegment(self, name: str, attempt: int, key: str) -> Iterator[None]:
        # X-Ray keeps its current segment per thread: ctx.map's worker threads have none, so
        # only steps on the leg's own thread get a subsegment of their own.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        with self.tracer.provider.in_subsegment(name=f"step {name}"[:200]) as subsegment:
            subsegment.put_annotation(key="attempt", value=str(attempt))
            subsegment.put_metadata(key="step_key", value=key)
            yield

    def record(self, outcome: LegOutcome, ctx_stats: Any | None) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        add = self.metrics.add_metric
        if outcome.status == "skipped":
            add(name="LegsSkipped", unit=MetricUnit.Count, value=1)
            return
        add(name="Legs", unit=MetricUnit.Count, value=1)
        add(name="StepsExecuted", unit=MetricUnit.Count, value=outcome.steps_executed)
        add(name="StepsReplayed", unit=MetricUnit.Count, value=outcome.steps_replayed)
        add(name="Commits", unit=MetricUnit.Count, value=outcome.commits)
        if outcome.status == "handed_off":
            add(name="HandOffs", unit=MetricUnit.Count, value=1)
        elif outcome.status == "completed":
            add(name="RunsSucceeded", unit=MetricUnit.Count, value=1)
        elif outcome.status == "failed":
            add(name="RunsFailed", unit=MetricUnit.Count, value=1)
        if ctx_stats is not None and ctx_stats.commits:
            latency_ms = 1000.0 * ctx_stats.commit_seconds / ctx_stats.commits
            add(name="CommitLatency", unit=MetricUnit.Milliseconds, value=round(latency_ms, 3))


class LambdaHandler:
    """``handler(event, context)`` for a function whose invocations are legs of ``app``'s runs.

    Made around an app, ``handler = LambdaHandler(app, ...)``: the platform takes the app, the app
    knows no platform. ``lambda_client`` may be replaced (tests capture invokes).
    """

    def __init__(
        self,
        app: App,
        *,
        event_mapper: EventMapper | None = None,
        lambda_client: InvokeClient | None = None,
        service: str | None = None,
        observability: Observability | None = None,
        min_leg_seconds: float = 5.0,
    ) -> None:
        self.app = app
        self.event_mapper = event_mapper
        self.lambda_client = lambda_client
        self.min_leg_seconds = min_leg_seconds
        self.obs = observability or Observability(service)

    def _client(self) -> InvokeClient:
        return self.lambda_client if self.lambda_client is not None else default_lambda_client()

    # ------------------------------------------------------------------ entry point

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        with self.obs.invocation():
            kind = classify(event)
            if kind == "sqs":
                return self._sqs_batch(event, context)
            request = self._request(event, kind)
            if request is None:
                self.obs.logger.info("event ignored: the event mapper named no run")
                return {"status": "ignored"}
            run_id, expect_leg = self._admit(request)
            return self._leg(run_id, expect_leg, context).model_dump(mode="json")

    def _request(self, event: dict[str, Any], kind: str) -> Request | None:
        if kind == "outlast":
            return parse_outlast(event["outlast"])
        if self.event_mapper is not None:
            return self.event_mapper(event)
        if kind == "eventbridge":
            return parse_eventbridge(event)
        raise BadEventError(
            "not an Outlast event (no 'outlast' member, not SQS, not EventBridge); give "
            "LambdaHandler an event_mapper to map this kind of event to a run"
        )

    def _admit(self, request: Request) -> tuple[str, int | None]:
        """Create the run of a start request; the leg number the leg must be."""
        if isinstance(request, Continuation):
            return request.run_id, request.leg
        from outlast.errors import FunctionNotFoundError
        from statestore import RunConflictError

        try:
            run_id = self.app.start(request.function, request.input, run_id=request.run_id)
        except (FunctionNotFoundError, RunConflictError) as exc:
            raise BadEventError(str(exc)) from exc
        # Leg 1 only: a re-delivered start of a run that has moved on must not run a leg.
        return run_id, 1

    # ------------------------------------------------------------------ one leg

    def _leg(self, run_id: str, expect_leg: int | None, context: Any) -> LegOutcome:
        from outlast.leg import LegOutcome

        budget = Budget.from_lambda_context(context, margin=self.app.handoff_margin)
        dispatcher = LambdaDispatcher(self._client, qualified_arn(context))
        owner = f"lambda:{getattr(context, 'aws_request_id', '?')}"
        seen: list[Context] = []
        with self.obs.leg(run_id) as attach:

            def on_context(ctx: Context) -> None:
                seen.append(ctx)
                attach(ctx)

            try:
                outcome = self.app.run_leg(
                    run_id,
                    budget=budget,
                    dispatcher=dispatcher,
                    expect_leg=expect_leg,
                    owner=owner,
                    on_context=on_context,
                )
            except RunNotFoundError:
                # Deleted (retention) or never created: nothing will ever make this event valid.
                self.obs.logger.warning("continuation for a run that does not exist: ignored")
                return LegOutcome(run_id=run_id, status="skipped", detail="no such run")
            self.obs.record(outcome, seen[0].stats if seen else None)
            if dispatcher.failed:
                from aws_lambda_powertools.metrics import MetricUnit

                self.obs.metrics.add_metric(
                    name="HandOffDispatchFailures", unit=MetricUnit.Count, value=dispatcher.failed
                )
            self.obs.logger.info(
                "leg ended",
                extra={
                    "status": outcome.status,
                    "detail": outcome.detail,
                    "steps_executed": outcome.steps_executed,
                    "steps_replayed": outcome.steps_replayed,
                    "next_leg": outcome.next_leg,
                },
            )
        return outcome

    # ------------------------------------------------------------------ SQS

    def _sqs_batch(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """Start every message's run; run first legs while time allows, dispatch the rest.

        A message fails (and comes back, or goes to the queue's DLQ) only if its run could not
        be created or its leg hit a store error; a run that fails on its own has been handled.
        """
        failures: list[str] = []
        admitted: list[tuple[str, str, int | None]] = []
        for record in event["Records"]:
            message_id = str(record.get("messageId", ""))
            try:
                request = (
                    self.event_mapper(record)
                    if self.event_mapper is not None
                    else parse_request(record.get("body", ""))
                )
                if request is None:
                    continue
                run_id, expect_leg = self._admit(request)
            except (BadEventError, StateStoreError, ValueError) as exc:
                self.obs.logger.error(
                    "message rejected", extra={"message_id": message_id, "error": str(exc)}
                )
                failures.append(message_id)
                continue
            admitted.append((message_id, run_id, expect_leg))

        budget = Budget.from_lambda_context(context, margin=self.app.handoff_margin)
        later = LambdaDispatcher(self._client, qualified_arn(context))
        for message_id, run_id, expect_leg in admitted:
            if budget.remaining() - budget.margin < self.min_leg_seconds:
                # Too little time for a useful leg here: let a fresh invocation run it.
                sent = later.send(continuation_event(run_id, expect_leg))
                if not sent:
                    failures.append(message_id)
                continue
            try:
                self._leg(run_id, expect_leg, context)
            except Exception as exc:
                self.obs.logger.exception(
                    "leg failed; the message will be retried",
                    extra={"message_id": message_id, "run_id": run_id, "error": str(exc)},
                )
                failures.append(message_id)
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}


def monotonic_deadline(context: Any) -> float:
    """The invocation's deadline on the ``time.monotonic()`` clock."""
    return time.monotonic() + float(context.get_remaining_time_in_millis()) / 1000.0
