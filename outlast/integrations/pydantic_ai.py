"""Pydantic AI agents, durable on Outlast: every model request and tool call is a durable step.

```python
from pydantic_ai import Agent
from outlast import AsyncContext
from outlast.integrations.pydantic_ai import OutlastAgent

agent = Agent(model, tools=[search, read], output_type=Report)
durable = OutlastAgent(agent)

@app.durable()
async def research(ctx: AsyncContext, topic: str) -> Report:
    return (await durable.run(ctx, topic)).output
```

How it works. Pydantic AI ships a public seam for durable engines (``pydantic_ai.durable_exec``):
a durability *capability* routes each model request, tool call, toolset discovery and event
handler call through an operation *backend* that runs it as one named durable unit.
``OutlastAgent`` attaches such a capability to each run (as a run-time capability, so the user's
agent is not changed) and its backend runs each unit as ``ctx.step(...)`` on the durable
function's context:

- the unit's result is what is journaled: the model's ``ModelResponse`` or one tool's result,
  reduced to plain JSON by Pydantic AI's own ``TypeAdapter`` (its ``JSON_CODEC``), never the
  history, so the bytes per commit stay flat as the conversation grows;
- a replay returns the journaled results, so Pydantic AI rebuilds the message history without
  calling the model or a tool again;
- each model step is annotated with its token usage (``input_tokens``, ``output_tokens``), which
  ``outlast runs show`` sums; the run's ``usage()`` is Pydantic AI's own sum of the (replayed or
  live) responses, so it equals an uninterrupted run's;
- ``deps`` stay in memory: they are handed to the tools live and never journaled;
- an MCP toolset (``MCPToolset(..., id=...)``) is wrapped like the agent's own tools: its tool
  listing and each of its calls are steps, and the server is connected inside the first live
  one, so a replay of journaled steps never connects to it;
- streaming goes through an event stream handler (the wrapper's, or a run's own
  ``event_stream_handler=``): model events reach it live inside the model request's step, tool
  events each in a step. ``run_stream`` is refused, as Pydantic AI's Temporal and DBOS agents
  refuse it in a workflow: output handed to the caller outside a step cannot be given again.

The context is passed first (``durable.run(ctx, ...)``) or, left out, found with
``outlast.current_context()`` (the running durable function's, its parallel branch's or map
item's). Outside a durable function, use the plain ``agent``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, NoReturn, TypedDict, TypeVar
from weakref import WeakKeyDictionary

from pydantic_ai.agent import AbstractAgent, AgentRun, EventStreamHandler
from pydantic_ai.capabilities import WrapRunHandler
from pydantic_ai.durable_exec import (
    JSON_CODEC,
    BaseDurabilityCapability,
    DurabilityEngineSpec,
    DurableOperationId,
    JournalCallableOperationBackend,
    ModelRequestId,
    RoleBasedOperationConfig,
    ToolsetCallToolId,
    ToolsetValidateToolArgumentsId,
)
from pydantic_ai.exceptions import UserError
from pydantic_ai.models import Model
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import RunContext

from outlast import (
    AsyncContext,
    Context,
    NonDeterminismError,
    NonRetryableError,
    RetryPolicy,
    current_context,
)

__all__ = ["OutlastAgent", "OutlastDurability", "StepOptions", "UnstorableResultError"]

DepsT = TypeVar("DepsT")
OutputT = TypeVar("OutputT")

AnyContext = AsyncContext | Context

_current: ContextVar[AnyContext | None] = ContextVar("outlast_pydantic_ai_ctx", default=None)
# Agent runs started per durable context (per leg): a replay numbers them the same way, so the
# Pydantic AI run id of each is stable across legs.
_runs_started: WeakKeyDictionary[Any, int] = WeakKeyDictionary()


class StepOptions(TypedDict, total=False):
    """Options of the Outlast steps one kind of unit runs as (see ``ctx.step``)."""

    retry: RetryPolicy
    timeout: float
    max_interruptions: int
    at_most_once: bool


class UnstorableResultError(NonRetryableError):
    """A model response or tool result that cannot be reduced to plain data for the journal."""


def _unstorable(exc: Exception) -> BaseException:
    return UnstorableResultError(str(exc))


def _current_context() -> AnyContext:
    ctx = _current.get()
    if ctx is None:  # pragma: no cover - the capability is only attached inside a bound run
        raise RuntimeError("an OutlastAgent unit ran outside OutlastAgent.run/iter")
    return ctx


def _tokens(payload: object) -> dict[str, int]:
    """Input and output token counts of a journaled ``ModelResponse`` payload."""
    if not isinstance(payload, dict):
        return {}
    response: dict[str, Any] = payload
    if "usage" not in response and isinstance(response.get("response"), dict):
        response = response["response"]  # a streamed request in older pydantic-ai-slim
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return {}
    found: dict[str, int] = {}
    for key in ("input_tokens", "output_tokens"):
        value = usage.get(key)
        if isinstance(value, int):
            found[key] = value
    return found


def _run_in_thread(body: Callable[[], Awaitable[object]]) -> object:
    """Run an async unit to completion from sync code that is itself inside an event loop.

    ``run_sync`` drives the agent on a loop in the durable function's thread, and a sync
    ``ctx.step`` blocks that loop, so the unit gets its own loop in a helper thread.
    """
    box: dict[str, Any] = {}

    async def main() -> object:
        return await body()

    def target() -> None:
        try:
            box["value"] = asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="outlast-pydantic-ai-unit", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class _OutlastBackend(JournalCallableOperationBackend[StepOptions]):
    """Runs each Pydantic AI durable unit as one ``ctx.step`` of the bound durable context."""

    async def execute(
        self,
        *,
        operation_id: DurableOperationId,
        name: str,
        body: Callable[[], Awaitable[object]],
        cache_key: tuple[object, ...],
        config: StepOptions,
    ) -> object:
        ctx = _current_context()
        is_model = isinstance(operation_id, ModelRequestId)
        what = _describe(operation_id, name)
        call_id = _tool_call_id(cache_key)

        def finish(payload: object) -> Any:
            if is_model:
                ctx.annotate(**_tokens(payload))
            # A tool call's result carries its call id, so a replay can prove it hands each
            # result to the call that produced it (parallel calls claim steps in call order).
            return payload if call_id is None else {"tool_call_id": call_id, "result": payload}

        if isinstance(ctx, AsyncContext):

            async def unit() -> Any:
                return finish(await _guarded(body, what))

            stored = await ctx.step(unit, name=name, **config)
        else:

            def sync_unit() -> Any:
                return finish(_run_in_thread(lambda: _guarded(body, what)))

            stored = ctx.step(sync_unit, name=name, **config)
        if call_id is None:
            return stored
        if not isinstance(stored, dict) or stored.get("tool_call_id") != call_id:
            journaled = stored.get("tool_call_id") if isinstance(stored, dict) else None
            raise NonDeterminismError(
                ctx.run_id,
                ctx.seq,
                f"{what} of tool call {journaled!r}",
                f"{what} for tool call {call_id!r}",
            )
        return stored["result"]


def _tool_call_id(cache_key: tuple[object, ...]) -> str | None:
    """The id of the tool call a unit runs (None for model requests and other units)."""
    for item in cache_key:
        if isinstance(item, RunContext):
            call_id = item.tool_call_id
            return call_id if isinstance(call_id, str) else None
    return None


async def _guarded(body: Callable[[], Awaitable[object]], what: str) -> object:
    try:
        return await body()
    except UnstorableResultError as exc:
        raise UnstorableResultError(
            f"{what} returned a result that cannot be stored as plain data (Pydantic AI's JSON "
            f"serialization refused it): {exc}"
        ) from exc.__cause__


def _describe(operation_id: DurableOperationId, name: str) -> str:
    if isinstance(operation_id, ToolsetCallToolId | ToolsetValidateToolArgumentsId):
        tool = name.rsplit(":", 1)[-1] if ":" in name else name
        return f"tool {tool!r}"
    if isinstance(operation_id, ModelRequestId):
        return "the model request"
    return f"step {name!r}"


@dataclass(init=False, kw_only=True)
class OutlastDurability(BaseDurabilityCapability[DepsT]):
    """Pydantic AI durability capability whose durable units are Outlast steps.

    ``OutlastAgent`` attaches it to each run; use it directly only to build your own wrapper.
    It is transparent (plain calls) outside ``OutlastAgent.run``/``iter``.
    """

    engine_spec = DurabilityEngineSpec(
        engine_name="Outlast",
        durable_unit_noun="step",
        durable_unit_plural="steps",
        durable_container_noun="durable function",
        codec=JSON_CODEC,
        serialization_failure=_unstorable,
        wrapped_toolset_kinds=frozenset({"function", "mcp", "dynamic"}),
        toolset_lifecycles={
            "function": "enter-always",
            "mcp": "enter-in-durable-unit",
            "dynamic": "enter-never",
        },
        journal_discovery=True,
        sequential_tools_in_durable_context=False,
    )

    def __init__(
        self,
        *,
        name: str | None = None,
        models: Mapping[str, Model] | None = None,
        event_stream_handler: EventStreamHandler[DepsT] | None = None,
        model_step: StepOptions | None = None,
        tool_step: StepOptions | None = None,
        event_step: StepOptions | None = None,
    ) -> None:
        super().__init__(models=models, event_stream_handler=event_stream_handler, name=name)
        self._model_step: StepOptions = model_step or {}
        self._tool_step: StepOptions = tool_step or {}
        self._event_step: StepOptions = event_step or {}

    @property
    def in_durable_context(self) -> bool:
        return _current.get() is not None

    def get_durable_operation_backend(self) -> _OutlastBackend:
        return _OutlastBackend(
            agent_name=self.name,
            default_model_id=self.default_model_id,
            config=RoleBasedOperationConfig(
                model=self._model_step,
                event=self._event_step,
                capability=self._tool_step,
                tool=self._tool_step,
            ),
        )

    def get_default_run_id(self) -> str | None:
        ctx = _current.get()
        if ctx is None:
            return None
        number = _runs_started.get(ctx, 0)
        _runs_started[ctx] = number + 1
        return f"{ctx.run_id}:agent-{number}"

    async def wrap_run(
        self, ctx: RunContext[DepsT], *, handler: WrapRunHandler
    ) -> AgentRunResult[Any]:
        """Run parallel tool calls with their events emitted in call order.

        Tool calls still run concurrently, and each claims its step when it starts, in call
        order. With Pydantic AI's default mode the *events* (and so the event handler's steps)
        would follow completion order, which changes from leg to leg.
        """
        agent = self.agent
        if agent is None or not self.in_durable_context:
            return await super().wrap_run(ctx, handler=handler)
        with agent.parallel_tool_call_execution_mode("parallel_ordered_events"):
            return await super().wrap_run(ctx, handler=handler)

    async def get_run_start_time(self, run_id: str) -> datetime | None:
        ctx = _current.get()
        if ctx is None:
            return None
        if isinstance(ctx, AsyncContext):
            return await ctx.now()
        return ctx.now()


class OutlastAgent(Generic[DepsT, OutputT]):
    """A Pydantic AI agent whose runs, inside a durable function, survive timeouts and kills.

    ``OutlastAgent(agent)`` leaves ``agent`` as it is. Inside a durable function call
    ``await durable.run(ctx, prompt, deps=...)`` (or ``durable.iter``, or ``durable.run_sync`` in a
    sync durable function) with the same keyword arguments as ``agent.run``.

    Args:
        agent: the Pydantic AI agent.
        name: the prefix of its step names (default: the agent's ``name``, else ``"agent"``).
            Step names are journaled: keep it stable while runs are in flight.
        models: other models a run may switch to with ``run(..., model="key")``, by key (the
            agent's own model needs no entry; model-name strings need none either).
        event_stream_handler: called with the run's events; model events live inside the
            model step, each tool event in its own step. A run's own handler
            (``run(..., event_stream_handler=h)``) replaces it for that run. This is how a durable
            agent streams: ``run_stream`` is refused (see there).
        model_step, tool_step, event_step: ``ctx.step`` options (retry, timeout, ...) of model
            requests, tool calls (and discovery), and event handler calls.
    """

    def __init__(
        self,
        agent: AbstractAgent[DepsT, OutputT],
        *,
        name: str | None = None,
        models: Mapping[str, Model] | None = None,
        event_stream_handler: EventStreamHandler[DepsT] | None = None,
        model_step: StepOptions | None = None,
        tool_step: StepOptions | None = None,
        event_step: StepOptions | None = None,
    ) -> None:
        self.agent = agent
        self.name = name or agent.name or "agent"
        self._models = models
        self._steps = (model_step, tool_step, event_step)
        self.durability: OutlastDurability[DepsT] = self._durability(event_stream_handler)

    def _durability(self, handler: EventStreamHandler[DepsT] | None) -> OutlastDurability[DepsT]:
        model_step, tool_step, event_step = self._steps
        return OutlastDurability(
            name=self.name,
            models=self._models,
            event_stream_handler=handler,
            model_step=model_step,
            tool_step=tool_step,
            event_step=event_step,
        )

    def _capabilities(self, kwargs: dict[str, Any]) -> list[Any]:
        extra: Sequence[Any] = kwargs.pop("capabilities", None) or ()
        # A run's own handler replaces the wrapper's (as a run's handler replaces an agent's in
        # Pydantic AI). It goes to a capability of the same name, so the step names do not change,
        # and never to the agent itself: the agent would hand it replayed events again on each
        # replay, and tool events outside any step.
        handler: EventStreamHandler[DepsT] | None = kwargs.pop("event_stream_handler", None)
        return [*extra, self.durability if handler is None else self._durability(handler)]

    async def run(self, *args: Any, **kwargs: Any) -> AgentRunResult[OutputT]:
        """``agent.run(*args, **kwargs)`` with each model request and tool call a durable step.

        Called as ``durable.run(prompt, ...)`` inside an async durable function (its context is
        found with ``outlast.current_context()``), or ``durable.run(ctx, prompt, ...)``. With
        ``output_type=`` the result's output has that type; it is typed as the agent's.
        """
        ctx, args = _context_and_args(args)
        _check_async(ctx, "run")
        token = _current.set(ctx)
        try:
            result: AgentRunResult[OutputT] = await self.agent.run(
                *args, capabilities=self._capabilities(kwargs), **kwargs
            )
            return result
        finally:
            _current.reset(token)

    @asynccontextmanager
    async def iter(self, *args: Any, **kwargs: Any) -> AsyncIterator[AgentRun[DepsT, OutputT]]:
        """``agent.iter(...)``: step through the run's nodes; its requests and tools are durable."""
        ctx, args = _context_and_args(args)
        _check_async(ctx, "iter")
        token = _current.set(ctx)
        try:
            async with self.agent.iter(
                *args, capabilities=self._capabilities(kwargs), **kwargs
            ) as run:
                yield run
        finally:
            _current.reset(token)

    def run_sync(self, *args: Any, **kwargs: Any) -> AgentRunResult[OutputT]:
        """``agent.run_sync(...)`` inside a sync durable function (``fn(ctx: Context, ...)``)."""
        ctx, args = _context_and_args(args)
        if not isinstance(ctx, Context):
            raise TypeError(
                "OutlastAgent.run_sync takes the Context of a sync durable function "
                f"(got {type(ctx).__name__}); in an async durable function (AsyncContext) use "
                "`await durable.run(ctx, ...)`"
            )
        token = _current.set(ctx)
        try:
            result: AgentRunResult[OutputT] = self.agent.run_sync(
                *args, capabilities=self._capabilities(kwargs), **kwargs
            )
            return result
        finally:
            _current.reset(token)

    def run_stream(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not available in a durable function: use ``run`` with an ``event_stream_handler``.

        ``agent.run_stream`` hands the caller the model's output as it arrives, outside any step.
        A leg that dies mid-stream would leave the caller with output the replay cannot give it
        again, and a replay would stream every finished response to it once more. Pydantic AI's
        own durable agents (Temporal, DBOS, Prefect) refuse ``run_stream`` in a workflow for the
        same reason. ``durable.run(ctx, prompt, event_stream_handler=handler)`` streams instead:
        the handler gets the live model events inside the model request's step (journaled is the
        final response) and each tool event in a step of its own, so a replay of committed
        steps delivers nothing again (only a model request cut short streams again, from its
        start).

        Raises:
            UserError: always, saying what to use instead.
        """
        raise UserError(_NO_STREAM.format(method="run_stream"))

    def run_stream_events(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not available in a durable function, as ``run_stream``: see there."""
        raise UserError(_NO_STREAM.format(method="run_stream_events"))


_NO_STREAM = (
    "OutlastAgent.{method}() cannot be used in a durable function: output streamed to the caller "
    "outside a step cannot be delivered again after a replay. Use "
    "`await durable.run(ctx, prompt, event_stream_handler=handler)` (or "
    "`OutlastAgent(agent, event_stream_handler=handler)`): the handler receives the model's live "
    "events inside the model request's step, and each tool event in its own step. Outside a "
    "durable function, use the plain agent's {method}()."
)


def _context_and_args(args: tuple[Any, ...]) -> tuple[Context | AsyncContext, tuple[Any, ...]]:
    """The run's context (given first, or the current one) and the agent's own arguments."""
    if args and isinstance(args[0], Context | AsyncContext):
        return args[0], args[1:]
    return current_context(), args


def _check_async(ctx: object, method: Literal["run", "iter"]) -> None:
    if not isinstance(ctx, AsyncContext):
        raise TypeError(
            f"OutlastAgent.{method} takes the AsyncContext of an async durable function "
            f"(got {type(ctx).__name__}); in a sync durable function use durable.run_sync(ctx, ...)"
        )
