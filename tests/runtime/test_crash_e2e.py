"""End-to-end crash tests through the CLI: real leg processes killed, evicted and duplicated.

A 200-step function appends a line per step to a side-effect file. Under heavy faults, over
many seeds, on SQLite and on Redis, the run must end exactly as an uninterrupted run does; each
seq must be journaled once; every side effect must have happened, and more than once only for a
step in flight when a leg was killed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from statestore import EntryKind, open_hot
from tests.conftest import unique
from tests.runtime.workloads.side_effects import expected
from tests.support.servers import RedisServer

WORKLOAD = Path(__file__).parent / "workloads" / "side_effects.py"
STEPS = 200
SEEDS = range(4)


def _run_cli(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outlast.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _stores(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str]:
    cold = f"file://{tmp_path}/cold"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/hot.db", cold
    server: RedisServer = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix={unique('crash')}", cold


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_run_survives_kills_evictions_and_duplicates(
    kind: str, seed: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    hot_url, cold_url = _stores(kind, tmp_path, request)
    effects = tmp_path / "effects.log"
    run_id = f"crash-{seed}"
    proc = _run_cli(
        [
            "run",
            f"{WORKLOAD}:side_effects",
            "--input",
            # 200 steps of 6 ms cannot fit in one 1 s leg: every seed crosses legs.
            json.dumps({"steps": STEPS, "file": str(effects), "work_s": 0.006}),
            "--run-id",
            run_id,
            "--leg-timeout",
            "1.0",
            "--evict-rate",
            "0.3",
            "--kill-rate",
            "0.35",
            "--duplicate-rate",
            "0.4",
            "--seed",
            str(seed),
            "--hot",
            hot_url,
            "--cold",
            cold_url,
            "--json",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["status"] == "succeeded", report
    assert report["result"] == expected(STEPS)

    hot = open_hot(hot_url)
    journal = hot.read_journal(run_id)
    assert [e.seq for e in journal] == list(range(STEPS))
    assert all(e.kind is EntryKind.STEP and e.name == "effect" for e in journal)

    counts = Counter(int(line) for line in effects.read_text().split())
    assert set(counts) == set(range(STEPS)), "every step's side effect happened"
    repeats = sum(n - 1 for n in counts.values())
    # Only a leg that died between starting a step and committing it can repeat that step.
    assert repeats <= report["kills"] + report["timeouts"], (counts, report)
    # Faults really happened: this is a crash test, not a happy path.
    assert report["legs"] >= 2


def test_uninterrupted_run_matches(tmp_path: Path) -> None:
    effects = tmp_path / "effects.log"
    proc = _run_cli(
        [
            "run",
            f"{WORKLOAD}:side_effects",
            "--input",
            json.dumps({"steps": 30, "file": str(effects), "work_s": 0}),
            "--run-id",
            "calm",
            "--json",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["result"] == expected(30)
    assert report["legs"] == 1 and report["kills"] == 0
    assert sorted(int(x) for x in effects.read_text().split()) == list(range(30))
    # the default store landed under the working directory
    assert (tmp_path / ".outlast" / "hot.db").exists()


def test_faults_cover_kills_inside_commits(tmp_path: Path) -> None:
    """Across seeds the emulator kills legs inside commits, not only at random moments."""
    effects = tmp_path / "effects.log"
    seen_commit_kill = False
    for seed in range(6):
        proc = _run_cli(
            [
                "run",
                f"{WORKLOAD}:side_effects",
                "--input",
                json.dumps({"steps": 40, "file": str(effects), "work_s": 0.002}),
                "--run-id",
                f"commit-{seed}",
                "--leg-timeout",
                "1.0",
                "--kill-rate",
                "0.9",
                "--seed",
                str(seed),
            ],
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        seen_commit_kill |= "inside a commit" in proc.stderr
    assert seen_commit_kill
