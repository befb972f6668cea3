"""Fixtures: a DynamoDB hot tier and an S3 cold tier on moto_server, fresh per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest

from outlast import App
from tests.conftest import unique
from tests.lambda_platform.support import CapturingLambda
from tests.lambda_platform.workloads import make_app
from tests.support.servers import MotoServer


@dataclass
class Tiers:
    hot_url: str
    cold_url: str
    table: str
    bucket: str
    endpoint: str

    def cold_objects(self) -> list[str]:
        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=self.endpoint)
        listed = s3.list_objects_v2(Bucket=self.bucket)
        return sorted(obj["Key"] for obj in listed.get("Contents", []))


@pytest.fixture
def tiers(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Tiers:
    # The apps under test take their store from the URLs given, never from the environment.
    monkeypatch.delenv("OUTLAST_HOT_URL", raising=False)
    monkeypatch.delenv("OUTLAST_COLD_URL", raising=False)
    table, bucket = unique("lambda-hot"), unique("lambda-cold")
    endpoint = moto_server.endpoint
    return Tiers(
        hot_url=f"dynamodb://{table}?region=us-east-1&endpoint_url={endpoint}&create=1",
        cold_url=f"s3://{bucket}/outlast?region=us-east-1&endpoint_url={endpoint}&create=1",
        table=table,
        bucket=bucket,
        endpoint=endpoint,
    )


@pytest.fixture
def app(tiers: Tiers) -> Iterator[App]:
    made = make_app(tiers.hot_url, tiers.cold_url)
    yield made
    made.close()


@pytest.fixture
def lam() -> CapturingLambda:
    return CapturingLambda()
