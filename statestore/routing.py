"""Routing between the tiers: small values inline in the hot tier, large ones in the cold tier.

The commit protocol's order is fixed here: a large value is written to the cold tier *before* the
hot entry that references it, so a hot entry never points at a blob that was not written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from statestore import codec
from statestore.codec import Location
from statestore.cold import ColdTier
from statestore.hot import HotTier
from statestore.models import BlobRef, JournalEntry, RunRecord, StoredValue

TierHint = Literal["hot", "cold"] | None


class StateStore:
    """A hot tier and a cold tier, with the rule that decides where each value goes."""

    def __init__(
        self,
        hot: HotTier,
        cold: ColdTier,
        *,
        compress_threshold: int = codec.COMPRESS_THRESHOLD,
    ) -> None:
        self.hot = hot
        self.cold = cold
        self.compress_threshold = compress_threshold

    @property
    def inline_limit(self) -> int:
        return self.hot.inline_limit

    def encode(self, run_id: str, value: Any, *, tier: TierHint = None) -> StoredValue:
        """Encode ``value``; write it cold first if it is too large to inline (or ``tier='cold'``).

        Raises ``TypeError`` naming the type if ``value`` is not storable; nothing is written then.
        """
        data = codec.encode(value, compress_threshold=self.compress_threshold)
        return self.place(run_id, data, tier=tier)

    def place(self, run_id: str, data: bytes, *, tier: TierHint = None) -> StoredValue:
        if tier == "cold" or (tier != "hot" and len(data) > self.hot.inline_limit):
            return self.cold.put(run_id, data)
        if len(data) > self.hot.inline_limit:
            raise ValueError(
                f"a value of {len(data)} encoded bytes cannot stay in the hot tier "
                f"(inline limit {self.hot.inline_limit}); drop tier='hot'"
            )
        return data

    def decode(
        self, run_id: str, stored: StoredValue | None, *, seq: int | None = None, key: str = ""
    ) -> Any:
        if stored is None:
            return None
        if isinstance(stored, BlobRef):
            data = self.cold.get(run_id, stored, seq=seq)
            where = Location(
                run_id=run_id,
                seq=seq,
                tier=self.cold.scheme,
                key=self.cold.key(run_id, stored.sha256),
            )
        else:
            data = stored
            where = Location(run_id=run_id, seq=seq, tier=self.hot.scheme, key=key or None)
        return codec.decode(data, where)

    def entry_values(self, run_id: str, entries: Sequence[JournalEntry]) -> list[Any]:
        """Decode the values of many entries; cold ones are fetched concurrently."""
        refs = [(e.value, e.seq) for e in entries if isinstance(e.value, BlobRef)]
        fetched = dict(
            zip(
                (seq for _, seq in refs),
                self.cold.get_many(run_id, refs),
                strict=True,
            )
        )
        out: list[Any] = []
        for entry in entries:
            if isinstance(entry.value, BlobRef):
                where = Location(
                    run_id=run_id,
                    seq=entry.seq,
                    tier=self.cold.scheme,
                    key=self.cold.key(run_id, entry.value.sha256),
                )
                out.append(codec.decode(fetched[entry.seq], where))
            else:
                out.append(self.decode(run_id, entry.value, seq=entry.seq, key=f"seq {entry.seq}"))
        return out

    def run_input(self, record: RunRecord) -> Any:
        return self.decode(record.run_id, record.input, key="input")

    def run_result(self, record: RunRecord) -> Any:
        return self.decode(record.run_id, record.result, key="result")

    def copy_value(
        self, run_id: str, to_run: str, stored: StoredValue | None
    ) -> StoredValue | None:
        """``stored`` of ``run_id`` as a value of ``to_run`` (a cold blob is copied across)."""
        if isinstance(stored, BlobRef):
            data = self.cold.get(run_id, stored)
            return self.cold.put(to_run, data, codec=stored.codec)
        return stored

    def delete_run(self, run_id: str) -> None:
        """Remove a run from both tiers: blobs first, the hot items (record last) second.

        A crash in between leaves the record (and the id taken); deleting again finishes it.
        """
        self.hot.get_run(run_id)
        self.cold.delete_run(run_id)
        self.hot.delete_run(run_id)

    def delete_log(self, log_id: str) -> None:
        """Remove a record log from both tiers: its cold blobs (kept under the log's id), then
        its hot records. A crash in between leaves records whose blobs are gone; deleting again
        finishes it."""
        self.cold.delete_run(log_id)
        self.hot.delete_log(log_id)

    def close(self) -> None:
        self.hot.close()
        self.cold.close()

    def expire_runs(self, now: datetime | None = None, limit: int = 100) -> list[str]:
        """Delete up to ``limit`` runs ended longer than the hot tier's retention ago; return
        the ids deleted. Without a retention nothing expires.

        Each run is claimed first (one sweeper wins), then deleted in an order that a crash at
        any point leaves safe: cold blobs, then the hot journal and signals, the run record
        last. Until the record is gone the id stays taken and the run is still listed as
        expired, so the next pass finishes the job; a new run with the same id can only be
        created afterwards, and finds nothing of the old one.
        """
        now = now or self.hot.now()
        deleted: list[str] = []
        for run_id in self.hot.expired_runs(now, limit):
            claimed = self.hot.claim_expired(run_id, now)
            if claimed is None:
                continue
            self.cold.delete_run(run_id)
            if self.hot.drop_expired(claimed):
                deleted.append(run_id)
        return deleted
