"""Bedrock through botocore's Stubber: no Bedrock endpoint can be reached from here, so the
Stubber checks our requests against the real Converse request shape and hands back responses of
the real response shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from outlast.agent.messages import Message, ToolCall, ToolResult
from outlast.agent.models import Bedrock, ModelRequestError, ModelServerError, ModelThrottledError
from outlast.agent.tools import tool

MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"


@tool
def search(query: str, limit: int = 3) -> str:
    """Search the corpus."""
    return query


@pytest.fixture
def client() -> Any:
    return boto3.client("bedrock-runtime", region_name="us-east-1")


@pytest.fixture
def stubber(client: Any) -> Iterator[Stubber]:
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def converse_response(
    content: list[dict[str, Any]], stop: str, tokens: tuple[int, int]
) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": tokens[0], "outputTokens": tokens[1], "totalTokens": sum(tokens)},
        "metrics": {"latencyMs": 120},
    }


def test_tool_use_round_trip(client: Any, stubber: Stubber) -> None:
    model = Bedrock(MODEL_ID, client=client, max_tokens=512, temperature=0.2)
    tool_spec = {
        "tools": [
            {
                "toolSpec": {
                    "name": "search",
                    "description": "Search the corpus.",
                    "inputSchema": {"json": search.parameters},
                }
            }
        ]
    }
    stubber.add_response(
        "converse",
        converse_response(
            [
                {"text": "I'll search."},
                {"toolUse": {"toolUseId": "tu-1", "name": "search", "input": {"query": "lambda"}}},
                {"toolUse": {"toolUseId": "tu-2", "name": "search", "input": {"query": "spot"}}},
            ],
            "tool_use",
            (100, 20),
        ),
        expected_params={
            "modelId": MODEL_ID,
            "system": [{"text": "be brief"}],
            "messages": [{"role": "user", "content": [{"text": "research"}]}],
            "inferenceConfig": {"maxTokens": 512, "temperature": 0.2},
            "toolConfig": tool_spec,
        },
    )
    conversation = [Message.user("research")]
    first = model.complete("be brief", conversation, [search])
    assert first.stop_reason == "tool_use"
    assert first.message.content == "I'll search."
    assert first.message.tool_calls == [
        ToolCall(id="tu-1", name="search", arguments={"query": "lambda"}),
        ToolCall(id="tu-2", name="search", arguments={"query": "spot"}),
    ]
    assert (first.usage.input_tokens, first.usage.output_tokens) == (100, 20)
    assert first.model == MODEL_ID

    # Two tool messages (one per durable tool step) merge into the single user turn Converse wants.
    conversation += [
        first.message,
        Message.tool(ToolResult(call_id="tu-1", name="search", content="hit A")),
        Message.tool(ToolResult(call_id="tu-2", name="search", content="boom", is_error=True)),
    ]
    stubber.add_response(
        "converse",
        converse_response([{"text": "Report [A]."}], "end_turn", (150, 5)),
        expected_params={
            "modelId": MODEL_ID,
            "system": [{"text": "be brief"}],
            "messages": [
                {"role": "user", "content": [{"text": "research"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"text": "I'll search."},
                        {
                            "toolUse": {
                                "toolUseId": "tu-1",
                                "name": "search",
                                "input": {"query": "lambda"},
                            }
                        },
                        {
                            "toolUse": {
                                "toolUseId": "tu-2",
                                "name": "search",
                                "input": {"query": "spot"},
                            }
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "toolResult": {
                                "toolUseId": "tu-1",
                                "content": [{"text": "hit A"}],
                                "status": "success",
                            }
                        },
                        {
                            "toolResult": {
                                "toolUseId": "tu-2",
                                "content": [{"text": "boom"}],
                                "status": "error",
                            }
                        },
                    ],
                },
            ],
            "inferenceConfig": {"maxTokens": 512, "temperature": 0.2},
            "toolConfig": tool_spec,
        },
    )
    second = model.complete("be brief", conversation, [search])
    assert second.stop_reason == "end_turn"
    assert second.message.content == "Report [A]."
    assert second.message.tool_calls == []


def test_non_anthropic_models_get_no_tool_result_status_and_no_blank_text(
    client: Any, stubber: Stubber
) -> None:
    model = Bedrock("amazon.nova-pro-v1:0", client=client)
    conversation = [
        Message.user("go"),
        Message.assistant("", [ToolCall(id="t1", name="search", arguments={"query": "q"})]),
        Message.tool(ToolResult(call_id="t1", name="search", content="r", is_error=True)),
    ]
    stubber.add_response(
        "converse",
        converse_response([{"text": "ok"}], "max_tokens", (1, 1)),
        expected_params={
            "modelId": "amazon.nova-pro-v1:0",
            "messages": [
                {"role": "user", "content": [{"text": "go"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"toolUse": {"toolUseId": "t1", "name": "search", "input": {"query": "q"}}}
                    ],
                },
                {
                    "role": "user",
                    "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "r"}]}}],
                },
            ],
            "inferenceConfig": {"maxTokens": 4096},
            "toolConfig": {
                "tools": [
                    {
                        "toolSpec": {
                            "name": "search",
                            "description": "Search the corpus.",
                            "inputSchema": {"json": search.parameters},
                        }
                    }
                ]
            },
        },
    )
    reply = model.complete("", conversation, [search])
    assert reply.stop_reason == "max_tokens"


@pytest.mark.parametrize(
    ("code", "status", "error_type", "retryable"),
    [
        ("ThrottlingException", 429, ModelThrottledError, True),
        ("ServiceUnavailableException", 503, ModelServerError, True),
        ("ModelNotReadyException", 429, ModelServerError, True),
        ("SomeNewLimitException", 429, ModelThrottledError, True),
        ("SomeNewFailureException", 502, ModelServerError, True),
        ("InternalServerException", 500, ModelServerError, True),
        ("ModelTimeoutException", 408, ModelServerError, True),
        ("ValidationException", 400, ModelRequestError, False),
        ("AccessDeniedException", 403, ModelRequestError, False),
        ("ResourceNotFoundException", 404, ModelRequestError, False),
    ],
)
def test_errors_are_translated(
    client: Any,
    stubber: Stubber,
    code: str,
    status: int,
    error_type: type[Exception],
    retryable: bool,
) -> None:
    stubber.add_client_error(
        "converse",
        service_error_code=code,
        service_message=f"{code} says no",
        http_status_code=status,
    )
    with pytest.raises(error_type, match=f"{code} says no") as caught:
        Bedrock(MODEL_ID, client=client).complete("", [Message.user("hi")], [])
    assert getattr(caught.value, "retryable") is retryable  # noqa: B009
    assert getattr(caught.value, "code") == code  # noqa: B009


def test_default_client_has_botocore_retries_off() -> None:
    model = Bedrock(MODEL_ID, region="eu-west-1", read_timeout=42)
    config = model.client.meta.config
    assert model.client.meta.region_name == "eu-west-1"
    assert config.retries["total_max_attempts"] == 1
    assert config.read_timeout == 42


def test_unreachable_endpoint_is_a_retryable_server_error() -> None:
    from botocore.config import Config

    from tests.support.servers import free_port

    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2),
    )
    with pytest.raises(ModelServerError, match="unreachable") as caught:
        Bedrock(MODEL_ID, client=client).complete("", [Message.user("hi")], [])
    assert caught.value.retryable
