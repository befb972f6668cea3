from __future__ import annotations

import msgpack
import pytest
from pydantic import ValidationError

from outlast.agent.messages import Message, ModelReply, ToolCall, ToolResult, Usage


def _roundtrip_msgpack(value: object) -> object:
    return msgpack.unpackb(msgpack.packb(value), raw=False)


def test_reply_with_tool_calls_round_trips_through_msgpack_of_plain_values() -> None:
    reply = ModelReply(
        message=Message.assistant(
            "let me look",
            [
                ToolCall(id="c1", name="search", arguments={"query": "x", "k": [1, None]}),
                ToolCall(id="c2", name="read", parse_error="bad json", raw_arguments="{oops"),
            ],
        ),
        usage=Usage(input_tokens=10, output_tokens=3),
        stop_reason="tool_use",
        model="m",
    )
    plain = _roundtrip_msgpack(reply.model_dump(mode="json"))
    assert ModelReply.model_validate(plain) == reply


def test_tool_message_round_trips_and_names_its_call() -> None:
    message = Message.tool(ToolResult(call_id="c1", name="search", content="[]", is_error=True))
    again = Message.model_validate(_roundtrip_msgpack(message.model_dump(mode="json")))
    assert again == message
    assert again.tool_call_id == "c1"
    assert again.tool_results[0].is_error


def test_usage_adds_up() -> None:
    usages = [Usage(input_tokens=3, output_tokens=1), Usage(input_tokens=2, output_tokens=5)]
    assert sum(usages, Usage()) == Usage(input_tokens=5, output_tokens=6)
    assert sum(usages) == Usage(input_tokens=5, output_tokens=6)
    assert (usages[0] + usages[1]).total_tokens == 11


@pytest.mark.parametrize(
    "fields",
    [
        {"role": "user", "tool_calls": [{"id": "1", "name": "x"}]},
        {"role": "tool"},
        {"role": "assistant", "tool_results": [{"call_id": "1", "name": "x", "content": ""}]},
        {"role": "system", "content": "no such role"},
    ],
)
def test_message_rejects_fields_its_role_cannot_carry(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Message.model_validate(fields)


def test_reply_must_be_an_assistant_message() -> None:
    with pytest.raises(ValidationError, match="assistant"):
        ModelReply(message=Message.user("hi"), stop_reason="end_turn", model="m")
