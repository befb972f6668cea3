"""A provider-neutral conversation: messages, tool calls, tool results, token usage, model replies.

Every model here round-trips through ``model_dump(mode="json")`` and ``model_validate``: the
runtime journals them as msgpack of plain values, one new message per step, and rebuilds the
conversation from the journal on replay. The adapters translate to and from each provider's wire
format; nothing provider-specific lives here.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

Role = Literal["user", "assistant", "tool"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ToolCall(_Frozen):
    """One tool call the model asked for.

    When the model's arguments were not a JSON object, ``arguments`` is empty, ``parse_error``
    says what was wrong and ``raw_arguments`` keeps the text as the model wrote it, so the agent
    loop can send the error back instead of crashing.
    """

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    parse_error: str | None = None
    raw_arguments: str | None = None


class ToolResult(_Frozen):
    """The outcome of one tool call, as text for the model."""

    call_id: str
    name: str
    content: str
    is_error: bool = False


class Usage(_Frozen):
    """Tokens a model call consumed. Usages add up: ``a + b``, ``sum(usages, Usage())``."""

    input_tokens: NonNegativeInt = 0
    output_tokens: NonNegativeInt = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )

    def __radd__(self, other: object) -> Usage:
        # Lets plain `sum(usages)` work: sum starts from the integer 0.
        if other == 0:
            return self
        return NotImplemented


class Message(_Frozen):
    """One message of the conversation.

    - ``user``: ``content`` is the prompt.
    - ``assistant``: ``content`` is the text (possibly empty), ``tool_calls`` the calls asked for.
    - ``tool``: ``tool_results`` holds one or more results, each naming the call it answers.
    """

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_results: list[ToolResult] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_role_fields(self) -> Self:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"only assistant messages carry tool_calls, not {self.role!r} ones")
        if self.role == "tool":
            if not self.tool_results:
                raise ValueError("a tool message needs at least one tool result")
        elif self.tool_results:
            raise ValueError(f"only tool messages carry tool_results, not {self.role!r} ones")
        return self

    @property
    def tool_call_id(self) -> str | None:
        """The call a tool message answers (its first result's), else None."""
        return self.tool_results[0].call_id if self.tool_results else None

    @classmethod
    def user(cls, content: str) -> Message:
        return cls(role="user", content=content)

    @classmethod
    def assistant(cls, content: str = "", tool_calls: list[ToolCall] | None = None) -> Message:
        return cls(role="assistant", content=content, tool_calls=list(tool_calls or []))

    @classmethod
    def tool(cls, *results: ToolResult) -> Message:
        return cls(role="tool", tool_results=list(results))


class ModelReply(_Frozen):
    """What one model call returned.

    ``stop_reason`` is normalized across providers: ``end_turn``, ``tool_use``, ``max_tokens``,
    ``content_filter``; any other provider value is passed through unchanged.
    """

    message: Message
    usage: Usage = Field(default_factory=Usage)
    stop_reason: str
    model: str

    @model_validator(mode="after")
    def _check_assistant(self) -> Self:
        if self.message.role != "assistant":
            raise ValueError(
                f"a model reply is an assistant message, not a {self.message.role!r} one"
            )
        return self
