"""A research agent for the kill tests, loaded by emulator legs as ``path/kill_app.py:research``.

Its store comes from ``OUTLAST_HOT_URL`` / ``OUTLAST_COLD_URL``. Every model call appends a line
``model RUN_ID TURN LEG`` to the file named by ``AGENT_CALL_LOG`` before it starts, so a test can
tell which leg asked for which turn, including calls cut short by a kill.
"""

from __future__ import annotations

import os
import time
from typing import Any

from outlast import App, Context
from outlast.agent import Agent, Message, Model, ModelReply, Tool, tool
from outlast.testing.offline_model import Offline

CALL_LOG_ENV = "AGENT_CALL_LOG"

DOCS = {
    "journal": "A journal records each completed step of a durable agent run.",
    "replay": "Replay rebuilds the conversation of a durable agent without calling the model.",
    "lease": "A lease fences the writers of a durable run; its token only grows.",
    "lambda": "Lambda stops a durable agent after fifteen minutes unless it hands off.",
    "tax": "Restarting an agent from zero re-spends every token of its conversation.",
    "spot": "Spot capacity running agents is reclaimed with two minutes of notice.",
    "keys": "Idempotency keys make a repeated tool call of a durable agent harmless.",
    "tiers": "Large values of a durable run live in the cold tier of the store.",
    "retry": "Throttled model calls of an agent are retried with backoff as steps.",
    "loop": "A durable agent loop calls the model, then the tools, then the model again.",
    "evict": "An evicted pod running an agent gets SIGTERM and a grace period.",
    "budget": "A time budget decides whether the next step of a durable run fits.",
}


def _log(line: str) -> None:
    path = os.environ.get(CALL_LOG_ENV)
    if path:
        # One small O_APPEND write per line: lines from concurrent legs never interleave.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


@tool
def search(query: str, limit: int = 4) -> list[dict[str, str]]:
    """Search the documents."""
    time.sleep(0.05)
    words = set(query.lower().split())
    ranked = sorted(DOCS, key=lambda d: (-len(words & set(DOCS[d].lower().split())), d))
    return [{"id": d, "snippet": DOCS[d][:40]} for d in ranked[:limit]]


@tool
def read(doc_id: str) -> dict[str, str]:
    """Read one document."""
    time.sleep(0.03)
    return {"id": doc_id, "text": DOCS[doc_id]}


@tool
def note(text: str, source: str) -> str:
    """Write down a finding."""
    time.sleep(0.02)
    return f"noted [{source}]"


class LoggedModel:
    """The offline model, taking a little time per call and logging each call before it runs."""

    def __init__(self, run_id: str, leg: int) -> None:
        self.inner: Model = Offline(parallel=2, rounds=6)
        self.name = self.inner.name
        self.run_id = run_id
        self.leg = leg

    def complete(self, system: str, messages: list[Message], tools: list[Tool]) -> ModelReply:
        turn = sum(1 for m in messages if m.role == "assistant")
        _log(f"model {self.run_id} {turn} {self.leg}")
        time.sleep(0.04)
        return self.inner.complete(system, messages, tools)


app = App("agent-kill-test")


@app.durable()
def research(ctx: Context, topic: str) -> dict[str, Any]:
    agent = Agent(LoggedModel(ctx.run_id, ctx.leg), [search, read, note], max_turns=60)
    result = agent.run(ctx, f"Research {topic} and cite the sources.")
    return {
        "answer": result.answer,
        "stop": result.stop,
        "turns": result.turns,
        "usage": result.usage.model_dump(),
    }
