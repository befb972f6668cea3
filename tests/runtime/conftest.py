from __future__ import annotations

import pytest

from outlast import App
from statestore import StateStore
from statestore.backends.memory import MemoryColdTier, MemoryHotTier


@pytest.fixture
def app() -> App:
    """An app on a fresh in-memory store, with fast retries."""
    from outlast import RetryPolicy

    return App(
        "test",
        store=StateStore(MemoryHotTier(), MemoryColdTier()),
        retry=RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.01),
    )
