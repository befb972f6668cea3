"""Damage stored bytes behind a tier's back, backend by backend, to prove damage is detected.

Each backend keeps its bytes its own way, so each needs its own way to break them.
"""

from __future__ import annotations

from statestore import ColdTier, HotTier


def flip(data: bytes) -> bytes:
    """The same bytes with one bit flipped in the middle of the body."""
    i = max(8, len(data) // 2) if len(data) > 8 else len(data) - 1
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def corrupt_entry(tier: HotTier, run_id: str, seq: int) -> str:
    """Flip a bit in the stored document of journal entry ``seq``; return the backend's key."""
    scheme = tier.scheme
    if scheme == "sqlite":
        conn = tier._conn()  # type: ignore[attr-defined]
        (doc,) = conn.execute(
            "SELECT doc FROM journal WHERE run_id = ? AND seq = ?", (run_id, seq)
        ).fetchone()
        conn.execute(
            "UPDATE journal SET doc = ? WHERE run_id = ? AND seq = ?", (flip(doc), run_id, seq)
        )
        return f"journal/{run_id}/{seq}"
    if scheme == "redis":
        from tests.statestore.corrupt_redis import corrupt_redis_entry

        return corrupt_redis_entry(tier, run_id, seq)
    if scheme == "dynamodb":
        from tests.statestore.corrupt_dynamodb import corrupt_dynamodb_entry

        return corrupt_dynamodb_entry(tier, run_id, seq)
    raise NotImplementedError(f"no way to corrupt a {scheme} entry")


def corrupt_blob(tier: ColdTier, run_id: str, sha256: str) -> None:
    scheme = tier.scheme
    if scheme == "memory":
        blobs = tier._blobs  # type: ignore[attr-defined]
        blobs[(run_id, sha256)] = flip(blobs[(run_id, sha256)])
    elif scheme == "file":
        path = tier._path(run_id, sha256)  # type: ignore[attr-defined]
        path.write_bytes(flip(path.read_bytes()))
    elif scheme == "s3":
        from tests.statestore.corrupt_s3 import corrupt_s3_blob

        corrupt_s3_blob(tier, run_id, sha256)
    else:
        raise NotImplementedError(f"no way to corrupt a {scheme} blob")
