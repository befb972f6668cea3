"""Damage an S3 blob behind the tier's back, through a client of its own."""

from __future__ import annotations

import boto3

from statestore import ColdTier
from tests.statestore.corrupt import flip


def corrupt_s3_blob(tier: ColdTier, run_id: str, sha256: str) -> None:
    """Overwrite the blob's object with the same bytes, one bit flipped."""
    bucket: str = tier.bucket  # type: ignore[attr-defined]
    endpoint: str = tier.endpoint  # type: ignore[attr-defined]
    key = tier.key(run_id, sha256).removeprefix(f"s3://{bucket}/")
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        # A plain PUT: no If-None-Match, no checksum, so the damage is stored as is.
        client.put_object(Bucket=bucket, Key=key, Body=flip(data))
    finally:
        client.close()
