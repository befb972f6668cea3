"""The OpenAI Agents SDK, durable: ``OutlastRunner.run`` is ``Runner.run`` in a durable function.

```python
from agents import Agent
from outlast import App, AsyncContext
from outlast.integrations.openai_agents import OutlastRunner

agent = Agent(name="Assistant", instructions="...", tools=[get_weather], handoffs=[writer])

@app.durable()
async def assist(ctx: AsyncContext, question: str) -> str:
    result = await OutlastRunner.run(ctx, agent, question)  # was: Runner.run(agent, question)
    return str(result.final_output)
```

The context is passed explicitly, as the first argument: Outlast keeps no ambient "current
context", and an explicit argument cannot pick up the wrong run. ``OutlastRunner.run_sync(ctx,
agent, input)`` is the same inside a sync durable function (``def fn(ctx: Context, ...)``).

What becomes a durable step (one journal entry each), built only on the SDK's public interface:

- every model call (``Model.get_response``), as ``model``: the response is journaled as plain
  JSON (each output item's ``model_dump(mode="json", by_alias=True, exclude_unset=True)``, the
  usage) and validated back into the
  SDK's types, and the step is annotated with ``input_tokens``/``output_tokens``;
- every function-tool call, as ``tool:NAME`` (the tool's own ``on_invoke_tool``, with the SDK's
  argument parsing and error handling inside it);
- every handoff, as ``handoff:TOOL_NAME`` (the handoff's ``on_invoke_handoff``, including the
  user's ``on_handoff`` callback; the target agent is journaled by name);
- every input and output guardrail, as ``input_guardrail:NAME``/``output_guardrail:NAME`` (its
  ``output_info`` and whether the tripwire fired).

The user's agents are not changed: the runner works on clones whose model is wrapped (a model
object on the agent, or the run config's model or provider for models named by string) and
whose tools, handoffs and guardrails are wrapped. A replay runs the SDK's loop again over the
journaled values, so it rebuilds the run's items, usage and final output without calling a
model, a tool, a guardrail or a handoff callback again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypedDict, cast

from agents import (
    Agent,
    FunctionTool,
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
    Runner,
    RunResult,
    TResponseInputItem,
    Usage,
    handoff,
)
from agents.agent_output import AgentOutputSchemaBase
from agents.items import TResponseOutputItem, TResponseStreamEvent
from agents.models.interface import ModelTracing
from agents.retry import ModelRetryAdvice, ModelRetryAdviceRequest
from agents.tool import Tool
from agents.tool_context import ToolContext
from pydantic import TypeAdapter

from outlast import AsyncContext, Context, RetryPolicy

__all__ = ["OutlastRunner", "StepOptions", "response_from_plain", "response_to_plain"]

_OUTPUT_ITEMS: TypeAdapter[list[TResponseOutputItem]] = TypeAdapter(list[TResponseOutputItem])
_USAGE: TypeAdapter[Usage] = TypeAdapter(Usage)

Work = Callable[[], Awaitable[Any]]
Annotate = Callable[[Any], dict[str, int]]


class StepOptions(TypedDict, total=False):
    """Options of the steps one kind of call runs as (see ``ctx.step``)."""

    retry: RetryPolicy
    timeout: float
    max_interruptions: int
    at_most_once: bool


# ---------------------------------------------------------------------- responses as plain data


def response_to_plain(response: ModelResponse) -> dict[str, Any]:
    """A ``ModelResponse`` as JSON-friendly data (what the journal keeps for a model step)."""
    return {
        # By alias (``async``, not ``async_``) and only the fields that were set, so the items
        # validate back equal, with the same fields set (the SDK dumps them with exclude_unset).
        "output": _OUTPUT_ITEMS.dump_python(
            list(response.output), mode="json", by_alias=True, exclude_unset=True
        ),
        "usage": _USAGE.dump_python(response.usage, mode="json"),
        "response_id": response.response_id,
        "request_id": response.request_id,
        "raw_usage": response.raw_usage,
    }


def response_from_plain(plain: dict[str, Any]) -> ModelResponse:
    """The ``ModelResponse`` that ``response_to_plain`` stored, as the SDK's own types."""
    return ModelResponse(
        output=_OUTPUT_ITEMS.validate_python(plain["output"]),
        usage=_USAGE.validate_python(plain["usage"]),
        response_id=plain.get("response_id"),
        request_id=plain.get("request_id"),
        raw_usage=plain.get("raw_usage"),
    )


def _tokens(plain: Any) -> dict[str, int]:
    usage = (plain.get("usage") or {}) if isinstance(plain, dict) else {}
    return {
        "input_tokens": int(usage.get("input_tokens") or 0),
        "output_tokens": int(usage.get("output_tokens") or 0),
    }


# ---------------------------------------------------------------------- how a step is run


class _AsyncSteps:
    """Steps of an async durable function: ``await ctx.step(...)`` on the SDK's own loop."""

    def __init__(self, ctx: AsyncContext) -> None:
        self.ctx = ctx

    async def step(
        self,
        name: str,
        work: Work,
        annotate: Annotate | None = None,
        options: StepOptions | None = None,
    ) -> Any:
        ctx = self.ctx

        async def unit() -> Any:
            value = await work()
            if annotate is not None:
                ctx.annotate(**annotate(value))
            return value

        unit.__name__ = name
        return await ctx.step(unit, name=name, **(options or {}))


@dataclasses.dataclass
class _Request:
    name: str
    work: Work
    annotate: Annotate | None
    options: StepOptions
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        def done() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(value)

        # RuntimeError: the SDK's loop already closed, and nobody waits for this answer.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(done)


@dataclasses.dataclass
class _Done:
    result: Any = None
    error: BaseException | None = None


class _ThreadSteps:
    """Steps of a sync durable function.

    A sync ``ctx.step`` blocks its thread, so the SDK's loop runs in a helper thread and asks
    this (the durable function's) thread to run each step: the step's body runs back on the SDK's
    loop while ``ctx.step`` waits for it. Steps are therefore journaled one at a time, in the
    order the SDK asked for them (parallel tool calls run one after another).
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.requests: queue.Queue[_Request | _Done] = queue.Queue()

    async def step(
        self,
        name: str,
        work: Work,
        annotate: Annotate | None = None,
        options: StepOptions | None = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.requests.put(_Request(name, work, annotate, options or {}, loop, future))
        return await future

    def run(self, main: Callable[[], Awaitable[RunResult]]) -> RunResult:
        def body() -> None:
            async def go() -> RunResult:
                return await main()

            try:
                self.requests.put(_Done(result=asyncio.run(go())))
            except BaseException as exc:  # noqa: BLE001 - handed to the durable thread
                self.requests.put(_Done(error=exc))

        thread = threading.Thread(target=body, name="outlast-openai-agents", daemon=True)
        thread.start()
        stop: BaseException | None = None
        while True:
            item = self.requests.get()
            if isinstance(item, _Done):
                break
            if stop is not None:  # the run is unwinding: no new step may start
                item.settle(error=stop)
                continue
            if item.loop.is_closed() or item.future.done():
                continue  # the SDK cancelled the call (or ended) before it was asked to run
            try:
                value = self.ctx.step(self._body(item), name=item.name, **item.options)
            except Exception as exc:  # noqa: BLE001 - the step's failure, handed to the SDK
                item.settle(error=exc)
            except BaseException as exc:  # noqa: BLE001 - hand-off, suspend, lost lease: unwind
                stop = exc
                item.settle(error=exc)
            else:
                item.settle(value)
        thread.join()
        if stop is not None:
            raise stop
        if item.error is not None:
            raise item.error
        return cast(RunResult, item.result)

    def _body(self, request: _Request) -> Callable[[], Any]:
        ctx = self.ctx

        def unit() -> Any:
            value = asyncio.run_coroutine_threadsafe(_call(request.work), request.loop).result()
            if request.annotate is not None:
                ctx.annotate(**request.annotate(value))
            return value

        unit.__name__ = request.name
        return unit


async def _call(work: Work) -> Any:
    return await work()


_Steps = _AsyncSteps | _ThreadSteps


# ---------------------------------------------------------------------- the model


class _DurableModel(Model):
    """A ``Model`` whose every ``get_response`` is one durable step named ``model``."""

    def __init__(self, inner: Model, steps: _Steps, options: StepOptions) -> None:
        self.inner = inner
        self.steps = steps
        self.options = options

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
        inner = self.inner

        async def work() -> dict[str, Any]:
            response = await inner.get_response(
                system_instructions,
                input,
                model_settings,
                tools,
                output_schema,
                handoffs,
                tracing,
                previous_response_id=previous_response_id,
                conversation_id=conversation_id,
                prompt=prompt,
            )
            return response_to_plain(response)

        plain = await self.steps.step("model", work, _tokens, self.options)
        return response_from_plain(plain)

    def stream_response(
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
        raise NotImplementedError(
            "OutlastRunner does not stream: a streamed response is not one durable step. "
            "Use OutlastRunner.run (Runner.run_streamed is not supported)"
        )

    def get_retry_advice(self, request: ModelRetryAdviceRequest) -> ModelRetryAdvice | None:
        return self.inner.get_retry_advice(request)

    async def close(self) -> None:
        await self.inner.close()


class _DurableProvider(ModelProvider):
    """Wraps the run config's provider so models named by string become durable too."""

    def __init__(self, inner: ModelProvider, steps: _Steps, options: StepOptions) -> None:
        self.inner = inner
        self.steps = steps
        self.options = options

    def get_model(self, model_name: str | None) -> Model:
        return _DurableModel(self.inner.get_model(model_name), self.steps, self.options)

    async def aclose(self) -> None:
        await self.inner.aclose()


# ---------------------------------------------------------------------- agents, tools, handoffs


class _Converter:
    """Clones an agent graph with durable models, tools, handoffs and guardrails.

    The user's agents, tools and handoffs are never changed.
    """

    def __init__(self, steps: _Steps, model_step: StepOptions, tool_step: StepOptions) -> None:
        self.steps = steps
        self.model_step = model_step
        self.tool_step = tool_step
        self.clones: dict[int, Agent[Any]] = {}
        self.made: set[int] = set()

    def agent(self, agent: Agent[Any]) -> Agent[Any]:
        if id(agent) in self.made:
            return agent
        found = self.clones.get(id(agent))
        if found is not None:
            return found
        clone = agent.clone()
        self.clones[id(agent)] = clone
        self.made.add(id(clone))
        if isinstance(agent.model, Model):
            clone.model = _DurableModel(agent.model, self.steps, self.model_step)
        clone.tools = [self.tool(t) for t in agent.tools]
        clone.input_guardrails = [self.input_guardrail(g) for g in agent.input_guardrails]
        clone.output_guardrails = [self.output_guardrail(g) for g in agent.output_guardrails]
        clone.handoffs = [self.handoff(h) for h in agent.handoffs]
        return clone

    def by_name(self, name: str) -> Agent[Any]:
        for clone in self.clones.values():
            if clone.name == name:
                return clone
        raise RuntimeError(
            f"the journal says the run handed off to agent {name!r}, but no agent reachable "
            "from the starting agent has that name (was the agent graph changed?)"
        )

    def tool(self, tool: Tool) -> Tool:
        if not isinstance(tool, FunctionTool):
            return tool  # hosted tools run at the provider: their results come in the response
        original = tool.on_invoke_tool
        name = f"tool:{tool.name}"
        steps, options = self.steps, self.tool_step

        async def invoke(tool_ctx: ToolContext[Any], arguments: str) -> Any:
            call_id = tool_ctx.tool_call_id

            async def work() -> dict[str, Any]:
                return {"call_id": call_id, "output": await original(tool_ctx, arguments)}

            stored = await steps.step(name, work, None, options)
            if stored.get("call_id") != call_id:
                raise RuntimeError(
                    f"{name}: the journal holds the result of tool call {stored.get('call_id')!r} "
                    f"where call {call_id!r} was expected; parallel tool calls started in another "
                    "order than when the run was journaled"
                )
            return stored["output"]

        return dataclasses.replace(tool, on_invoke_tool=invoke)

    def handoff(self, item: Agent[Any] | Handoff[Any, Any]) -> Handoff[Any, Any]:
        if isinstance(item, Agent):
            item = handoff(self.agent(item))
        else:
            target = getattr(item, "_agent_ref", None)
            agent = target() if callable(target) else None
            if isinstance(agent, Agent):
                self.agent(agent)  # known by name before a replay needs it
        original = item.on_invoke_handoff
        name = f"handoff:{item.tool_name}"
        steps = self.steps

        async def invoke(run_ctx: RunContextWrapper[Any], arguments: str) -> Agent[Any]:
            live: list[Agent[Any]] = []

            async def work() -> str:
                target = await original(run_ctx, arguments)
                live.append(target)
                return str(target.name)

            target_name = await steps.step(name, work)
            return self.agent(live[0]) if live else self.by_name(target_name)

        return dataclasses.replace(item, on_invoke_handoff=invoke)

    def input_guardrail(self, guardrail: InputGuardrail[Any]) -> InputGuardrail[Any]:
        original = guardrail.guardrail_function
        label = guardrail.get_name()
        steps = self.steps

        async def check(
            run_ctx: RunContextWrapper[Any], agent: Agent[Any], data: Any
        ) -> GuardrailFunctionOutput:
            async def work() -> dict[str, Any]:
                return _guardrail_plain(await _maybe_await(original(run_ctx, agent, data)))

            return _guardrail_output(await steps.step(f"input_guardrail:{label}", work))

        return dataclasses.replace(guardrail, guardrail_function=check, name=label)

    def output_guardrail(self, guardrail: OutputGuardrail[Any]) -> OutputGuardrail[Any]:
        original = guardrail.guardrail_function
        label = guardrail.get_name()
        steps = self.steps

        async def check(
            run_ctx: RunContextWrapper[Any], agent: Agent[Any], output: Any
        ) -> GuardrailFunctionOutput:
            async def work() -> dict[str, Any]:
                return _guardrail_plain(await _maybe_await(original(run_ctx, agent, output)))

            return _guardrail_output(await steps.step(f"output_guardrail:{label}", work))

        return dataclasses.replace(guardrail, guardrail_function=check, name=label)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _guardrail_plain(result: GuardrailFunctionOutput) -> dict[str, Any]:
    return {"output_info": result.output_info, "tripwire_triggered": result.tripwire_triggered}


def _guardrail_output(plain: dict[str, Any]) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(
        output_info=plain["output_info"], tripwire_triggered=bool(plain["tripwire_triggered"])
    )


# ---------------------------------------------------------------------- the runner


def _durable_config(
    run_config: RunConfig | dict[str, Any] | None, steps: _Steps, model_step: StepOptions
) -> RunConfig:
    if run_config is None:
        config = RunConfig()
    elif isinstance(run_config, dict):
        config = RunConfig(**run_config)
    else:
        config = run_config
    model = config.model
    return dataclasses.replace(
        config,
        model=_DurableModel(model, steps, model_step) if isinstance(model, Model) else model,
        model_provider=_DurableProvider(config.model_provider, steps, model_step),
    )


class OutlastRunner:
    """``Runner.run``/``Runner.run_sync`` whose model calls, tools, guardrails and handoffs are
    durable steps of the durable function ``ctx`` belongs to. Every keyword of ``Runner.run``
    (``context``, ``max_turns``, ``hooks``, ``run_config``, ...) is passed on unchanged.

    ``model_step`` and ``tool_step`` are the ``ctx.step`` options (``retry``, ``timeout``,
    ``max_interruptions``, ``at_most_once``) of model calls and of tool calls; without them a
    step follows the app's retry policy.

    Not journaled: ``context`` (the user's dependencies, passed in again on each leg), run and
    agent hooks (they run again on replay), MCP servers' tools, and sessions.
    """

    @classmethod
    async def run(
        cls,
        ctx: AsyncContext,
        starting_agent: Agent[Any],
        input: str | list[TResponseInputItem],
        *,
        model_step: StepOptions | None = None,
        tool_step: StepOptions | None = None,
        **kwargs: Any,
    ) -> RunResult:
        """``await Runner.run(starting_agent, input, **kwargs)``, durably, in an async durable
        function."""
        if not isinstance(ctx, AsyncContext):
            raise TypeError(
                "OutlastRunner.run needs the AsyncContext of an async durable function; in a "
                "sync durable function use OutlastRunner.run_sync"
            )
        steps = _AsyncSteps(ctx)
        return await cls._run(steps, starting_agent, input, model_step, tool_step, kwargs)

    @classmethod
    def run_sync(
        cls,
        ctx: Context,
        starting_agent: Agent[Any],
        input: str | list[TResponseInputItem],
        *,
        model_step: StepOptions | None = None,
        tool_step: StepOptions | None = None,
        **kwargs: Any,
    ) -> RunResult:
        """``Runner.run_sync(...)``, durably, in a sync durable function (``def fn(ctx: Context,
        ...)``)."""
        if not isinstance(ctx, Context):
            raise TypeError(
                "OutlastRunner.run_sync needs the Context of a sync durable function; in an "
                "async durable function use await OutlastRunner.run"
            )
        steps = _ThreadSteps(ctx)
        return steps.run(
            lambda: cls._run(steps, starting_agent, input, model_step, tool_step, kwargs)
        )

    @staticmethod
    async def _run(
        steps: _Steps,
        starting_agent: Agent[Any],
        input: str | list[TResponseInputItem],
        model_step: StepOptions | None,
        tool_step: StepOptions | None,
        kwargs: dict[str, Any],
    ) -> RunResult:
        if kwargs.get("session") is not None:
            raise ValueError("OutlastRunner does not take a session: the journal is the memory")
        agent = _Converter(steps, model_step or {}, tool_step or {}).agent(starting_agent)
        given = kwargs.pop("run_config", None)
        # Runner.run closes the provider it made itself (no provider given); so do we.
        owns_provider = given is None or (isinstance(given, dict) and "model_provider" not in given)
        config = _durable_config(given, steps, model_step or {})
        try:
            return await Runner.run(agent, input, run_config=config, **kwargs)
        finally:
            if owns_provider:
                await config.model_provider.aclose()
