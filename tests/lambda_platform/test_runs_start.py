"""``outlast runs start``: into the store, onto a worker queue (Redis stream, SQS), or through a
deployed runs API signed with SigV4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest

from outlast.worker.queues import open_queue
from statestore import RunStatus, open_store
from tests.conftest import unique
from tests.support.servers import MotoServer, RedisServer

AGENT = """
from outlast import App, Context

app = App("starter")


@app.durable()
def double(ctx: Context, n: int) -> int:
    return ctx.step(lambda: n * 2, name="double")
"""


def outlast(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("OUTLAST_HOT_URL", None)
    env.pop("OUTLAST_COLD_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "outlast.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "starter.py").write_text(textwrap.dedent(AGENT), encoding="utf-8")
    return tmp_path


def test_without_a_destination_the_run_is_only_created(project: Path) -> None:
    done = outlast(project, "runs", "start", "starter.py:double", "--input", "21", "--run-id", "s1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "s1"
    store = open_store("sqlite:///" + str(project / ".outlast" / "hot.db"), None)
    record = store.hot.get_run("s1")
    assert (record.function, record.status) == ("double", RunStatus.PENDING)
    assert record.tags["target"].endswith("starter.py:double")
    store.close()
    # A generated id is printed; a bad input is one line and exit code 2.
    again = outlast(project, "runs", "start", "starter.py:double", "--input", "1")
    assert again.returncode == 0 and len(again.stdout.strip()) == 32
    bad = outlast(project, "runs", "start", "starter.py:double", "--input", '"x"')
    assert bad.returncode == 2 and "input" in bad.stderr and "Traceback" not in bad.stderr


def test_queue_redis_stream(project: Path, redis_server: RedisServer) -> None:
    stream = unique("starts")
    url = f"{redis_server.url}#{stream}"
    done = outlast(
        project, "runs", "start", "starter.py:double", "--input", "2", "--run-id", "q1",
        "--queue", url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "q1"
    queue = open_queue(url)
    try:
        message = queue.receive(2.0)
        assert message is not None and (message.run_id, message.leg) == ("q1", None)
    finally:
        queue.close()


def test_queue_sqs(project: Path, moto_server: MotoServer) -> None:
    name = unique("starts")
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    sqs.create_queue(QueueName=name)
    url = f"sqs://{name}?region=us-east-1&endpoint_url={moto_server.endpoint}"
    done = outlast(
        project, "runs", "start", "starter.py:double", "--input", "3", "--run-id", "q2",
        "--queue", url, "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run_id"] == "q2"
    queue = open_queue(url)
    try:
        message = queue.receive(2.0)
        assert message is not None and message.run_id == "q2"
    finally:
        queue.close()


class _FakeApi(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _FakeApi.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 ") or "/execute-api/aws4_request" not in auth:
            self._answer(403, {"message": "Missing Authentication Token"})
            return
        request = json.loads(body)
        self._answer(202, {"run_id": request.get("run_id", "generated"), "status": "pending"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def fake_api() -> Iterator[str]:
    _FakeApi.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_api_is_called_signed_with_sigv4(tmp_path: Path, fake_api: str) -> None:
    # Credentials from the standard chain: here the environment (tests/conftest.py sets them).
    done = outlast(
        tmp_path, "runs", "start", "research", "--input", '"durable agents"', "--run-id", "a1",
        "--api", fake_api, "--region", "us-east-1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "a1"
    [call] = _FakeApi.seen
    assert call["path"] == "/runs"
    assert json.loads(call["body"]) == {
        "function": "research",
        "input": "durable agents",
        "run_id": "a1",
    }
    headers = {k.lower(): v for k, v in call["headers"].items()}
    assert "us-east-1/execute-api/aws4_request" in headers["authorization"]
    assert headers["x-amz-date"]
    # Nothing was written locally: the API owns the run.
    assert not (tmp_path / ".outlast").exists()


def test_api_refusal_is_one_line(tmp_path: Path, fake_api: str) -> None:
    env_less = dict(os.environ, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    done = subprocess.run(
        [sys.executable, "-m", "outlast.cli", "runs", "start", "research", "--api", fake_api],
        cwd=tmp_path,
        env={**env_less, "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
             "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "credentials" in done.stderr and "Traceback" not in done.stderr
