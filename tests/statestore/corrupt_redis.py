"""Damage a journal entry stored in Redis, through a raw client of the backend's own pool."""

from __future__ import annotations

import redis

from statestore import HotTier
from statestore.backends.redis import RedisHotTier
from tests.statestore.corrupt import flip


def corrupt_redis_entry(tier: HotTier, run_id: str, seq: int) -> str:
    """Flip a bit in entry ``seq``; return the key the backend names in ``CorruptStateError``."""
    assert isinstance(tier, RedisHotTier)
    raw: redis.Redis[bytes] = redis.Redis(connection_pool=tier._client.connection_pool)
    key = tier.journal_key(run_id)
    doc = raw.lindex(key, seq)
    assert doc is not None, f"no entry {seq} in {key}"
    raw.lset(key, seq, flip(doc))
    return f"{key}[{seq}]"
