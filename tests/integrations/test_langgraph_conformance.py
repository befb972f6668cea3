"""The official ``langgraph-checkpoint-conformance`` suite against ``OutlastSaver``, per tier."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate

from outlast.integrations.langgraph import OutlastSaver
from statestore import open_store
from tests.conftest import unique
from tests.support.servers import MotoServer, RedisServer


def _urls(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str]:
    if kind.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'hot.db'}", f"file://{tmp_path / 'cold'}"
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return f"{server.url}?prefix={unique('lg')}", f"file://{tmp_path / 'cold'}"
    moto: MotoServer = request.getfixturevalue("moto_server")
    return (
        f"dynamodb://{unique('lg')}?region=us-east-1&endpoint_url={moto.endpoint}&create=1",
        f"s3://{unique('lg')}/lg?region=us-east-1&endpoint_url={moto.endpoint}&create=1",
    )


@pytest.mark.parametrize("kind", ["sqlite", "sqlite-exclusive", "redis", "dynamodb"])
def test_conformance(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    hot_url, cold_url = _urls(kind, tmp_path, request)
    counter = iter(range(1_000))

    @checkpointer_test(name=f"OutlastSaver[{kind}]")
    async def saver() -> AsyncGenerator[BaseCheckpointSaver[str], None]:
        # A fresh, empty hot tier per capability suite (the suite lists across all threads).
        n = next(counter)
        hot = hot_url.replace("hot.db", f"hot{n}.db") if kind.startswith("sqlite") else hot_url
        if kind == "redis":
            hot = hot_url.split("?prefix=")[0] + f"?prefix={unique('lg')}"
        if kind == "dynamodb":
            hot = hot_url.replace("dynamodb://", "dynamodb://s").replace(
                "?region", f"{n}?region", 1
            )
        store = open_store(hot, cold_url)
        try:
            yield OutlastSaver(store, exclusive=kind.endswith("exclusive"))
        finally:
            store.close()

    report = asyncio.run(validate(saver))
    failures = {
        cap: result.failures
        for cap, result in report.results.items()
        if result.detected and not result.passed
    }
    assert report.passed_all_base(), failures
    assert not failures, failures
    detected = {cap for cap, result in report.results.items() if result.detected}
    assert {"copy_thread", "prune", "delete_thread"} <= detected
