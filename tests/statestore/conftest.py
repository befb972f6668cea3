"""Parametrized tiers: every conformance test runs against every backend.

A new backend is a new branch in ``make_hot``/``make_cold``, not new tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from statestore import ColdTier, HotTier, open_hot
from tests.conftest import unique
from tests.support.servers import MotoServer, RedisServer

HOT_BACKENDS = ["memory", "sqlite", "redis", "dynamodb"]
COLD_BACKENDS = ["memory", "fs", "s3"]

HotFactory = Callable[..., HotTier]
ColdFactory = Callable[..., ColdTier]


class FakeClock:
    """A clock the tests move by hand, so lease expiry needs no sleeping."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=HOT_BACKENDS)
def hot_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def hot_url(hot_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL naming a fresh, empty hot tier of the parametrized kind (for other processes too)."""
    if hot_kind == "memory":
        return f"memory://{unique('m')}"
    if hot_kind == "sqlite":
        return f"sqlite:///{tmp_path / 'hot.db'}"
    if hot_kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return f"{server.url}?prefix={unique('t')}"
    if hot_kind == "dynamodb":
        moto: MotoServer = request.getfixturevalue("moto_server")
        return f"dynamodb://{unique('hot')}?region=us-east-1&endpoint_url={moto.endpoint}&create=1"
    raise AssertionError(hot_kind)


@pytest.fixture
def make_hot(hot_url: str) -> Iterator[HotFactory]:
    """Open handles on the test's hot tier; extra kwargs (clock, inline_limit) go to the backend.

    Each call is a new handle (a new connection), as a second process would have.
    """
    made: list[HotTier] = []

    def factory(**kwargs: Any) -> HotTier:
        tier: HotTier
        if hot_url.startswith("memory://"):
            from statestore.backends.memory import MemoryHotTier

            first = made[0] if made else None
            assert first is None or isinstance(first, MemoryHotTier)
            tier = MemoryHotTier(share=first, **kwargs)
        else:
            tier = open_hot(hot_url, **kwargs)
        made.append(tier)
        return tier

    yield factory
    for tier in made:
        tier.close()


@pytest.fixture
def hot(make_hot: HotFactory) -> HotTier:
    return make_hot()


@pytest.fixture(params=COLD_BACKENDS)
def cold_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_cold(
    cold_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ColdFactory]:
    made: list[ColdTier] = []

    def factory(**kwargs: Any) -> ColdTier:
        tier: ColdTier
        if cold_kind == "memory":
            from statestore.backends.memory import MemoryColdTier

            tier = MemoryColdTier()
        elif cold_kind == "fs":
            from statestore.backends.fs import FsColdTier

            tier = FsColdTier(tmp_path / "cold", **kwargs)
        elif cold_kind == "s3":
            from statestore.backends.s3 import S3ColdTier

            moto: MotoServer = request.getfixturevalue("moto_server")
            tier = S3ColdTier(
                unique("cold"),
                prefix="outlast",
                region="us-east-1",
                endpoint_url=moto.endpoint,
                create=True,
                **kwargs,
            )
        else:  # pragma: no cover
            raise AssertionError(cold_kind)
        made.append(tier)
        return tier

    yield factory
    for tier in made:
        tier.close()


@pytest.fixture
def cold(make_cold: ColdFactory) -> ColdTier:
    return make_cold()
