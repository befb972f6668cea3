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

``OutlastRunner.run_streamed(ctx, agent, input)`` is ``Runner.run_streamed`` in an async durable
function.

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
  ``output_info`` and whether the tripwire fired);
- every MCP server's tool listing, as ``mcp_tools:SERVER``, and every MCP tool call, as
  ``mcp:SERVER:TOOL`` (the MCP result, before the SDK turns it into the tool's output);
- a ``session=``'s reads and writes, as ``session:get_items``, ``session:add_items``,
  ``session:pop_item``, ``session:clear_session``;
- a streamed model call, as ``model`` too: the completed response is journaled, the events on the
  way are passed through live.

The user's agents are not changed: the runner works on clones whose model is wrapped (a model
object on the agent, or the run config's model or provider for models named by string) and
whose tools, handoffs, guardrails and MCP servers are wrapped. A replay runs the SDK's loop again
over the journaled values, so it rebuilds the run's items, usage and final output without calling a
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
    OpenAIConversationsSession,
    OutputGuardrail,
    RunConfig,
    RunContextWrapper,
    Runner,
    RunResult,
    RunResultStreaming,
    Session,
    StreamEvent,
    TResponseInputItem,
    Usage,
    handoff,
)
from agents.agent import AgentBase
from agents.agent_output import AgentOutputSchemaBase
from agents.items import TResponseOutputItem, TResponseStreamEvent
from agents.mcp import MCPServer
from agents.models.interface import ModelTracing
from agents.retry import ModelRetryAdvice, ModelRetryAdviceRequest
from agents.tool import Tool
from agents.tool_context import ToolContext
from mcp.types import CallToolResult, GetPromptResult, ListPromptsResult
from mcp.types import Tool as MCPTool
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseOutputItemDoneEvent,
    ResponseUsage,
)
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
        # Streaming runs the SDK's loop in tasks that may swallow or wrap it; run_streamed
        # re-raises it from here.
        self.stop: BaseException | None = None

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
        try:
            return await ctx.step(unit, name=name, **(options or {}))
        except Exception:
            raise
        except BaseException as exc:  # hand-off, suspension, lost lease: see raise_stop
            if self.stop is None and not isinstance(exc, asyncio.CancelledError):
                self.stop = exc
            raise

    def raise_stop(self) -> None:
        """Re-raise the durable function's control flow that a step raised, if any."""
        if self.stop is not None:
            raise self.stop

    def resumed(self) -> bool:
        return _resumed(self.ctx)


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

    def resumed(self) -> bool:
        return _resumed(self.ctx)

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


def _resumed(ctx: Context | AsyncContext) -> bool:
    """Inside a step's body: was this step in flight when an earlier leg died?"""
    record = ctx.leased.record
    return record.interrupted > 0 and record.interrupted_seq == record.next_seq


async def _call(work: Work) -> Any:
    return await work()


_Steps = _AsyncSteps | _ThreadSteps


# ---------------------------------------------------------------------- the model


@dataclasses.dataclass
class _ModelCall:
    """One model request's arguments, passed on unchanged to the wrapped model.

    ``get_response`` and ``stream_response`` take the same arguments; holding them once keeps
    the two paths from drifting apart.
    """

    system_instructions: str | None
    input: str | list[TResponseInputItem]
    model_settings: ModelSettings
    tools: list[Tool]
    output_schema: AgentOutputSchemaBase | None
    handoffs: list[Handoff]
    tracing: ModelTracing
    previous_response_id: str | None
    conversation_id: str | None
    prompt: Any | None

    def _args(self) -> tuple[Any, ...]:
        return (
            self.system_instructions,
            self.input,
            self.model_settings,
            self.tools,
            self.output_schema,
            self.handoffs,
            self.tracing,
        )

    def _kwargs(self) -> dict[str, Any]:
        return {
            "previous_response_id": self.previous_response_id,
            "conversation_id": self.conversation_id,
            "prompt": self.prompt,
        }

    async def get_response(self, model: Model) -> ModelResponse:
        return await model.get_response(*self._args(), **self._kwargs())

    def stream_response(self, model: Model) -> AsyncIterator[TResponseStreamEvent]:
        return model.stream_response(*self._args(), **self._kwargs())


# Stream events that end a response: the SDK builds its ``ModelResponse`` from the completed one
# and raises on the others. Inside a step they are handled by the step, not passed on.
_TERMINAL_EVENTS = {"response.completed", "response.incomplete", "response.failed"}
_ERROR_EVENTS = {"error", "response.error"}


class _DurableModel(Model):
    """A ``Model`` whose every ``get_response`` (or ``stream_response``) is one durable step
    named ``model``."""

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
        call = _ModelCall(
            system_instructions, input, model_settings, tools, output_schema, handoffs, tracing,
            previous_response_id, conversation_id, prompt,
        )  # fmt: skip
        inner = self.inner

        async def work() -> dict[str, Any]:
            return response_to_plain(await call.get_response(inner))

        plain = await self.steps.step("model", work, _tokens, self.options)
        return response_from_plain(plain)

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
        """The step consumes the wrapped model's stream and journals the completed response;
        the events it sees on the way are passed through while it runs. Whether the step ran
        live or was replayed, the SDK then gets one ``response.completed`` event made from the
        journaled response, so a replay ends the turn exactly as the live call did."""
        call = _ModelCall(
            system_instructions, input, model_settings, tools, output_schema, handoffs, tracing,
            previous_response_id, conversation_id, prompt,
        )  # fmt: skip
        inner = self.inner
        live: asyncio.Queue[TResponseStreamEvent] = asyncio.Queue()

        async def work() -> dict[str, Any]:
            completed: Response | None = None
            done_items: list[Any] = []
            async for event in call.stream_response(inner):
                kind = getattr(event, "type", None)
                if isinstance(event, ResponseCompletedEvent):
                    completed = event.response
                elif kind in _TERMINAL_EVENTS or kind in _ERROR_EVENTS:
                    raise RuntimeError(f"the model's stream ended with {kind!r}: {event!r}")
                else:
                    if isinstance(event, ResponseOutputItemDoneEvent):
                        done_items.append(event.item)
                    live.put_nowait(event)
            if completed is None:
                raise RuntimeError("the model's stream ended without a response.completed event")
            return response_to_plain(_response_of_stream(completed, done_items))

        step = asyncio.ensure_future(self.steps.step("model", work, _tokens, self.options))
        try:
            while not step.done() or not live.empty():
                if live.empty():
                    getter = asyncio.ensure_future(live.get())
                    await asyncio.wait({getter, step}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        continue
                    yield getter.result()
                else:
                    yield live.get_nowait()
            plain = step.result()
        finally:
            if not step.done():  # the SDK stopped reading: the step is abandoned, not committed
                step.cancel()
                # wait, not await: the abandoned step's own outcome is nobody's to raise now.
                await asyncio.wait({step})
        yield _completed_event(response_from_plain(plain))

    def get_retry_advice(self, request: ModelRetryAdviceRequest) -> ModelRetryAdvice | None:
        return self.inner.get_retry_advice(request)

    async def close(self) -> None:
        await self.inner.close()


def _response_of_stream(completed: Response, done_items: list[Any]) -> ModelResponse:
    """The ``ModelResponse`` the SDK's streaming loop makes of a completed response."""
    usage = Usage()  # a response without usage counts no request, as in the SDK
    if completed.usage is not None:
        u = completed.usage
        usage = Usage(
            requests=1,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            total_tokens=u.total_tokens,
            input_tokens_details=u.input_tokens_details,
            output_tokens_details=u.output_tokens_details,
        )
    return ModelResponse(
        # Some backends leave the completed response's output empty and send the items only in
        # output_item.done events; the SDK keeps those, so do we.
        output=list(completed.output) or done_items,
        usage=usage,
        response_id=completed.id,
        request_id=getattr(completed, "_request_id", None),
    )


def _completed_event(response: ModelResponse) -> ResponseCompletedEvent:
    """A ``response.completed`` event carrying ``response``, as the SDK reads one back."""
    u = response.usage
    usage = (
        ResponseUsage(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            total_tokens=u.total_tokens,
            input_tokens_details=u.input_tokens_details,
            output_tokens_details=u.output_tokens_details,
        )
        if u.requests
        else None
    )
    # model_construct: the journaled response id may be None, which Response's schema refuses
    # but the SDK's ModelResponse allows.
    completed = Response.model_construct(
        id=response.response_id,
        created_at=0,
        model="",
        object="response",
        output=list(response.output),
        parallel_tool_calls=False,
        tool_choice="auto",
        tools=[],
        status="completed",
        usage=usage,
    )
    if response.request_id is not None:
        completed._request_id = response.request_id
    return ResponseCompletedEvent(type="response.completed", response=completed, sequence_number=0)


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


# ---------------------------------------------------------------------- MCP servers, sessions


class _DurableMCPServer(MCPServer):
    """An MCP server whose tool listings and tool calls are durable steps.

    ``list_tools`` is a step named ``mcp_tools:SERVER`` (the SDK lists each server's tools at
    every turn), ``call_tool`` a step named ``mcp:SERVER:TOOL``; their results are journaled as
    the MCP types' JSON and validated back. Connecting and cleaning up stay with the wrapped
    server and whoever owns it.
    """

    def __init__(self, inner: MCPServer, steps: _Steps, options: StepOptions) -> None:
        # MCPServer.__init__ is not called: every setting the SDK reads from a server (approval
        # policy, failure function, meta resolver, structured content, tool guardrails) is
        # forwarded to the wrapped server by __getattr__, so it stays the user's, whatever it is.
        self.inner = inner
        self.steps = steps
        self.options = options

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    @property
    def name(self) -> str:
        return self.inner.name

    async def connect(self) -> None:
        await self.inner.connect()  # type: ignore[no-untyped-call] # the SDK's own signature

    async def cleanup(self) -> None:
        await self.inner.cleanup()  # type: ignore[no-untyped-call] # the SDK's own signature

    async def list_tools(
        self,
        run_context: RunContextWrapper[Any] | None = None,
        agent: AgentBase | None = None,
    ) -> list[MCPTool]:
        inner = self.inner

        async def work() -> list[dict[str, Any]]:
            tools = await inner.list_tools(run_context, agent)
            return [_mcp_plain(tool) for tool in tools]

        plain = await self.steps.step(f"mcp_tools:{inner.name}", work, None, self.options)
        return [MCPTool.model_validate(tool) for tool in plain]

    async def call_tool(
        self,
        tool_name: str,
        arguments: dict[str, Any] | None,
        meta: dict[str, Any] | None = None,
    ) -> CallToolResult:
        inner = self.inner

        async def work() -> dict[str, Any]:
            if meta is None:  # the SDK calls without ``meta`` when it has none: so do we
                return _mcp_plain(await inner.call_tool(tool_name, arguments))
            return _mcp_plain(await inner.call_tool(tool_name, arguments, meta=meta))

        name = f"mcp:{inner.name}:{tool_name}"
        return CallToolResult.model_validate(await self.steps.step(name, work, None, self.options))

    @property
    def cached_tools(self) -> list[MCPTool] | None:
        return self.inner.cached_tools

    async def list_prompts(self) -> ListPromptsResult:
        return await self.inner.list_prompts()  # not called by the runner: not journaled

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None
    ) -> GetPromptResult:
        return await self.inner.get_prompt(name, arguments)  # not called by the runner either


def _mcp_plain(value: Any) -> dict[str, Any]:
    # By alias (``inputSchema``, ``isError``) and only what was set, so it validates back equal.
    return cast(dict[str, Any], value.model_dump(mode="json", by_alias=True, exclude_unset=True))


class _DurableSession:
    """A session (the SDK's ``Session`` protocol) whose reads and writes are durable steps.

    ``get_items`` is a step (``session:get_items``) whose journaled result is what a replay
    reads, so the history the model saw is the one it sees again even if the session changed
    since. ``add_items``, ``pop_item`` and ``clear_session`` are steps too: a replay does not
    write again, so each write is done once per committed step. A write whose leg died under it
    runs again on the next leg; ``add_items`` then first checks whether the lost attempt already
    landed (the session ends with exactly these items) and does not add them twice.
    """

    def __init__(self, inner: Session, steps: _Steps) -> None:
        self.inner = inner
        self.steps = steps
        self.session_id = inner.session_id
        self.session_settings = inner.session_settings

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        inner = self.inner

        async def work() -> Any:
            return _json(await inner.get_items(limit))

        return cast(list[TResponseInputItem], await self.steps.step("session:get_items", work))

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        inner, steps = self.inner, self.steps
        plain = _json(items)

        async def work() -> None:
            if plain and steps.resumed():
                tail = _json(await inner.get_items(len(plain)))
                if tail == plain:
                    return  # the interrupted attempt's write landed before its leg died
            await inner.add_items(items)

        await steps.step("session:add_items", work)

    async def pop_item(self) -> TResponseInputItem | None:
        inner = self.inner

        async def work() -> Any:
            return _json(await inner.pop_item())

        return cast(TResponseInputItem | None, await self.steps.step("session:pop_item", work))

    async def clear_session(self) -> None:
        inner = self.inner

        async def work() -> None:
            await inner.clear_session()

        await self.steps.step("session:clear_session", work)


def _json(value: Any) -> Any:
    """Session items as plain JSON (they are dicts, or the SDK's pydantic models)."""
    return _ITEMS_JSON.dump_python(value, mode="json", by_alias=True, exclude_unset=True)


_ITEMS_JSON: TypeAdapter[Any] = TypeAdapter(Any)


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
        self.servers: dict[int, _DurableMCPServer] = {}

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
        clone.mcp_servers = [self.mcp_server(server) for server in agent.mcp_servers]
        return clone

    def mcp_server(self, server: MCPServer) -> MCPServer:
        # One proxy per server, however many agents share it.
        found = self.servers.get(id(server))
        if found is None:
            found = self.servers[id(server)] = _DurableMCPServer(server, self.steps, self.tool_step)
        return found

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
    """``Runner.run``/``Runner.run_sync``/``Runner.run_streamed`` whose model calls, tools, MCP
    calls, guardrails, handoffs and session reads and writes are durable steps of the durable
    function ``ctx`` belongs to. Every keyword of ``Runner.run`` (``context``, ``max_turns``,
    ``hooks``, ``run_config``, ``session``, ...) is passed on.

    ``model_step`` and ``tool_step`` are the ``ctx.step`` options (``retry``, ``timeout``,
    ``max_interruptions``, ``at_most_once``) of model calls and of tool (and MCP tool) calls;
    without them a step follows the app's retry policy.

    Not journaled: ``context`` (the user's dependencies, passed in again on each leg), and run
    and agent hooks (they run again on replay).
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

    @classmethod
    def run_streamed(
        cls,
        ctx: AsyncContext,
        starting_agent: Agent[Any],
        input: str | list[TResponseInputItem],
        *,
        model_step: StepOptions | None = None,
        tool_step: StepOptions | None = None,
        **kwargs: Any,
    ) -> RunResultStreaming:
        """``Runner.run_streamed(starting_agent, input, **kwargs)``, durably, in an async durable
        function: read the result's ``stream_events()`` to the end, as with the SDK.

        A live model call's events stream through as the model sends them; its completed
        response is journaled, and a replayed call delivers that response as one
        ``response.completed`` event (the deltas of a replayed call are not sent again).
        """
        if not isinstance(ctx, AsyncContext):
            raise TypeError(
                "OutlastRunner.run_streamed needs the AsyncContext of an async durable function"
            )
        steps = _AsyncSteps(ctx)
        agent, config, owns_provider = cls._prepare(
            steps, starting_agent, model_step, tool_step, kwargs
        )
        result = Runner.run_streamed(agent, input, run_config=config, **kwargs)
        events = result.stream_events

        async def stream_events() -> AsyncIterator[StreamEvent]:
            try:
                async for event in events():
                    yield event
            except Exception:
                # A hand-off, suspension or lost lease inside a step ends the SDK's run (or its
                # input guardrails' task, whose non-Exception errors the SDK drops): that, not
                # what the SDK made of it, is what must reach the durable function.
                steps.raise_stop()
                raise
            finally:
                if owns_provider:
                    await config.model_provider.aclose()
            steps.raise_stop()

        # The instance's stream_events is replaced, not the SDK's class: only this result
        # re-raises the durable function's control flow.
        result.stream_events = stream_events  # type: ignore[method-assign]
        return result

    @staticmethod
    def _prepare(
        steps: _Steps,
        starting_agent: Agent[Any],
        model_step: StepOptions | None,
        tool_step: StepOptions | None,
        kwargs: dict[str, Any],
    ) -> tuple[Agent[Any], RunConfig, bool]:
        """The durable clone of the agent graph and run config; wraps ``kwargs["session"]``."""
        session = kwargs.get("session")
        if session is not None:
            if isinstance(session, OpenAIConversationsSession):
                raise ValueError(
                    "OutlastRunner cannot make an OpenAIConversationsSession durable (the SDK "
                    "treats it apart by its type); use another Session, or none"
                )
            kwargs["session"] = _DurableSession(session, steps)
        agent = _Converter(steps, model_step or {}, tool_step or {}).agent(starting_agent)
        given = kwargs.pop("run_config", None)
        # Runner.run closes the provider it made itself (no provider given); so do we.
        owns_provider = given is None or (isinstance(given, dict) and "model_provider" not in given)
        return agent, _durable_config(given, steps, model_step or {}), owns_provider

    @classmethod
    async def _run(
        cls,
        steps: _Steps,
        starting_agent: Agent[Any],
        input: str | list[TResponseInputItem],
        model_step: StepOptions | None,
        tool_step: StepOptions | None,
        kwargs: dict[str, Any],
    ) -> RunResult:
        agent, config, owns_provider = cls._prepare(
            steps, starting_agent, model_step, tool_step, kwargs
        )
        try:
            return await Runner.run(agent, input, run_config=config, **kwargs)
        finally:
            if owns_provider:
                await config.model_provider.aclose()
