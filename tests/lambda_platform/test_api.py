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

from outlast import App
from outlast.platforms.api import MAX_BODY_BYTES, ApiHandler
from tests.lambda_platform.conftest import Tiers
from tests.lambda_platform.support import AGENT, CapturingLambda, load_event
from tests.lambda_platform.workloads import make_app


def request(
    method: str, path: str, body: str | None = None, *, base64_body: bool = False
) -> dict[str, Any]:
    template = {"GET": "api-status.json", "POST": "api-start.json"}[method]
    event = load_event(template)
    parts = path.strip("/").split("/")
    if len(parts) == 1:
        route, params = "/runs", None
    elif len(parts) == 2:
        route, params = "/runs/{run_id}", {"run_id": parts[1]}
    elif parts[2] == "cancel":
        route, params = "/runs/{run_id}/cancel", {"run_id": parts[1]}
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
        json.dumps({"function": "squares", "input": "x" * MAX_BODY_BYTES}),
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
    assert got["error"]["message"]
    assert snapshot(app, tiers) == before
    assert lam.invokes == []


def test_the_body_limit_counts_decoded_bytes_for_base64(api: ApiHandler, app: App) -> None:
    # Over the limit once base64-encoded (as API Gateway delivers it), under it decoded.
    body = json.dumps(
        {"function": "squares", "run_id": "big", "input": "y" * (MAX_BODY_BYTES - 100)}
    )
    assert len(base64.b64encode(body.encode())) > MAX_BODY_BYTES
    assert call(api, request("POST", "/runs", body, base64_body=True))[0] == 202
    assert app.store.hot.get_run("big").function == "squares"


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
        json.dumps({"function": "squares", "run_id": "exists", "input": {"big": BIG}}),
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
    body = json.dumps({"function": "squares", "run_id": "large", "input": {"big": BIG}})
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
