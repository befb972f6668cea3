"""The runs API through API Gateway (HTTP API 2.0) events: good requests and refused ones.

A refused request must answer a clear 4xx with a JSON error and leave the store as it was: no run
record changed, no journal entry or signal added, no blob written, no leg dispatched.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from outlast import App, Context
from outlast.platforms.api import MAX_BODY_BYTES, ApiHandler
from tests.lambda_platform.conftest import Tiers
from tests.lambda_platform.support import AGENT, CapturingLambda, load_event
from tests.lambda_platform.workloads import make_app


def request(
    method: str, path: str, body: str | None = None, *, base64_body: bool = False
) -> dict[str, Any]:
    template = {"GET": "api-status.json", "POST": "api-start.json", "DELETE": "api-status.json"}
    event = load_event(template[method])
    parts = path.strip("/").split("/")
    if len(parts) == 1:
        route, params = "/runs", None
    elif len(parts) == 2:
        route, params = "/runs/{run_id}", {"run_id": parts[1]}
    elif parts[2] in ("cancel", "retry"):
        route, params = f"/runs/{{run_id}}/{parts[2]}", {"run_id": parts[1]}
    else:
        route, params = "/runs/{run_id}/signals/{name}", {"run_id": parts[1], "name": parts[3]}
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {route}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event.pop("pathParameters", None)
    if params:
        event["pathParameters"] = params
    event.pop("body", None)
    if body is not None:
        event["body"] = base64.b64encode(body.encode()).decode() if base64_body else body
    event["isBase64Encoded"] = base64_body
    return event


def snapshot(app: App, tiers: Tiers) -> object:
    hot = app.store.hot
    runs = sorted(hot.list_runs(limit=1000), key=lambda r: r.run_id)
    return (
        [(r.run_id, r.version, r.status, r.next_seq) for r in runs],
        {r.run_id: len(hot.pending_signals(r.run_id)) for r in runs},
        tiers.cold_objects(),
    )


@pytest.fixture
def api(app: App, lam: CapturingLambda) -> ApiHandler:
    return ApiHandler(app, agent_function=AGENT, lambda_client=lam)


def call(api: ApiHandler, event: dict[str, Any]) -> tuple[int, Any]:
    response = api(event, None)
    assert response["headers"]["Content-Type"] == "application/json"
    return response["statusCode"], json.loads(response["body"])


def test_start_status_signal_and_cancel(api: ApiHandler, app: App, lam: CapturingLambda) -> None:
    body = json.dumps({"function": "approver", "run_id": "r-1", "input": {"what": "deploy"}})
    assert call(api, request("POST", "/runs", body)) == (
        202,
        {"run_id": "r-1", "status": "pending", "dispatched": True},
    )
    assert [i.event for i in lam.take()] == [
        {"outlast": {"action": "continue", "run_id": "r-1", "leg": 1}}
    ]
    # Idempotent: the same start again is accepted and changes nothing.
    assert call(api, request("POST", "/runs", body))[0] == 202
    assert app.store.hot.get_run("r-1").version == 0
    # Its leg-1 dispatch is a harmless duplicate: only one copy can take the lease.
    assert [i.event["outlast"]["leg"] for i in lam.take()] == [1]

    status, view = call(api, request("GET", "/runs/r-1"))
    assert status == 200
    assert view["run_id"] == "r-1" and view["function"] == "approver"
    assert view["status"] == "pending" and view["result"] is None

    # Not waiting yet: the signal is kept for later and no leg is dispatched for it.
    status, sent = call(
        api, request("POST", "/runs/r-1/signals/approval", json.dumps({"payload": 7}))
    )
    assert (status, sent["woke"], sent["dispatched"]) == (202, False, False)
    assert len(app.store.hot.pending_signals("r-1", "approval")) == 1
    assert lam.take() == []

    status, view = call(api, request("POST", "/runs/r-1/cancel"))
    assert (status, view["status"]) == (200, "cancelled")


def test_a_start_without_run_id_gets_a_fresh_one(api: ApiHandler, app: App) -> None:
    status, body = call(api, request("POST", "/runs", '{"function": "squares", "input": 3}'))
    assert status == 202
    assert app.store.hot.get_run(body["run_id"]).function == "squares"


def test_base64_bodies_are_decoded(api: ApiHandler, app: App) -> None:
    body = json.dumps({"function": "squares", "run_id": "b64", "input": 2})
    assert call(api, request("POST", "/runs", body, base64_body=True))[0] == 202
    assert app.store.hot.get_run("b64").function == "squares"


BAD_REQUESTS = [
    pytest.param("GET", "/runs/nope", None, 404, "not_found", id="status-unknown-run"),
    pytest.param(
        "POST", "/runs/nope/signals/go", '{"payload": 1}', 404, "not_found", id="signal-unknown-run"
    ),
    pytest.param("POST", "/runs/nope/cancel", None, 404, "not_found", id="cancel-unknown-run"),
    pytest.param("POST", "/runs", '{"function": "squares", ', 400, "malformed_json", id="json"),
    pytest.param("POST", "/runs", "\xff\xfe", 400, "malformed_json", id="not-json-text"),
    pytest.param(
        "POST", "/runs/exists/signals/go", "{payload", 400, "malformed_json", id="signal-json"
    ),
    pytest.param("POST", "/runs", None, 400, "bad_request", id="no-body"),
    pytest.param("POST", "/runs", "[1, 2]", 400, "bad_request", id="not-an-object"),
    pytest.param(
        "POST", "/runs", '{"function": "squares", "extra": 1}', 400, "bad_request", id="extra"
    ),
    pytest.param(
        "POST",
        "/runs",
        '{"function": "squares", "run_id": "no spaces allowed"}',
        400,
        "bad_run_id",
        id="illegal-run-id-in-body",
    ),
    pytest.param(
        "POST",
        "/runs",
        json.dumps({"function": "squares", "run_id": "x" * 65}),
        400,
        "bad_run_id",
        id="run-id-too-long",
    ),
    pytest.param("GET", "/runs/bad*id", None, 400, "bad_run_id", id="illegal-run-id-in-path"),
    pytest.param(
        "POST", "/runs/bad*id/signals/go", "{}", 400, "bad_run_id", id="illegal-run-id-signal"
    ),
    pytest.param(
        "POST", "/runs", '{"function": "nosuch"}', 400, "unknown_function", id="unknown-function"
    ),
    pytest.param(
        "POST",
        "/runs",
        '{"function": "squares", "run_id": "exists", "input": 999}',
        409,
        "conflict",
        id="run-id-taken-with-other-input",
    ),
    pytest.param(
        "POST", "/runs/exists/signals/go", '{"other": 1}', 400, "bad_request", id="signal-shape"
    ),
    pytest.param(
        "POST", "/runs/ended/signals/go", '{"payload": 1}', 409, "run_ended", id="ended-run"
    ),
    pytest.param(
        "POST",
        "/runs",
        json.dumps({"function": "stash", "input": "x" * MAX_BODY_BYTES}),
        413,
        "too_large",
        id="oversized-start",
    ),
    pytest.param(
        "POST",
        "/runs/exists/signals/go",
        json.dumps({"payload": "x" * MAX_BODY_BYTES}),
        413,
        "too_large",
        id="oversized-signal",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD_REQUESTS)
def test_bad_requests_get_a_clear_4xx_and_write_nothing(
    api: ApiHandler,
    app: App,
    lam: CapturingLambda,
    tiers: Tiers,
    method: str,
    path: str,
    body: str | None,
    status: int,
    code: str,
) -> None:
    app.start("squares", 1, run_id="exists")
    app.start("squares", 2, run_id="ended")
    app.cancel("ended")
    before = snapshot(app, tiers)

    got_status, got = call(api, request(method, path, body))

    assert got_status == status
    assert got["error"]["code"] == code
    assert got["error"]["message"] and got["error"]["type"]
    assert snapshot(app, tiers) == before
    assert lam.invokes == []


def test_the_body_limit_counts_decoded_bytes_for_base64(api: ApiHandler, app: App) -> None:
    # Over the limit once base64-encoded (as API Gateway delivers it), under it decoded.
    body = json.dumps({"function": "stash", "run_id": "big", "input": "y" * (MAX_BODY_BYTES - 100)})
    assert len(base64.b64encode(body.encode())) > MAX_BODY_BYTES
    assert call(api, request("POST", "/runs", body, base64_body=True))[0] == 202
    assert app.store.hot.get_run("big").function == "stash"


# Random hex: zstd cannot squeeze it under the tiny inline limit below, so a value that got as
# far as being encoded would show up as an object in the S3 cold tier.
BIG = "".join(f"{(i * 2654435761) % 2**32:08x}" for i in range(500))


@pytest.fixture
def tight_app(tiers: Tiers) -> Iterator[App]:
    """The app with a 64-byte inline limit: every large input or payload goes to S3."""
    made = make_app(f"{tiers.hot_url}&inline_limit=64", tiers.cold_url)
    yield made
    made.close()


REFUSED_LARGE = [
    pytest.param(
        "/runs",
        json.dumps({"function": "stash", "run_id": "exists", "input": {"big": BIG}}),
        409,
        "conflict",
        id="run-id-taken-with-other-input",
    ),
    pytest.param(
        "/runs",
        json.dumps({"function": "nosuch", "run_id": "fresh", "input": BIG}),
        400,
        "unknown_function",
        id="unknown-function",
    ),
    pytest.param(
        "/runs/nope/signals/go", json.dumps({"payload": BIG}), 404, "not_found", id="unknown-run"
    ),
    pytest.param(
        "/runs/ended/signals/go", json.dumps({"payload": BIG}), 409, "run_ended", id="ended-run"
    ),
    pytest.param(
        "/runs/exists/signals/bad*name",
        json.dumps({"payload": BIG}),
        400,
        "bad_signal_name",
        id="bad-signal-name",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "code"), REFUSED_LARGE)
def test_refused_requests_with_large_values_leave_no_blob(
    tight_app: App,
    lam: CapturingLambda,
    tiers: Tiers,
    path: str,
    body: str,
    status: int,
    code: str,
) -> None:
    api = ApiHandler(tight_app, agent_function=AGENT, lambda_client=lam)
    tight_app.start("squares", 1, run_id="exists")
    tight_app.start("squares", 2, run_id="ended")
    tight_app.cancel("ended")
    before = snapshot(tight_app, tiers)
    assert tiers.cold_objects() == []

    got_status, got = call(api, request("POST", path, body))

    assert (got_status, got["error"]["code"]) == (status, code)
    assert tiers.cold_objects() == []
    assert snapshot(tight_app, tiers) == before
    assert lam.invokes == []


def test_an_accepted_large_start_does_reach_the_cold_tier(
    tight_app: App, lam: CapturingLambda, tiers: Tiers
) -> None:
    # Guards the test above: a large value the API accepts is a blob under its run's prefix.
    api = ApiHandler(tight_app, agent_function=AGENT, lambda_client=lam)
    body = json.dumps({"function": "stash", "run_id": "large", "input": {"big": BIG}})
    assert call(api, request("POST", "/runs", body))[0] == 202
    assert [k for k in tiers.cold_objects() if "/runs/large/" in k]


def test_a_retried_start_with_its_input_keys_reordered_is_accepted(
    api: ApiHandler, app: App
) -> None:
    first = {"what": "deploy", "where": {"region": "eu", "zone": "a"}}
    again = {"where": {"zone": "a", "region": "eu"}, "what": "deploy"}
    for value in (first, again):
        body = json.dumps({"run_id": "retry", "input": value, "function": "approver"})
        assert call(api, request("POST", "/runs", body)) == (
            202,
            {"run_id": "retry", "status": "pending", "dispatched": True},
        )
    assert app.store.hot.get_run("retry").version == 0
    changed = json.dumps(
        {"function": "approver", "run_id": "retry", "input": {**again, "what": "rollback"}}
    )
    assert call(api, request("POST", "/runs", changed))[0] == 409


# ---------------------------------------------------------------------- errors, retry, delete


def failed_run(app: App, run_id: str = "failed") -> str:
    """A run of ``broken``: one step committed, then the function's own exception."""
    app.start("broken", None, run_id=run_id)
    view = app.drive(run_id)
    assert view.status.value == "failed"
    return run_id


def test_a_failed_runs_error_has_type_and_message_and_no_traceback_by_default(
    api: ApiHandler, app: App, lam: CapturingLambda, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed_run(app)
    status, view = call(api, request("GET", "/runs/failed"))
    assert status == 200
    assert view["error"]["type"] == "RuntimeError"
    assert "the durable function's own bug" in view["error"]["message"]
    assert "traceback" not in view["error"]

    # Asked for, by option or by environment: the traceback is there.
    verbose = ApiHandler(app, agent_function=AGENT, lambda_client=lam, tracebacks=True)
    assert "Traceback" in call(verbose, request("GET", "/runs/failed"))[1]["error"]["traceback"]
    monkeypatch.setenv("OUTLAST_API_TRACEBACKS", "1")
    from_env = ApiHandler(app, agent_function=AGENT, lambda_client=lam)
    assert "Traceback" in call(from_env, request("GET", "/runs/failed"))[1]["error"]["traceback"]


def test_a_store_failure_answers_its_type_and_message(
    tiers: Tiers, lam: CapturingLambda, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A table that does not exist: every read fails inside the store.
    missing = tiers.hot_url.replace(tiers.table, f"{tiers.table}-missing").replace("&create=1", "")
    broken = make_app(missing, tiers.cold_url)
    try:
        api = ApiHandler(broken, agent_function=AGENT, lambda_client=lam)
        status, body = call(api, request("GET", "/runs/r-1"))
        assert status == 503
        error = body["error"]
        assert (error["code"], error["type"]) == ("store_unavailable", "StoreUnavailableError")
        assert error["message"] and "traceback" not in error

        verbose = ApiHandler(broken, agent_function=AGENT, lambda_client=lam, tracebacks=True)
        assert "Traceback" in call(verbose, request("GET", "/runs/r-1"))[1]["error"]["traceback"]
    finally:
        broken.close()


def test_an_unknown_route_answers_404_in_the_apis_shape(api: ApiHandler) -> None:
    event = request("GET", "/runs/r-1")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/nowhere"
    event["routeKey"] = event["requestContext"]["routeKey"] = "GET /nowhere"
    status, body = call(api, event)
    assert (status, body["error"]["code"]) == (404, "no_route")


def test_retry_reopens_a_failed_run_and_dispatches_a_leg(
    api: ApiHandler, app: App, lam: CapturingLambda
) -> None:
    failed_run(app)
    assert call(api, request("POST", "/runs/failed/retry")) == (
        202,
        {
            "run_id": "failed",
            "retried": "failed",
            "status": app.store.hot.get_run("failed").status.value,
            "dispatched": True,
        },
    )
    record = app.store.hot.get_run("failed")
    assert record.status.value not in ("failed", "blocked") and record.error is None
    assert [i.event for i in lam.take()] == [
        {"outlast": {"action": "continue", "run_id": "failed"}}
    ]
    # No longer failed: a second retry is refused.
    status, body = call(api, request("POST", "/runs/failed/retry"))
    assert (status, body["error"]["code"]) == (409, "not_retryable")


def test_retry_as_forks_a_copy_from_a_seq(
    api: ApiHandler, app: App, lam: CapturingLambda, tiers: Tiers
) -> None:
    failed_run(app)
    original = app.store.hot.get_run("failed")
    body = json.dumps({"as": "copy", "from_seq": 0})
    status, answer = call(api, request("POST", "/runs/failed/retry", body))
    assert (status, answer["run_id"], answer["retried"]) == (202, "copy", "failed")
    copy = app.store.hot.get_run("copy")
    assert copy.function == "broken" and copy.next_seq == 0
    assert app.store.hot.get_run("failed").version == original.version
    assert [i.event["outlast"]["run_id"] for i in lam.take()] == ["copy"]
    # Forking works from a run of any status, here the pending copy, keeping one entry.
    status, answer = call(
        api, request("POST", "/runs/failed/retry", json.dumps({"as": "copy-2", "from_seq": 1}))
    )
    assert status == 202 and app.store.hot.get_run("copy-2").next_seq == 1


def test_delete_removes_the_run_from_both_tiers(
    tight_app: App, lam: CapturingLambda, tiers: Tiers
) -> None:
    api = ApiHandler(tight_app, agent_function=AGENT, lambda_client=lam)
    tight_app.start("stash", {"big": BIG}, run_id="doomed")
    tight_app.start("squares", 1, run_id="kept")
    assert [k for k in tiers.cold_objects() if "/runs/doomed/" in k]
    assert call(api, request("DELETE", "/runs/doomed")) == (
        200,
        {"run_id": "doomed", "deleted": True},
    )
    assert tight_app.store.hot.find_run("doomed") is None
    assert not [k for k in tiers.cold_objects() if "/runs/doomed/" in k]
    assert tight_app.store.hot.find_run("kept") is not None
    assert call(api, request("GET", "/runs/doomed"))[0] == 404
    assert lam.invokes == []


REFUSED_RETRIES = [
    pytest.param("POST", "/runs/nope/retry", None, 404, "not_found", id="retry-unknown-run"),
    pytest.param("POST", "/runs/exists/retry", None, 409, "not_retryable", id="retry-pending-run"),
    pytest.param("POST", "/runs/ended/retry", None, 409, "not_retryable", id="retry-cancelled-run"),
    pytest.param("POST", "/runs/bad*id/retry", None, 400, "bad_run_id", id="retry-bad-id"),
    pytest.param("POST", "/runs/failed/retry", "{as", 400, "malformed_json", id="retry-json"),
    pytest.param("POST", "/runs/failed/retry", "[1]", 400, "bad_request", id="retry-not-object"),
    pytest.param(
        "POST", "/runs/failed/retry", '{"extra": 1}', 400, "bad_request", id="retry-extra"
    ),
    pytest.param(
        "POST", "/runs/failed/retry", '{"from_seq": -1}', 400, "bad_request", id="from-negative"
    ),
    pytest.param(
        "POST", "/runs/failed/retry", '{"from_seq": "1"}', 400, "bad_request", id="from-string"
    ),
    pytest.param(
        "POST", "/runs/failed/retry", '{"from_seq": true}', 400, "bad_request", id="from-bool"
    ),
    pytest.param(
        "POST", "/runs/failed/retry", '{"from_seq": 99}', 400, "bad_request", id="from-past-end"
    ),
    pytest.param(
        "POST",
        "/runs/failed/retry",
        '{"as": "no spaces"}',
        400,
        "bad_run_id",
        id="fork-bad-id",
    ),
    pytest.param(
        "POST", "/runs/failed/retry", '{"as": "exists"}', 409, "conflict", id="fork-onto-a-run"
    ),
    pytest.param(
        "POST", "/runs/failed/retry", '{"as": "failed"}', 409, "conflict", id="fork-onto-itself"
    ),
    pytest.param(
        "POST",
        "/runs/exists/retry",
        '{"as": "fresh", "from_seq": 5}',
        400,
        "bad_request",
        id="fork-past-end",
    ),
    pytest.param("DELETE", "/runs/nope", None, 404, "not_found", id="delete-unknown-run"),
    pytest.param("DELETE", "/runs/bad*id", None, 400, "bad_run_id", id="delete-bad-id"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), REFUSED_RETRIES)
def test_refused_retries_and_deletes_write_nothing(
    tight_app: App,
    lam: CapturingLambda,
    tiers: Tiers,
    method: str,
    path: str,
    body: str | None,
    status: int,
    code: str,
) -> None:
    # Inputs in the cold tier: a fork refused too late would leave copies of them behind.
    api = ApiHandler(tight_app, agent_function=AGENT, lambda_client=lam)
    tight_app.start("stash", {"big": BIG}, run_id="exists")
    tight_app.start("stash", {"big": BIG, "n": 2}, run_id="ended")
    tight_app.cancel("ended")
    failed_run(tight_app)
    before = snapshot(tight_app, tiers)
    journal = tight_app.journal("failed")

    got_status, got = call(api, request(method, path, body))

    assert (got_status, got["error"]["code"]) == (status, code), got
    assert got["error"]["type"] and got["error"]["message"]
    assert snapshot(tight_app, tiers) == before
    assert tight_app.journal("failed") == journal
    assert lam.invokes == []


def test_an_input_that_does_not_match_the_annotation_is_refused_with_400(
    app: App, tiers: Tiers, lam: CapturingLambda
) -> None:
    @app.durable()
    def charge(ctx: Context, order: Order) -> str:
        return order.amount

    api = ApiHandler(app, agent_function=AGENT, lambda_client=lam)
    before = snapshot(app, tiers)
    body = json.dumps({"function": "charge", "run_id": "o-1", "input": {"id": "not a number"}})
    status, answer = call(api, request("POST", "/runs", body))
    assert status == 400
    assert answer["error"]["code"] == "invalid_input"
    assert (
        "id:" in answer["error"]["message"]
        and "amount: Field required" in answer["error"]["message"]
    )
    assert snapshot(app, tiers) == before
    assert lam.take() == []


class Order(BaseModel):
    id: int
    amount: str
