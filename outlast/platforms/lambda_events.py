"""The events an Outlast Lambda function understands, and the events it sends itself.

Two shapes are Outlast's own, both under a top-level ``"outlast"`` key:

- start: ``{"outlast": {"action": "start", "function": F, "run_id": R?, "input": X?}}``
- continue: ``{"outlast": {"action": "continue", "run_id": R, "leg": N?}}``. With ``leg`` it is a
  hand-off's continuation and runs only as leg N (a stale or duplicate copy does nothing); without
  it, it is a recovery (from the sweeper or the API) that runs whatever leg is next.

Anything else (SQS batches, EventBridge events, other sources) is mapped to a ``StartRequest`` by
a user function, or by the defaults here: an SQS body or an EventBridge ``detail`` that holds a
start request (``{"function", "run_id"?, "input"?}``) or an Outlast event.

Only the standard library and pydantic are used, so the API and the sweeper can build events
without importing the runtime.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from statestore import validate_run_id

__all__ = [
    "BadEventError",
    "Continuation",
    "EventKind",
    "StartRequest",
    "classify",
    "continuation_event",
    "parse_eventbridge",
    "parse_outlast",
    "parse_request",
    "start_event",
]

EventKind = Literal["outlast", "sqs", "eventbridge", "other"]


class BadEventError(ValueError):
    """An event that names no run this function can drive. Retrying it cannot help."""


class StartRequest(BaseModel):
    """Start (idempotently) a run of ``function`` and run its first leg."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: str = Field(min_length=1, max_length=256)
    run_id: str | None = None
    input: Any = None

    @field_validator("run_id")
    @classmethod
    def _legal_run_id(cls, value: str | None) -> str | None:
        return None if value is None else validate_run_id(value)


class Continuation(BaseModel):
    """Run the next leg of an existing run: leg ``leg`` exactly, or any next leg if None."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    leg: int | None = Field(default=None, ge=1)

    @field_validator("run_id")
    @classmethod
    def _legal_run_id(cls, value: str) -> str:
        return validate_run_id(value)


Request = StartRequest | Continuation


def start_event(request: StartRequest) -> dict[str, Any]:
    return {"outlast": {"action": "start", **request.model_dump(exclude_none=True)}}


def continuation_event(run_id: str, leg: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "continue", "run_id": run_id}
    if leg is not None:
        body["leg"] = leg
    return {"outlast": body}


def classify(event: object) -> EventKind:
    if not isinstance(event, dict):
        return "other"
    if "outlast" in event:
        return "outlast"
    records = event.get("Records")
    if (
        isinstance(records, list)
        and records
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)
    ):
        return "sqs"
    if "detail-type" in event and "source" in event:
        return "eventbridge"
    return "other"


def parse_outlast(body: object) -> Request:
    """The request inside an ``{"outlast": ...}`` event (pass the inner object)."""
    if not isinstance(body, dict):
        raise BadEventError(f"the 'outlast' member must be an object, not {type(body).__name__}")
    fields = dict(body)
    action = fields.pop("action", None)
    try:
        if action == "start":
            return StartRequest.model_validate(fields)
        if action == "continue":
            return Continuation.model_validate(fields)
    except ValidationError as exc:
        raise BadEventError(f"bad outlast {action} event: {_short(exc)}") from None
    raise BadEventError(f"unknown outlast action {action!r} (expected 'start' or 'continue')")


def parse_request(body: object) -> Request:
    """A start request or an Outlast event, as an SQS body or an EventBridge detail holds it."""
    if isinstance(body, str | bytes):
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise BadEventError(f"the message body is not JSON: {exc}") from None
    if isinstance(body, dict) and "outlast" in body:
        return parse_outlast(body["outlast"])
    try:
        return StartRequest.model_validate(body)
    except ValidationError as exc:
        raise BadEventError(f"not a start request: {_short(exc)}") from None


def parse_eventbridge(event: dict[str, Any]) -> Request:
    """The default mapping of an EventBridge event: its ``detail`` is the request."""
    detail = event.get("detail")
    if not isinstance(detail, dict) or not ("function" in detail or "outlast" in detail):
        raise BadEventError(
            f"EventBridge event {event.get('detail-type')!r} from {event.get('source')!r} names "
            "no run: put a start request in its detail, or give LambdaHandler an event_mapper"
        )
    return parse_request(detail)


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
    )
