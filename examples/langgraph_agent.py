"""LangGraph's hello-world graph, made durable with Outlast. Runs offline (a mock model).

    outlast run examples/langgraph_agent.py:agent \\
        --input '{"messages": [{"role": "user", "content": "hi!"}]}'

Lines marked ``# outlast`` are the only changes to LangGraph's quickstart. The graph loops for a
few turns so that hand-offs, evictions and kills (``--evict-rate 0.3 --kill-rate 0.2``) land
between its supersteps; each leg continues from the last checkpoint. The thread id is the run id.

Nodes may be ``async def`` (as real model clients are): ``durable_graph`` then registers an async
durable function that awaits each superstep. Try ``async def mock_llm`` below; nothing else changes.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, MessagesState, StateGraph

from outlast import App  # outlast
from outlast.integrations.langgraph import durable_graph  # outlast

app = App("langgraph-agent")  # outlast
TURNS = 5


def mock_llm(state: MessagesState) -> dict[str, Any]:
    turn = sum(1 for m in state["messages"] if m.type == "ai")
    return {"messages": [{"role": "ai", "content": f"hello world ({turn + 1})"}]}


def more(state: MessagesState) -> str:
    turns = sum(1 for m in state["messages"] if m.type == "ai")
    return "mock_llm" if turns < TURNS else END


builder = StateGraph(MessagesState)
builder.add_node(mock_llm)
builder.add_edge(START, "mock_llm")
builder.add_conditional_edges("mock_llm", more)
graph = builder.compile()


def transcript(state: dict[str, Any]) -> list[dict[str, str]]:  # outlast: a plain result
    return [{"role": m.type, "content": str(m.content)} for m in state["messages"]]


agent = durable_graph(app, graph, name="agent", output=transcript)  # outlast
