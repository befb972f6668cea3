"""Routing between tiers: size boundaries, the cold hint, and property tests over both tiers."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statestore import BlobRef, EntryKind, HotTier, JournalEntry, StateStore, codec
from statestore.backends.memory import MemoryColdTier
from tests.statestore.conftest import ColdFactory, HotFactory

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _entry(seq: int, value: Any) -> JournalEntry:
    return JournalEntry(
        seq=seq, kind=EntryKind.STEP, name="s", value=value, started_at=T0, ended_at=T0
    )


def _raw(n: int) -> bytes:
    # Random bytes do not compress, so the frame size is predictable.
    return os.urandom(n)


def _frame_len(value: bytes) -> int:
    return len(codec.encode(value))


def test_values_around_the_inline_limit(make_hot: HotFactory, make_cold: ColdFactory) -> None:
    hot = make_hot()
    store = StateStore(hot, make_cold())
    limit = hot.inline_limit
    overhead = _frame_len(b"x" * 1000) - 1000
    hot.create_run("r1", "fn")
    token = hot.acquire_lease("r1", "leg", timedelta(seconds=60)).token
    sizes = [
        limit - overhead - 1,
        limit - overhead,
        limit - overhead + 1,
        400 * 1024,
        3 * 1024 * 1024,
    ]
    values = [_raw(n) for n in sizes]
    stored = [store.encode("r1", v) for v in values]
    assert isinstance(stored[0], bytes) and isinstance(stored[1], bytes)
    assert len(stored[1]) == limit
    assert all(isinstance(s, BlobRef) for s in stored[2:])
    for i, s in enumerate(stored):
        hot.append("r1", token, [_entry(i, s)])
    assert store.entry_values("r1", hot.read_journal("r1")) == values


def test_cold_hint_forces_the_cold_tier(hot: HotTier) -> None:
    store = StateStore(hot, MemoryColdTier())
    assert isinstance(store.encode("r1", "tiny", tier="cold"), BlobRef)
    assert isinstance(store.encode("r1", "tiny"), bytes)
    with pytest.raises(ValueError, match="inline limit"):
        store.encode("r1", _raw(hot.inline_limit + 10), tier="hot")


def test_unstorable_value_is_a_clear_type_error(hot: HotTier) -> None:
    store = StateStore(hot, MemoryColdTier())
    with pytest.raises(TypeError, match="type set cannot be stored"):
        store.encode("r1", {1, 2})
    with pytest.raises(TypeError, match="object cannot be stored"):
        store.encode("r1", object())


def test_compression_keeps_large_repetitive_values_inline(hot: HotTier) -> None:
    store = StateStore(hot, MemoryColdTier())
    text = "all work and no play " * 10_000  # 210 KB of text compresses far below the limit
    stored = store.encode("r1", text)
    assert isinstance(stored, bytes) and len(stored) < hot.inline_limit
    assert store.decode("r1", stored) == text


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
    | st.binary(max_size=100),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
# Large values are drawn by size and seed: incompressible bytes around and far past the inline
# limit, and compressible runs, without asking hypothesis for megabytes of entropy.
large = st.builds(
    lambda n, seed: random.Random(seed).randbytes(n),
    st.integers(min_value=60_000, max_value=140_000),
    st.integers(min_value=0, max_value=2**32),
)
sized = st.one_of(
    values, st.integers(min_value=0, max_value=200_000).map(lambda n: b"\x01" * n), large
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(sized, min_size=1, max_size=4), min_size=1, max_size=5))
def test_whatever_is_appended_reads_back_equal_in_order(
    make_hot: HotFactory, batches: list[list[Any]]
) -> None:
    hot = make_hot()
    store = StateStore(hot, MemoryColdTier())
    run_id = f"p{os.urandom(6).hex()}"
    hot.create_run(run_id, "fn")
    token = hot.acquire_lease(run_id, "leg", timedelta(seconds=60)).token
    expected: list[Any] = []
    seq = 0
    for batch in batches:
        entries = [_entry(seq + i, store.encode(run_id, v)) for i, v in enumerate(batch)]
        hot.append(run_id, token, entries)
        seq += len(batch)
        expected.extend(batch)
    assert store.entry_values(run_id, hot.read_journal(run_id)) == expected
