"""The suite's teeth: a store that breaks its contract must produce violations.

If these pass while the store is broken on purpose, the invariants check nothing.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from outlast.testing.store_faults import FaultInjector, FaultRates, FaultyHotTier
from statestore import HotTier, JournalEntry, RunRecord, Signal
from tests.chaos.driver import ChaosConfig, Driver

pytestmark = pytest.mark.chaos


class PhantomWrites(FaultyHotTier):
    """Says a journal write landed when it did not: a backend that acknowledges and drops."""

    def __init__(self, inner: HotTier, injector: FaultInjector) -> None:
        super().__init__(inner, injector)
        self._rng = random.Random(injector.seed)
        self._lock = threading.Lock()
        self.dropped = 0

    def _write(
        self,
        old: RunRecord,
        new: RunRecord,
        entries: Sequence[JournalEntry],
        take: Signal | None,
    ) -> RunRecord | None:
        with self._lock:
            drop = bool(entries) and self.injector.mode() == "leg" and self._rng.random() < 0.1
            self.dropped += drop
        if drop:
            return None
        return super()._write(old, new, entries, take)


def test_dropped_writes_are_caught(tmp_path: Path) -> None:
    seed = 4242
    cfg = ChaosConfig(backend="sqlite-phantom", seed=seed, runs=16, rates=FaultRates(), max_wait=5)
    driver = Driver(
        cfg,
        f"sqlite:///{tmp_path / 'hot.db'}?inline_limit=4096",
        f"file://{tmp_path / 'cold'}?fsync=0",
        tmp_path,
        hot_class=PhantomWrites,
    )
    hot = driver.hot
    report = driver.run()
    print(report.summary())
    assert isinstance(hot, PhantomWrites)
    assert hot.dropped > 0, f"seed {seed}: no write was dropped; the canary tested nothing"
    assert report.violations, (
        f"seed {seed}: {hot.dropped} acknowledged writes were dropped and no invariant noticed\n"
        + report.summary()
    )
