"""The model interface and the errors every adapter raises.

Adapters never retry: a model call is a durable step with a retry policy, and the runtime asks the
exception whether it is worth retrying (``retryable``) and how long the provider asked to wait
(``retry_after``). Provider exceptions never leave an adapter untranslated.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from outlast.agent.messages import Message, ModelReply
from outlast.agent.tools import Tool


@runtime_checkable
class Model(Protocol):
    """A chat model that can call tools."""

    name: str

    def complete(self, system: str, messages: list[Message], tools: list[Tool]) -> ModelReply:
        """Return the assistant's next message for the conversation so far."""
        ...


class ModelError(Exception):
    """A model call failed. ``retryable`` says whether the same call may succeed later."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class ModelThrottledError(ModelError):
    """The provider asked us to slow down (HTTP 429, ThrottlingException)."""

    retryable = True


class ModelServerError(ModelError):
    """The provider failed or could not be reached (5xx, timeouts, connection errors)."""

    retryable = True


class ModelRequestError(ModelError):
    """The request itself is wrong (bad input, unknown model, no access): retrying cannot help."""

    retryable = False
