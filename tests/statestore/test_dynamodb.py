"""What only the DynamoDB hot tier promises, checked against a real moto_server over HTTP."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from statestore import (
    EntryKind,
    JournalEntry,
    LeaseLostError,
    RunStatus,
    StoreUnavailableError,
    open_hot,
)
from statestore.backends.dynamodb import MAX_DOC_BYTES, DynamoHotTier
from tests.conftest import unique
from tests.support.servers import MotoServer, free_port

TTL = timedelta(seconds=60)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def noise(size: int, seed: int = 0) -> bytes:
    """Bytes the codec cannot compress, so sizes on the wire are what the test says."""
    return random.Random(seed).randbytes(size)


def entry(seq: int, value: bytes = b"v") -> JournalEntry:
    return JournalEntry(
        seq=seq, kind=EntryKind.STEP, name="s", value=value, started_at=T0, ended_at=T0
    )


@pytest.fixture
def tier(moto_server: MotoServer) -> Iterator[DynamoHotTier]:
    made = DynamoHotTier(
        unique("ddb"), region="us-east-1", endpoint_url=moto_server.endpoint, create=True
    )
    yield made
    made.close()


@pytest.fixture
def raw(moto_server: MotoServer) -> Iterator[Any]:
    """A client of the test's own, to look at items behind the tier's back."""
    client = boto3.client("dynamodb", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    yield client
    client.close()


def record_calls(tier: DynamoHotTier) -> list[str]:
    """The names of the API operations the tier sends from now on."""
    calls: list[str] = []

    def note(model: Any, **_: Any) -> None:
        calls.append(model.name)

    tier._client.meta.events.register("before-call.dynamodb", note)
    return calls


def run_item(raw: Any, tier: DynamoHotTier, run_id: str) -> dict[str, Any]:
    item: dict[str, Any] = raw.get_item(
        TableName=tier.table, Key={"pk": {"S": run_id}, "sk": {"S": "run"}}, ConsistentRead=True
    )["Item"]
    return item


# ---------------------------------------------------------------- limits and errors


def test_oversized_document_gets_a_clear_error(tier: DynamoHotTier) -> None:
    big = noise(MAX_DOC_BYTES + 1024)
    with pytest.raises(ValueError, match=r"400 KB.*cold tier"):
        tier.create_run("big", "fn", input=big, input_hash="h")
    assert tier.find_run("big") is None

    tier.create_run("r1", "fn")
    token = tier.acquire_lease("r1", "leg", TTL).token
    with pytest.raises(ValueError, match="entry seq 0 serializes to"):
        tier.append("r1", token, [entry(0, big)])
    assert tier.read_journal("r1") == []
    assert tier.get_run("r1").next_seq == 0


def test_large_entries_spread_over_several_items_and_read_back(
    tier: DynamoHotTier, raw: Any
) -> None:
    tier.create_run("r1", "fn")
    token = tier.acquire_lease("r1", "leg", TTL).token
    values = [noise(100_000, seed=i) for i in range(8)]  # 800 KB: more than two items' worth
    tier.append("r1", token, [entry(i, v) for i, v in enumerate(values)])
    items = raw.query(
        TableName=tier.table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :j)",
        ExpressionAttributeValues={":pk": {"S": "r1"}, ":j": {"S": "j#"}},
    )["Items"]
    assert len(items) >= 3
    assert [e.value for e in tier.read_journal("r1")] == values
    assert [e.seq for e in tier.read_journal("r1", after_seq=4)] == [5, 6, 7]


def test_missing_table_is_unavailable_and_named(moto_server: MotoServer) -> None:
    name = unique("absent")
    tier = DynamoHotTier(name, region="us-east-1", endpoint_url=moto_server.endpoint)
    with pytest.raises(StoreUnavailableError, match=rf"{name}.*does not exist.*create=1"):
        tier.get_run("r1")
    with pytest.raises(StoreUnavailableError, match=name):
        tier.create_run("r1", "fn")


def test_unreachable_endpoint_is_unavailable() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    tier = DynamoHotTier("t", region="us-east-1", endpoint_url=endpoint, max_attempts=1)
    with pytest.raises(StoreUnavailableError, match=rf"'t' at {endpoint}"):
        tier.get_run("r1")


def test_url_opens_and_creates_the_table(moto_server: MotoServer) -> None:
    name = unique("url")
    url = f"dynamodb://{name}?region=us-east-1&endpoint_url={moto_server.endpoint}&create=1"
    first = open_hot(url)
    first.create_run("r1", "fn")
    again = open_hot(url)  # create=1 on an existing table is fine
    assert isinstance(again, DynamoHotTier)
    assert again.table == name and again.inline_limit == 32 * 1024
    assert again.get_run("r1").function == "fn"


# ---------------------------------------------------------------- conditional writes


def test_insert_conflict_returns_the_existing_record_without_a_read(
    tier: DynamoHotTier,
) -> None:
    first = tier.create_run("r1", "fn", input=b"in", input_hash="h1")
    calls = record_calls(tier)
    other = first.model_copy(update={"input": b"other", "input_hash": "h2"})
    assert tier._insert_run(other) == first
    assert calls == ["PutItem"]


def test_lost_version_race_returns_the_current_record_without_a_read(
    moto_server: MotoServer, tier: DynamoHotTier
) -> None:
    api = DynamoHotTier(tier.table, region="us-east-1", endpoint_url=moto_server.endpoint)
    tier.create_run("r1", "fn")
    token = tier.acquire_lease("r1", "leg", TTL).token
    tier.append("r1", token, [entry(0)])
    api.cancel("r1")
    calls = record_calls(tier)
    with pytest.raises(LeaseLostError, match="cancelled"):
        tier.append("r1", token, [entry(1)])
    assert calls == ["TransactWriteItems"]  # the cancelled record came back with the refusal
    assert [e.seq for e in api.read_journal("r1")] == [0]


def test_a_retried_write_that_already_landed_counts_as_done(tier: DynamoHotTier) -> None:
    # The reply to a conditional put can be lost after it was applied; botocore then retries it
    # and the retry fails its condition against the very item it wrote.
    old = tier.create_run("r1", "fn")
    new = old.model_copy(update={"version": 1, "tags": {"k": "v"}})
    assert tier._write(old, new, (), None) is None
    assert tier._write(old, new, (), None) is None
    rival = old.model_copy(update={"version": 1, "tags": {"k": "other"}})
    assert tier._write(old, rival, (), None) == new


def test_write_to_a_missing_run_raises_not_found(tier: DynamoHotTier) -> None:
    from statestore import RunNotFoundError

    ghost = tier.create_run("r1", "fn")
    tier.delete_run("r1")
    with pytest.raises(RunNotFoundError):
        tier._write(ghost, ghost.model_copy(update={"version": 1}), (), None)
    with pytest.raises(RunNotFoundError):
        tier._write(ghost, ghost.model_copy(update={"version": 1}), [entry(0)], None)


# ---------------------------------------------------------------- the due index and retention


def test_due_index_is_sparse(tier: DynamoHotTier, raw: Any) -> None:
    tier.create_run("r1", "fn")
    pending = run_item(raw, tier, "r1")
    assert pending["due_p"] == {"S": "due"} and "due_at" in pending
    token = tier.acquire_lease("r1", "leg", TTL).token
    tier.complete("r1", token, b"done")
    done = run_item(raw, tier, "r1")
    # An ended run leaves the "due" partition for the "ended" one (retention's index).
    assert done["due_p"] == {"S": "ended"}
    assert "expires_at" not in done  # no native TTL: it would delete the run item alone
    indexed = raw.query(
        TableName=tier.table,
        IndexName="due",
        KeyConditionExpression="due_p = :p",
        ExpressionAttributeValues={":p": {"S": "due"}},
    )["Items"]
    assert indexed == []


def test_due_runs_come_earliest_first(tier: DynamoHotTier) -> None:
    clock_now = [T0]
    tier._clock = lambda: clock_now[0]
    for i, run_id in enumerate(["c", "a", "b"]):
        clock_now[0] = T0 + timedelta(seconds=i)
        tier.create_run(run_id, "fn")
    assert tier.due_runs(T0 + timedelta(minutes=1)) == ["c", "a", "b"]
    assert tier.due_runs(T0 + timedelta(seconds=1)) == ["c", "a"]
    assert tier.due_runs(T0 + timedelta(minutes=1), limit=1) == ["c"]


def test_ended_runs_are_indexed_by_end_time_and_the_table_has_no_ttl(
    moto_server: MotoServer, tier: DynamoHotTier, raw: Any
) -> None:
    kept = DynamoHotTier(
        tier.table,
        region="us-east-1",
        endpoint_url=moto_server.endpoint,
        retention=timedelta(days=7),
    )
    kept.create_run("r1", "fn")
    token = kept.acquire_lease("r1", "leg", TTL).token
    done = kept.complete("r1", token, None)
    assert done.status is RunStatus.SUCCEEDED
    item = run_item(raw, kept, "r1")
    assert item["due_at"] == {"N": f"{done.updated_at.timestamp():.6f}"}
    assert "expires_at" not in item
    assert kept.expired_runs(done.updated_at + timedelta(days=7)) == ["r1"]
    assert kept.expired_runs(done.updated_at + timedelta(days=6)) == []
    ttl = raw.describe_time_to_live(TableName=tier.table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "DISABLED"


def test_delete_run_removes_the_run_item_last(tier: DynamoHotTier, raw: Any) -> None:
    tier.create_run("r1", "fn")
    token = tier.acquire_lease("r1", "leg", TTL).token
    tier.append("r1", token, [entry(0)])
    tier.put_signal("r1", "go", b"x")
    order: list[str] = []
    batch, single = tier._client.batch_write_item, tier._client.delete_item

    def batch_write_item(**params: Any) -> Any:
        order.extend(
            r["DeleteRequest"]["Key"]["sk"]["S"] for r in params["RequestItems"][tier.table]
        )
        return batch(**params)

    def delete_item(**params: Any) -> Any:
        order.append(params["Key"]["sk"]["S"])
        return single(**params)

    tier._client.batch_write_item = batch_write_item
    tier._client.delete_item = delete_item
    tier.delete_run("r1")
    # Until the run item goes, the id stays taken: nothing can meet the old journal.
    assert order[-1] == "run" and sorted(order[:-1])[0] == "j#000000000000"
    assert len(order) == 3
    left = raw.query(
        TableName=tier.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "r1"}},
    )["Items"]
    assert left == []


# ---------------------------------------------------------------- journal and signals


def test_journal_reads_page_through_one_megabyte_responses(tier: DynamoHotTier) -> None:
    tier.create_run("r1", "fn")
    token = tier.acquire_lease("r1", "leg", TTL).token
    value = noise(30_000)
    for first in range(0, 98 * 2, 98):  # two appends of 98 entries: about 6 MB
        tier.append("r1", token, [entry(first + i, value) for i in range(98)])
    calls = record_calls(tier)
    journal = tier.read_journal("r1")
    assert [e.seq for e in journal] == list(range(196))
    assert calls.count("Query") >= 6


def test_signal_names_that_share_a_prefix_stay_apart(tier: DynamoHotTier) -> None:
    tier.create_run("r1", "fn")
    tier.put_signal("r1", "a", b"1")
    tier.put_signal("r1", "a#b", b"2")
    tier.put_signal("r1", "a", b"3")
    assert [s.payload for s in tier.pending_signals("r1", "a")] == [b"1", b"3"]
    assert [s.payload for s in tier.pending_signals("r1", "a#b")] == [b"2"]
    assert [s.payload for s in tier.pending_signals("r1")] == [b"1", b"2", b"3"]


def test_delete_run_removes_every_item_of_the_run_only(tier: DynamoHotTier, raw: Any) -> None:
    for run_id in ("r1", "r2"):
        tier.create_run(run_id, "fn")
        token = tier.acquire_lease(run_id, "leg", TTL).token
        for seq in range(30):
            tier.append(run_id, token, [entry(seq)])
        tier.put_signal(run_id, "go")
    tier.delete_run("r1")
    left = raw.scan(TableName=tier.table)["Items"]
    assert {i["pk"]["S"] for i in left} == {"r2"}
    assert len(left) == 1 + 30 + 1
    assert tier.find_run("r1") is None
    assert len(tier.read_journal("r2")) == 30


def test_list_runs_is_newest_first(tier: DynamoHotTier) -> None:
    clock_now = [T0]
    tier._clock = lambda: clock_now[0]
    for i in range(5):
        clock_now[0] = T0 + timedelta(seconds=i)
        tier.create_run(f"r{i}", "fn")
    assert [r.run_id for r in tier.list_runs(limit=3)] == ["r4", "r3", "r2"]
