"""The cold tier: large immutable values, named by the sha256 of their bytes.

Because a blob's name is its content hash, ``put`` is idempotent and a blob written by a leg that
dies before its hot-tier append is garbage (unreferenced), never corruption. ``get`` re-hashes what
it reads, so a damaged blob is detected, not decoded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from statestore.codec import CODEC_NAME, content_hash
from statestore.errors import BlobNotFoundError, CorruptStateError
from statestore.ids import validate_run_id
from statestore.models import BlobRef


class ColdTier(ABC):
    scheme: str = "abstract"
    fetch_concurrency: int = 8

    @abstractmethod
    def _put(self, run_id: str, sha256: str, data: bytes) -> None:
        """Store ``data`` under its hash; if it is already there, do nothing."""

    @abstractmethod
    def _get(self, run_id: str, sha256: str) -> bytes:
        """Return the stored bytes or raise ``BlobNotFoundError``."""

    @abstractmethod
    def _delete_run(self, run_id: str) -> int:
        """Delete every blob of the run; return how many were deleted."""

    def key(self, run_id: str, sha256: str) -> str:
        """The backend's name for a blob, used in error messages."""
        return f"runs/{run_id}/blobs/{sha256}"

    def put(self, run_id: str, data: bytes, codec: str = CODEC_NAME) -> BlobRef:
        validate_run_id(run_id)
        digest = content_hash(data)
        self._put(run_id, digest, data)
        return BlobRef(sha256=digest, size=len(data), codec=codec)

    def get(self, run_id: str, ref: BlobRef, *, seq: int | None = None) -> bytes:
        validate_run_id(run_id)
        try:
            data = self._get(run_id, ref.sha256)
        except BlobNotFoundError as exc:
            where = f"run={run_id}, " + (f"seq={seq}, " if seq is not None else "")
            missing = BlobNotFoundError(
                f"missing blob ({where}tier={self.scheme}, key={self.key(run_id, ref.sha256)}): "
                f"{exc}"
            )
            missing.seq = seq
            raise missing from None
        if len(data) != ref.size or content_hash(data) != ref.sha256:
            raise CorruptStateError(
                f"blob content does not match its hash ({len(data)} bytes, {ref.size} expected)",
                run_id=run_id,
                seq=seq,
                tier=self.scheme,
                key=self.key(run_id, ref.sha256),
            )
        return data

    def get_many(self, run_id: str, refs: Sequence[tuple[BlobRef, int | None]]) -> list[bytes]:
        """Fetch several blobs concurrently (object stores reward parallel GETs)."""
        if len(refs) <= 1:
            return [self.get(run_id, ref, seq=seq) for ref, seq in refs]
        workers = min(self.fetch_concurrency, len(refs))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cold-get") as pool:
            return list(pool.map(lambda item: self.get(run_id, item[0], seq=item[1]), refs))

    def delete_run(self, run_id: str) -> int:
        validate_run_id(run_id)
        return self._delete_run(run_id)

    def close(self) -> None:
        """Release connections."""
