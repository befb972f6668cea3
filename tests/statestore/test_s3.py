"""What only the S3 cold tier promises, checked against a real moto_server over HTTP."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from statestore import BlobNotFoundError, CorruptStateError, StoreUnavailableError, open_cold
from statestore.backends.s3 import S3ColdTier
from statestore.models import BlobRef
from tests.conftest import unique
from tests.statestore.corrupt import flip
from tests.support.servers import MotoServer, free_port


@pytest.fixture
def tier(moto_server: MotoServer) -> Iterator[S3ColdTier]:
    made = S3ColdTier(
        unique("s3t"),
        prefix="app/outlast",
        region="us-east-1",
        endpoint_url=moto_server.endpoint,
        create=True,
    )
    yield made
    made.close()


@pytest.fixture
def raw(moto_server: MotoServer) -> Iterator[Any]:
    client = boto3.client("s3", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    yield client
    client.close()


def object_key(tier: S3ColdTier, run_id: str, ref: BlobRef) -> str:
    return tier.key(run_id, ref.sha256).removeprefix(f"s3://{tier.bucket}/")


def record_calls(tier: S3ColdTier) -> list[str]:
    calls: list[str] = []

    def note(model: Any, **_: Any) -> None:
        calls.append(model.name)

    tier._client.meta.events.register("before-call.s3", note)
    return calls


def test_key_layout(tier: S3ColdTier, raw: Any) -> None:
    ref = tier.put("r1", b"hello")
    assert tier.key("r1", ref.sha256) == (
        f"s3://{tier.bucket}/app/outlast/runs/r1/blobs/{ref.sha256}"
    )
    listed = raw.list_objects_v2(Bucket=tier.bucket)["Contents"]
    assert [o["Key"] for o in listed] == [f"app/outlast/runs/r1/blobs/{ref.sha256}"]


def test_second_put_of_the_same_bytes_writes_nothing(tier: S3ColdTier, raw: Any) -> None:
    ref = tier.put("r1", b"same bytes")
    key = object_key(tier, "r1", ref)
    before = raw.head_object(Bucket=tier.bucket, Key=key)["LastModified"]
    # Damage the stored copy: a put that overwrote would repair it, a conditional one cannot.
    raw.put_object(Bucket=tier.bucket, Key=key, Body=flip(b"same bytes"))
    damaged = raw.head_object(Bucket=tier.bucket, Key=key)["LastModified"]
    time.sleep(1.1)  # LastModified has one-second resolution
    calls = record_calls(tier)
    assert tier.put("r1", b"same bytes") == ref
    assert calls == ["PutObject"]
    assert raw.head_object(Bucket=tier.bucket, Key=key)["LastModified"] == damaged >= before
    with pytest.raises(CorruptStateError):
        tier.get("r1", ref)


def test_blobs_round_trip_and_many_fetch_concurrently(tier: S3ColdTier) -> None:
    blobs = [random.Random(i).randbytes(1000 + i * 7919) for i in range(24)]
    refs = [tier.put("r1", b) for b in blobs]
    assert tier.get_many("r1", [(ref, i) for i, ref in enumerate(refs)]) == blobs
    big = random.Random(99).randbytes(6 * 1024 * 1024)
    assert tier.get("r1", tier.put("r1", big)) == big


def test_missing_blob_raises_not_found_naming_the_key(tier: S3ColdTier) -> None:
    ref = BlobRef(sha256="0" * 64, size=3, codec="x")
    with pytest.raises(
        BlobNotFoundError, match=rf"s3://{tier.bucket}/app/outlast/runs/r1/blobs/0{{64}}"
    ):
        tier.get("r1", ref)
    stored = tier.put("r2", b"abc")
    with pytest.raises(BlobNotFoundError):
        tier.get("r1", stored)  # blobs belong to their run


def test_delete_run_removes_only_that_runs_blobs(tier: S3ColdTier, raw: Any) -> None:
    # "a" is a prefix of "ab": a careless listing would take the neighbour's blobs too.
    def put_many(run_id: str, count: int) -> list[BlobRef]:
        def put(i: int) -> BlobRef:
            return tier.put(run_id, f"{run_id}:{i}".encode())

        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(put, range(count)))

    put_many("a", 1005)  # more than one DeleteObjects batch
    kept_ab = put_many("ab", 3)
    kept_b = put_many("b", 2)
    calls = record_calls(tier)
    assert tier.delete_run("a") == 1005
    assert calls.count("DeleteObjects") == 2
    left = raw.list_objects_v2(Bucket=tier.bucket)["Contents"]
    assert len(left) == 5
    assert all(tier.get(r, ref) for r, refs in (("ab", kept_ab), ("b", kept_b)) for ref in refs)
    assert tier.delete_run("a") == 0


def test_unreachable_endpoint_is_unavailable() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    tier = S3ColdTier("bucket-x", region="us-east-1", endpoint_url=endpoint, max_attempts=1)
    with pytest.raises(StoreUnavailableError, match=rf"'bucket-x' at {endpoint}"):
        tier.put("r1", b"data")
    with pytest.raises(StoreUnavailableError):
        tier.get("r1", BlobRef(sha256="0" * 64, size=1, codec="x"))
    with pytest.raises(StoreUnavailableError):
        S3ColdTier(
            "bucket-x", region="us-east-1", endpoint_url=endpoint, max_attempts=1, create=True
        )


def test_missing_bucket_is_unavailable_and_named(moto_server: MotoServer) -> None:
    name = unique("nobucket")
    tier = S3ColdTier(name, region="us-east-1", endpoint_url=moto_server.endpoint)
    with pytest.raises(StoreUnavailableError, match=rf"{name}.*does not exist.*create=1"):
        tier.put("r1", b"data")
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        tier.get("r1", BlobRef(sha256="0" * 64, size=1, codec="x"))


def test_url_opens_and_creates_the_bucket(moto_server: MotoServer) -> None:
    bucket = unique("url")
    url = f"s3://{bucket}/pre/fix?region=us-east-1&endpoint_url={moto_server.endpoint}&create=1"
    first = open_cold(url)
    ref = first.put("r1", b"v")
    again = open_cold(url)  # create=1 on an existing bucket is fine
    assert isinstance(again, S3ColdTier)
    assert again.key("r1", ref.sha256) == f"s3://{bucket}/pre/fix/runs/r1/blobs/{ref.sha256}"
    assert again.get("r1", ref) == b"v"
