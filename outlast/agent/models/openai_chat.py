"""Any OpenAI-compatible chat-completions endpoint, with tools.

It speaks HTTP through urllib3, which botocore already depends on, so this adapter adds no
dependency. urllib3's own retries and redirects are off: the runtime retries the step.
"""

from __future__ import annotations

import json
import os
import time
from email.utils import parsedate_to_datetime
from typing import Any

import urllib3

from outlast.agent.messages import Message, ModelReply, ToolCall, Usage
from outlast.agent.models.base import (
    ModelError,
    ModelRequestError,
    ModelServerError,
    ModelThrottledError,
)
from outlast.agent.tools import Tool

_STOP_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "content_filter",
}
# OpenAI's own clients retry these too: a request timeout and a lock conflict are transient.
_TRANSIENT_STATUSES = {408, 409}


class OpenAIChat:
    """A chat-completions model. ``api_key`` defaults to ``$OPENAI_API_KEY``; with neither, no
    Authorization header is sent (local servers such as vLLM or Ollama need none)."""

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        max_tokens: int | None = None,
        temperature: float | None = None,
        extra_body: dict[str, Any] | None = None,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=timeout)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.extra_body = dict(extra_body or {})
        self._pool = pool or urllib3.PoolManager()

    def request_body(
        self, system: str, messages: list[Message], tools: list[Tool]
    ) -> dict[str, Any]:
        """The JSON body of the chat-completions request for this conversation."""
        wire: list[dict[str, Any]] = []
        if system:
            wire.append({"role": "system", "content": system})
        for message in messages:
            wire.extend(_wire_message(message))
        body: dict[str, Any] = {"model": self.model, "messages": wire}
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        body.update(self.extra_body)
        return body

    def complete(self, system: str, messages: list[Message], tools: list[Tool]) -> ModelReply:
        body = self.request_body(system, messages, tools)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = f"{self.base_url}/chat/completions"
        try:
            response = self._pool.request(
                "POST",
                url,
                body=json.dumps(body).encode(),
                headers=headers,
                timeout=self.timeout,
                retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ModelServerError(f"{url} unreachable: {exc}", code=type(exc).__name__) from exc
        if response.status >= 400:
            raise _status_error(response.status, response.data, response.headers)
        try:
            payload = json.loads(response.data)
        except ValueError as exc:
            raise ModelServerError(
                f"{url} answered {response.status} with a body that is not JSON: "
                f"{response.data[:200]!r}",
                status=response.status,
            ) from exc
        return self.parse(payload)

    def parse(self, payload: Any) -> ModelReply:
        """A ModelReply from a chat-completions response body."""
        try:
            choice = payload["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ModelServerError(f"unexpected chat-completions response: {exc!r}") from exc
        raw_calls = message.get("tool_calls") or []
        calls = [_parse_tool_call(index, raw) for index, raw in enumerate(raw_calls)]
        raw_usage = payload.get("usage") or {}
        usage = Usage(
            input_tokens=int(raw_usage.get("prompt_tokens") or 0),
            output_tokens=int(raw_usage.get("completion_tokens") or 0),
        )
        finish = str(choice.get("finish_reason") or ("tool_calls" if calls else "stop"))
        return ModelReply(
            message=Message.assistant(message.get("content") or "", calls),
            usage=usage,
            stop_reason=_STOP_REASONS.get(finish, finish),
            model=str(payload.get("model") or self.model),
        )


def _wire_message(message: Message) -> list[dict[str, Any]]:
    if message.role == "user":
        return [{"role": "user", "content": message.content}]
    if message.role == "tool":
        # One tool message per result: the protocol pairs each with its tool_call_id.
        return [
            {"role": "tool", "tool_call_id": r.call_id, "content": r.content}
            for r in message.tool_results
        ]
    wire: dict[str, Any] = {"role": "assistant", "content": message.content or None}
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    # Echo a malformed call as the model wrote it, so the conversation it reads
                    # back matches the error it is told about.
                    "arguments": call.raw_arguments
                    if call.parse_error is not None and call.raw_arguments is not None
                    else json.dumps(call.arguments),
                },
            }
            for call in message.tool_calls
        ]
    return [wire]


def _parse_tool_call(index: int, raw: Any) -> ToolCall:
    function = raw.get("function") or {}
    call_id = str(raw.get("id") or f"call_{index}")
    name = str(function.get("name") or "")
    text = function.get("arguments")
    if text is None or (isinstance(text, str) and not text.strip()):
        return ToolCall(id=call_id, name=name)
    if isinstance(text, dict):  # some compatible servers send an object, not a string
        return ToolCall(id=call_id, name=name, arguments=text)
    try:
        arguments = json.loads(text)
    except ValueError as exc:
        return ToolCall(
            id=call_id,
            name=name,
            parse_error=f"arguments are not valid JSON: {exc}",
            raw_arguments=str(text),
        )
    if not isinstance(arguments, dict):
        return ToolCall(
            id=call_id,
            name=name,
            parse_error=f"arguments must be a JSON object, got {type(arguments).__name__}",
            raw_arguments=str(text),
        )
    return ToolCall(id=call_id, name=name, arguments=arguments)


def _status_error(status: int, data: bytes, headers: Any) -> ModelError:
    code: str | None = None
    detail = data[:500].decode(errors="replace")
    try:
        error = json.loads(data).get("error")
        if isinstance(error, dict):
            detail = str(error.get("message") or detail)
            code = str(error["code"]) if error.get("code") is not None else error.get("type")
        elif isinstance(error, str):
            detail = error
    except (ValueError, AttributeError):
        pass
    message = f"chat-completions {status}: {detail}"
    if status == 429:
        # An exhausted quota also comes as 429, but waiting does not refill it.
        if code == "insufficient_quota":
            return ModelRequestError(message, status=status, code=code)
        return ModelThrottledError(
            message, status=status, code=code, retry_after=_retry_after(headers)
        )
    if status >= 500 or status in _TRANSIENT_STATUSES:
        return ModelServerError(
            message, status=status, code=code, retry_after=_retry_after(headers)
        )
    return ModelRequestError(message, status=status, code=code)


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
