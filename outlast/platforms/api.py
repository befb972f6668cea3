"""The runs HTTP API (API Gateway HTTP API, payload 2.0), served by powertools' event handler.

- ``POST /runs``, body ``{"function", "input"?, "run_id"?}``: create the run (idempotent on
  run_id and input), pinned to the agent version ``OUTLAST_AGENT_VERSION_ARN`` names when set,
  and dispatch its first leg to the agent function; 202. Later dispatches (signal wakes,
  retries) go to the version the run is pinned to.
- ``GET /runs/{run_id}``: status, result or error, counters; 200.
- ``POST /runs/{run_id}/signals/{name}``, body ``{"payload": ...}`` or empty: send the signal,
  and dispatch a leg if the signal woke the run; 202.
- ``POST /runs/{run_id}/cancel``: cancel; 200 with the run's view.
- ``POST /runs/{run_id}/retry``, body ``{"from_seq"?: N, "as"?: "NEW_ID"}`` or empty: re-open a
  failed or blocked run (its journal kept up to the failing entry, or to ``from_seq``), or with
  ``as`` fork it (any status) into a new run that keeps entries ``0..from_seq-1``; dispatch a
  leg of the run that continues; 202. ``"version": "current"`` also moves the run that
  continues to the agent version deployed with this API (``OUTLAST_AGENT_VERSION_ARN``): its
  journal is then replayed by the new code, on purpose (runs otherwise keep their version).
- ``DELETE /runs/{run_id}``: remove the run from both tiers (its id may then be reused); 200.

Bad requests get a JSON ``{"error": {"code", "type", "message"}}`` and change nothing in the
store:

- 400: malformed JSON, a body of the wrong shape, an illegal run id or signal name, an unknown
  function, a ``from_seq`` outside the journal;
- 404: no such run;
- 409: a run id taken by a run of another function or input, a signal to a run that ended, a
  retry of a run that is not failed or blocked, a fork onto an id that exists;
- 413: a body over ``MAX_BODY_BYTES`` (256 KiB, counted after base64 decoding, when API
  Gateway encoded it).

A request that fails inside (a store that cannot be reached: 503; anything else: 500) answers
the same shape, naming the exception's type and message. Tracebacks are not sent by default,
neither for those nor in a failed run's ``error``: they show code and paths to whoever may call
the API. ``ApiHandler(tracebacks=True)`` or ``OUTLAST_API_TRACEBACKS=1`` sends them.

Every check that can refuse a request runs before the first write: a large input or payload is
written to the cold tier before its hot record, so a refusal after that would leave a stray blob
(garbage, never corruption, but also never needed).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import traceback
from typing import TYPE_CHECKING, Any

from outlast.errors import InvalidInputError
from outlast.platforms.aws_lambda import (
    AGENT_VERSION_ENV,
    PIN_TAG,
    InvokeClient,
    LambdaDispatcher,
    default_lambda_client,
    pin_of,
    repin,
)
from statestore import (
    InvalidRunIdError,
    RunConflictError,
    RunEndedError,
    RunNotFoundError,
    StateStoreError,
    StoreUnavailableError,
    validate_run_id,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

    from outlast.app import App, RunView

__all__ = ["MAX_BODY_BYTES", "ApiError", "ApiHandler"]

log = logging.getLogger("outlast.api")

MAX_BODY_BYTES = 256 * 1024
TRACEBACKS_ENV = "OUTLAST_API_TRACEBACKS"
_SIGNAL_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_START_FIELDS = frozenset({"function", "input", "run_id"})
_RETRY_FIELDS = frozenset({"from_seq", "as", "version"})
_MAX_TRACEBACK = 32 * 1024


class ApiError(Exception):
    """A request refused with ``status``; nothing was written. ``type`` names what refused it:
    the store's exception when there is one, else the kind of bad input."""

    def __init__(
        self, status: int, code: str, message: str, *, error_type: str = "BadRequest"
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = error_type


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class ApiHandler:
    """``handler(event, context)`` for the API function of ``app``.

    Legs are dispatched to ``OUTLAST_AGENT_FUNCTION`` (or ``agent_function``).
    ``lambda_client`` may be replaced (tests capture the invokes).
    """

    def __init__(
        self,
        app: App,
        *,
        agent_function: str | None = None,
        lambda_client: InvokeClient | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        tracebacks: bool | None = None,
    ) -> None:
        self.app = app
        self.agent_function = agent_function
        self.lambda_client = lambda_client
        self.max_body_bytes = max_body_bytes
        #: Send tracebacks in error answers and run views; default ``OUTLAST_API_TRACEBACKS``.
        self.tracebacks = _env_flag(TRACEBACKS_ENV) if tracebacks is None else tracebacks
        self.resolver = self._routes()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return self.resolver.resolve(event, context)

    def _dispatcher(self) -> LambdaDispatcher:
        function = self.agent_function or os.environ.get("OUTLAST_AGENT_FUNCTION")
        if not function:
            raise RuntimeError("OUTLAST_AGENT_FUNCTION names no agent function to dispatch to")
        client = self.lambda_client
        hot = self.app.store.hot

        def pin(run_id: str) -> str | None:
            record = hot.find_run(run_id)
            return pin_of(record.tags) if record is not None else None

        # A run's legs go to the version it is pinned to, whatever the alias says now.
        return LambdaDispatcher(
            client if client is not None else default_lambda_client, function, pins=pin
        )

    # ------------------------------------------------------------------ routes

    def _routes(self) -> APIGatewayHttpResolver:
        from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
        from aws_lambda_powertools.event_handler.exceptions import ServiceError

        api = APIGatewayHttpResolver()

        @api.exception_handler(ApiError)  # type: ignore[untyped-decorator]
        def refused(exc: ApiError) -> Response[str]:
            event = api.current_event
            log.info("refused %s %s: %s", event.http_method, event.path, exc)
            return _json(
                exc.status, {"error": {"code": exc.code, "type": exc.type, "message": exc.message}}
            )

        @api.exception_handler(ServiceError)  # type: ignore[untyped-decorator]
        def unrouted(exc: ServiceError) -> Response[str]:
            # Powertools' own answers (no such route): kept, in this API's shape.
            code = "no_route" if exc.status_code == 404 else "bad_request"
            body = {"code": code, "type": type(exc).__name__, "message": exc.msg or "no such route"}
            return _json(exc.status_code, {"error": body})

        @api.exception_handler(Exception)  # type: ignore[untyped-decorator]
        def failed(exc: Exception) -> Response[str]:
            event = api.current_event
            log.error(
                "%s %s failed: %s: %s",
                event.http_method,
                event.path,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
            if isinstance(exc, StoreUnavailableError):
                status, code = 503, "store_unavailable"
            elif isinstance(exc, StateStoreError):
                status, code = 500, "store_error"
            else:
                status, code = 500, "internal_error"
            error: dict[str, Any] = {
                "code": code,
                "type": type(exc).__qualname__,
                "message": str(exc),
            }
            if self.tracebacks:
                text = "".join(traceback.format_exception(exc))
                error["traceback"] = text[-_MAX_TRACEBACK:]
            return _json(status, {"error": error})

        @api.post("/runs")
        def start_run() -> Response[str]:
            body = self._json_body(api, required=True)
            if not isinstance(body, dict) or not _START_FIELDS.issuperset(body):
                raise ApiError(
                    400,
                    "bad_request",
                    'the body must be an object {"function": ..., "input": ..., "run_id": ...}',
                )
            function = body.get("function")
            if not isinstance(function, str) or not function:
                raise ApiError(400, "bad_request", "'function' must name a durable function")
            if function not in self.app.functions:
                known = ", ".join(sorted(self.app.functions)) or "none"
                raise ApiError(
                    400, "unknown_function", f"no durable function {function!r} (known: {known})"
                )
            run_id = body.get("run_id")
            if run_id is not None:
                run_id = _run_id(run_id)
            # Pinned to the agent version deployed with this API (its legs all run there).
            version = os.environ.get(AGENT_VERSION_ENV)
            try:
                run_id = self.app.start(
                    function,
                    body.get("input"),
                    run_id=run_id,
                    tags={PIN_TAG: version} if version else None,
                )
            except RunConflictError as exc:
                raise ApiError(409, "conflict", str(exc), error_type=type(exc).__name__) from None
            except InvalidInputError as exc:
                raise ApiError(400, "invalid_input", str(exc)) from None
            except TypeError as exc:
                raise ApiError(400, "bad_request", f"the input cannot be stored: {exc}") from None
            dispatched = self._dispatcher().send(_continue(run_id, 1))
            record = self.app.store.hot.get_run(run_id)
            return _json(
                202,
                {"run_id": run_id, "status": record.status.value, "dispatched": dispatched},
            )

        @api.get("/runs/<run_id>")
        def get_run(run_id: str) -> Response[str]:
            run_id = _run_id(run_id)
            try:
                view = self.app.status(run_id)
            except RunNotFoundError:
                raise _not_found(run_id) from None
            return _json(200, self._view(view))

        @api.post("/runs/<run_id>/signals/<name>")
        def send_signal(run_id: str, name: str) -> Response[str]:
            run_id = _run_id(run_id)
            if not _SIGNAL_NAME.match(name):
                raise ApiError(
                    400, "bad_signal_name", "a signal name is 1-128 of A-Z a-z 0-9 _ . : -"
                )
            body = self._json_body(api, required=False)
            if body is None:
                payload = None
            elif isinstance(body, dict) and set(body) <= {"payload"}:
                payload = body.get("payload")
            else:
                raise ApiError(400, "bad_request", 'the body must be {"payload": ...} or empty')
            hot = self.app.store.hot
            # App.signal checks the run before the payload is written to either tier, and
            # refuses a run that ends while the signal is written.
            try:
                self.app.signal(run_id, name, payload)
            except RunNotFoundError:
                raise _not_found(run_id) from None
            except RunEndedError as exc:
                raise ApiError(409, "run_ended", str(exc), error_type=type(exc).__name__) from None
            after = hot.get_run(run_id)
            woke = after.status.value == "suspended" and after.runnable(hot.now())
            dispatched = self._dispatcher().recover(run_id) if woke else False
            return _json(
                202, {"run_id": run_id, "signal": name, "woke": woke, "dispatched": dispatched}
            )

        @api.post("/runs/<run_id>/cancel")
        def cancel_run(run_id: str) -> Response[str]:
            run_id = _run_id(run_id)
            self._check_size(api)
            try:
                view = self.app.cancel(run_id)
            except RunNotFoundError:
                raise _not_found(run_id) from None
            return _json(200, self._view(view))

        @api.post("/runs/<run_id>/retry")
        def retry_run(run_id: str) -> Response[str]:
            run_id = _run_id(run_id)
            from_seq, as_id, upgrade = self._retry_body(api)
            current = os.environ.get(AGENT_VERSION_ENV)
            if upgrade and not current:
                raise ApiError(
                    400,
                    "bad_request",
                    f'"version": "current" needs {AGENT_VERSION_ENV} (the deployed agent version)',
                )
            # Every refusal is decided here, before App.retry writes anything: a fork copies
            # blobs to the new run before it creates its record.
            record = self.app.store.hot.find_run(run_id)
            if record is None:
                raise _not_found(run_id)
            if from_seq is not None and from_seq > record.next_seq:
                raise ApiError(
                    400,
                    "bad_request",
                    f"run {run_id!r} has {record.next_seq} journal entries; "
                    f"from_seq {from_seq} is past them",
                )
            if as_id is None and record.status.value not in ("failed", "blocked"):
                raise ApiError(
                    409,
                    "not_retryable",
                    f"run {run_id!r} is {record.status.value}; only failed or blocked runs can "
                    'be retried (fork it with {"as": NEW_ID} to re-run another one)',
                    error_type="RunConflictError",
                )
            if as_id is not None and self.app.store.hot.find_run(as_id) is not None:
                raise ApiError(
                    409,
                    "conflict",
                    f"run {as_id!r} already exists; fork into a new run id",
                    error_type="RunConflictError",
                )
            try:
                continued = self.app.retry(run_id, from_seq=from_seq, as_id=as_id)
            except RunNotFoundError:
                raise _not_found(run_id) from None
            except RunConflictError as exc:
                # The run changed between the look above and the write (nothing was written).
                raise ApiError(409, "conflict", str(exc), error_type=type(exc).__name__) from None
            except ValueError as exc:
                raise ApiError(
                    400, "bad_request", str(exc), error_type=type(exc).__name__
                ) from None
            if upgrade and current:
                # Rolled forward on purpose: the run's next legs run the version deployed now.
                repin(self.app.store.hot, continued, current)
            dispatched = self._dispatcher().recover(continued)
            after = self.app.store.hot.get_run(continued)
            return _json(
                202,
                {
                    "run_id": continued,
                    "retried": run_id,
                    "status": after.status.value,
                    "dispatched": dispatched,
                },
            )

        @api.delete("/runs/<run_id>")
        def delete_run(run_id: str) -> Response[str]:
            run_id = _run_id(run_id)
            self._check_size(api)
            try:
                self.app.delete(run_id)
            except RunNotFoundError:
                raise _not_found(run_id) from None
            return _json(200, {"run_id": run_id, "deleted": True})

        return api

    def _view(self, view: RunView) -> dict[str, Any]:
        """The run's view as JSON, its error's traceback left out unless configured."""
        data: dict[str, Any] = view.model_dump(mode="json")
        if not self.tracebacks:
            for value in data.values():
                if isinstance(value, dict) and "traceback" in value and "type" in value:
                    value.pop("traceback")
        return data

    def _retry_body(self, api: APIGatewayHttpResolver) -> tuple[int | None, str | None, bool]:
        body = self._json_body(api, required=False)
        if body is None:
            return None, None, False
        if not isinstance(body, dict) or not _RETRY_FIELDS.issuperset(body):
            raise ApiError(
                400,
                "bad_request",
                'the body must be {"from_seq": N, "as": "NEW_ID", "version": "current"} or empty',
            )
        version = body.get("version")
        if version not in (None, "current", "pinned"):
            raise ApiError(400, "bad_request", '\'version\' is "pinned" (the default) or "current"')
        from_seq = body.get("from_seq")
        if from_seq is not None and (
            isinstance(from_seq, bool) or not isinstance(from_seq, int) or from_seq < 0
        ):
            raise ApiError(400, "bad_request", "'from_seq' must be a journal seq (an integer >= 0)")
        as_id = body.get("as")
        if as_id is not None:
            as_id = _run_id(as_id)
        return from_seq, as_id, version == "current"

    # ------------------------------------------------------------------ body

    def _raw_body(self, api: APIGatewayHttpResolver) -> bytes:
        event = api.current_event
        raw = event.body or ""
        # Checked on what API Gateway delivered, before decoding anything.
        if len(raw) > self.max_body_bytes * (4 / 3 if event.is_base64_encoded else 1) + 4:
            raise ApiError(
                413, "too_large", f"the body is over the {self.max_body_bytes}-byte limit"
            )
        if not event.is_base64_encoded:
            data = raw.encode("utf-8")
        else:
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "bad_request", "the body is not valid base64") from None
        if len(data) > self.max_body_bytes:
            raise ApiError(
                413, "too_large", f"the body is over the {self.max_body_bytes}-byte limit"
            )
        return data

    def _check_size(self, api: APIGatewayHttpResolver) -> None:
        self._raw_body(api)

    def _json_body(self, api: APIGatewayHttpResolver, *, required: bool) -> Any:
        data = self._raw_body(api)
        if not data.strip():
            if required:
                raise ApiError(400, "bad_request", "the request needs a JSON body")
            return None
        try:
            return json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None


def _not_found(run_id: str) -> ApiError:
    return ApiError(
        404, "not_found", f"run {run_id!r} does not exist", error_type="RunNotFoundError"
    )


def _run_id(value: object) -> str:
    if not isinstance(value, str):
        raise ApiError(400, "bad_run_id", "run_id must be a string")
    try:
        return validate_run_id(value)
    except InvalidRunIdError:
        raise ApiError(
            400, "bad_run_id", f"illegal run id {value[:80]!r}: use 1-64 of A-Z a-z 0-9 _ -"
        ) from None


def _continue(run_id: str, leg: int | None) -> dict[str, Any]:
    from outlast.platforms.lambda_events import continuation_event

    return continuation_event(run_id, leg)


def _json(status: int, body: dict[str, Any]) -> Response[str]:
    from aws_lambda_powertools.event_handler import Response

    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(body, separators=(",", ":"), default=str),
    )
