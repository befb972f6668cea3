"""Amazon Bedrock through the Converse API (boto3 ``bedrock-runtime``), with tool use."""

from __future__ import annotations

import os
from typing import Any

from outlast.agent.messages import Message, ModelReply, ToolCall, Usage
from outlast.agent.models.base import (
    ModelError,
    ModelRequestError,
    ModelServerError,
    ModelThrottledError,
)
from outlast.agent.tools import Tool

_THROTTLED = {"ThrottlingException", "TooManyRequestsException"}
_SERVER = {
    "ServiceUnavailableException",
    "ModelNotReadyException",
    "InternalServerException",
    "ModelTimeoutException",
    "ModelErrorException",
}
_STOP_REASONS = {"content_filtered": "content_filter", "guardrail_intervened": "content_filter"}


class Bedrock:
    """A Bedrock model called with ``converse``.

    The default client is built on first use with botocore's own retries switched off (the runtime
    retries the step) and a read timeout long enough for a slow completion.
    """

    def __init__(
        self,
        model_id: str,
        region: str | None = None,
        client: Any | None = None,
        *,
        max_tokens: int = 4096,
        temperature: float | None = None,
        read_timeout: float = 300.0,
        tool_result_status: bool | None = None,
    ) -> None:
        self.model_id = model_id
        self.name = f"bedrock:{model_id}"
        self.region = region
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.read_timeout = read_timeout
        # Only Anthropic models accept toolResult.status; others reject the request if it is set.
        self.tool_result_status = (
            "anthropic" in model_id if tool_result_status is None else tool_result_status
        )
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                read_timeout=self.read_timeout,
            )
            region = (
                self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            )
            self._client = boto3.client("bedrock-runtime", region_name=region, config=config)
        return self._client

    def request(self, system: str, messages: list[Message], tools: list[Tool]) -> dict[str, Any]:
        """The ``converse`` keyword arguments for this conversation."""
        inference: dict[str, Any] = {"maxTokens": self.max_tokens}
        if self.temperature is not None:
            inference["temperature"] = self.temperature
        params: dict[str, Any] = {
            "modelId": self.model_id,
            "messages": self._wire_messages(messages),
            "inferenceConfig": inference,
        }
        if system:
            params["system"] = [{"text": system}]
        if tools:
            params["toolConfig"] = {
                "tools": [
                    {
                        "toolSpec": {
                            "name": t.name,
                            "description": t.description or t.name,
                            "inputSchema": {"json": t.parameters},
                        }
                    }
                    for t in tools
                ]
            }
        return params

    def _wire_messages(self, messages: list[Message]) -> list[dict[str, Any]]:
        # Converse wants user and assistant turns to alternate and carries tool results inside a
        # user turn, so consecutive tool/user messages merge into one user turn.
        wire: list[dict[str, Any]] = []
        for message in messages:
            role = "assistant" if message.role == "assistant" else "user"
            blocks = self._blocks(message)
            if wire and wire[-1]["role"] == role:
                wire[-1]["content"].extend(blocks)
            else:
                wire.append({"role": role, "content": blocks})
        return wire

    def _blocks(self, message: Message) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        for result in message.tool_results:
            body: dict[str, Any] = {
                "toolUseId": result.call_id,
                "content": [{"text": result.content}],
            }
            if self.tool_result_status:
                body["status"] = "error" if result.is_error else "success"
            blocks.append({"toolResult": body})
        # Converse rejects blank text blocks, so an assistant turn made only of tool calls has none.
        if message.content:
            blocks.append({"text": message.content})
        blocks.extend(
            {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}}
            for call in message.tool_calls
        )
        return blocks

    def complete(self, system: str, messages: list[Message], tools: list[Tool]) -> ModelReply:
        params = self.request(system, messages, tools)
        try:
            response = self.client.converse(**params)
        except Exception as exc:
            raise _translate(exc) from exc
        return self.parse(response)

    def parse(self, response: dict[str, Any]) -> ModelReply:
        """A ModelReply from a ``converse`` response."""
        try:
            content = response["output"]["message"]["content"]
            raw_usage = response.get("usage", {})
            stop = str(response["stopReason"])
        except (KeyError, TypeError) as exc:
            raise ModelServerError(f"Bedrock returned an unexpected response: {exc!r}") from exc
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in content:
            if "text" in block:
                texts.append(block["text"])
            elif "toolUse" in block:
                use = block["toolUse"]
                arguments = use.get("input")
                if isinstance(arguments, dict):
                    calls.append(
                        ToolCall(id=use["toolUseId"], name=use["name"], arguments=arguments)
                    )
                else:
                    calls.append(
                        ToolCall(
                            id=use["toolUseId"],
                            name=use["name"],
                            parse_error=f"tool input must be a JSON object, got {arguments!r}",
                            raw_arguments=str(arguments),
                        )
                    )
        usage = Usage(
            input_tokens=int(raw_usage.get("inputTokens", 0)),
            output_tokens=int(raw_usage.get("outputTokens", 0)),
        )
        return ModelReply(
            message=Message.assistant("\n".join(t for t in texts if t), calls),
            usage=usage,
            stop_reason=_STOP_REASONS.get(stop, stop),
            model=self.model_id,
        )


def _translate(exc: Exception) -> ModelError:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        HTTPClientError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = f"Bedrock {code}: {error.get('Message', exc)}"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        # The code decides before the status: ModelNotReadyException comes as a 429 but means
        # the model is still loading, not that we are sending too much.
        if code in _THROTTLED:
            return ModelThrottledError(message, status=status, code=code)
        if code in _SERVER:
            return ModelServerError(message, status=status, code=code)
        if status == 429:
            return ModelThrottledError(message, status=status, code=code)
        if isinstance(status, int) and status >= 500:
            return ModelServerError(message, status=status, code=code)
        return ModelRequestError(message, status=status, code=code)
    if isinstance(exc, NoCredentialsError | NoRegionError | ParamValidationError):
        return ModelRequestError(f"Bedrock request cannot be sent: {exc}", code=type(exc).__name__)
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return ModelServerError(f"Bedrock unreachable: {exc}", code=type(exc).__name__)
    if isinstance(exc, BotoCoreError):
        return ModelRequestError(f"Bedrock client error: {exc}", code=type(exc).__name__)
    return ModelRequestError(f"Bedrock call failed: {exc!r}", code=type(exc).__name__)
