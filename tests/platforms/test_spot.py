"""Spot notices, checked against a local HTTP server that plays the instance metadata service."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from outlast.platforms.spot import (
    IMDS_ENDPOINT_ENV,
    SpotNotice,
    SpotWatcher,
    check_spot_interruption,
    next_delay,
)
from tests.support.servers import free_port

NOTICE_TIME = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
NOTICE_BODY = json.dumps({"action": "terminate", "time": "2026-11-26T10:00:00Z"}).encode()
WAIT_S = 10.0  # bound on every wait; a passing run takes a few tens of milliseconds


@dataclass
class FakeImds:
    """State of the fake IMDS; tests flip it while the server runs."""

    url: str = ""
    notice: bytes | None = None
    token_status: int = 200  # what PUT /latest/api/token answers
    require_token: bool = True  # IMDSv2 "required": a GET without a valid token gets 401
    fail_next: int = 0  # answer this many requests with 500 first
    tokens: set[str] = field(default_factory=set)
    puts: int = 0
    gets: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def switch_on(self, body: bytes = NOTICE_BODY) -> None:
        with self.lock:
            self.notice = body

    def revoke_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()


class _Handler(BaseHTTPRequestHandler):
    server: _ImdsServer

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""

    def _answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _failing(self) -> bool:
        state = self.server.state
        with state.lock:
            if state.fail_next > 0:
                state.fail_next -= 1
                return True
        return False

    def do_PUT(self) -> None:
        state = self.server.state
        if self._failing():
            self._answer(500)
            return
        if self.path != "/latest/api/token":
            self._answer(404)
            return
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            self._answer(400)
            return
        with state.lock:
            state.puts += 1
            if state.token_status != 200:
                status = state.token_status
                token = ""
            else:
                status = 200
                token = f"token-{state.puts}"
                state.tokens.add(token)
        self._answer(status, token.encode())

    def do_GET(self) -> None:
        state = self.server.state
        if self._failing():
            self._answer(500)
            return
        with state.lock:
            state.gets += 1
            authorized = self.headers.get("X-aws-ec2-metadata-token") in state.tokens
            notice = state.notice
            require_token = state.require_token
        if require_token and not authorized:
            self._answer(401)
        elif self.path != "/latest/meta-data/spot/instance-action" or notice is None:
            self._answer(404)
        else:
            self._answer(200, notice)


class _ImdsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: FakeImds) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    state = FakeImds()
    server = _ImdsServer(state)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(WAIT_S)


class Recorder:
    """An on_notice callback that counts its calls."""

    def __init__(self) -> None:
        self.notices: list[SpotNotice] = []
        self.called = threading.Event()

    def __call__(self, notice: SpotNotice) -> None:
        self.notices.append(notice)
        self.called.set()


# -- the fake plays IMDSv2 faithfully ---------------------------------------------------------


def test_fake_rejects_a_get_without_token(imds: FakeImds) -> None:
    imds.switch_on()
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{imds.url}/latest/meta-data/spot/instance-action", timeout=WAIT_S)
    assert caught.value.code == 401
    caught.value.close()


# -- check_spot_interruption ------------------------------------------------------------------


def test_no_notice_while_the_path_answers_404(imds: FakeImds) -> None:
    assert check_spot_interruption(imds.url) is None
    assert imds.puts == 1  # it did go through the token dance, and got a 404 with the token
    assert imds.gets == 1


def test_notice_is_parsed_with_an_aware_time(imds: FakeImds) -> None:
    imds.switch_on()
    notice = check_spot_interruption(imds.url)
    assert notice == SpotNotice(action="terminate", time=NOTICE_TIME)
    assert notice is not None
    assert notice.time.utcoffset() == timedelta(0)


@pytest.mark.parametrize("action", ["stop", "hibernate"])
def test_other_actions_are_notices_too(imds: FakeImds, action: str) -> None:
    imds.switch_on(json.dumps({"action": action, "time": "2026-11-26T10:00:00+00:00"}).encode())
    assert check_spot_interruption(imds.url) == SpotNotice(action=action, time=NOTICE_TIME)


@pytest.mark.parametrize("status", [403, 405])
def test_falls_back_to_imdsv1_when_no_token_is_issued(imds: FakeImds, status: int) -> None:
    imds.token_status = status
    imds.require_token = False
    imds.switch_on()
    assert check_spot_interruption(imds.url) == SpotNotice(action="terminate", time=NOTICE_TIME)


def test_endpoint_comes_from_the_environment(
    imds: FakeImds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(IMDS_ENDPOINT_ENV, imds.url)
    imds.switch_on()
    assert check_spot_interruption() == SpotNotice(action="terminate", time=NOTICE_TIME)


def test_unreachable_endpoint_means_no_notice() -> None:
    assert check_spot_interruption(f"http://127.0.0.1:{free_port()}", timeout=1.0) is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"time": "2026-11-26T10:00:00Z"}',
        b'{"action": "stop"}',
        b'{"action": "stop", "time": "tomorrow"}',
    ],
)
def test_malformed_answer_is_no_notice(imds: FakeImds, body: bytes) -> None:
    imds.switch_on(body)
    assert check_spot_interruption(imds.url) is None


def test_server_error_is_no_notice(imds: FakeImds) -> None:
    imds.fail_next = 2
    imds.switch_on()
    assert check_spot_interruption(imds.url) is None


def test_seconds_left_counts_down_to_zero() -> None:
    notice = SpotNotice(action="terminate", time=NOTICE_TIME)
    assert notice.seconds_left(NOTICE_TIME - timedelta(minutes=2)) == 120.0
    assert notice.seconds_left(NOTICE_TIME + timedelta(seconds=5)) == 0.0


# -- SpotWatcher ------------------------------------------------------------------------------


def _wait_until(predicate: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(int(WAIT_S / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError("condition not met in time")


def test_watcher_calls_on_notice_exactly_once(imds: FakeImds) -> None:
    recorder = Recorder()
    watcher = SpotWatcher(recorder, endpoint=imds.url, interval=0.01)
    watcher.start()
    try:
        _wait_until(lambda: imds.gets >= 3)
        assert recorder.notices == []  # polled several times, saw only 404s

        imds.switch_on()
        assert recorder.called.wait(WAIT_S)
        # It stops by itself after the notice, so no second call can follow.
        _wait_until(lambda: not watcher.is_alive())
        assert recorder.notices == [SpotNotice(action="terminate", time=NOTICE_TIME)]
        assert watcher.notice == recorder.notices[0]
        assert imds.puts == 1  # one token, cached across polls
    finally:
        watcher.stop(WAIT_S)
    assert not watcher.is_alive()


def test_watcher_renews_a_revoked_token(imds: FakeImds) -> None:
    recorder = Recorder()
    with SpotWatcher(recorder, endpoint=imds.url, interval=0.01) as watcher:
        _wait_until(lambda: imds.gets >= 2)
        imds.revoke_tokens()
        imds.switch_on()
        assert recorder.called.wait(WAIT_S)
    assert not watcher.is_alive()
    assert len(recorder.notices) == 1
    assert imds.puts >= 2


def test_watcher_stops_cleanly_without_a_notice(imds: FakeImds) -> None:
    recorder = Recorder()
    watcher = SpotWatcher(recorder, endpoint=imds.url, interval=0.01)
    watcher.start()
    _wait_until(lambda: imds.gets >= 2)
    watcher.stop(WAIT_S)
    assert not watcher.is_alive()
    polls = imds.gets
    imds.switch_on()
    threading.Event().wait(0.1)
    assert imds.gets == polls  # nothing polls after stop()
    assert recorder.notices == []


def test_watcher_keeps_polling_through_errors(imds: FakeImds) -> None:
    imds.fail_next = 5
    imds.switch_on()
    recorder = Recorder()
    with SpotWatcher(recorder, endpoint=imds.url, interval=0.01, max_interval=0.05):
        assert recorder.called.wait(WAIT_S)
    assert len(recorder.notices) == 1


def test_watcher_off_ec2_never_calls_and_stops() -> None:
    recorder = Recorder()
    watcher = SpotWatcher(
        recorder, endpoint=f"http://127.0.0.1:{free_port()}", interval=0.01, max_interval=0.05
    )
    watcher.start()
    threading.Event().wait(0.2)
    assert watcher.is_alive()  # unreachable IMDS does not kill the thread
    watcher.stop(WAIT_S)
    assert not watcher.is_alive()
    assert recorder.notices == []


def test_watcher_survives_a_failing_callback(imds: FakeImds) -> None:
    calls: list[SpotNotice] = []

    def explode(notice: SpotNotice) -> None:
        calls.append(notice)
        raise RuntimeError("drain failed")

    imds.switch_on()
    watcher = SpotWatcher(explode, endpoint=imds.url, interval=0.01)
    watcher.start()
    _wait_until(lambda: not watcher.is_alive())
    watcher.stop(WAIT_S)
    assert len(calls) == 1


def test_watcher_rejects_a_bad_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        SpotWatcher(Recorder(), endpoint="http://127.0.0.1:1", interval=0)


def test_backoff_grows_only_until_imds_has_answered() -> None:
    delays = [1.0]
    for _ in range(10):
        delays.append(
            next_delay(delays[-1], interval=1.0, max_interval=60.0, failed=True, imds_seen=False)
        )
    assert delays[:7] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert delays[-1] == 60.0
    # Once IMDS is known to exist, a failure is retried at the normal cadence.
    assert next_delay(60.0, interval=1.0, max_interval=60.0, failed=True, imds_seen=True) == 1.0
    assert next_delay(60.0, interval=1.0, max_interval=60.0, failed=False, imds_seen=False) == 1.0
