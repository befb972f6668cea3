"""A LangGraph tool-calling agent for the integration tests, offline: a scripted chat model.

The graph is LangGraph's usual agent loop: a chat-model node (``async def``, as real model
clients are), ``langgraph.prebuilt.ToolNode`` running the tools, ``tools_condition`` between
them. The model asks for two or three tools at once for ``LGA_TURNS`` turns (default 3), then
answers from every tool result it has seen. Each model call appends ``TURN PID`` to the file
named by ``LGA_CALL_LOG`` (when set), so a test can count calls; ``LGA_MODEL_SECONDS`` and
``LGA_TOOL_SECONDS`` slow the calls down so faults land mid-superstep.

With ``LGA_ASK_AT=N`` the agent stops after its Nth tool turn for a human's go-ahead
(``interrupt()``), answered by ``outlast runs signal RUN resume``.

Registered functions:
- ``agent``: the async graph, ``durable_graph`` in async mode (detected from the model node);
- ``agent_sync``: the same graph with a sync model node, in sync mode.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import StructuredTool, tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import interrupt

from outlast import App
from outlast.integrations.langgraph import durable_graph

app = App("langgraph-agent-test")

CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Perth", "Dakar", "Sucre"]
# Called with the city at each get_time call (a Lambda test makes one call die, say).
TOOL_HOOK: Callable[[str], None] | None = None


def _seconds(name: str) -> float:
    return float(os.environ.get(name, "0"))


def _turns() -> int:
    """Tool turns before the answer (read at each call, so in-process tests can change it)."""
    return int(os.environ.get("LGA_TURNS", "3"))


def _text(messages: list[BaseMessage]) -> str:
    return " ".join(str(m.content) for m in messages)


class ScriptedChatModel(BaseChatModel):
    """Plays a script: turn N is the number of AI messages already in the conversation.

    A turn before the last asks for tools in parallel (``get_weather`` and ``get_time``, and
    ``get_population`` on odd turns); the last answers with every tool result, in order. Token
    usage depends on the prompt, so a conversation rebuilt wrongly would change the totals.
    """

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        turn = sum(1 for m in messages if isinstance(m, AIMessage))
        path = os.environ.get("LGA_CALL_LOG")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{turn} {os.getpid()}\n")
        usage = {
            "input_tokens": 10 + len(_text(messages)) // 4,
            "output_tokens": 5 + turn,
            "total_tokens": 15 + turn + len(_text(messages)) // 4,
        }
        if turn < _turns():
            a, b = CITIES[(2 * turn) % len(CITIES)], CITIES[(2 * turn + 1) % len(CITIES)]
            calls = [
                {"name": "get_weather", "args": {"city": a}, "id": f"call-{turn}-w"},
                {"name": "get_time", "args": {"city": b}, "id": f"call-{turn}-t"},
            ]
            if turn % 2:
                calls.append(
                    {"name": "get_population", "args": {"city": a}, "id": f"call-{turn}-p"}
                )
            return AIMessage(content="", tool_calls=calls, usage_metadata=usage)
        results = [str(m.content) for m in messages if isinstance(m, ToolMessage)]
        human = [str(m.content) for m in messages[1:] if isinstance(m, HumanMessage)]
        return AIMessage(content=" | ".join(results + human), usage_metadata=usage)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        time.sleep(_seconds("LGA_MODEL_SECONDS"))
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kw: Any) -> ChatResult:
        await asyncio.sleep(_seconds("LGA_MODEL_SECONDS"))
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])


@tool
def get_weather(city: str) -> str:
    """The weather in a city (a sync tool: under ``ainvoke`` ToolNode runs it in a thread)."""
    time.sleep(_seconds("LGA_TOOL_SECONDS"))
    return f"{city}: {len(city) * 3} C"


def _local_time(city: str) -> str:
    if TOOL_HOOK is not None:
        TOOL_HOOK(city)
    time.sleep(_seconds("LGA_TOOL_SECONDS"))
    return f"{city}: {len(city)}:00"


async def _alocal_time(city: str) -> str:
    if TOOL_HOOK is not None:
        TOOL_HOOK(city)
    await asyncio.sleep(_seconds("LGA_TOOL_SECONDS"))
    return f"{city}: {len(city)}:00"


# Both implementations, as many real tools have: the async graph awaits the coroutine.
get_time = StructuredTool.from_function(
    func=_local_time,
    coroutine=_alocal_time,
    name="get_time",
    description="The local time in a city.",
)


@tool
def get_population(city: str) -> str:
    """The population of a city."""
    time.sleep(_seconds("LGA_TOOL_SECONDS"))
    return f"{city}: {len(city) * 100}k people"


TOOLS = [get_weather, get_time, get_population]
model = ScriptedChatModel()


async def call_model(state: MessagesState) -> dict[str, Any]:
    return {"messages": [await model.ainvoke(state["messages"])]}


def call_model_sync(state: MessagesState) -> dict[str, Any]:
    return {"messages": [model.invoke(state["messages"])]}


def ask_human(state: MessagesState) -> dict[str, Any]:
    answer = interrupt({"question": "carry on?"})
    return {"messages": [HumanMessage(content=f"human: {answer}")]}


def after_tools(state: MessagesState) -> str:
    ask_at = int(os.environ.get("LGA_ASK_AT", "0"))
    turns = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
    asked = any(isinstance(m, HumanMessage) for m in state["messages"][1:])
    return "ask" if ask_at and turns == ask_at and not asked else "model"


def build(model_node: Callable[..., Any]) -> Any:
    builder = StateGraph(MessagesState)
    builder.add_node("model", model_node)
    builder.add_node("tools", ToolNode(TOOLS))
    builder.add_node("ask", ask_human)
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition, {"tools": "tools", END: END})
    builder.add_conditional_edges("tools", after_tools, ["ask", "model"])
    builder.add_edge("ask", "model")
    return builder.compile()


def result(state: dict[str, Any]) -> dict[str, Any]:
    """A plain result: the answer, the transcript's shape and the summed token usage."""
    ais = [m for m in state["messages"] if isinstance(m, AIMessage)]
    return {
        "answer": str(ais[-1].content),
        "kinds": [m.type for m in state["messages"]],
        "tool_calls": [len(m.tool_calls) for m in ais],
        "input_tokens": sum(m.usage_metadata["input_tokens"] for m in ais if m.usage_metadata),
        "output_tokens": sum(m.usage_metadata["output_tokens"] for m in ais if m.usage_metadata),
    }


graph = build(call_model)
agent = durable_graph(app, graph, name="agent", output=result)
agent_sync = durable_graph(app, build(call_model_sync), name="agent_sync", output=result)
