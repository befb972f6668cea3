"""The console over every store Outlast supports: SQLite, Redis, DynamoDB+S3 (moto_server)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from outlast.ui.server import UiConfig
from statestore import open_store
from tests.conftest import unique
from tests.support.servers import MotoServer, RedisServer
from tests.ui.conftest import TOKEN, Server
from tests.ui.workload import make_app


def _urls(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str]:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold"
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return f"{server.url}?prefix={unique('ui')}", f"file://{tmp_path}/cold"
    moto: MotoServer = request.getfixturevalue("moto_server")
    end = f"region=us-east-1&endpoint_url={moto.endpoint}&create=1"
    return f"dynamodb://{unique('ui')}?{end}", f"s3://{unique('ui')}/runs?{end}"


@pytest.mark.parametrize("kind", ["sqlite", "redis", "dynamodb"])
def test_pages_api_and_a_signal_on_each_store(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    hot, cold = _urls(kind, tmp_path, request)
    store = open_store(hot, cold)
    try:
        app = make_app(store)
        app.drive(app.start("research", "stores", run_id="research-1"))
        app.drive(app.start("approval", "ship", run_id="waiting-1"), max_wait=0.1)
        config = UiConfig(hot=hot, cold=cold, allow_actions=True, token=TOKEN)
        with Server(config) as server:
            with urllib.request.urlopen(server.url + "/?status=succeeded", timeout=30) as resp:
                assert 'data-run="research-1"' in resp.read().decode()
            with urllib.request.urlopen(server.url + "/runs/research-1", timeout=30) as resp:
                page = resp.read().decode()
            assert "summary of stores" in page and 'class="lane"' in page
            journal = store.hot.read_journal("research-1")
            big = next(e for e in journal if e.name == "big")
            url = f"{server.url}/api/runs/research-1/entries/{big.seq}"
            with urllib.request.urlopen(url, timeout=30) as resp:
                entry = json.loads(resp.read())
            assert entry["tier"] == "cold" and len(entry["value"]) == 300_000
            form = urllib.parse.urlencode({"name": "approve", "payload": '"yes"'}).encode()
            post = urllib.request.Request(
                server.url + "/runs/waiting-1/signal",
                data=form,
                method="POST",
                headers={
                    "Authorization": f"Bearer {TOKEN}",
                    "Accept": "application/json",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            with urllib.request.urlopen(post, timeout=30) as resp:
                assert json.loads(resp.read())["done"] == "sent signal 'approve'"
        assert app.drive("waiting-1").result == "ship: yes"
    finally:
        store.close()
