"""The agent under kills: emulator legs as subprocesses, SIGKILLed at random moments and inside
commits, evicted with SIGTERM. The result and the tokens must equal an uninterrupted run's, and no
model call may run again once its step was committed."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outlast.app import DurableFunction
from outlast.emulator import Emulator, Faults
from outlast.report import run_report
from outlast.targets import load_target
from statestore import EntryKind, EntryStatus, RunStatus

KILL_APP = Path(__file__).with_name("kill_app.py")
TARGET = f"{KILL_APP}:research"
TOPIC = "durable agents"


@pytest.fixture
def durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DurableFunction[Any]]:
    monkeypatch.setenv("OUTLAST_HOT_URL", f"sqlite:///{tmp_path}/hot.db")
    monkeypatch.setenv("OUTLAST_COLD_URL", f"file://{tmp_path}/cold")
    monkeypatch.setenv("AGENT_CALL_LOG", str(tmp_path / "calls.log"))
    function = load_target(TARGET)
    function.app.close()  # the module is shared between tests; open this test's store
    yield function
    function.app.close()


def model_calls(log: Path, run_id: str) -> dict[int, list[int]]:
    """Turn -> the legs that called the model for it, in call order."""
    calls: dict[int, list[int]] = defaultdict(list)
    for line in log.read_text().splitlines():
        kind, rid, turn, leg = line.split()
        if kind == "model" and rid == run_id:
            calls[int(turn)].append(int(leg))
    return dict(calls)


def committed_model_legs(function: DurableFunction[Any], run_id: str) -> list[int]:
    """The leg that committed each turn's model step, turn by turn."""
    return [
        e.leg
        for e in function.app.journal(run_id)
        if e.kind is EntryKind.STEP and e.name == "model" and e.status is EntryStatus.OK
    ]


@pytest.mark.slow
# Seeds whose fault plans land kills and evictions mid-run (1 and 7 also kill model calls in
# flight); a seed whose plans are all clean would prove nothing.
@pytest.mark.parametrize("seed", [1, 3, 7])
def test_the_agent_survives_kills_without_repeating_a_committed_model_call(
    durable: DurableFunction[Any], tmp_path: Path, seed: int
) -> None:
    app = durable.app
    log = tmp_path / "calls.log"

    baseline = app.start(durable.name, TOPIC, run_id=f"baseline-{seed}")
    view = app.drive(baseline)
    assert view.status is RunStatus.SUCCEEDED
    expected = view.result
    expected_tokens = run_report(app.store, baseline).tokens
    assert expected["turns"] >= 15
    assert {t: len(legs) for t, legs in model_calls(log, baseline).items()} == dict.fromkeys(
        range(expected["turns"]), 1
    )

    run_id = app.start(durable.name, TOPIC, run_id=f"chaos-{seed}")
    faults = Faults(evict_rate=0.3, kill_rate=0.35, seed=seed)
    report = Emulator(app, TARGET, leg_timeout=1.0, faults=faults, margin=0.2).run(run_id)

    assert report.status is RunStatus.SUCCEEDED, report.error
    assert report.kills + report.evictions + report.timeouts >= 1
    assert report.legs >= 2
    assert report.result == expected
    assert run_report(app.store, run_id).tokens == expected_tokens
    usage = expected["usage"]
    assert expected_tokens["total"] == usage["input_tokens"] + usage["output_tokens"]

    calls = model_calls(log, run_id)
    committed = committed_model_legs(durable, run_id)
    assert len(committed) == expected["turns"]
    assert sorted(calls) == list(range(expected["turns"]))
    for turn, leg in enumerate(committed):
        legs = calls[turn]
        # The committing leg called once; earlier legs may have called and died before
        # committing; no leg after it called again.
        assert legs.count(leg) == 1, (turn, legs, leg)
        assert max(legs) == leg, (turn, legs, leg)
    extra = sum(len(legs) for legs in calls.values()) - len(committed)
    assert extra <= report.kills + report.timeouts


@pytest.mark.parametrize("phase", ["before-hot", "after-hot"])
def test_a_kill_at_a_model_steps_commit_costs_at_most_that_call(
    durable: DurableFunction[Any], tmp_path: Path, phase: str
) -> None:
    """SIGKILL exactly around the hot append of turn 1's model step (the 4th commit: turn 0's
    model step, then its two parallel searches). Before the append, the next leg calls the model
    for turn 1 again; after it, the next leg replays turn 1 and calls the model from turn 2 on."""
    app = durable.app
    run_id = app.start(durable.name, TOPIC, run_id=f"fault-{phase}")
    leg = subprocess.run(
        [
            sys.executable,
            "-m",
            "outlast.leg_main",
            "--target",
            TARGET,
            "--run-id",
            run_id,
            "--deadline",
            repr(time.time() + 60),
            "--outcome",
            str(tmp_path / "outcome.json"),
            "--fault",
            f"commit:4:{phase}",
        ],
        check=False,
        timeout=60,
    )
    assert leg.returncode == -9  # killed itself at the fault point
    record = app.store.hot.get_run(run_id)
    assert record.lease is not None
    app.store.hot.break_lease(run_id, record.lease.token)  # what the sweeper does on expiry

    view = app.drive(run_id)
    assert view.status is RunStatus.SUCCEEDED

    journal = app.journal(run_id)
    assert [e.name for e in journal[:4]] == ["model", "tool:search[0]", "tool:search[1]", "model"]
    committed = committed_model_legs(durable, run_id)
    calls = model_calls(tmp_path / "calls.log", run_id)
    assert calls[0] == [1]
    if phase == "after-hot":
        assert committed[:2] == [1, 1]
        assert calls[1] == [1]  # committed by the killed leg: never asked again
    else:
        assert committed[:2] == [1, 2]
        assert calls[1] == [1, 2]  # in flight at the kill: asked once more, then committed
    assert all(legs == [2] for turn, legs in calls.items() if turn >= 2)
    assert sum(len(legs) for legs in calls.values()) == len(committed) + (phase == "before-hot")
