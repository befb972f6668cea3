"""DynamoDB hot tier: one table, a run's record, journal and signals under one partition key.

Layout (the SAM template uses exactly these names)::

    pk (S)   sk (S)                  attributes
    run_id   "run"                   doc (B), v (N), [due_p "due" | "ended", due_at (N)]
    run_id   "j#000000000042"        docs (L of B): entries 42, 43, ... appended together
    run_id   "s#<name>#<signal_id>"  doc (B): a pending signal
    "log#L"  "head"                  label (S), due_p "logs", due_at (N): record log L
    "log#L"  "r#000000000007"        data (B): record 7 of log L (``statestore/logs.py``)

A journal item holds the entries of one append (split further only to stay under the item size
limit) and is keyed by the seq of its first entry; an append of one entry is one item per seq.
Each entry keeps its own framed document, so damage is still found and named entry by entry.
Why not one item per entry: a batch then costs one transaction action per entry, rounds every
small entry up to a full write unit, and (on moto, which copies the table for every action of a
transaction) makes the conformance suite's 10,000-entry journal take minutes.

A fenced write is one ``TransactWriteItems``: the run item conditioned on ``v = :old``, the new
journal items conditioned on not existing, and the delete of a taken signal. When the version
check fails, DynamoDB hands back the current run item (``ReturnValuesOnConditionCheckFailure=
ALL_OLD``), so a lost race costs no extra read.

The ``due`` index is a sparse GSI: only run items a sweeper must look at carry ``due_p``/``due_at``.
A Put replaces the whole run item, so a run that ends simply stops carrying them and leaves the
index. GSIs are eventually consistent: a sweeper may see a run a moment late or a moment after it
stopped being due; it re-checks by taking the lease, which reads consistently, so that is harmless.

An ended run moves to the same index under another partition, ``due_p = "ended"`` with
``due_at`` = when it ended, so retention finds expired runs with a query too. Retention deletes
every item of the run, the run item last (``_delete_ended``). DynamoDB's own TTL is not used: it
deletes one item at a time in no order, so it freed the run id while the journal stayed, and a
new run with the same id read the old run's journal.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from statestore import serialize
from statestore.backends.aws import aws_client
from statestore.errors import (
    BatchTooLargeError,
    CorruptStateError,
    RunNotFoundError,
    SequenceConflictError,
    StateStoreError,
    StoreUnavailableError,
)
from statestore.hot import Clock, HotTier, ListedRun, RunCursor
from statestore.models import JournalEntry, RunRecord, Signal, utcnow

Item = dict[str, Any]

RUN_SK = "run"
DUE_INDEX = "due"
DUE_PARTITION = "due"
ENDED_PARTITION = "ended"
LOGS_PARTITION = "logs"  # the due index also lists record logs, by their head items
LOG_HEAD_SK = "head"
_LAST_ENTRY_SK = "j#999999999999"

# DynamoDB refuses items over 400 KB with a terse ValidationException; stop well before that
# (attribute names and keys count too) and say which document was too big.
MAX_DOC_BYTES = 350 * 1024
# One transaction carries at most 4 MB of items.
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024 - 64 * 1024

# Cancellation reasons that say "try again", not "your condition failed".
_TRANSIENT_CANCEL = frozenset(
    {
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
        "InternalServerError",
    }
)
_THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    }
)
_REFUSED = frozenset(
    {"UnrecognizedClientException", "AccessDeniedException", "ExpiredTokenException"}
)
_WRITE_TRIES = 5


def entry_sk(seq: int) -> str:
    return f"j#{seq:012d}"


def signal_sk(name: str, signal_id: str) -> str:
    return f"s#{name}#{signal_id}"


def _num(value: datetime) -> str:
    return f"{value.timestamp():.6f}"


class _RejectedError(Exception):
    """A ClientError the caller expected (a failed condition, a cancelled transaction)."""

    def __init__(self, code: str, response: Mapping[str, Any]) -> None:
        super().__init__(code)
        self.code = code
        self.response = response


class DynamoHotTier(HotTier):
    scheme = "dynamodb"
    default_inline_limit = 32 * 1024
    # A transaction holds 100 actions and 4 MB. With 98 entries, even one journal item per entry
    # leaves room for the run item and a signal delete, and 98 values at the default inline
    # limit (about 3.1 MB) fit in 4 MB: any batch of max_batch entries can be written.
    max_batch = 98

    def __init__(
        self,
        table: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        create: bool = False,
        client: Any = None,
        inline_limit: int | None = None,
        clock: Clock = utcnow,
        retention: timedelta | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        max_attempts: int = 4,
    ) -> None:
        super().__init__(inline_limit=inline_limit, clock=clock, retention=retention)
        if not table:
            raise ValueError("a DynamoDB table name is required")
        self.table = table
        owns = client is None
        if client is None:
            client = aws_client(
                "dynamodb",
                purpose=f"table {table!r}",
                region=region,
                endpoint_url=endpoint_url,
                max_attempts=max_attempts,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            )
        self._owns_client = owns
        self._client = client
        self.endpoint = str(client.meta.endpoint_url)
        if create:
            self._create_table()

    # ------------------------------------------------------------------ plumbing

    def _call(self, op: str, expect: frozenset[str] = frozenset(), **params: Any) -> Item:
        """Call the client; translate every error except the codes in ``expect``."""
        try:
            response: Item = getattr(self._client, op)(**params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in expect:
                raise _RejectedError(code, exc.response) from None
            self._translate(op, exc, code)
        except BotoCoreError as exc:
            raise StoreUnavailableError(
                f"DynamoDB table {self.table!r} at {self.endpoint}: {op} failed: {exc}"
            ) from exc
        return response

    def _translate(self, op: str, exc: ClientError, code: str) -> NoReturn:
        where = f"DynamoDB table {self.table!r} at {self.endpoint}"
        if code == "ResourceNotFoundException":
            raise StoreUnavailableError(
                f"{where} does not exist; deploy the SAM stack (template.yaml) or open the store "
                "with create=1 (dynamodb://TABLE?create=1)"
            ) from exc
        if code in _THROTTLED:
            raise StoreUnavailableError(
                f"{where}: {op} still throttled after retries ({code})"
            ) from exc
        if code in _REFUSED:
            raise StoreUnavailableError(f"{where}: {op} refused: {code}: {_message(exc)}") from exc
        raise StateStoreError(f"{where}: {op} failed: {code}: {_message(exc)}") from exc

    def _create_table(self) -> None:
        # ResourceInUse: someone else created it (or is creating it): wait for it below.
        with contextlib.suppress(_RejectedError):
            self._call(
                "create_table",
                expect=frozenset({"ResourceInUseException"}),
                TableName=self.table,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                    {"AttributeName": "due_p", "AttributeType": "S"},
                    {"AttributeName": "due_at", "AttributeType": "N"},
                ],
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                GlobalSecondaryIndexes=[
                    {
                        "IndexName": DUE_INDEX,
                        "KeySchema": [
                            {"AttributeName": "due_p", "KeyType": "HASH"},
                            {"AttributeName": "due_at", "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "KEYS_ONLY"},
                    }
                ],
            )
        try:
            self._client.get_waiter("table_exists").wait(
                TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailableError(
                f"DynamoDB table {self.table!r} at {self.endpoint} did not become ACTIVE: {exc}"
            ) from exc

    def _name(self, run_id: str, sk: str) -> str:
        return f"{self.table}/{run_id}/{sk}"

    def _doc(self, model: RunRecord | JournalEntry | Signal, what: str) -> bytes:
        doc = serialize.dump(model)
        if len(doc) > MAX_DOC_BYTES:
            raise ValueError(
                f"{what} serializes to {len(doc)} bytes; a DynamoDB item holds at most 400 KB, "
                f"so this tier refuses documents over {MAX_DOC_BYTES} bytes. Keep large values in "
                f"the cold tier (inline_limit is {self.inline_limit} bytes)"
            )
        return doc

    def _run_item(self, record: RunRecord) -> tuple[Item, bytes]:
        doc = self._doc(record, f"run {record.run_id!r} (version {record.version})")
        item: Item = {
            "pk": {"S": record.run_id},
            "sk": {"S": RUN_SK},
            "doc": {"B": doc},
            "v": {"N": str(record.version)},
        }
        due = record.due_at()
        ended = self.ended_at(record)
        if due is not None:
            item["due_p"] = {"S": DUE_PARTITION}
            item["due_at"] = {"N": _num(due)}
        elif ended is not None:
            item["due_p"] = {"S": ENDED_PARTITION}
            item["due_at"] = {"N": _num(ended)}
        return item, doc

    def _pages(self, run_id: str, entries: Sequence[JournalEntry]) -> list[tuple[int, list[bytes]]]:
        """Group the entries' documents into journal items under the item size limit."""
        pages: list[tuple[int, list[bytes]]] = []
        size = 0
        for e in entries:
            doc = self._doc(e, f"run {run_id!r} entry seq {e.seq}")
            if not pages or size + len(doc) > MAX_DOC_BYTES:
                pages.append((e.seq, []))
                size = 0
            pages[-1][1].append(doc)
            size += len(doc)
        return pages

    def _record(self, item: Mapping[str, Any]) -> RunRecord:
        run_id = item["pk"]["S"]
        return serialize.load_record(
            _bytes(item["doc"]), tier=self.scheme, key=self._name(run_id, RUN_SK), run_id=run_id
        )

    def _query(self, **params: Any) -> Iterator[Item]:
        """Every item a Query matches, a 1 MB page at a time, fetched as the caller consumes."""
        while True:
            page = self._call("query", **params)
            yield from page.get("Items", [])
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            params["ExclusiveStartKey"] = last

    # ------------------------------------------------------------------ primitives

    def _insert_run(self, record: RunRecord) -> RunRecord | None:
        item, _ = self._run_item(record)
        try:
            self._call(
                "put_item",
                expect=frozenset({"ConditionalCheckFailedException"}),
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except _RejectedError as rejected:
            return self._record(rejected.response["Item"])
        return None

    def _load_run(self, run_id: str) -> RunRecord | None:
        response = self._call(
            "get_item",
            TableName=self.table,
            Key={"pk": {"S": run_id}, "sk": {"S": RUN_SK}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return self._record(item) if item else None

    def _write(
        self,
        old: RunRecord,
        new: RunRecord,
        entries: Sequence[JournalEntry],
        take: Signal | None,
    ) -> RunRecord | None:
        run_id = old.run_id
        item, doc = self._run_item(new)
        guarded: Item = {
            "TableName": self.table,
            "Item": item,
            "ConditionExpression": "v = :old",
            "ExpressionAttributeValues": {":old": {"N": str(old.version)}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if not entries and take is None:
            # One conditional PutItem is half the price of a one-action transaction.
            try:
                self._call(
                    "put_item", expect=frozenset({"ConditionalCheckFailedException"}), **guarded
                )
            except _RejectedError as rejected:
                return self._lost(run_id, rejected.response.get("Item"), doc)
            return None

        actions: list[Item] = [{"Put": guarded}]
        size = len(doc)
        for first, docs in self._pages(run_id, entries):
            size += sum(len(d) for d in docs)
            actions.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {
                            "pk": {"S": run_id},
                            "sk": {"S": entry_sk(first)},
                            "docs": {"L": [{"B": d} for d in docs]},
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        if size > MAX_TRANSACTION_BYTES or len(actions) > 99:
            raise BatchTooLargeError(
                f"run {run_id!r}: {len(entries)} entries make {size} bytes; one DynamoDB "
                "transaction holds at most 4 MB, so append them in smaller batches"
            )
        if take is not None:
            signal_key = {"pk": {"S": run_id}, "sk": {"S": signal_sk(take.name, take.signal_id)}}
            actions.append({"Delete": {"TableName": self.table, "Key": signal_key}})
        # botocore fills in one ClientRequestToken per call and keeps it across its own retries,
        # so a transaction whose reply was lost is not applied twice.
        for attempt in range(_WRITE_TRIES):
            try:
                self._call(
                    "transact_write_items",
                    expect=frozenset({"TransactionCanceledException"}),
                    TransactItems=actions,
                )
            except _RejectedError as rejected:
                reasons = rejected.response.get("CancellationReasons") or []
                codes = [str(r.get("Code", "None")) for r in reasons]
                if codes and codes[0] == "ConditionalCheckFailed":
                    return self._lost(run_id, reasons[0].get("Item"), doc)
                if any(c == "ConditionalCheckFailed" for c in codes[1:]):
                    raise SequenceConflictError(
                        f"run {run_id!r}: the journal already holds entries from seq "
                        f"{old.next_seq} on, although the run record (version {old.version}) "
                        "says that seq is next"
                    ) from None
                if attempt + 1 < _WRITE_TRIES and any(c in _TRANSIENT_CANCEL for c in codes):
                    time.sleep(random.uniform(0.005, 0.02) * 2**attempt)
                    continue
                raise StoreUnavailableError(
                    f"DynamoDB table {self.table!r} at {self.endpoint}: write to run {run_id!r} "
                    f"cancelled ({', '.join(codes) or 'no reason given'})"
                ) from None
            return None
        raise AssertionError("unreachable")  # pragma: no cover

    def _lost(self, run_id: str, item: Mapping[str, Any] | None, doc: bytes) -> RunRecord | None:
        """The version check failed: return the record that is there (or say there is none)."""
        if item is None:
            raise RunNotFoundError(run_id)
        # Our own write may be what is there: the request landed, its reply was lost and the
        # client retried it, and the retry found its own result.
        #
        #   client          DynamoDB
        #   put v=8 (v=7) -> applied, reply lost
        #   retry         -> v is 8 now: ConditionalCheckFailed, ALL_OLD = our item
        if _bytes(item["doc"]) == doc:
            return None
        return self._record(item)

    def _load_entries(self, run_id: str, after_seq: int) -> Iterable[JournalEntry]:
        lo = after_seq + 1
        if lo > 0:
            # Entry ``lo`` may sit inside a journal item that starts before it: the last item
            # keyed at or below it is the one to start from.
            head = self._call(
                "query",
                TableName=self.table,
                KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues={
                    ":pk": {"S": run_id},
                    ":lo": {"S": entry_sk(0)},
                    ":hi": {"S": entry_sk(lo)},
                },
                ProjectionExpression="sk",
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            ).get("Items", [])
            if head:
                lo = int(head[0]["sk"]["S"][2:])
        items = self._query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": {"S": run_id},
                ":lo": {"S": entry_sk(lo)},
                ":hi": {"S": _LAST_ENTRY_SK},
            },
            ProjectionExpression="sk, docs",
            ConsistentRead=True,
        )
        for item in items:
            sk = item["sk"]["S"]
            first = int(sk[2:])
            docs = item.get("docs", {}).get("L")
            if not isinstance(docs, list):
                raise CorruptStateError(
                    "journal item has no docs list",
                    run_id=run_id,
                    seq=max(first, after_seq + 1),
                    tier=self.scheme,
                    key=self._name(run_id, sk),
                )
            for offset, value in enumerate(docs):
                seq = first + offset
                if seq <= after_seq:
                    continue
                yield serialize.load_entry(
                    _bytes(value),
                    tier=self.scheme,
                    key=f"{self._name(run_id, sk)}[{offset}]",
                    run_id=run_id,
                    seq=seq,
                )

    def _insert_signal(self, signal: Signal) -> None:
        doc = self._doc(signal, f"signal {signal.name!r} of run {signal.run_id!r}")
        self._call(
            "put_item",
            TableName=self.table,
            Item={
                "pk": {"S": signal.run_id},
                "sk": {"S": signal_sk(signal.name, signal.signal_id)},
                "doc": {"B": doc},
            },
        )

    def _delete_signal(self, signal: Signal) -> bool:
        response = self._call(
            "delete_item",
            TableName=self.table,
            Key={"pk": {"S": signal.run_id}, "sk": {"S": signal_sk(signal.name, signal.signal_id)}},
            ReturnValues="ALL_OLD",
        )
        return bool(response.get("Attributes"))  # the item as it was, absent if there was none

    def _load_signals(self, run_id: str, name: str | None) -> list[Signal]:
        prefix = "s#" if name is None else f"s#{name}#"
        items = self._query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": run_id}, ":prefix": {"S": prefix}},
            ProjectionExpression="sk, doc",
            ConsistentRead=True,
        )
        signals = [
            serialize.load_signal(
                _bytes(item["doc"]),
                tier=self.scheme,
                key=self._name(run_id, item["sk"]["S"]),
                run_id=run_id,
            )
            for item in items
        ]
        # Names may contain "#": the prefix "s#a#" also matches the signals named "a#b".
        return sorted(
            (s for s in signals if name is None or s.name == name), key=lambda s: s.signal_id
        )

    def _due(self, now: datetime, limit: int) -> list[str]:
        return self._indexed(DUE_PARTITION, now, limit)

    def _ended(self, before: datetime, limit: int) -> list[str]:
        return self._indexed(ENDED_PARTITION, before, limit)

    def _indexed(self, partition: str, upto: datetime, limit: int) -> list[str]:
        """Run ids in one partition of the ``due`` index up to ``upto``, earliest first."""
        if limit <= 0:
            return []
        found: list[str] = []
        items = self._query(
            TableName=self.table,
            IndexName=DUE_INDEX,
            KeyConditionExpression="due_p = :p AND due_at <= :upto",
            ExpressionAttributeValues={":p": {"S": partition}, ":upto": {"N": _num(upto)}},
            ScanIndexForward=True,
            Limit=limit,
        )
        for item in items:
            found.append(item["pk"]["S"])
            if len(found) >= limit:
                break
        return found

    def _list_runs(self, limit: int, before: RunCursor | None) -> list[ListedRun]:
        # A Scan reads the whole table (journals included) and filters afterwards, for every
        # page: fine for the CLI listing and the console, never on a leg's path. A damaged
        # record has no readable created_at: it sorts before every run, so the first page
        # reports it.
        keyed: list[ListedRun] = []
        params: Item = {
            "TableName": self.table,
            "FilterExpression": "sk = :run",
            "ExpressionAttributeValues": {":run": {"S": RUN_SK}},
            "ConsistentRead": True,
        }
        while True:
            page = self._call("scan", **params)
            for item in page.get("Items", []):
                run_id = item["pk"]["S"]
                listed = self._listed(run_id, partial(self._record, item))
                at = listed.created_at.timestamp() if isinstance(listed, RunRecord) else math.inf
                keyed.append(((at, run_id), listed))
            last = page.get("LastEvaluatedKey")
            if not last:
                break
            params["ExclusiveStartKey"] = last
        keyed.sort(key=lambda pair: pair[0], reverse=True)
        return [pair for pair in keyed if before is None or pair[0] < before][:limit]

    def _truncate(self, run_id: str, keep: int) -> None:
        # Journal items hold runs of entries keyed by their first seq: items that start at or
        # after ``keep`` go whole; the one that straddles it is rewritten with its head only.
        items = list(
            self._query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues={
                    ":pk": {"S": run_id},
                    ":lo": {"S": entry_sk(0)},
                    ":hi": {"S": _LAST_ENTRY_SK},
                },
                ProjectionExpression="sk, docs",
                ConsistentRead=True,
            )
        )
        for item in items:
            first = int(item["sk"]["S"][2:])
            docs = item.get("docs", {}).get("L", [])
            key = {"pk": {"S": run_id}, "sk": item["sk"]}
            if first >= keep:
                self._call("delete_item", TableName=self.table, Key=key)
            elif first + len(docs) > keep:
                self._call(
                    "put_item",
                    TableName=self.table,
                    Item={**key, "docs": {"L": docs[: keep - first]}},
                )

    def _delete_run(self, run_id: str) -> None:
        # The run item goes last: until it is gone the id stays taken, so a crash midway cannot
        # let a new run with this id meet the old journal. Deleting it again finishes the job.
        self._delete_items(run_id, self._child_keys(run_id))
        self._call("delete_item", TableName=self.table, Key=_run_key(run_id))

    def _delete_ended(self, claimed: RunRecord) -> bool:
        # The claim was written with exactly this doc, so equal bytes mean an untouched claim.
        run_id = claimed.run_id
        doc = serialize.dump(claimed)
        stored = self._call(
            "get_item", TableName=self.table, Key=_run_key(run_id), ConsistentRead=True
        ).get("Item")
        if stored is None or _bytes(stored["doc"]) != doc:
            return False
        self._delete_items(run_id, self._child_keys(run_id))
        try:
            self._call(
                "delete_item",
                expect=frozenset({"ConditionalCheckFailedException"}),
                TableName=self.table,
                Key=_run_key(run_id),
                ConditionExpression="v = :v",
                ExpressionAttributeValues={":v": {"N": str(claimed.version)}},
            )
        except _RejectedError:
            return False
        return True

    def _child_keys(self, run_id: str) -> list[Item]:
        """Keys of the run's journal and signal items (everything but the run item)."""
        return [
            {"pk": item["pk"], "sk": item["sk"]}
            for item in self._query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": run_id}},
                ProjectionExpression="pk, sk",
                ConsistentRead=True,
            )
            if item["sk"]["S"] != RUN_SK
        ]

    def _delete_items(self, run_id: str, keys: Sequence[Item]) -> None:
        for start in range(0, len(keys), 25):
            requests: list[Item] = [
                {"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]
            ]
            for attempt in range(_WRITE_TRIES + 3):
                response = self._call("batch_write_item", RequestItems={self.table: requests})
                requests = response.get("UnprocessedItems", {}).get(self.table, [])
                if not requests:
                    break
                time.sleep(random.uniform(0.01, 0.05) * 2**attempt)
            else:
                raise StoreUnavailableError(
                    f"DynamoDB table {self.table!r} at {self.endpoint}: could not delete all "
                    f"items of run {run_id!r} (throttled); run delete_run again"
                )

    # ------------------------------------------------------------------ record logs

    def _log_insert(self, log_id: str, position: int, data: bytes, label: str) -> bool:
        pk = {"S": _log_pk(log_id)}
        record: Item = {
            "Put": {
                "TableName": self.table,
                "Item": {"pk": pk, "sk": {"S": _log_sk(position)}, "data": {"B": data}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        if position == 0:
            # A new log: its head (label, and its place in the index that lists logs) goes in
            # with its first record.
            head: Item = {
                "pk": pk,
                "sk": {"S": LOG_HEAD_SK},
                "label": {"S": label},
                "due_p": {"S": LOGS_PARTITION},
                "due_at": {"N": _num(self.now())},
            }
            other: Item = {"Put": {"TableName": self.table, "Item": head}}
        else:
            # Only at the tail: the record before must exist (a stale tail after a delete
            # would otherwise leave a gap).
            other = {
                "ConditionCheck": {
                    "TableName": self.table,
                    "Key": {"pk": pk, "sk": {"S": _log_sk(position - 1)}},
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
        for attempt in range(_WRITE_TRIES):
            try:
                # botocore keeps one ClientRequestToken across its own retries: a transaction
                # whose reply was lost is not applied twice.
                self._call(
                    "transact_write_items",
                    expect=frozenset({"TransactionCanceledException"}),
                    TransactItems=[record, other],
                )
            except _RejectedError as rejected:
                reasons = rejected.response.get("CancellationReasons") or []
                codes = [str(r.get("Code", "None")) for r in reasons]
                if "ConditionalCheckFailed" in codes:
                    return False
                if attempt + 1 < _WRITE_TRIES and any(c in _TRANSIENT_CANCEL for c in codes):
                    time.sleep(random.uniform(0.005, 0.02) * 2**attempt)
                    continue
                raise StoreUnavailableError(
                    f"DynamoDB table {self.table!r} at {self.endpoint}: append to log "
                    f"{log_id!r} cancelled ({', '.join(codes) or 'no reason given'})"
                ) from None
            return True
        raise AssertionError("unreachable")  # pragma: no cover

    def _log_tail(self, log_id: str) -> int:
        page = self._call(
            "query",
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :r)",
            ExpressionAttributeValues={":pk": {"S": _log_pk(log_id)}, ":r": {"S": "r#"}},
            ScanIndexForward=False,
            Limit=1,
            ProjectionExpression="sk",
            ConsistentRead=True,
        )
        items = page.get("Items", [])
        return int(items[0]["sk"]["S"][2:]) + 1 if items else 0

    def _log_load(self, log_id: str, start: int) -> Iterable[tuple[int, bytes]]:
        for item in self._query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": {"S": _log_pk(log_id)},
                ":lo": {"S": _log_sk(start)},
                ":hi": {"S": _log_sk(10**12 - 1)},
            },
            ConsistentRead=True,
        ):
            yield int(item["sk"]["S"][2:]), _bytes(item["data"])

    def _log_delete(self, log_id: str) -> None:
        # The head goes last, like a run's record: until then the log is still listed, and
        # deleting it again finishes the job.
        keys = [
            {"pk": item["pk"], "sk": item["sk"]}
            for item in self._query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": _log_pk(log_id)}},
                ProjectionExpression="pk, sk",
                ConsistentRead=True,
            )
            if item["sk"]["S"] != LOG_HEAD_SK
        ]
        self._delete_items(log_id, keys)
        self._call(
            "delete_item",
            TableName=self.table,
            Key={"pk": {"S": _log_pk(log_id)}, "sk": {"S": LOG_HEAD_SK}},
        )

    def _log_list(self, prefix: str) -> list[tuple[str, str]]:
        # The index projects keys only: it finds the heads, a batch read fetches their labels.
        heads = [
            {"pk": item["pk"], "sk": item["sk"]}
            for item in self._query(
                TableName=self.table,
                IndexName=DUE_INDEX,
                KeyConditionExpression="due_p = :p",
                ExpressionAttributeValues={":p": {"S": LOGS_PARTITION}},
            )
            if item["pk"]["S"].startswith(_log_pk(prefix))
        ]
        found: list[tuple[str, str]] = []
        for start in range(0, len(heads), 100):
            keys = heads[start : start + 100]
            for attempt in range(_WRITE_TRIES + 3):
                response = self._call(
                    "batch_get_item",
                    RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}},
                )
                for item in response.get("Responses", {}).get(self.table, []):
                    found.append((item["pk"]["S"][len("log#") :], item["label"]["S"]))
                keys = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                if not keys:
                    break
                time.sleep(random.uniform(0.01, 0.05) * 2**attempt)
            else:
                raise StoreUnavailableError(
                    f"DynamoDB table {self.table!r} at {self.endpoint}: could not read the "
                    "record logs' labels (throttled); list them again"
                )
        return sorted(found)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def _run_key(run_id: str) -> Item:
    return {"pk": {"S": run_id}, "sk": {"S": RUN_SK}}


def _log_pk(log_id: str) -> str:
    return "log#" + log_id  # a run id never holds '#': no log shares a partition with a run


def _log_sk(position: int) -> str:
    return f"r#{position:012d}"


def _bytes(attribute: Mapping[str, Any]) -> bytes:
    return bytes(attribute["B"])


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", exc))
