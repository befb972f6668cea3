"""The OpenAI Agents SDK made durable by ``OutlastRunner``: offline, against the SDK's real code.

The agents of ``openai_agents_app.py`` run on a scripted ``Model`` subclass (the SDK's own model
interface), with parallel tool calls, a guardrail and a handoff between two agents.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import ModelResponse, SQLiteSession, Usage
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


def faulty(
    tmp_path: Path,
    tiers: tuple[str, str],
    seed: int,
    fn: str,
    env: Callable[[str], dict[str, str]],
    leg_timeout: str = "2",
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """An uninterrupted run of ``fn`` (``base-SEED``), then the same under evictions, kills and
    duplicate deliveries; ``env(label)`` is each run's environment (its own call logs, say).

    Returns both reports and the faulty run's label (its run id, also passed to ``env``).
    """
    target = f"{APP}:{fn}"
    base = outlast_run(
        tmp_path, target, f"base-{seed}", tiers, env(f"base-{seed}"), "--leg-timeout", "30"
    )
    assert base["status"] == "succeeded", base
    # Whether a seed's faults land depends on timing (a fast machine can finish between them):
    # a seed whose faults all missed proves nothing, so another follows, up to 4.
    for attempt in range(4):
        tried = seed + 100 * attempt
        label = f"chaos-{tried}"
        report = outlast_run(
            tmp_path, target, label, tiers, env(label),
            "--evict-rate", "0.3", "--kill-rate", "0.3", "--duplicate-rate", "0.2",
            # Importing the SDK takes about a second of each 2 s leg (more on a loaded machine),
            # so some legs die before they commit anything: allow more of those in a row.
            "--seed", str(tried), "--leg-timeout", leg_timeout, "--max-idle-legs", "40",
        )  # fmt: skip
        assert report["status"] == "succeeded", json.dumps({"seed": tried, "report": report})
        if interruptions(report) >= 1:
            break
    assert interruptions(report) >= 1, json.dumps({"seed": tried, "report": report})
    return base, report, label


def interruptions(report: dict[str, Any]) -> int:
    return int(report["kills"] + report["evictions"] + report["timeouts"])


def same_steps_and_tokens(tiers: tuple[str, str], base_id: str, chaos_id: str) -> None:
    """The faulty run committed the uninterrupted run's steps, and counted its tokens."""
    app = App("check", hot_url=tiers[0], cold_url=tiers[1])
    try:
        assert run_report(app.store, chaos_id).tokens == run_report(app.store, base_id).tokens
        names = [e.name for e in app.journal(chaos_id) if e.status is EntryStatus.OK]
        assert names == [e.name for e in app.journal(base_id)]
    finally:
        app.close()


def chaos(
    tmp_path: Path,
    tiers: tuple[str, str],
    seed: int,
    fn: str = "assist",
    tool_turns: int = 4,
    model_seconds: str = "0.3",
    leg_timeout: str = "4",
) -> None:
    """``faulty`` for the two-agent app. Legs of 4 s: a leg spends 1.5-2 s importing the SDK on
    a loaded 2-core machine, and 2 s legs then left too little to commit anything, so runs
    failed on interruption caps; model calls of 0.3 s keep the run longer than one leg."""

    def env(label: str) -> dict[str, str]:
        return {
            "OA_TURNS": str(tool_turns), "OA_MODEL_SECONDS": model_seconds,
            "OA_TOOL_SECONDS": "0.05", "OA_CALL_LOG": str(tmp_path / f"{label}.log"),
        }  # fmt: skip

    base, report, label = faulty(tmp_path, tiers, seed, fn, env, leg_timeout)
    context = json.dumps({"seed": seed, "report": report})
    turns = model_calls(tmp_path / f"base-{seed}.log")
    # The triage agent's tool turns and its handoff turn, then the writer's one turn.
    assert set(turns.values()) == {1} and len(turns) == tool_turns + 2
    assert report["result"] == base["result"], context

    calls = model_calls(tmp_path / f"{label}.log")
    assert set(calls) == set(turns), context  # every turn was asked for...
    assert sum(calls.values()) <= len(turns) + interruptions(report), context  # ...again on faults
    same_steps_and_tokens(tiers, f"base-{seed}", label)


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


# ---------------------------------------------------------------------- sessions

# A conversation the session holds before the run: the run reads it and appends to it.
EARLIER = [
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi! Ask me about the weather."},
]
SESSION_STEPS = {"session:get_items", "session:add_items"}


def session_items(db: Path) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        session = SQLiteSession("conversation", db_path=db)
        try:
            return [dict(item) for item in await session.get_items()]
        finally:
            session.close()

    return asyncio.run(read())


def seed_session(db: Path) -> None:
    async def write() -> None:
        session = SQLiteSession("conversation", db_path=db)
        try:
            await session.add_items(list(EARLIER))  # type: ignore[arg-type]
        finally:
            session.close()

    asyncio.run(write())


@pytest.mark.parametrize("fn", ["assist_session", "assist_session_sync"])
def test_session_reads_and_writes_are_steps_and_a_replay_writes_nothing(
    durable: DurableFunction[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fn: str
) -> None:
    db = tmp_path / "session.db"
    monkeypatch.setenv("OA_SESSION_DB", str(db))
    seed_session(db)
    app = durable.app
    view = app.drive(app.start(fn, QUESTION, run_id="with-session"))
    assert view.status is RunStatus.SUCCEEDED, view.error
    # The run saw the earlier conversation and added to it.
    assert view.result["output"].startswith("writer: Paris: 15 C")
    after = session_items(db)
    assert after[:2] == EARLIER
    assert len(after) == 2 + 1 + view.result["items"]  # the question, then the run's new items
    journal = app.journal("with-session")
    names = [e.name for e in journal]
    assert names[0] == "session:get_items"
    assert app.store.decode("with-session", journal[0].value, seq=0) == EARLIER
    assert [n for n in names if n not in SESSION_STEPS] == EXPECTED_NAMES
    assert names.count("session:add_items") >= 2

    # Replaying the whole run (a fork past its last entry) reads the journaled history and
    # writes nothing: the session holds each item once.
    fork = app.retry("with-session", from_seq=len(journal), as_id="replayed")
    assert app.drive(fork).result == view.result
    assert session_items(db) == after


def test_an_add_items_whose_leg_died_before_its_commit_is_not_done_twice(tmp_path: Path) -> None:
    """The session's third write lands, then its process is killed before the step commits:
    the next leg runs the step again, sees the write landed, and does not add the items twice."""
    tiers = (f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold")
    dbs = {label: tmp_path / f"{label}.db" for label in ("plain", "dies")}
    for db in dbs.values():
        seed_session(db)
    reports = {}
    for label, db in dbs.items():
        env = {"OA_SESSION_DB": str(db), "OA_DIE_AT_ADD": "3" if label == "dies" else ""}
        target = f"{APP}:assist_session"
        reports[label] = outlast_run(tmp_path, target, label, tiers, env, "--leg-timeout", "30")
    assert (tmp_path / "dies.db.died").exists()  # the kill happened
    assert reports["dies"]["kills"] == 1, reports["dies"]
    assert reports["dies"]["status"] == "succeeded", reports["dies"]
    assert reports["dies"]["result"] == reports["plain"]["result"]
    assert session_items(dbs["dies"]) == session_items(dbs["plain"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5])
def test_a_session_under_faults_holds_the_uninterrupted_runs_items(
    tmp_path: Path, seed: int
) -> None:
    tiers = (f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold")

    def env(label: str) -> dict[str, str]:
        db = tmp_path / f"{label}.db"
        seed_session(db)
        return {
            # Slow enough model calls that a leg's random fault lands before the run ends.
            "OA_TURNS": "3", "OA_MODEL_SECONDS": "0.4", "OA_TOOL_SECONDS": "0.05",
            "OA_SESSION_DB": str(db), "OA_CALL_LOG": str(tmp_path / f"{label}.log"),
        }  # fmt: skip

    # Legs of 4 s: each spends over a second importing the SDK (more on a loaded machine), and
    # a run whose every leg dies before its first commit proves nothing.
    base, report, label = faulty(tmp_path, tiers, seed, "assist_session", env, leg_timeout="4")
    context = json.dumps({"seed": seed, "report": report})
    assert report["result"] == base["result"], context
    expected = session_items(tmp_path / f"base-{seed}.db")
    assert session_items(tmp_path / f"{label}.db") == expected, context
    same_steps_and_tokens(tiers, f"base-{seed}", label)
