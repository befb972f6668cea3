from __future__ import annotations

import json
from collections.abc import Iterator
from email.utils import formatdate
from time import time

import pytest

from outlast.agent.messages import Message, ToolCall, ToolResult
from outlast.agent.models import (
    ModelRequestError,
    ModelServerError,
    ModelThrottledError,
    OpenAIChat,
)
from outlast.agent.tools import tool
from tests.agent.chat_server import ChatServer, Queued, completion, function_call
from tests.support.servers import free_port


@tool
def search(query: str, limit: int = 3) -> str:
    """Search the corpus."""
    return query


@pytest.fixture
def server() -> Iterator[ChatServer]:
    chat = ChatServer()
    chat.start()
    yield chat
    chat.stop()


@pytest.fixture
def model(server: ChatServer) -> OpenAIChat:
    return OpenAIChat("test-model", base_url=server.base_url, api_key="sk-test", timeout=5)


def test_tool_call_then_answer_over_the_wire(server: ChatServer, model: OpenAIChat) -> None:
    call = function_call("call_1", "search", '{"query": "lambda"}')
    server.queue.append(Queued(200, completion(tool_calls=[call])))
    messages = [Message.user("find lambda")]
    first = model.complete("be brief", messages, [search])

    assert first.stop_reason == "tool_use"
    assert first.message.tool_calls == [
        ToolCall(id="call_1", name="search", arguments={"query": "lambda"})
    ]
    assert (first.usage.input_tokens, first.usage.output_tokens) == (11, 7)
    assert first.model == "test-model-2024"

    messages += [
        first.message,
        Message.tool(ToolResult(call_id="call_1", name="search", content="3 hits")),
    ]
    second = model.complete("be brief", messages, [search])
    assert second.stop_reason == "end_turn"
    assert second.message.content == "done"
    assert second.message.tool_calls == []

    request = server.received[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["content-type"] == "application/json"
    assert request.body["model"] == "test-model"
    assert request.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search the corpus.",
                "parameters": search.parameters,
            },
        }
    ]
    assert request.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "find lambda"},
    ]
    assert server.received[1].body["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"query": "lambda"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "3 hits"},
    ]


def test_parallel_tool_calls_and_results_keep_their_order(
    server: ChatServer, model: OpenAIChat
) -> None:
    calls = [function_call(f"call_{i}", "search", json.dumps({"query": str(i)})) for i in range(3)]
    server.queue.append(Queued(200, completion("searching", calls)))
    reply = model.complete("", [Message.user("go")], [search])
    assert reply.message.content == "searching"
    assert [c.arguments["query"] for c in reply.message.tool_calls] == ["0", "1", "2"]

    results = [ToolResult(call_id=f"call_{i}", name="search", content=f"r{i}") for i in range(3)]
    model.complete("", [Message.user("go"), reply.message, Message.tool(*results)], [search])
    wire = server.received[1].body["messages"]
    assert "system" not in {m["role"] for m in wire}  # an empty system prompt is left out
    assert [m.get("tool_call_id") for m in wire[2:]] == ["call_0", "call_1", "call_2"]


def test_throttling_then_success(server: ChatServer, model: OpenAIChat) -> None:
    server.queue.append(
        Queued(
            429,
            {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
            {"Retry-After": "7"},
        )
    )
    with pytest.raises(ModelThrottledError) as caught:
        model.complete("", [Message.user("hi")], [])
    err = caught.value
    assert err.retryable
    assert err.retry_after == 7.0
    assert err.status == 429
    assert "Rate limit reached" in str(err)
    # The adapter itself never retried: exactly one request reached the server.
    assert len(server.received) == 1

    reply = model.complete("", [Message.user("hi")], [])
    assert reply.message.content == "done"
    assert len(server.received) == 2


def test_retry_after_as_http_date_and_in_milliseconds(
    server: ChatServer, model: OpenAIChat
) -> None:
    server.queue.append(Queued(429, {"error": "slow"}, {"Retry-After": formatdate(time() + 60)}))
    server.queue.append(Queued(429, {"error": "slow"}, {"retry-after-ms": "250"}))
    with pytest.raises(ModelThrottledError) as by_date:
        model.complete("", [Message.user("hi")], [])
    with pytest.raises(ModelThrottledError) as by_ms:
        model.complete("", [Message.user("hi")], [])
    assert by_date.value.retry_after is not None and 50 < by_date.value.retry_after <= 60
    assert by_ms.value.retry_after == 0.25


def test_exhausted_quota_is_not_retryable(server: ChatServer, model: OpenAIChat) -> None:
    server.queue.append(
        Queued(429, {"error": {"message": "You exceeded your quota", "code": "insufficient_quota"}})
    )
    with pytest.raises(ModelRequestError, match="exceeded your quota") as caught:
        model.complete("", [Message.user("hi")], [])
    assert not caught.value.retryable


def test_server_error_is_retryable(server: ChatServer, model: OpenAIChat) -> None:
    server.queue.append(Queued(500, {"error": {"message": "The server had an error"}}))
    with pytest.raises(ModelServerError, match="500: The server had an error") as caught:
        model.complete("", [Message.user("hi")], [])
    assert caught.value.retryable
    assert caught.value.status == 500


def test_client_error_is_not_retryable_and_carries_the_message(
    server: ChatServer, model: OpenAIChat
) -> None:
    server.queue.append(
        Queued(
            400,
            {
                "error": {
                    "message": "Invalid schema for function 'search'",
                    "type": "invalid_request_error",
                    "code": None,
                }
            },
        )
    )
    with pytest.raises(ModelRequestError, match="Invalid schema for function 'search'") as caught:
        model.complete("", [Message.user("hi")], [search])
    assert not caught.value.retryable
    assert caught.value.code == "invalid_request_error"


def test_malformed_tool_arguments_are_kept_not_raised(
    server: ChatServer, model: OpenAIChat
) -> None:
    server.queue.append(
        Queued(
            200,
            completion(
                tool_calls=[
                    function_call("call_bad", "search", '{"query": "lambda'),
                    function_call("call_list", "search", "[1, 2]"),
                    function_call("call_empty", "search", ""),
                ]
            ),
        )
    )
    reply = model.complete("", [Message.user("go")], [search])
    bad, listed, empty = reply.message.tool_calls
    assert bad.arguments == {}
    assert bad.parse_error is not None and "not valid JSON" in bad.parse_error
    assert bad.raw_arguments == '{"query": "lambda'
    assert listed.parse_error == "arguments must be a JSON object, got list"
    assert empty.arguments == {} and empty.parse_error is None

    # Sent back, the malformed call reads exactly as the model wrote it.
    result = ToolResult(call_id="call_bad", name="search", content="error", is_error=True)
    model.complete("", [Message.user("go"), reply.message, Message.tool(result)], [search])
    echoed = server.received[1].body["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert echoed == '{"query": "lambda'


def test_body_that_is_not_json_is_a_server_error(server: ChatServer, model: OpenAIChat) -> None:
    server.queue.append(Queued(200, b"<html>gateway</html>"))
    with pytest.raises(ModelServerError, match="not JSON"):
        model.complete("", [Message.user("hi")], [])


def test_no_api_key_sends_no_authorization(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    local = OpenAIChat("local", base_url=server.base_url + "/", max_tokens=64, temperature=0.0)
    local.complete("", [Message.user("hi")], [])
    request = server.received[0]
    assert "authorization" not in request.headers
    assert request.body["max_tokens"] == 64 and request.body["temperature"] == 0.0


def test_api_key_comes_from_the_environment(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    OpenAIChat("m", base_url=server.base_url).complete("", [Message.user("hi")], [])
    assert server.received[0].headers["authorization"] == "Bearer sk-env"


def test_unreachable_endpoint_is_a_retryable_server_error() -> None:
    model = OpenAIChat("m", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="k", timeout=2)
    with pytest.raises(ModelServerError, match="unreachable") as caught:
        model.complete("", [Message.user("hi")], [])
    assert caught.value.retryable
