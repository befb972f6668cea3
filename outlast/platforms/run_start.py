"""``outlast runs start``: create a run, and hand it to whoever runs legs.

- into the store only: a sweeper (Lambda) or queue-less workers pick a pending run up;
- ``queue``: also enqueue it for workers (a Redis stream or SQS, ``outlast.worker.queues``);
- ``api``: ``POST {api}/runs`` on a deployed runs API, signed with SigV4 (service
  ``execute-api``) with credentials from the standard AWS chain (environment, profile, SSO,
  instance role...); the API creates the run and dispatches its first leg.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

__all__ = ["StartError", "start_via_api", "start_via_store"]


class StartError(Exception):
    """The run could not be started; the message says why."""


def start_via_store(
    target: str,
    input: Any,
    *,
    run_id: str | None = None,
    queue: str | None = None,
    hot: str | None = None,
    cold: str | None = None,
) -> str:
    """Create the run of ``target`` (module:function or file.py:function); enqueue it if asked."""
    from outlast.errors import InvalidInputError, TargetError
    from outlast.targets import load_target, normalize_target
    from statestore import InvalidRunIdError, RunConflictError, StateStoreError

    if hot:
        os.environ["OUTLAST_HOT_URL"] = hot
    if cold:
        os.environ["OUTLAST_COLD_URL"] = cold
    try:
        durable = load_target(target)
    except TargetError as exc:
        raise StartError(str(exc)) from None
    try:
        rid = durable.app.start(
            durable.name, input, run_id=run_id, tags={"target": normalize_target(target)}
        )
    except InvalidInputError as exc:
        raise StartError(f"--input: {exc}") from None
    except (InvalidRunIdError, RunConflictError) as exc:
        raise StartError(str(exc)) from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise StartError(f"--input cannot be stored: {exc}") from None
    except StateStoreError as exc:
        raise StartError(str(exc)) from None
    if queue:
        from outlast.worker.queues import QueueError, enqueue_start

        try:
            enqueue_start(queue, rid)
        except QueueError as exc:
            raise StartError(f"run {rid} created, but not enqueued: {exc}") from None
    return rid


def start_via_api(
    api: str,
    target: str,
    input: Any,
    *,
    run_id: str | None = None,
    region: str | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """``POST /runs`` on the runs API at ``api``, SigV4-signed; the API's JSON answer."""
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    function = target.rpartition(":")[2] or target
    body: dict[str, Any] = {"function": function}
    if input is not None:
        body["input"] = input
    if run_id is not None:
        body["run_id"] = run_id
    data = json.dumps(body, separators=(",", ":")).encode()
    url = api.rstrip("/") + "/runs"
    if not url.startswith(("https://", "http://")):
        raise StartError(f"--api {api!r} is not an http(s) URL")
    session = botocore.session.get_session()
    credentials = session.get_credentials()
    if credentials is None:
        raise StartError(
            "no AWS credentials found (environment, ~/.aws, SSO or instance role) to sign --api"
        )
    region = region or session.get_config_variable("region") or _region_of(url)
    if not region:
        raise StartError("no region to sign for: pass --region or set AWS_REGION")
    request = AWSRequest(
        method="POST", url=url, data=data, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
    prepared = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=data, method="POST", headers=dict(request.headers.items())
    )
    try:
        with urllib.request.urlopen(prepared, timeout=timeout) as response:  # noqa: S310
            answer: Any = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:500]
        raise StartError(f"the API answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise StartError(f"could not call {url}: {exc}") from None
    if not isinstance(answer, dict) or "run_id" not in answer:
        raise StartError(f"the API's answer names no run: {answer!r}")
    return answer


def _region_of(url: str) -> str | None:
    """The region in an execute-api host name (``ID.execute-api.REGION.amazonaws.com``)."""
    host = url.split("://", 1)[1].split("/", 1)[0]
    parts = host.split(".")
    if len(parts) >= 4 and parts[1] == "execute-api":
        return parts[2]
    return None
