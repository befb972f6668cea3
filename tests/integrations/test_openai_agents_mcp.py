"""An OpenAI Agents SDK agent whose tool comes from a real MCP server, made durable.

The server (``openai_mcp_server.py``) is mcp's own ``MCPServer`` over stdio, reached through the
SDK's ``MCPServerStdio``; it logs each tool call. The ``units`` agent of ``openai_agents_app.py``
asks for two MCP calls in parallel per turn. The tool listing and every MCP tool call are durable
steps: a replay rebuilds the run from the journal without calling the server's tool again.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")
pytest.importorskip("mcp")

from outlast.app import DurableFunction
from outlast.targets import load_target
from statestore import EntryStatus, RunStatus
from tests.integrations.test_openai_agents import (
    APP,
    QUESTION,
    faulty,
    interruptions,
    model_calls,
    same_steps_and_tokens,
)

TURNS = 2  # OA_TURNS: tool-calling turns of the units agent, then one answering turn
WIDTH = 2  # MCP calls per turn, in parallel
KEYS = [f"k{t}-{n}" for t in range(TURNS) for n in range(WIDTH)]
PER_TURN = ["mcp_tools:units", "model", "mcp:units:convert", "mcp:units:convert"]
EXPECTED_NAMES = PER_TURN * TURNS + ["mcp_tools:units", "model"]


def mcp_calls(log: Path) -> Counter[str]:
    """MCP tool call key -> how many times the server ran it."""
    calls: Counter[str] = Counter()
    if log.exists():
        for line in log.read_text().splitlines():
            _tool, key, _pid = line.split()
            calls[key] += 1
    return calls


@pytest.fixture
def durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DurableFunction[Any]]:
    monkeypatch.setenv("OUTLAST_HOT_URL", f"sqlite:///{tmp_path}/hot.db")
    monkeypatch.setenv("OUTLAST_COLD_URL", f"file://{tmp_path}/cold")
    monkeypatch.setenv("OA_CALL_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("OA_MCP_LOG", str(tmp_path / "mcp.log"))
    monkeypatch.setenv("OA_TURNS", str(TURNS))
    monkeypatch.setenv("OA_MODEL_SECONDS", "0")
    function = load_target(f"{APP}:assist_mcp")
    function.app.close()  # the module is shared between tests; open this test's store
    yield function
    function.app.close()


def test_mcp_listing_and_calls_are_steps_and_a_replay_calls_nothing(
    durable: DurableFunction[Any], tmp_path: Path
) -> None:
    app = durable.app
    mcp_log = tmp_path / "mcp.log"
    view = app.drive(app.start("assist_mcp", QUESTION, run_id="mcp"))
    assert view.status is RunStatus.SUCCEEDED, view.error
    # The model saw the MCP server's answers (0 C is 32 F, 1 C is 33 F, ...).
    output = view.result["output"]
    assert output.startswith("units: ")
    for key, fahrenheit in zip(KEYS, ["32F", "33F", "50F", "51F"], strict=True):
        assert f"{key}={fahrenheit}" in output
    journal = app.journal("mcp")
    assert [e.name for e in journal] == EXPECTED_NAMES
    assert all(e.status is EntryStatus.OK for e in journal)
    assert mcp_calls(mcp_log) == Counter(KEYS)  # each call reached the server once

    # Replaying the whole run calls neither the model nor the MCP tool again.
    mcp_log.unlink()
    (tmp_path / "calls.log").unlink()
    fork = app.retry("mcp", from_seq=len(journal), as_id="mcp-replayed")
    again = app.drive(fork)
    assert again.status is RunStatus.SUCCEEDED, again.error
    assert again.result == view.result
    assert mcp_calls(mcp_log) == Counter()
    assert model_calls(tmp_path / "calls.log") == Counter()


@pytest.mark.parametrize(
    ("cut", "again"),
    [
        # Lost between turn 1's two parallel calls: only the uncommitted one runs again.
        (7, ["k1-1"]),
        # Lost right after turn 1's model response: both of its calls run again.
        (6, ["k1-0", "k1-1"]),
        # Lost after the first listing: every call runs again.
        (1, KEYS),
    ],
)
def test_a_replay_after_a_lost_leg_calls_only_the_uncommitted_mcp_calls(
    durable: DurableFunction[Any], tmp_path: Path, cut: int, again: list[str]
) -> None:
    app = durable.app
    mcp_log = tmp_path / "mcp.log"
    done = app.drive(app.start("assist_mcp", QUESTION, run_id="mcp"))
    assert done.status is RunStatus.SUCCEEDED, done.error
    mcp_log.unlink()
    # A fork from `cut` keeps entries [0, cut): what a leg that died there had committed.
    fork = app.retry("mcp", from_seq=cut, as_id=f"mcp-{cut}")
    view = app.drive(fork)
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert view.result == done.result
    assert mcp_calls(mcp_log) == Counter(again)
    assert [e.name for e in app.journal(fork)] == EXPECTED_NAMES


@pytest.mark.slow
@pytest.mark.parametrize("seed", [7])
def test_mcp_agent_under_faults_gives_the_uninterrupted_result(tmp_path: Path, seed: int) -> None:
    tiers = (f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold")

    def env(label: str) -> dict[str, str]:
        return {
            "OA_TURNS": "4", "OA_MODEL_SECONDS": "0.1",
            "OA_CALL_LOG": str(tmp_path / f"{label}.log"),
            "OA_MCP_LOG": str(tmp_path / f"{label}.mcp.log"),
        }  # fmt: skip

    # A leg spends a few seconds starting (Python, the SDK, the MCP server) before its first
    # step: legs are long enough for that.
    base, report, label = faulty(tmp_path, tiers, seed, "assist_mcp", env, leg_timeout="5")
    context = json.dumps({"seed": seed, "report": report})
    assert report["result"] == base["result"], context
    expected = mcp_calls(tmp_path / f"base-{seed}.mcp.log")
    assert set(expected.values()) == {1} and len(expected) == 4 * WIDTH, expected
    seen = mcp_calls(tmp_path / f"{label}.mcp.log")
    lost = interruptions(report)
    assert set(seen) == set(expected), context  # every call reached the server...
    # ...again only when a leg died under it (a turn's parallel calls die together).
    assert all(count <= 1 + lost for count in seen.values()), (seen, context)
    assert sum(seen.values()) <= len(expected) + WIDTH * lost, (seen, context)
    turns = model_calls(tmp_path / f"base-{seed}.log")
    assert sum(model_calls(tmp_path / f"{label}.log").values()) <= len(turns) + lost, context
    same_steps_and_tokens(tiers, f"base-{seed}", label)
