"""Damage a DynamoDB journal entry behind the tier's back, through a client of its own."""

from __future__ import annotations

import boto3

from statestore import HotTier
from tests.statestore.corrupt import flip


def corrupt_dynamodb_entry(tier: HotTier, run_id: str, seq: int) -> str:
    """Flip a bit in entry ``seq``'s stored doc; return the key the tier reports it under.

    A journal item holds the entries of one append, keyed by its first seq: the entry lives in
    the last item keyed at or below ``seq``, at position ``seq - first``.
    """
    table: str = tier.table  # type: ignore[attr-defined]
    endpoint: str = tier.endpoint  # type: ignore[attr-defined]
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    try:
        found = client.query(
            TableName=table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": {"S": run_id},
                ":lo": {"S": "j#000000000000"},
                ":hi": {"S": f"j#{seq:012d}"},
            },
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )["Items"]
        assert found, f"no journal item holds seq {seq} of run {run_id}"
        item = found[0]
        sk = item["sk"]["S"]
        offset = seq - int(sk[2:])
        docs = item["docs"]["L"]
        docs[offset] = {"B": flip(bytes(docs[offset]["B"]))}
        client.put_item(TableName=table, Item=item)
    finally:
        client.close()
    return f"{table}/{run_id}/{sk}[{offset}]"
