"""EC2 spot interruption notices, read from the instance metadata service (IMDS).

About two minutes before EC2 reclaims a spot instance, IMDS starts answering
``/latest/meta-data/spot/instance-action`` with ``{"action": ..., "time": ...}``; before that the
path answers 404. A worker treats the notice like SIGTERM with the time left as its grace.

Only the standard library is used, so the watcher costs nothing on machines that are not EC2.

Polling policy (``SpotWatcher``):

- every ``interval`` seconds (5 s by default, the cadence AWS suggests for this path);
- a 404 means "no notice yet";
- errors (connection refused, timeouts, unexpected statuses, a malformed answer) are quiet: one
  debug line when they start and one when they stop. The watcher never gives up, because a
  transient IMDS blip on a real spot instance must not switch interruption handling off for good:
  - until IMDS has answered once, each failure doubles the delay up to ``max_interval`` (60 s),
    so a laptop or a non-AWS cluster pays one failed connection a minute;
  - once IMDS has answered, it is known to exist and failures are retried at ``interval``,
    because a late poll eats into the two-minute warning;
- the first notice is handed to ``on_notice`` exactly once, and the watcher stops.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "DEFAULT_ENDPOINT",
    "IMDS_ENDPOINT_ENV",
    "KNOWN_ACTIONS",
    "ImdsError",
    "SpotNotice",
    "SpotWatcher",
    "check_spot_interruption",
    "imds_endpoint",
]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
IMDS_ENDPOINT_ENV = "OUTLAST_IMDS_ENDPOINT"
KNOWN_ACTIONS = frozenset({"terminate", "stop", "hibernate"})

_SESSION_PATH = "/latest/api/token"
_INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
_SESSION_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
_SESSION_HEADER = "X-aws-ec2-metadata-token"
# Six hours is the longest TTL IMDS grants; the token is renewed a minute before it runs out.
_TOKEN_TTL_S = 21600
_TOKEN_RENEW_MARGIN_S = 60.0
# Statuses with which an endpoint says it issues no tokens (IMDSv2 turned off, an old proxy, a
# metadata emulator that only speaks IMDSv1): the path is then read without a token.
_NO_TOKEN_STATUSES = frozenset({403, 404, 405})
_MAX_BODY = 64 * 1024


class ImdsError(Exception):
    """IMDS could not be reached, or answered something other than a notice or a 404."""


@dataclass(frozen=True, slots=True)
class SpotNotice:
    """An interruption notice: what EC2 will do to the instance (see KNOWN_ACTIONS) and when."""

    action: str
    time: datetime

    def seconds_left(self, now: datetime | None = None) -> float:
        """Seconds until the interruption, never negative."""
        current = now if now is not None else datetime.now(UTC)
        return max(0.0, (self.time - current).total_seconds())


def imds_endpoint() -> str:
    """The IMDS base URL: ``$OUTLAST_IMDS_ENDPOINT`` if set, else the link-local address."""
    return os.environ.get(IMDS_ENDPOINT_ENV) or DEFAULT_ENDPOINT


def parse_notice(body: bytes) -> SpotNotice:
    """Parse an instance-action document; raise ImdsError if it is not one."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImdsError(f"instance-action is not JSON: {body[:200]!r}") from exc
    if not isinstance(doc, dict):
        raise ImdsError(f"instance-action is not a JSON object: {body[:200]!r}")
    action, when = doc.get("action"), doc.get("time")
    # An action outside KNOWN_ACTIONS is still a notice: draining for nothing is cheap, being
    # reclaimed mid-step is not.
    if not isinstance(action, str) or not action:
        raise ImdsError(f"instance-action has no action: {doc!r}")
    if not isinstance(when, str):
        raise ImdsError(f"instance-action has no time: {doc!r}")
    try:
        parsed = datetime.fromisoformat(when)
    except ValueError as exc:
        raise ImdsError(f"instance-action time is not ISO 8601: {when!r}") from exc
    if parsed.tzinfo is None:
        # IMDS writes UTC with a trailing Z; a time without an offset is read the same way.
        parsed = parsed.replace(tzinfo=UTC)
    return SpotNotice(action=action, time=parsed)


class _ImdsClient:
    """Reads the instance-action path with IMDSv2 session tokens, falling back to IMDSv1."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self._base = endpoint.rstrip("/")
        self._timeout = timeout
        # IMDS must be reached directly: a proxy from HTTP_PROXY would either fail to route the
        # link-local address or add X-Forwarded-For, with which IMDS refuses to issue tokens.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._token: str | None = None
        self._token_expires = 0.0

    def instance_action(self) -> SpotNotice | None:
        """The pending notice, None if there is none; ImdsError if IMDS cannot tell."""
        token = self._session_token()
        status, body = self._request("GET", _INSTANCE_ACTION_PATH, self._token_headers(token))
        if status == 401 and token is not None:
            # The token was revoked or IMDS restarted: one fresh token, one retry.
            self._token = None
            token = self._session_token()
            status, body = self._request("GET", _INSTANCE_ACTION_PATH, self._token_headers(token))
        if status == 404:
            return None
        if status != 200:
            raise ImdsError(f"GET {_INSTANCE_ACTION_PATH} answered {status}")
        return parse_notice(body)

    @staticmethod
    def _token_headers(token: str | None) -> dict[str, str]:
        return {} if token is None else {_SESSION_HEADER: token}

    def _session_token(self) -> str | None:
        """A cached IMDSv2 token, a new one, or None when the endpoint issues none."""
        now = time.monotonic()
        if self._token is not None and now < self._token_expires:
            return self._token
        status, body = self._request("PUT", _SESSION_PATH, {_SESSION_TTL_HEADER: str(_TOKEN_TTL_S)})
        if status in _NO_TOKEN_STATUSES:
            self._token = None
            return None
        if status != 200 or not body.strip():
            raise ImdsError(f"PUT {_SESSION_PATH} answered {status}")
        self._token = body.decode("ascii", errors="replace").strip()
        self._token_expires = now + _TOKEN_TTL_S - _TOKEN_RENEW_MARGIN_S
        return self._token

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        request = urllib.request.Request(  # noqa: S310 - the scheme is the operator's endpoint
            self._base + path, method=method, headers=headers
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return int(response.status), response.read(_MAX_BODY)
        except urllib.error.HTTPError as exc:
            try:
                return int(exc.code), exc.read(_MAX_BODY)
            finally:
                exc.close()
        except (OSError, ValueError) as exc:
            # URLError, timeouts and resets are OSErrors; ValueError is a malformed endpoint.
            raise ImdsError(f"{method} {self._base}{path} failed: {exc}") from exc


def check_spot_interruption(endpoint: str | None = None, timeout: float = 1.0) -> SpotNotice | None:
    """One look at IMDS: the pending spot interruption notice, or None.

    None also when IMDS cannot be reached or answers nonsense (not on EC2, IMDS turned off): a
    caller asking "am I about to be reclaimed?" off EC2 wants "no". The reason is logged at debug.
    ``endpoint`` defaults to ``imds_endpoint()``.
    """
    client = _ImdsClient(endpoint or imds_endpoint(), timeout)
    try:
        return client.instance_action()
    except ImdsError as exc:
        log.debug("no spot notice: %s", exc)
        return None


def next_delay(
    current: float, *, interval: float, max_interval: float, failed: bool, imds_seen: bool
) -> float:
    """The watcher's wait before its next poll (the policy in the module docstring)."""
    if not failed or imds_seen:
        return interval
    return min(max_interval, max(current, interval) * 2)


class SpotWatcher:
    """A daemon thread that polls IMDS and calls ``on_notice`` once when a notice appears.

    ``on_notice`` runs on the watcher's thread: it should only set an event or ask the worker to
    drain. If it raises, the error is logged and the watcher still stops.
    """

    def __init__(
        self,
        on_notice: Callable[[SpotNotice], None],
        endpoint: str | None = None,
        interval: float = 5.0,
        *,
        max_interval: float = 60.0,
        timeout: float = 1.0,
    ) -> None:
        if interval <= 0 or max_interval < interval:
            raise ValueError("need 0 < interval <= max_interval")
        self._on_notice = on_notice
        self._interval = interval
        self._max_interval = max_interval
        self._client = _ImdsClient(endpoint or imds_endpoint(), timeout)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outlast-spot-watcher", daemon=True)
        self._notice: SpotNotice | None = None

    @property
    def notice(self) -> SpotNotice | None:
        """The notice handed to ``on_notice``, if one came."""
        return self._notice

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        """Start polling; a watcher starts once."""
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop and wait for it (a poll in flight ends within its timeout)."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> SpotWatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        delay = self._interval
        imds_seen = False
        failing = False
        while not self._stopping.is_set():
            try:
                notice = self._client.instance_action()
            except ImdsError as exc:
                if not failing:
                    log.debug("spot watcher: IMDS unavailable, polling on quietly: %s", exc)
                failing = True
                delay = next_delay(
                    delay,
                    interval=self._interval,
                    max_interval=self._max_interval,
                    failed=True,
                    imds_seen=imds_seen,
                )
            else:
                if failing:
                    log.debug("spot watcher: IMDS answers again")
                failing = False
                imds_seen = True
                delay = self._interval
                if notice is not None:
                    self._deliver(notice)
                    return
            self._stopping.wait(delay)

    def _deliver(self, notice: SpotNotice) -> None:
        if self._stopping.is_set():
            return
        self._notice = notice
        log.info("spot interruption notice: %s at %s", notice.action, notice.time.isoformat())
        try:
            self._on_notice(notice)
        except Exception:
            log.exception("spot watcher: on_notice failed")
