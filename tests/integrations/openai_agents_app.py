"""An OpenAI Agents SDK app for the integration tests, offline: a scripted ``Model`` subclass.

The ``triage`` agent asks for two tools in parallel per turn (``OA_TURNS`` turns, default 2),
then hands off to ``writer``, which writes the final answer from every tool output it sees.
Each model call appends ``AGENT TURN PID`` to the file named by ``OA_CALL_LOG`` (when set), so a
test can count calls.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
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
    TResponseInputItem,
    Usage,
    function_tool,
    set_tracing_disabled,
)
from agents.agent_output import AgentOutputSchemaBase
from agents.items import TResponseStreamEvent
from agents.models.interface import ModelTracing
from agents.tool import Tool
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from outlast import App, AsyncContext, Context, RetryPolicy
from outlast.integrations.openai_agents import OutlastRunner

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

    def stream_response(  # pragma: no cover - never streamed
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
        raise NotImplementedError


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
