"""The cold-tier contract. Every test runs on memory, fs and s3."""

from __future__ import annotations

import os

import pytest

from statestore import BlobNotFoundError, BlobRef, ColdTier, CorruptStateError, InvalidRunIdError
from tests.statestore.corrupt import corrupt_blob


def test_put_get_round_trip(cold: ColdTier) -> None:
    ref = cold.put("r1", b"hello")
    assert ref.size == 5 and len(ref.sha256) == 64
    assert cold.get("r1", ref) == b"hello"


def test_put_is_content_addressed_and_idempotent(cold: ColdTier) -> None:
    first = cold.put("r1", b"same bytes")
    second = cold.put("r1", b"same bytes")
    assert first == second
    assert cold.get("r1", second) == b"same bytes"
    assert cold.put("r1", b"other bytes") != first


@pytest.mark.parametrize("size", [0, 1, 5 * 1024 * 1024 + 3])
def test_blobs_of_any_size(cold: ColdTier, size: int) -> None:
    data = os.urandom(size)
    ref = cold.put("r1", data)
    assert cold.get("r1", ref) == data


def test_get_many_returns_in_order(cold: ColdTier) -> None:
    blobs = [os.urandom(1000 + i) for i in range(20)]
    refs = [(cold.put("r1", b), i) for i, b in enumerate(blobs)]
    assert cold.get_many("r1", refs) == blobs


def test_missing_blob_raises(cold: ColdTier) -> None:
    ref = BlobRef(sha256="0" * 64, size=1, codec="outlast-frame/1")
    with pytest.raises(BlobNotFoundError):
        cold.get("r1", ref)


def test_corrupt_blob_is_detected_and_named(cold: ColdTier) -> None:
    ref = cold.put("r1", b"precious " * 100)
    corrupt_blob(cold, "r1", ref.sha256)
    with pytest.raises(CorruptStateError) as info:
        cold.get("r1", ref, seq=7)
    err = info.value
    assert (err.run_id, err.seq, err.tier) == ("r1", 7, cold.scheme)
    assert err.key is not None and ref.sha256 in err.key


def test_delete_run_removes_only_that_run(cold: ColdTier) -> None:
    mine = cold.put("r1", b"mine")
    theirs = cold.put("r2", b"theirs")
    assert cold.delete_run("r1") == 1
    with pytest.raises(BlobNotFoundError):
        cold.get("r1", mine)
    assert cold.get("r2", theirs) == b"theirs"


@pytest.mark.parametrize("bad", ["../x", "", "a/b"])
def test_bad_run_ids_are_rejected(cold: ColdTier, bad: str) -> None:
    with pytest.raises(InvalidRunIdError):
        cold.put(bad, b"x")
