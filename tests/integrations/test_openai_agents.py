"""The OpenAI Agents SDK made durable by ``OutlastRunner``: offline, against the SDK's real code.

The agents of ``openai_agents_app.py`` run on a scripted ``Model`` subclass (the SDK's own model
interface), with parallel tool calls, a guardrail and a handoff between two agents.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import ModelResponse, Usage
from openai.types.responses import ResponseFunctionToolCall

from outlast import App
from outlast.app import DurableFunction
from outlast.integrations.openai_agents import (
    response_from_plain,
    response_to_plain,
)
from outlast.report import run_report
from outlast.targets import load_target
from statestore import EntryKind, EntryStatus, RunStatus
from tests.conftest import unique
from tests.support.servers import RedisServer

APP = Path(__file__).with_name("openai_agents_app.py")
ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the weather, and what time is it?"


@pytest.fixture
def durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DurableFunction[Any]]:
    monkeypatch.setenv("OUTLAST_HOT_URL", f"sqlite:///{tmp_path}/hot.db")
    monkeypatch.setenv("OUTLAST_COLD_URL", f"file://{tmp_path}/cold")
    monkeypatch.setenv("OA_CALL_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("OA_MODEL_SECONDS", "0")
    monkeypatch.setenv("OA_TOOL_SECONDS", "0")
    function = load_target(f"{APP}:assist")
    function.app.close()  # the module is shared between tests; open this test's store
    yield function
    function.app.close()


def model_calls(log: Path) -> Counter[tuple[str, int]]:
    """(agent, turn) -> how many times the model was called for it."""
    calls: Counter[tuple[str, int]] = Counter()
    if log.exists():
        for line in log.read_text().splitlines():
            agent, turn, _pid = line.split()
            calls[(agent, int(turn))] += 1
    return calls


EXPECTED_NAMES = [
    "input_guardrail:polite",
    "model",
    "tool:get_weather",
    "tool:get_time",
    "model",
    "tool:get_weather",
    "tool:get_time",
    "model",
    "handoff:transfer_to_writer",
    "model",
    "output_guardrail:short",
]


def test_model_calls_tools_guardrails_and_handoffs_are_steps(
    durable: DurableFunction[Any], tmp_path: Path
) -> None:
    app = durable.app
    run_id = app.start("assist", QUESTION, run_id="steps")
    view = app.drive(run_id)
    assert view.status is RunStatus.SUCCEEDED, view.error
    result = view.result
    assert result["agent"] == "writer"
    assert result["output"].startswith("writer: Paris: 15 C | Tokyo: 5:00 | Lima: 12 C")
    journal = app.journal(run_id)
    assert [e.name for e in journal] == EXPECTED_NAMES
    assert all(e.kind is EntryKind.STEP and e.status is EntryStatus.OK for e in journal)
    models = [e for e in journal if e.name == "model"]
    assert sum(int(str(e.meta["input_tokens"])) for e in models) == result["usage"]["input_tokens"]
    assert (
        sum(int(str(e.meta["output_tokens"])) for e in models) == result["usage"]["output_tokens"]
    )
    assert run_report(app.store, run_id).tokens == {
        "input": result["usage"]["input_tokens"],
        "output": result["usage"]["output_tokens"],
        "total": result["usage"]["input_tokens"] + result["usage"]["output_tokens"],
    }
    # A model step holds plain JSON, the tool step the tool's own output.
    assert models[0].value is not None
    assert model_calls(tmp_path / "calls.log") == Counter(
        {("triage", 0): 1, ("triage", 1): 1, ("triage", 2): 1, ("writer", 0): 1}
    )


def test_a_replay_calls_nothing_again(durable: DurableFunction[Any], tmp_path: Path) -> None:
    """Fork a finished run just before the writer's model step: the fork replays the guardrail,
    three model calls, four tools and the handoff from the journal and calls only the writer."""
    app = durable.app
    log = tmp_path / "calls.log"
    first = app.start("assist", QUESTION, run_id="original")
    done = app.drive(first)
    assert done.status is RunStatus.SUCCEEDED
    log.unlink()
    fork = app.retry(first, from_seq=9, as_id="fork")
    view = app.drive(fork)
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert view.result == done.result
    assert model_calls(log) == Counter({("writer", 0): 1})
    assert [e.name for e in app.journal(fork)] == EXPECTED_NAMES


def test_run_sync_in_a_sync_durable_function(durable: DurableFunction[Any]) -> None:
    app = durable.app
    a = app.drive(app.start("assist", QUESTION, run_id="async"))
    s = app.drive(app.start("assist_sync", QUESTION, run_id="sync"))
    assert s.status is RunStatus.SUCCEEDED, s.error
    assert s.result == a.result
    assert [e.name for e in app.journal("sync")] == EXPECTED_NAMES


def test_a_tool_result_that_cannot_be_stored_names_the_tool(
    durable: DurableFunction[Any],
) -> None:
    app = durable.app
    run_id = app.start("assist_broken", QUESTION, run_id="broken")
    view = app.drive(run_id)
    assert view.status is RunStatus.FAILED
    assert view.error is not None
    assert "tool:broken_lookup" in view.error.message
    assert "cannot be stored" in view.error.message
    assert "Unstorable" in view.error.message
    # What was committed before is kept: the first turn and the second model call.
    journal = app.journal(run_id)
    assert [(e.name, e.status) for e in journal] == [
        ("model", EntryStatus.OK),
        ("tool:get_weather", EntryStatus.OK),
        ("model", EntryStatus.OK),
    ]


def test_models_named_by_string_come_from_the_run_configs_provider(
    durable: DurableFunction[Any], tmp_path: Path
) -> None:
    app = durable.app
    view = app.drive(app.start("assist_named", QUESTION, run_id="named"))
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert view.result["output"] == "writer: "
    [entry] = app.journal("named")
    assert entry.name == "model" and entry.meta["input_tokens"] == 110
    assert model_calls(tmp_path / "calls.log") == Counter({("writer", 0): 1})


def test_model_steps_follow_their_own_retry_policy(durable: DurableFunction[Any]) -> None:
    app = durable.app
    module = sys.modules[durable.fn.__module__]
    flaky: Any = module.FlakyModel
    flaky.failures = 1  # the first attempt fails, the second (max_attempts=2) answers
    view = app.drive(app.start("assist_flaky", QUESTION, run_id="flaky-1"))
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert [(e.name, e.status) for e in app.journal("flaky-1")] == [
        ("model", EntryStatus.RETRY),
        ("model", EntryStatus.OK),
    ]
    flaky.failures = 2  # both attempts fail: the step fails for good, the run with it
    view = app.drive(app.start("assist_flaky", QUESTION, run_id="flaky-2"))
    assert view.status is RunStatus.FAILED
    assert view.error is not None and "'model'" in view.error.message
    assert "ConnectionError" in view.error.message or "dropped" in view.error.message
    flaky.failures = 0


def test_a_response_round_trips_as_plain_json() -> None:
    response = ModelResponse(
        output=[
            ResponseFunctionToolCall(
                type="function_call", call_id="c1", name="get_weather", arguments='{"city":"X"}'
            )
        ],
        usage=Usage(requests=1, input_tokens=3, output_tokens=4, total_tokens=7),
        response_id="r1",
    )
    plain = response_to_plain(response)
    assert json.loads(json.dumps(plain)) == plain
    back = response_from_plain(plain)
    assert back.output == response.output
    assert back.output[0].model_fields_set == response.output[0].model_fields_set
    assert back.usage == response.usage
    assert back.response_id == "r1"


# ---------------------------------------------------------------------- under faults


def outlast_run(
    cwd: Path, target: str, run_id: str, tiers: tuple[str, str], env: dict[str, str], *flags: str
) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "outlast.cli",
            "run",
            target,
            "--input",
            json.dumps(QUESTION),
            "--run-id",
            run_id,
            "--hot",
            tiers[0],
            "--cold",
            tiers[1],
            "--json",
            *flags,
        ],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def chaos(tmp_path: Path, tiers: tuple[str, str], seed: int, fn: str = "assist") -> None:
    env = {"OA_TURNS": "6", "OA_MODEL_SECONDS": "0.1", "OA_TOOL_SECONDS": "0.05"}
    target = f"{APP}:{fn}"
    base_log = tmp_path / "base.log"

    base = outlast_run(
        tmp_path, target, f"base-{seed}", tiers, {**env, "OA_CALL_LOG": str(base_log)},
        "--leg-timeout", "30",
    )  # fmt: skip
    assert base["status"] == "succeeded", base
    turns = model_calls(base_log)
    assert set(turns.values()) == {1} and len(turns) == 8  # 7 triage turns, 1 writer turn

    # Whether a seed's faults land depends on timing (a fast machine can finish between them):
    # a seed whose faults all missed proves nothing, so another follows, up to 4.
    for attempt in range(4):
        chaos_log = tmp_path / f"chaos-{attempt}.log"
        tried = seed + 100 * attempt
        report = outlast_run(
            tmp_path, target, f"chaos-{tried}", tiers, {**env, "OA_CALL_LOG": str(chaos_log)},
            "--evict-rate", "0.3", "--kill-rate", "0.3", "--duplicate-rate", "0.2",
            # Importing the SDK takes about a second of each 2 s leg (more on a loaded machine),
            # so some legs die before they commit anything: allow more of those in a row.
            "--seed", str(tried), "--leg-timeout", "2", "--max-idle-legs", "40",
        )  # fmt: skip
        assert report["status"] == "succeeded", report
        interruptions = report["kills"] + report["evictions"] + report["timeouts"]
        if interruptions >= 1:
            break
    assert interruptions >= 1, report
    assert report["result"] == base["result"]

    calls = model_calls(chaos_log)
    assert set(calls) == set(turns)  # every turn was asked for...
    assert sum(calls.values()) <= len(turns) + interruptions  # ...again only after a fault

    app = App("check", hot_url=tiers[0], cold_url=tiers[1])
    try:
        assert run_report(app.store, f"chaos-{tried}").tokens == (
            run_report(app.store, f"base-{seed}").tokens
        )
        names = [e.name for e in app.journal(f"chaos-{tried}") if e.status is EntryStatus.OK]
        assert names == [e.name for e in app.journal(f"base-{seed}")]
    finally:
        app.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_survives_evictions_kills_and_duplicates_on_sqlite(tmp_path: Path, seed: int) -> None:
    chaos(tmp_path, (f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold"), seed)


@pytest.mark.slow
def test_run_sync_survives_faults_on_sqlite(tmp_path: Path) -> None:
    chaos(tmp_path, (f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold"), 2, "assist_sync")


@pytest.mark.slow
def test_survives_evictions_kills_and_duplicates_on_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    tiers = (f"{redis_server.url}?prefix={unique('oa')}", f"file://{tmp_path}/cold")
    chaos(tmp_path, tiers, 2)
