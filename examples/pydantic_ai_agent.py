"""Pydantic AI's hello-world agent, made durable with Outlast.

Pydantic AI's own hello world (https://ai.pydantic.dev) is::

    from pydantic_ai import Agent

    agent = Agent(
        'anthropic:claude-sonnet-4-0', instructions='Be concise, reply with one sentence.'
    )
    result = agent.run_sync('Where does "hello world" come from?')
    print(result.output)

Below, the lines marked ``# outlast:`` are the ones that changed. Each model request (and each
tool call, had the agent tools) is now a durable step: a leg that dies mid-run resumes from the
journal without asking the model again. Run it offline (Pydantic AI's ``TestModel`` answers), with
evictions and kills::

    outlast run examples/pydantic_ai_agent.py:hello --input '"Where does hello world come from?"' \\
        --evict-rate 0.3 --kill-rate 0.3 --seed 1
    outlast runs show RUN_ID        # the model step, its tokens, the legs

Set ``PYDANTIC_AI_MODEL`` (e.g. ``anthropic:claude-sonnet-4-0``, with that provider's package and
API key) to ask a real model.
"""

from __future__ import annotations

import os

from pydantic_ai import Agent
from pydantic_ai.models import Model
from pydantic_ai.models.test import TestModel

from outlast import App, AsyncContext  # outlast: added
from outlast.integrations.pydantic_ai import OutlastAgent  # outlast: added

OFFLINE_ANSWER = (
    '"Hello, world!" first appeared in Brian Kernighan\'s 1972 tutorial for the B language.'
)

model: Model | str = os.environ.get("PYDANTIC_AI_MODEL") or TestModel(
    custom_output_text=OFFLINE_ANSWER  # offline unless a real model is named
)
agent = Agent(model, instructions="Be concise, reply with one sentence.")
durable = OutlastAgent(agent, name="hello")  # outlast: model requests become durable steps
app = App("pydantic-ai-hello")  # outlast: the app that keeps the journal


@app.durable()  # outlast: a durable function instead of a script
async def hello(ctx: AsyncContext, question: str) -> str:  # outlast: receives its context
    result = await durable.run(question)  # outlast: was agent.run_sync(question)
    return result.output
