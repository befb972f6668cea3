"""A multi-turn Pydantic AI agent with parallel tool calls, made durable (driven by `outlast run`).

The model is Pydantic AI's own offline ``FunctionModel``: turn ``k`` asks for ``WIDTH`` tools in
parallel, and the last turn answers with the sum of what the tools returned. Each call of the
model and of a tool appends a line to ``$PAI_CALLS`` (when set), so a test can count real calls
across legs. ``$PAI_SLOW`` (seconds) slows each model call and tool, so faults land mid-run.
``TOOL_HOOK`` (set by in-process tests) is called with each lookup's key before it runs, so a test
can make one tool call hang past a Lambda invocation's deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_ai import Agent, ModelRetry, RunContext
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.usage import RequestUsage

from outlast import App, AsyncContext, Context, RetryPolicy
from outlast.integrations.pydantic_ai import OutlastAgent

TURNS = 4
WIDTH = 3
TOOL_HOOK: Callable[[str], None] | None = None


def _record(line: str) -> None:
    path = os.environ.get("PAI_CALLS")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


def _slow() -> float:
    return float(os.environ.get("PAI_SLOW", "0"))


def _turn(messages: list[ModelMessage]) -> int:
    return sum(isinstance(m, ModelResponse) for m in messages)


async def scripted_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    turn = _turn(messages)
    _record(f"model {turn}")
    await asyncio.sleep(_slow())
    usage = RequestUsage(input_tokens=100 + 10 * turn, output_tokens=7 + turn)
    if turn < TURNS:
        calls = [
            ToolCallPart("lookup", {"key": f"t{turn}-{i}", "n": turn * WIDTH + i})
            for i in range(WIDTH)
        ]
        return ModelResponse(parts=calls, usage=usage)
    returns = [
        p.content
        for m in messages
        for p in getattr(m, "parts", [])
        if isinstance(p, ToolReturnPart) and p.tool_name == "lookup"
    ]
    total = sum(int(r["value"]) for r in returns if isinstance(r, dict))
    return ModelResponse(
        parts=[TextPart(f"total={total} from {len(returns)} lookups")], usage=usage
    )


@dataclass
class Deps:
    scale: int


async def streamed_model(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    """The same script, streamed (an event stream handler makes Pydantic AI stream requests)."""
    response = await scripted_model(messages, info)
    for index, part in enumerate(response.parts):
        if isinstance(part, TextPart):
            yield part.content
        elif isinstance(part, ToolCallPart):
            yield {
                index: DeltaToolCall(
                    name=part.tool_name,
                    json_args=json.dumps(part.args),
                    tool_call_id=f"call-{_turn(messages)}-{index}",
                )
            }


agent = Agent(
    FunctionModel(scripted_model, stream_function=streamed_model),
    deps_type=Deps,
    name="lookup_agent",
)


@agent.tool
async def lookup(ctx: RunContext[Deps], key: str, n: int) -> dict[str, str | int]:
    _record(f"tool {key}")
    if TOOL_HOOK is not None:
        TOOL_HOOK(key)
    await asyncio.sleep(_slow())
    return {"key": key, "value": n * ctx.deps.scale}


durable = OutlastAgent(agent)


def _tool_events(ctx: RunContext[Deps], events: Any) -> Any:
    async def handle() -> None:
        async for event in events:
            name = type(event).__name__
            if "Tool" in name:
                _record(f"event {name}")

    return handle()


streamed = OutlastAgent(agent, name="lookup_streamed", event_stream_handler=_tool_events)


async def flaky_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Turn 0 looks a key up, turn 1 calls a tool whose result cannot be stored."""
    turn = _turn(messages)
    _record(f"model {turn}")
    usage = RequestUsage(input_tokens=5, output_tokens=1)
    if turn == 0:
        return ModelResponse(parts=[ToolCallPart("lookup", {"key": "k", "n": 1})], usage=usage)
    if turn == 1:
        return ModelResponse(parts=[ToolCallPart("make_socket", {})], usage=usage)
    return ModelResponse(parts=[TextPart("done")], usage=usage)


bad_agent = Agent(FunctionModel(flaky_model), deps_type=Deps, name="bad_agent")
bad_agent.tool(lookup)


@bad_agent.tool_plain
def make_socket() -> object:
    """Returns a value no journal can store."""
    return threading.Lock()


bad = OutlastAgent(bad_agent)


async def retrying_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Turn 0 calls ``check`` wrongly (the tool asks for a retry), turn 1 rightly, then answers."""
    turn = _turn(messages)
    _record(f"model {turn}")
    usage = RequestUsage(input_tokens=3, output_tokens=2)
    if turn < 2:
        return ModelResponse(parts=[ToolCallPart("check", {"n": turn - 1})], usage=usage)
    if turn == 2:
        return ModelResponse(parts=[ToolCallPart("explode", {})], usage=usage)
    return ModelResponse(parts=[TextPart("checked")], usage=usage)


retry_agent = Agent(FunctionModel(retrying_model), name="retry_agent")


@retry_agent.tool_plain
def check(n: int) -> int:
    """Asks the model for a non-negative number (Pydantic AI's ModelRetry)."""
    _record(f"tool check {n}")
    if n < 0:
        raise ModelRetry("n must be >= 0")
    return n


@retry_agent.tool_plain
def explode() -> int:
    """Fails the first two attempts: a plain exception is retried by the step's policy."""
    path = os.environ.get("PAI_CALLS", "")
    _record("tool explode")
    lines = Path(path).read_text().splitlines() if path else []
    attempts = lines.count("tool explode") if path else 3
    if attempts < 3:
        raise ConnectionError(f"flaky backend (attempt {attempts})")
    return 42


retrying = OutlastAgent(
    retry_agent, tool_step={"retry": RetryPolicy(max_attempts=3, initial_delay=0.01)}
)
app = App("pai-workload", max_interruptions=10)  # short legs under heavy fault injection


def summary(result: Any) -> dict[str, Any]:
    usage = result.usage
    return {
        "output": result.output,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "requests": usage.requests,
        "tool_calls": usage.tool_calls,
        "messages": len(result.all_messages()),
    }


@app.durable()
async def ask(ctx: AsyncContext, question: str) -> dict[str, Any]:
    result = await durable.run(ctx, question, deps=Deps(scale=2))
    return summary(result)


@app.durable()
async def ask_iter(ctx: AsyncContext, question: str) -> dict[str, Any]:
    nodes: list[str] = []
    async with durable.iter(ctx, question, deps=Deps(scale=2)) as run:
        async for node in run:
            nodes.append(type(node).__name__)
    assert run.result is not None
    return {**summary(run.result), "nodes": nodes}


@app.durable()
async def ask_streamed(ctx: AsyncContext, question: str) -> dict[str, Any]:
    return summary(await streamed.run(ctx, question, deps=Deps(scale=2)))


def _every_event(ctx: RunContext[Deps], events: Any) -> Any:
    async def handle() -> None:
        async for event in events:
            _record(f"event {type(event).__name__}")

    return handle()


@app.durable()
async def ask_with_handler(ctx: AsyncContext, question: str) -> dict[str, Any]:
    """A run's own event stream handler: the durable way to stream (``run_stream`` is refused)."""
    return summary(
        await durable.run(ctx, question, deps=Deps(scale=2), event_stream_handler=_every_event)
    )


@app.durable()
async def ask_run_stream(ctx: AsyncContext, question: str) -> str:
    async with durable.run_stream(ctx, question, deps=Deps(scale=2)) as streamed:
        return await streamed.get_output()


@app.durable()
async def ask_two(ctx: AsyncContext, question: str) -> list[dict[str, Any]]:
    """Two agent runs at once: each in a ``ctx.parallel`` branch, so each has its own scope."""

    async def doubled(branch: AsyncContext) -> dict[str, Any]:
        return summary(await durable.run(branch, question, deps=Deps(scale=2), timeout=300))

    async def tripled(branch: AsyncContext) -> dict[str, Any]:
        return summary(await durable.run(branch, question, deps=Deps(scale=3), timeout=300))

    return list(await ctx.parallel(doubled, tripled))


@app.durable()
async def ask_retrying(ctx: AsyncContext, question: str) -> str:
    return (await retrying.run(question)).output  # the context found by current_context()


@app.durable()
async def ask_bad(ctx: AsyncContext, question: str) -> str:
    return (await bad.run(ctx, question, deps=Deps(scale=1))).output


@app.durable()
def ask_sync(ctx: Context, question: str) -> dict[str, Any]:
    return summary(durable.run_sync(ctx, question, deps=Deps(scale=2)))


def plain() -> dict[str, Any]:
    """The same agent run without Outlast: what every durable run must equal."""
    return summary(agent.run_sync("sum them", deps=Deps(scale=2)))


# ------------------------------------------------------------------------- an MCP toolset

MCP_SERVER = Path(__file__).with_name("mcp_tools_server.py")
MCP_TURNS = 3
MCP_WIDTH = 2


async def mcp_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Turn ``k`` asks the MCP server's ``lookup`` for ``MCP_WIDTH`` keys at once; then sums."""
    turn = _turn(messages)
    _record(f"model {turn}")
    await asyncio.sleep(_slow())
    # The model sees the MCP server's tools: discovery ran (live, or replayed from the journal).
    assert [tool.name for tool in info.function_tools] == ["lookup"], info.function_tools
    usage = RequestUsage(input_tokens=50 + 5 * turn, output_tokens=3 + turn)
    if turn < MCP_TURNS:
        calls = [
            ToolCallPart("lookup", {"key": f"m{turn}-{i}", "n": turn * MCP_WIDTH + i})
            for i in range(MCP_WIDTH)
        ]
        return ModelResponse(parts=calls, usage=usage)
    values = [
        int(p.content["value"])
        for m in messages
        for p in getattr(m, "parts", [])
        if isinstance(p, ToolReturnPart) and isinstance(p.content, dict)
    ]
    return ModelResponse(
        parts=[TextPart(f"mcp total={sum(values)} from {len(values)} lookups")], usage=usage
    )


def mcp_agent() -> Agent[None, str]:
    """The agent with the real MCP server (``mcp_tools_server.py``) as a stdio toolset.

    Built on use, so importing this module does not need the MCP client (``fastmcp``). The server
    logs to ``$PAI_CALLS``, passed as an argument because the stdio client gives the server a
    sanitized environment.
    """
    from fastmcp.client.transports import PythonStdioTransport
    from pydantic_ai.mcp import MCPToolset

    args = [os.environ.get("PAI_CALLS", ""), str(_slow())]
    # A durable run names each MCP step by the toolset's id: it must be explicit and stable.
    server = MCPToolset(PythonStdioTransport(MCP_SERVER, args=args, keep_alive=False), id="tools")
    return Agent(FunctionModel(mcp_model), toolsets=[server], name="mcp_agent")


# One durable agent per server configuration: in-process tests change $PAI_CALLS between runs.
_mcp_durable: dict[tuple[str, float], OutlastAgent[None, str]] = {}


def mcp_durable() -> OutlastAgent[None, str]:
    key = (os.environ.get("PAI_CALLS", ""), _slow())
    if key not in _mcp_durable:
        _mcp_durable[key] = OutlastAgent(mcp_agent())
    return _mcp_durable[key]


@app.durable()
async def ask_mcp(ctx: AsyncContext, question: str) -> dict[str, Any]:
    return summary(await mcp_durable().run(ctx, question))


def plain_mcp() -> dict[str, Any]:
    """The MCP agent run without Outlast."""
    return summary(mcp_agent().run_sync("sum them"))
