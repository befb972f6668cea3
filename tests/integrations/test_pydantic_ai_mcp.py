"""A Pydantic AI agent whose tools come from a real MCP server, made durable by ``OutlastAgent``.

The server (``mcp_tools_server.py``) is mcp's own ``MCPServer`` over stdio, started by Pydantic AI's
``MCPToolset``; it logs its start and each tool call. The agent (``pydantic_ai_workload.mcp_agent``)
asks for two MCP lookups in parallel per turn. The tool listing and every MCP tool call are durable
steps: a replay rebuilds the history from the journal without starting the server or calling it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")
pytest.importorskip("fastmcp")  # Pydantic AI's MCP client (`pydantic-ai-slim[mcp]`)

from outlast import App, RunStatus
from tests.integrations import pydantic_ai_workload as workload
from tests.integrations.test_pydantic_ai import counted, faulty_run, kinds, tokens

TURNS = workload.MCP_TURNS + 1  # the tool-calling turns and the answering one
MCP_CALLS = workload.MCP_TURNS * workload.MCP_WIDTH
EVERY_CALL = [f"mcp m{t}-{i}" for t in range(workload.MCP_TURNS) for i in range(workload.MCP_WIDTH)]
LISTING = "mcp_agent__mcp_server__tools.get_tools"
MODEL = "mcp_agent__model.request"
CALL = "mcp_agent__mcp_server__tools.call_tool"


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calls.txt"
    monkeypatch.setenv("PAI_CALLS", str(path))
    return path


@pytest.fixture
def app(tmp_path: Path) -> App:
    fresh = App("pai-mcp", hot_url=f"sqlite:///{tmp_path}/hot.db", cold_url=f"file://{tmp_path}/c")
    for name, fn in workload.app.functions.items():
        fresh.durable(name=name)(fn.fn)
    return fresh


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The MCP agent run by Pydantic AI alone, against its own server."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAI_CALLS", str(tmp_path_factory.mktemp("plain") / "calls.txt"))
        return workload.plain_mcp()


def test_mcp_listing_and_tool_calls_are_journaled_steps(
    app: App, calls: Path, uninterrupted: dict[str, Any]
) -> None:
    run_id = app.start("ask_mcp", "sum them")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == uninterrupted
    assert uninterrupted["output"] == "mcp total=150 from 6 lookups"
    assert uninterrupted["tool_calls"] == MCP_CALLS

    entries = app.journal(run_id)
    # One listing of the server's tools (Pydantic AI caches it for the run), then per turn the
    # model's response and each parallel MCP call, in call order.
    per_turn = [MODEL, CALL, CALL]
    assert [e.name for e in entries] == [LISTING, *per_turn * workload.MCP_TURNS, MODEL]
    assert all(e.status.value == "ok" for e in entries)
    models = [e for e in entries if e.name == MODEL]
    assert tokens(models, "input") == uninterrupted["input_tokens"]
    assert tokens(models, "output") == uninterrupted["output_tokens"]
    # The server started once, was asked for its tools once, and each MCP tool call ran once.
    assert counted(calls) == Counter(
        ["mcp start", "mcp list"] + [f"model {t}" for t in range(TURNS)] + EVERY_CALL
    )

    # Replaying the whole journal starts no server and calls neither the model nor a tool.
    calls.unlink()
    fork = app.retry(run_id, as_id=f"{run_id}-all", from_seq=len(entries))
    assert app.drive(fork).status is RunStatus.SUCCEEDED
    assert app.result(fork) == uninterrupted
    assert counted(calls) == Counter()


@pytest.mark.parametrize(
    ("cut", "again"),
    [
        # Lost after turn 1's model step: turn 1's two calls and everything after run again.
        (5, ["mcp m1-0", "mcp m1-1", "model 2", "mcp m2-0", "mcp m2-1", "model 3"]),
        # Lost between the two parallel calls: only the uncommitted one runs again.
        (6, ["mcp m1-1", "model 2", "mcp m2-0", "mcp m2-1", "model 3"]),
        # Lost right after the listing: the listing is replayed, every other step runs again.
        (
            1,
            [f"model {t}" for t in range(TURNS)] + EVERY_CALL,
        ),
    ],
)
def test_a_replay_after_a_lost_leg_calls_only_the_uncommitted_mcp_steps(
    app: App, calls: Path, uninterrupted: dict[str, Any], cut: int, again: list[str]
) -> None:
    run_id = app.start("ask_mcp", "sum them")
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    calls.unlink()
    # A fork from `cut` keeps entries [0, cut): what a leg that died there had committed.
    fork = app.retry(run_id, as_id=f"{run_id}-{cut}", from_seq=cut)
    assert app.drive(fork).status is RunStatus.SUCCEEDED
    assert app.result(fork) == uninterrupted
    # The server is started (once) only because a live MCP step needs it.
    seen = counted(calls)
    listings = seen.pop("mcp list", 0)
    assert seen == Counter(["mcp start", *again])
    # The journaled listing is what the model sees. The server is listed again only by mcp's
    # client itself, inside a live call's step (it reads the tool's output schema to validate the
    # result, and its session has not listed the tools yet): at most once per live call.
    assert listings <= sum(1 for line in again if line.startswith("mcp m"))
    names = [e.name for e in app.journal(fork)]
    assert names == [e.name for e in app.journal(run_id)]
    assert names.count(LISTING) == 1


@pytest.mark.slow
# Seeds whose first leg is killed at its 3rd or 4th commit (after or before the hot write), so the
# fault lands whatever the machine's speed; later legs draw their faults at random.
@pytest.mark.parametrize("seed", [13, 18])
def test_mcp_agent_under_faults_gives_the_uninterrupted_result(
    tmp_path: Path, uninterrupted: dict[str, Any], seed: int
) -> None:
    # A leg spends about 3 s starting (Python, Pydantic AI's MCP client, the server) before its
    # first MCP step: legs are long enough for that.
    run, seen, shown = faulty_run(
        tmp_path,
        f"sqlite:///{tmp_path}/hot.db",
        f"file://{tmp_path}/cold",
        seed,
        6.0,
        "ask_mcp",
    )
    context = json.dumps({"seed": seed, "run": run, "calls": seen})
    assert run["status"] == "succeeded", context
    assert run["result"] == uninterrupted, context
    assert run["kills"] + run["evictions"] + run["timeouts"] >= 1, context
    interruptions = run["legs"] - 1
    for turn in range(TURNS):
        assert seen[f"model {turn}"] >= 1, context
    # Each model turn and each MCP call ran once, plus at most what one leg had in flight per
    # interruption (one model request, or one turn's parallel MCP calls).
    assert kinds(seen, "model") <= TURNS + interruptions, context
    mcp_calls = kinds(seen, "mcp m")
    assert MCP_CALLS <= mcp_calls <= MCP_CALLS + workload.MCP_WIDTH * interruptions, context
    # The server starts only in legs that had an MCP step to run live.
    assert 1 <= seen["mcp start"] <= run["legs"], context
    assert (
        shown["tokens"]["total"] == uninterrupted["input_tokens"] + uninterrupted["output_tokens"]
    )
