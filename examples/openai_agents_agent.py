"""The OpenAI Agents SDK's hello-world agent, made durable. Lines marked ``# outlast`` changed.

    outlast run examples/openai_agents_agent.py:hello \\
        --input '"Write a haiku about recursion in programming."' \\
        --evict-rate 0.3 --kill-rate 0.3 --duplicate-rate 0.2 --seed 1

Offline by default: without ``OPENAI_API_KEY`` the agent runs on the SDK's own ``ScriptedModel``
(``agents.testing``), so the example needs no network. With a key, it calls OpenAI.
"""

from __future__ import annotations

import os

from agents import Agent, Model, Usage, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message

from outlast import App, AsyncContext  # outlast
from outlast.integrations.openai_agents import OutlastRunner  # outlast

HAIKU = "Code within the code,\nfunctions calling themselves,\ninfinite loop's dance."

app = App("hello-agents")  # outlast


def offline_model() -> Model:
    """One scripted reply, with token usage, the way a real model would answer."""
    usage = Usage(requests=1, input_tokens=28, output_tokens=19, total_tokens=47)
    return ScriptedModel([[assistant_message(HAIKU)]], default_usage=usage)


if not os.environ.get("OPENAI_API_KEY"):
    set_tracing_disabled(True)  # offline: no trace export either

agent = Agent(
    name="Assistant",
    instructions="You are a helpful assistant",
    model=None if os.environ.get("OPENAI_API_KEY") else offline_model(),
)


@app.durable()  # outlast
async def hello(ctx: AsyncContext, prompt: str) -> str:  # outlast
    # was: result = Runner.run_sync(agent, "Write a haiku about recursion in programming.")
    result = await OutlastRunner.run(ctx, agent, prompt)  # outlast
    return str(result.final_output)
