"""The chaos suite: many concurrent runs per backend under injected faults, then invariants.

Short (default, in `make test`): a few seeds, a few dozen runs per backend.
Long (`make chaos`, CHAOS_LONG=1): thousands of runs and over ten thousand faults, with the
redis-server killed and restarted under the redis runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.conftest import LONG, REPORTS
from tests.chaos.driver import DEFAULT_RATES, ChaosConfig, Driver
from tests.conftest import unique
from tests.support.servers import MotoServer, RedisServer

pytestmark = pytest.mark.chaos

INLINE = 4096  # a small inline limit, so cold-tier blobs are cheap to exercise

SHORT_RUNS = {"sqlite": 30, "redis": 30, "dynamodb": 14}
LONG_RUNS = {"sqlite": 900, "redis": 700, "dynamodb": 450}


def _seeds() -> list[int]:
    if os.environ.get("CHAOS_SEED"):
        return [int(os.environ["CHAOS_SEED"])]
    return [1001, 1002] if LONG else [7]


def _runs(backend: str) -> int:
    if os.environ.get("CHAOS_RUNS"):
        return int(os.environ["CHAOS_RUNS"])
    return (LONG_RUNS if LONG else SHORT_RUNS)[backend] // (2 if LONG else 1)


@pytest.mark.parametrize("backend", ["sqlite", "redis", "dynamodb"])
def test_chaos(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    failures: list[str] = []
    for seed in _seeds():
        work = tmp_path / f"seed-{seed}"
        work.mkdir()
        redis: RedisServer | None = None
        cold_url = f"file://{work / 'cold'}?fsync=0"
        if backend == "sqlite":
            hot_url = f"sqlite:///{work / 'hot.db'}?inline_limit={INLINE}&synchronous=normal"
        elif backend == "redis":
            # Its own server, persistent (appendonly), because this test kills and restarts it.
            (work / "redis").mkdir()
            redis = RedisServer(workdir=work / "redis", persistent=True)
            redis.start()
            hot_url = f"{redis.url}?prefix={unique('chaos')}&inline_limit={INLINE}"
        else:
            moto: MotoServer = request.getfixturevalue("moto_server")
            hot_url = (
                f"dynamodb://{unique('chaos')}?region=us-east-1&endpoint_url={moto.endpoint}"
                f"&create=1&inline_limit={INLINE}"
            )
            cold_url = (
                f"s3://{unique('chaos')}/runs?region=us-east-1&endpoint_url={moto.endpoint}"
                "&create=1"
            )
        cfg = ChaosConfig(
            backend=backend,
            seed=seed,
            runs=_runs(backend),
            # Long mode: more faults per run (the 10,000-fault target), each run still bounded.
            rates=DEFAULT_RATES.scaled(1.6) if LONG else DEFAULT_RATES,
            quota_per_run=16 if LONG else 10,
            redis=redis,
            restart_every=(4.0 if LONG else 0.0) if redis is not None else 0.0,
            # DynamoDB writes at most 98 entries atomically, so 1,000 is already ten batches.
            # 10,050 (past SQLite's and Redis's 10,000) would be about 100 transactions, and
            # moto copies the whole table for each one: the run outlives its leases on moto,
            # not on DynamoDB.
            **({"huge_burst": 1_000} if backend == "dynamodb" else {}),
        )
        try:
            report = Driver(cfg, hot_url, cold_url, work).run()
        finally:
            if redis is not None:
                redis.stop()
        REPORTS.append(report)
        print(report.summary())
        if report.violations:
            failures.append(
                report.summary()
                + f"\n  re-run: CHAOS_SEED={seed} CHAOS_RUNS={cfg.runs}"
                + (" CHAOS_LONG=1" if LONG else "")
                + f" .venv/bin/pytest tests/chaos -k {backend} -s"
            )
    assert not failures, "\n".join(failures)
