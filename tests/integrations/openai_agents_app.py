"""An OpenAI Agents SDK app for the integration tests, offline: a scripted ``Model`` subclass.

The ``triage`` agent asks for two tools in parallel per turn (``OA_TURNS`` turns, default 2),
then hands off to ``writer``, which writes the final answer from every tool output it sees.
Each model call appends ``AGENT TURN PID`` to the file named by ``OA_CALL_LOG`` (when set), so a
test can count calls. The same model streams (``stream_response``) for ``assist_streamed``; the
``units`` agent gets its tool from a real MCP server over stdio (``openai_mcp_server.py``, its
calls logged to ``OA_MCP_LOG``); ``assist_session`` keeps the conversation in the SDK's
``SQLiteSession`` on the file ``OA_SESSION_DB``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from agents import (
    Agent,
    GuardrailFunctionOutput,
    Handoff,
    InputGuardrail,
    Model,
    ModelProvider,
    ModelResponse,
    ModelSettings,
    OutputGuardrail,
    RunConfig,
    RunContextWrapper,
    SQLiteSession,
    TResponseInputItem,
    Usage,
    function_tool,
    set_tracing_disabled,
)
from agents.agent_output import AgentOutputSchemaBase
from agents.items import TResponseStreamEvent
from agents.mcp import MCPServerStdio
from agents.models.interface import ModelTracing
from agents.tool import Tool
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseUsage,
)

from outlast import App, AsyncContext, Context, RetryPolicy
from outlast.integrations.openai_agents import OutlastRunner, StepOptions

set_tracing_disabled(True)  # no network, ever

app = App("openai-agents-test")

CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Perth"]
# Called with the city at each get_weather call (a test may make one call die, say).
TOOL_HOOK: Callable[[str], None] | None = None


def _seconds(name: str, default: str) -> float:
    return float(os.environ.get(name, default))


def _turns() -> int:
    """Tool turns of the triage agent (read at each call, so in-process tests can change it)."""
    return int(os.environ.get("OA_TURNS", "2"))


def _items(input: str | list[TResponseInputItem]) -> list[dict[str, Any]]:
    if isinstance(input, str):
        return [{"role": "user", "content": input}]
    return [dict(item) for item in input]


def _log(agent: str, turn: int) -> None:
    path = os.environ.get("OA_CALL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{agent} {turn} {os.getpid()}\n")


class ScriptedModel(Model):
    """Plays a script: turn N is the number of this agent's earlier tool-call turns in the input."""

    def __init__(
        self, agent: str, plan: Callable[[], list[list[tuple[str, dict[str, Any]]]]]
    ) -> None:
        self.agent = agent
        self.plan = plan

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any | None,
    ) -> ModelResponse:
        return await self._respond(input)

    async def _respond(self, input: str | list[TResponseInputItem]) -> ModelResponse:
        items = _items(input)
        mine = {
            str(i["call_id"]).split("-")[1]
            for i in items
            if i.get("type") == "function_call" and str(i.get("call_id", "")).startswith(self.agent)
        }
        turn = len(mine)
        _log(self.agent, turn)
        await asyncio.sleep(_seconds("OA_MODEL_SECONDS", "0.15"))
        plan = self.plan()
        output: list[Any]
        if turn < len(plan):
            output = [
                ResponseFunctionToolCall(
                    type="function_call",
                    call_id=f"{self.agent}-t{turn}-{n}",
                    name=name,
                    arguments=json.dumps(args),
                )
                for n, (name, args) in enumerate(plan[turn])
            ]
        else:
            results = [str(i["output"]) for i in items if i.get("type") == "function_call_output"]
            text = f"{self.agent}: " + " | ".join(results)
            output = [
                ResponseOutputMessage(
                    id=f"msg-{self.agent}-{turn}",
                    type="message",
                    role="assistant",
                    status="completed",
                    content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
                )
            ]
        usage = Usage(
            requests=1,
            input_tokens=100 + 10 * len(items),
            output_tokens=20 + turn,
            total_tokens=120 + 10 * len(items) + turn,
        )
        return ModelResponse(output=output, usage=usage, response_id=None)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        """The same script as a Responses API stream: text deltas word by word, each item's
        ``output_item.done``, then ``response.completed`` with the usage."""
        response = await self._respond(input)
        seq = 0
        for index, item in enumerate(response.output):
            if isinstance(item, ResponseOutputMessage):
                text = "".join(c.text for c in item.content if isinstance(c, ResponseOutputText))
                for word in text.split(" "):
                    yield ResponseTextDeltaEvent(
                        type="response.output_text.delta", item_id=str(item.id),
                        output_index=index, content_index=0, delta=word + " ", logprobs=[],
                        sequence_number=seq,
                    )  # fmt: skip
                    seq += 1
            yield ResponseOutputItemDoneEvent(
                type="response.output_item.done", item=item, output_index=index, sequence_number=seq
            )
            seq += 1
        u = response.usage
        completed = Response(
            id=f"resp-{self.agent}-{seq}", created_at=0, model="scripted", object="response",
            output=list(response.output), parallel_tool_calls=True, tool_choice="auto", tools=[],
            status="completed",
            usage=ResponseUsage(
                input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                total_tokens=u.total_tokens, input_tokens_details=u.input_tokens_details,
                output_tokens_details=u.output_tokens_details,
            ),
        )  # fmt: skip
        yield ResponseCompletedEvent(
            type="response.completed", response=completed, sequence_number=seq
        )


@function_tool
async def get_weather(city: str) -> str:
    """The weather in a city."""
    if TOOL_HOOK is not None:
        TOOL_HOOK(city)
    await asyncio.sleep(_seconds("OA_TOOL_SECONDS", "0.1"))
    return f"{city}: {len(city) * 3} C"


@function_tool
def get_time(city: str) -> str:
    """The local time in a city."""
    return f"{city}: {len(city)}:00"


class Unstorable:
    """A value the journal cannot store."""


@function_tool
def broken_lookup(city: str) -> Any:
    """Returns something that cannot be journaled."""
    return Unstorable()


def _polite(
    ctx: RunContextWrapper[Any], agent: Agent[Any], data: str | list[TResponseInputItem]
) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(output_info={"checked": True}, tripwire_triggered=False)


def _triage_plan() -> list[list[tuple[str, dict[str, Any]]]]:
    tools = [
        [
            (tool, {"city": CITIES[(2 * turn + n) % len(CITIES)]})
            for n, tool in enumerate(["get_weather", "get_time"])
        ]
        for turn in range(_turns())
    ]
    return [*tools, [("transfer_to_writer", {})]]


def _broken_plan() -> list[list[tuple[str, dict[str, Any]]]]:
    return [[("get_weather", {"city": "Oslo"})], [("broken_lookup", {"city": "Oslo"})]]


def _short(ctx: RunContextWrapper[Any], agent: Agent[Any], output: Any) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(
        output_info={"chars": len(str(output))}, tripwire_triggered=False
    )


writer = Agent(
    name="writer",
    instructions="Write the answer from the tool results.",
    model=ScriptedModel("writer", list),
    output_guardrails=[OutputGuardrail(guardrail_function=_short, name="short")],
)


class ScriptedProvider(ModelProvider):
    """Models named by string, as a run config's provider hands them out."""

    def get_model(self, model_name: str | None) -> Model:
        return ScriptedModel(model_name or "writer", list)


named = Agent(name="named", instructions="Answer.", model="writer")

triage = Agent(
    name="triage",
    instructions="Look things up, then hand off to the writer.",
    model=ScriptedModel("triage", _triage_plan),
    tools=[get_weather, get_time],
    handoffs=[writer],
    input_guardrails=[InputGuardrail(guardrail_function=_polite, name="polite")],
)

broken = Agent(
    name="broken",
    instructions="Calls a tool whose result cannot be stored.",
    model=ScriptedModel("broken", _broken_plan),
    tools=[get_weather, broken_lookup],
)


def _summary(result: Any) -> dict[str, Any]:
    usage = result.context_wrapper.usage
    return {
        "output": str(result.final_output),
        "agent": result.last_agent.name,
        "items": len(result.new_items),
        "usage": {
            "requests": usage.requests,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
        },
    }


@app.durable()
async def assist(ctx: AsyncContext, question: str) -> dict[str, Any]:
    result = await OutlastRunner.run(ctx, triage, question)
    return _summary(result)


@app.durable()
def assist_sync(ctx: Context, question: str) -> dict[str, Any]:
    result = OutlastRunner.run_sync(ctx, triage, question)
    return _summary(result)


@app.durable()
async def assist_broken(ctx: AsyncContext, question: str) -> dict[str, Any]:
    result = await OutlastRunner.run(ctx, broken, question)
    return _summary(result)


@app.durable()
async def assist_named(ctx: AsyncContext, question: str) -> dict[str, Any]:
    config = RunConfig(model_provider=ScriptedProvider())
    result = await OutlastRunner.run(ctx, named, question, run_config=config)
    return _summary(result)


class FlakyModel(ScriptedModel):
    """Fails its first ``failures`` calls (in this process), then plays the script."""

    failures = 0

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        if FlakyModel.failures > 0:
            FlakyModel.failures -= 1
            raise ConnectionError("the model's endpoint dropped the connection")
        return await super().get_response(*args, **kwargs)


flaky = Agent(name="flaky", instructions="Answer.", model=FlakyModel("writer", list))


@app.durable()
async def assist_flaky(ctx: AsyncContext, question: str) -> dict[str, Any]:
    retry = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=False)
    result = await OutlastRunner.run(ctx, flaky, question, model_step={"retry": retry})
    return _summary(result)


# ---------------------------------------------------------------------- streaming

# The text deltas the last streamed run saw live (tests in this process read it).
STREAMED_TEXT: list[str] = []


@app.durable()
async def assist_streamed(ctx: AsyncContext, question: str) -> dict[str, Any]:
    result = OutlastRunner.run_streamed(ctx, triage, question)
    completed = 0
    STREAMED_TEXT.clear()
    async for event in result.stream_events():
        if event.type == "raw_response_event":
            if isinstance(event.data, ResponseCompletedEvent):
                completed += 1
            elif isinstance(event.data, ResponseTextDeltaEvent):
                STREAMED_TEXT.append(event.data.delta)
    # One completed response per model turn, whether the call ran live or was replayed.
    return {**_summary(result), "completed_events": completed}


# ---------------------------------------------------------------------- MCP

MCP_SERVER = Path(__file__).with_name("openai_mcp_server.py")


def _units_plan() -> list[list[tuple[str, dict[str, Any]]]]:
    return [
        [("convert", {"key": f"k{turn}-{n}", "celsius": 10 * turn + n}) for n in range(2)]
        for turn in range(_turns())
    ]


units = Agent(
    name="units",
    instructions="Convert temperatures with the MCP tool.",
    model=ScriptedModel("units", _units_plan),
)


def units_server() -> MCPServerStdio:
    """The MCP server of ``openai_mcp_server.py``, logging its calls to ``OA_MCP_LOG``."""
    log = os.environ.get("OA_MCP_LOG", "")
    return MCPServerStdio(
        params={"command": sys.executable, "args": [str(MCP_SERVER), log]},
        name="units",
        cache_tools_list=True,
        client_session_timeout_seconds=30,
    )


@app.durable()
async def assist_mcp(ctx: AsyncContext, question: str) -> dict[str, Any]:
    # Each leg spends seconds starting Python, the SDK and the server before its first step, so
    # under the tests' fault rates a random kill often lands on the same step several legs in a
    # row: allow more interruptions per step than the app's default of 3.
    patient: StepOptions = {"max_interruptions": 10}
    async with units_server() as server:
        agent = units.clone(mcp_servers=[server])
        result = await OutlastRunner.run(
            ctx, agent, question, model_step=patient, tool_step=patient
        )
    return _summary(result)


# ---------------------------------------------------------------------- sessions


class DyingSession(SQLiteSession):
    """Kills its process (SIGKILL, as a hard kill would) right after its ``OA_DIE_AT_ADD``-th
    ``add_items`` of this process wrote, before the step could commit; once, marked by a file
    next to the database."""

    adds = 0

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        await super().add_items(items)
        DyingSession.adds += 1
        marker = Path(os.environ["OA_SESSION_DB"] + ".died")
        if DyingSession.adds == int(os.environ["OA_DIE_AT_ADD"]) and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


def oa_session() -> SQLiteSession:
    """The session of ``OA_SESSION_DB`` (a file, so it outlives the leg that wrote it)."""
    kind = DyingSession if os.environ.get("OA_DIE_AT_ADD") else SQLiteSession
    return kind("conversation", db_path=os.environ["OA_SESSION_DB"])


@app.durable()
async def assist_session(ctx: AsyncContext, question: str) -> dict[str, Any]:
    session = oa_session()
    try:
        result = await OutlastRunner.run(ctx, triage, question, session=session)
    finally:
        session.close()
    return _summary(result)


@app.durable()
def assist_session_sync(ctx: Context, question: str) -> dict[str, Any]:
    session = oa_session()
    try:
        result = OutlastRunner.run_sync(ctx, triage, question, session=session)
    finally:
        session.close()
    return _summary(result)
