"""The agent loop: a model that calls tools, every call a durable step.

One turn is one model call (the step ``model``) and then the tool calls it asked for (steps
``tool:<name>``; several calls in one turn run concurrently through ``ctx.map`` and come back in
the order the model asked for them). Each step journals only what it added to the conversation:
the new assistant message and its token usage, or one tool's result. Nothing journals the
conversation itself, so a turn costs the same to commit at turn 200 as at turn 2; the conversation
is rebuilt from those step values, by replay, in any later leg, without calling the model or a
tool again.

Calls the model gets wrong (arguments that are not JSON, arguments that do not fit the schema, a
tool that does not exist) and tools that raise are answered with an error result the model can
read and correct; they never fail the run. A model error fails the model step: throttling and
server errors are retried with backoff as step retries, other errors fail the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from outlast.agent.messages import Message, ModelReply, ToolCall, ToolResult, Usage
from outlast.agent.models.base import Model
from outlast.agent.tools import Tool, ToolArgumentError, as_tools
from outlast.context import Context
from outlast.retry import RetryPolicy

MODEL_STEP = "model"
TOOL_STEP_PREFIX = "tool:"

# Throttling can last minutes; waits longer than the app's inline wait suspend the run, so a long
# backoff holds no compute.
DEFAULT_MODEL_RETRY = RetryPolicy(max_attempts=6, initial_delay=1.0, backoff=2.0, max_delay=60.0)

AgentStop = Literal["completed", "max_turns"]

log = logging.getLogger("outlast.agent")


class AgentResult(BaseModel):
    """How an agent run ended.

    ``stop`` is ``completed`` when the model answered without asking for tools, ``max_turns``
    when the turn limit came first (then ``answer`` is the last reply's text, often empty, and the
    tool calls of that last reply were not run).
    """

    answer: str
    stop: AgentStop
    turns: int = Field(ge=0)
    usage: Usage
    messages: list[Message]
    stop_reason: str = ""  # the model's own reason on its last reply (end_turn, max_tokens...)
    model: str = ""


class Agent:
    """A model, the tools it may call, a system prompt and a turn limit.

    One Agent can serve many runs at once: it keeps no per-run state, the conversation lives in the
    run's journal.
    """

    def __init__(
        self,
        model: Model,
        tools: Iterable[Tool | Callable[..., Any]] = (),
        system: str = "",
        max_turns: int = 50,
        *,
        model_retry: RetryPolicy = DEFAULT_MODEL_RETRY,
        max_concurrency: int = 4,
    ) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.model = model
        self.tools = as_tools(tools)
        self.system = system
        self.max_turns = max_turns
        self.model_retry = model_retry
        self.max_concurrency = max_concurrency
        self._by_name = {t.name: t for t in self.tools}

    def run(self, ctx: Context, prompt: str) -> AgentResult:
        """Run the conversation that starts with ``prompt`` to an answer or to ``max_turns``."""
        messages = [Message.user(prompt)]
        usage = Usage()
        reply: ModelReply | None = None
        for turn in range(1, self.max_turns + 1):
            reply = self.call_model(ctx, messages)
            messages.append(reply.message)
            usage += reply.usage
            calls = reply.message.tool_calls
            ctx.log.info(
                "turn %d: %d tool call(s), %d+%d tokens",
                turn,
                len(calls),
                reply.usage.input_tokens,
                reply.usage.output_tokens,
            )
            if not calls:
                return self._result(reply, messages, usage, turn, "completed")
            if turn == self.max_turns:
                break
            messages.append(Message.tool(*self.call_tools(ctx, calls)))
        assert reply is not None  # max_turns >= 1
        return self._result(reply, messages, usage, self.max_turns, "max_turns")

    # ------------------------------------------------------------------ model

    def call_model(self, ctx: Context, messages: Sequence[Message]) -> ModelReply:
        """One model call as the durable step ``model``; a replay returns the journaled reply."""
        plain = ctx.step(
            self._model_step, ctx, list(messages), name=MODEL_STEP, retry=self.model_retry
        )
        return ModelReply.model_validate(plain)

    def _model_step(self, ctx: Context, messages: list[Message]) -> dict[str, Any]:
        reply = self.model.complete(self.system, messages, self.tools)
        ctx.annotate(
            input_tokens=reply.usage.input_tokens,
            output_tokens=reply.usage.output_tokens,
            model=reply.model,
        )
        # Defaults (empty lists, no parse error) are left out: they are most of a small message.
        return reply.model_dump(mode="json", exclude_defaults=True)

    # ------------------------------------------------------------------ tools

    def call_tools(self, ctx: Context, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Answer each call, in order: valid ones as durable steps (concurrently when several),
        invalid ones at once with an error the model can act on."""
        results: dict[int, ToolResult] = {}
        runnable: list[int] = []
        for index, call in enumerate(calls):
            problem = self._problem(call)
            if problem is None:
                runnable.append(index)
            else:
                results[index] = ToolResult(
                    call_id=call.id, name=call.name, content=problem, is_error=True
                )
        # A rejected call is a pure function of the journaled reply, so it needs no step of its
        # own: a replay rejects it again the same way.
        if len(runnable) == 1:
            call = calls[runnable[0]]
            outcome = ctx.step(self._tool_step, (ctx, call), name=TOOL_STEP_PREFIX + call.name)
            results[runnable[0]] = _tool_result(call, outcome)
        elif runnable:
            names = {calls[i].name for i in runnable}
            base = TOOL_STEP_PREFIX + names.pop() if len(names) == 1 else "tools"
            outcomes = ctx.map(
                self._tool_step,
                [(ctx, calls[i]) for i in runnable],
                name=base,
                max_concurrency=self.max_concurrency,
            )
            for index, outcome in zip(runnable, outcomes, strict=True):
                results[index] = _tool_result(calls[index], outcome)
        return [results[i] for i in range(len(calls))]

    def _problem(self, call: ToolCall) -> str | None:
        if call.parse_error is not None:
            raw = call.raw_arguments if call.raw_arguments is not None else ""
            return (
                f"error: the arguments for tool {call.name!r} are not a JSON object "
                f"({call.parse_error}); you sent: {raw[:500]!r}. Call it again with a JSON object."
            )
        tool = self._by_name.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self._by_name)) or "none"
            return f"error: there is no tool named {call.name!r}; the tools are: {known}."
        try:
            tool.validate(call.arguments)
        except ToolArgumentError as exc:
            return f"error: {exc}. Fix the arguments and call it again."
        return None

    def _tool_step(self, item: tuple[Context, ToolCall]) -> dict[str, Any]:
        ctx, call = item
        tool = self._by_name[call.name]
        try:
            content = tool.call(call.arguments, ctx.step_key if tool.wants_step_key else None)
        except ToolArgumentError as exc:  # a tool may validate further inside
            return {"content": f"error: {exc}", "is_error": True}
        except Exception as exc:  # noqa: BLE001 - the model hears about it; the run goes on
            ctx.annotate(tool_error=type(exc).__name__)
            failure = f"error: tool {call.name!r} failed: {_describe(exc)}"
            return {"content": failure, "is_error": True}
        return {"content": content}

    # ------------------------------------------------------------------ result

    def _result(
        self,
        reply: ModelReply,
        messages: list[Message],
        usage: Usage,
        turns: int,
        stop: AgentStop,
    ) -> AgentResult:
        return AgentResult(
            answer=reply.message.content,
            stop=stop,
            turns=turns,
            usage=usage,
            messages=messages,
            stop_reason=reply.stop_reason,
            model=reply.model,
        )


def _tool_result(call: ToolCall, outcome: dict[str, Any]) -> ToolResult:
    return ToolResult(
        call_id=call.id,
        name=call.name,
        content=str(outcome.get("content", "")),
        is_error=bool(outcome.get("is_error", False)),
    )


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text[:1000]}" if text else type(exc).__name__
