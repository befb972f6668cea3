"""Outlast on AWS Lambda: one invocation runs one leg of a run, and hands off by invoking itself.

How a leg behaves here:

- its budget is ``context.get_remaining_time_in_millis()`` less ``OUTLAST_HANDOFF_MARGIN``;
- its lease lasts until the invocation's deadline plus ``app.lease_margin``, so no heartbeat runs:
  Lambda kills the process at the deadline, and the lease runs out soon after;
- a hand-off is an asynchronous invoke of this invocation's function *version* (``pinned_arn``:
  the version, not the alias it was called through, so the next leg runs the same code),
  carrying ``{"outlast": {"action": "continue", ...}}``;
- a run records the version it started on (the ``lambda_version`` tag); a leg delivered to
  another version (a sweeper re-drive or DLQ redrive through the alias after a deploy) is
  forwarded to the run's version instead of running, so a deploy never changes the code a
  journal replays through;
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

import importlib
import json
import logging
import os
import sys
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
    from statestore import HotTier

__all__ = [
    "AGENT_VERSION_ENV",
    "APP_ENV",
    "PIN_TAG",
    "EventMapper",
    "InvokeClient",
    "LambdaDispatcher",
    "LambdaHandler",
    "Observability",
    "agent_handler",
    "api_handler",
    "default_lambda_client",
    "load_app",
    "pin_of",
    "pinned_arn",
    "qualified_arn",
    "repin",
    "sweeper_handler",
]

#: ``package.module:app`` (or ``package.module``, meaning its ``app``): the app the generic
#: handlers serve, loaded once per container.
APP_ENV = "OUTLAST_APP"
#: The agent function's version ARN that runs started outside the agent (the API) are pinned to.
AGENT_VERSION_ENV = "OUTLAST_AGENT_VERSION_ARN"
#: The run tag that records the qualified ARN (function version) a run started on.
PIN_TAG = "lambda_version"

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


def pinned_arn(context: Any) -> str:
    """The ARN of the function *version* running this invocation.

    Invoked through an alias (``...:function:NAME:live``), this is the version the alias pointed
    at (``...:function:NAME:7``), not the alias: after a deploy moves the alias, a run's next leg
    must still run the code its journal was written by. Without a known version, the invoked ARN
    as ``qualified_arn`` gives it.
    """
    arn = str(context.invoked_function_arn)
    version = str(getattr(context, "function_version", "") or "")
    if not version:
        return qualified_arn(context)
    base = ":".join(arn.split(":")[:7])
    return f"{base}:{version}"


def pin_of(tags: dict[str, str] | None) -> str | None:
    """The function version ARN a run is pinned to, if it recorded one."""
    pin = (tags or {}).get(PIN_TAG)
    return pin or None


def repin(hot: HotTier, run_id: str, version: str) -> None:
    """Move run ``run_id`` to function version ``version`` (a qualified ARN), on purpose.

    Its next legs run there and replay its journal through that code. It takes the run's lease
    for one fenced write of the tag, so the run must be runnable (pending, or re-opened by a
    retry); the write counts as a leg that did nothing.
    """
    from datetime import timedelta

    from statestore import RunUpdate

    lease = hot.acquire_lease(run_id, "outlast-repin", timedelta(seconds=30))
    hot.append(run_id, lease.token, (), RunUpdate(tags={PIN_TAG: version}, release_lease=True))


class LambdaDispatcher:
    """``Dispatcher`` over asynchronous Lambda invokes of ``function`` (a name or an ARN).

    ``pins`` maps a run id to the function version the run is pinned to (``pin_of`` its tags),
    or None; an event about a pinned run goes to that version instead of ``function``.
    """

    def __init__(
        self,
        client: InvokeClient | Callable[[], InvokeClient],
        function: str,
        *,
        pins: Callable[[str], str | None] | None = None,
    ) -> None:
        self._client = client
        self.function = function
        self.pins = pins
        self.sent = 0
        self.failed = 0

    def target(self, event: dict[str, Any]) -> str:
        """The function (version) ``event`` goes to."""
        if self.pins is None:
            return self.function
        body = event.get("outlast")
        run_id = body.get("run_id") if isinstance(body, dict) else None
        if not isinstance(run_id, str):
            return self.function
        try:
            pinned = self.pins(run_id)
        except StateStoreError as exc:
            log.warning("could not read the version of run %s: %s", run_id, exc)
            pinned = None
        return pinned or self.function

    def continue_run(self, run_id: str, leg: int) -> None:
        self.send(continuation_event(run_id, leg))

    def recover(self, run_id: str) -> bool:
        """Ask for whatever leg is next (the sweeper's and the API's wake-up)."""
        return self.send(continuation_event(run_id, None))

    def send(self, event: dict[str, Any]) -> bool:
        """Invoke asynchronously; False (logged) if Lambda did not accept the event."""
        client = self._client() if callable(self._client) else self._client
        payload = json.dumps(event, separators=(",", ":")).encode()
        function = self.target(event)
        try:
            response = client.invoke(FunctionName=function, InvocationType="Event", Payload=payload)
        except Exception as exc:  # noqa: BLE001 - botocore's errors; the sweeper re-drives the run
            self.failed += 1
            log.error("could not invoke %s with %s: %s", function, event, exc)
            return False
        status = response.get("StatusCode") if isinstance(response, dict) else None
        if status != 202:
            self.failed += 1
            log.error("invoking %s with %s answered status %s", function, event, status)
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


def _tracing_enabled() -> bool:
    """Powertools' rule for an enabled Tracer, without importing the X-Ray SDK to apply it."""
    flag = os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower()
    if flag in ("1", "true", "yes", "on", "y", "t"):
        return False
    if not os.environ.get("LAMBDA_TASK_ROOT"):
        return False
    return not (os.environ.get("AWS_SAM_LOCAL") or os.environ.get("AWS_CHALICE_CLI_MODE"))


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
        from aws_lambda_powertools import Logger, Metrics
        from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
            AmazonCloudWatchEMFProvider,
        )

        service = service or os.environ.get("POWERTOOLS_SERVICE_NAME") or "outlast-lambda"
        namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Outlast"
        self.service = service
        self.logger = logger or Logger(service=service)
        # A provider with its own sets: powertools' Metrics otherwise shares one set per process.
        self.metrics = metrics or Metrics(
            provider=AmazonCloudWatchEMFProvider(namespace=namespace, service=service)
        )
        # Made on first use: building a Tracer imports aws_xray_sdk (~0.1-0.2 s), which a cold
        # start with tracing off (locally, under sam local) never needs.
        self._tracer = tracer
        self._fields = _LegFields()

    @property
    def tracer(self) -> Tracer:
        if self._tracer is None:
            from aws_lambda_powertools import Tracer

            self._tracer = Tracer(service=self.service)
        return self._tracer

    @property
    def tracing(self) -> bool:
        if self._tracer is not None:
            return not bool(self._tracer._config.get("disabled"))
        return _tracing_enabled()

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
            run_id, expect_leg = self._admit(request, context)
            forwarded = self._forward(run_id, expect_leg, context)
            if forwarded is not None:
                return forwarded
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

    def _admit(self, request: Request, context: Any) -> tuple[str, int | None]:
        """Create the run of a start request; the leg number the leg must be."""
        if isinstance(request, Continuation):
            return request.run_id, request.leg
        from outlast.errors import FunctionNotFoundError
        from statestore import RunConflictError

        try:
            # The run remembers the published version it started on; all its legs run there.
            # ($LATEST is no version: its code changes under the run anyway.)
            here = pinned_arn(context)
            run_id = self.app.start(
                request.function,
                request.input,
                run_id=request.run_id,
                tags=None if here.endswith(":$LATEST") else {PIN_TAG: here},
            )
        except (FunctionNotFoundError, RunConflictError) as exc:
            raise BadEventError(str(exc)) from exc
        # Leg 1 only: a re-delivered start of a run that has moved on must not run a leg.
        return run_id, 1

    def _forward(self, run_id: str, expect_leg: int | None, context: Any) -> dict[str, Any] | None:
        """Send a leg of a run pinned to another version there; the answer, or None to run it.

        A run's later legs normally reach its version directly (hand-offs, and re-drives that
        read the pin); this catches the rest, such as a dead-letter redrive through the alias.
        """
        here = pinned_arn(context)
        invoked = str(getattr(context, "invoked_function_arn", "")).split(":")
        if len(invoked) > 7 and invoked[7].isdigit():
            # Sent to a numbered version on purpose (hand-offs, the sweeper, the API all send
            # runs to their pinned version): no read needed on the hot path.
            return None
        try:
            record = self.app.store.hot.find_run(run_id)
        except StateStoreError:
            return None  # the leg itself will meet the store's trouble and say so
        pin = pin_of(record.tags) if record is not None else None
        if pin is None or pin == here or pin.rsplit(":", 1)[-1] == here.rsplit(":", 1)[-1]:
            return None
        sent = LambdaDispatcher(self._client, pin).send(continuation_event(run_id, expect_leg))
        self.obs.logger.info(
            "leg forwarded to the run's version", extra={"run_id": run_id, "to": pin, "sent": sent}
        )
        if not sent:
            # Raised, so Lambda retries this event (then dead-letters it): the leg must not vanish.
            raise RuntimeError(f"could not forward run {run_id!r} to its version {pin}")
        return {"run_id": run_id, "status": "forwarded", "to": pin, "leg": expect_leg}

    # ------------------------------------------------------------------ one leg

    def _leg(self, run_id: str, expect_leg: int | None, context: Any) -> LegOutcome:
        from outlast.leg import LegOutcome

        budget = Budget.from_lambda_context(context, margin=self.app.handoff_margin)
        dispatcher = LambdaDispatcher(self._client, pinned_arn(context))
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
                run_id, expect_leg = self._admit(request, context)
            except (BadEventError, StateStoreError, ValueError) as exc:
                self.obs.logger.error(
                    "message rejected", extra={"message_id": message_id, "error": str(exc)}
                )
                failures.append(message_id)
                continue
            admitted.append((message_id, run_id, expect_leg))

        budget = Budget.from_lambda_context(context, margin=self.app.handoff_margin)
        later = LambdaDispatcher(self._client, pinned_arn(context))
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


# ---------------------------------------------------------------------- the generic handlers

_apps: dict[str, App] = {}
_handlers: dict[str, Any] = {}


def load_app(spec: str | None = None) -> App:
    """The app ``spec`` (default ``$OUTLAST_APP``) names: ``package.module:app``, loaded once.

    The attribute may be an ``App`` or one of its durable functions (its app is served). The
    function's own directory (``LAMBDA_TASK_ROOT``, or the working directory) is importable.
    """
    from outlast.app import App, DurableFunction

    spec = (spec or os.environ.get(APP_ENV) or "").strip()
    if not spec:
        raise RuntimeError(
            f"{APP_ENV} names no app: set it to package.module:app (template parameter AppModule)"
        )
    if spec in _apps:
        return _apps[spec]
    module_name, sep, attr = spec.partition(":")
    attr = attr if sep else "app"
    _model_key_from_secret()
    root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            f"{APP_ENV}={spec}: cannot import {module_name!r} ({exc}); is the module in the "
            "function's code (template parameter AppCodeUri)?"
        ) from exc
    found = getattr(module, attr, None)
    if isinstance(found, DurableFunction):
        found = found.app
    if not isinstance(found, App):
        raise RuntimeError(
            f"{APP_ENV}={spec}: {module_name}.{attr} is "
            f"{'missing' if found is None else type(found).__name__}, not an outlast App"
        )
    _apps[spec] = found
    return found


#: The ARN of a Secrets Manager secret holding the OpenAI-compatible endpoint's API key.
MODEL_KEY_SECRET_ENV = "OUTLAST_OPENAI_API_KEY_SECRET_ARN"  # noqa: S105 - a variable name


def _model_key_from_secret() -> None:
    """Put the model API key named by ``OUTLAST_OPENAI_API_KEY_SECRET_ARN`` in this process's
    ``OPENAI_API_KEY`` (where ``model_from_env`` looks), read from Secrets Manager once per
    container: the key is never in the function's configuration.

    The secret's string is the key itself, or a JSON object with ``api_key``.
    """
    arn = os.environ.get(MODEL_KEY_SECRET_ENV)
    if not arn or os.environ.get("OPENAI_API_KEY"):
        return
    import boto3

    secret = boto3.client("secretsmanager").get_secret_value(SecretId=arn)
    text = str(secret.get("SecretString") or "").strip()
    if text.startswith("{"):
        text = str(json.loads(text).get("api_key") or "")
    if not text:
        raise RuntimeError(f"secret {arn} holds no API key (a string, or JSON with api_key)")
    os.environ["OPENAI_API_KEY"] = text


def agent_handler(spec: str | None = None) -> LambdaHandler:
    """The agent function's handler around ``load_app(spec)``, made once per container."""
    made = _handlers.get("agent")
    if made is None:
        made = _handlers["agent"] = LambdaHandler(
            load_app(spec), service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "outlast-agent"
        )
    return made


def api_handler(spec: str | None = None) -> Any:
    """The API function's handler (``outlast.platforms.api.ApiHandler``) around
    ``load_app(spec)``, made once per container."""
    made = _handlers.get("api")
    if made is None:
        from outlast.platforms.api import ApiHandler

        made = _handlers["api"] = ApiHandler(load_app(spec))
    return made


def sweeper_handler() -> Any:
    """The sweeper function's handler (``outlast.platforms.sweeper.SweeperHandler``)."""
    made = _handlers.get("sweeper")
    if made is None:
        from outlast.platforms.sweeper import SweeperHandler

        made = _handlers["sweeper"] = SweeperHandler()
    return made
