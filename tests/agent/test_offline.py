from __future__ import annotations

import json

import pytest

from outlast.agent.messages import Message, ModelReply, ToolCall, ToolResult, Usage
from outlast.agent.models import (
    Bedrock,
    Model,
    ModelRequestError,
    ModelThrottledError,
    NoModelConfiguredError,
    OpenAIChat,
    model_from_env,
)
from outlast.agent.tools import Tool, tool
from outlast.testing.offline_model import Offline, parse_hits

DOCS = {
    "lambda-limits": (
        "Lambda limits",
        "Lambda functions stop after fifteen minutes. "
        "A durable runtime hands off before the timeout arrives.",
    ),
    "retry-backoff": (
        "Retries",
        "Throttling is absorbed by retries with backoff. "
        "The restart tax is the work repeated after a crash.",
    ),
    "journal": (
        "Journals",
        "A journal records each step. Replay rebuilds the conversation "
        "without calling the model again.",
    ),
    "spot": ("Spot capacity", "Spot instances are reclaimed with two minutes of notice."),
    "tokens": ("Token costs", "Restarting an agent from zero re-spends every token of context."),
    "leases": ("Leases", "A lease fences writers; its token only grows."),
    "snapshots": (
        "Snapshots",
        "Checkpointers that snapshot whole state grow with the square of the history.",
    ),
    "idempotency": ("Idempotency", "Idempotency keys make external calls safe to repeat."),
    "cold-tier": ("Cold tier", "Large values live in the cold tier; small records stay hot."),
    "parallel": ("Parallel tools", "Agents call tools in parallel and the journal keeps order."),
    "eviction": ("Evictions", "Kubernetes evicts pods with a grace period before the kill."),
    "budget": ("Budgets", "A time budget decides whether the next step fits in the leg."),
}


def _overlap(query: str, doc: str) -> int:
    title, text = DOCS[doc]
    words = set(f"{title} {text}".lower().replace(".", " ").replace(";", " ").split())
    return len(set(query.lower().split()) & words)


@tool
def search(query: str, limit: int = 4) -> list[dict[str, str]]:
    """Search the bundled corpus."""
    ranked = sorted(DOCS, key=lambda d: -_overlap(query, d))
    return [{"id": d, "title": DOCS[d][0], "snippet": DOCS[d][1][:50]} for d in ranked[:limit]]


@tool
def read_doc(doc_id: str) -> dict[str, str]:
    """Read one document."""
    return {"title": DOCS[doc_id][0], "text": DOCS[doc_id][1]}


NOTES: list[tuple[str, str]] = []


@tool
def take_note(text: str, source: str) -> str:
    """Write down a finding and its source."""
    NOTES.append((text, source))
    return "noted"


TOOLS = [search, read_doc, take_note]
PROMPT = "Write a cited report on how durable agents survive Lambda timeouts and the restart tax."


def run(
    model: Model, tools: list[Tool], prompt: str = PROMPT, max_turns: int = 100
) -> tuple[list[Message], list[ModelReply]]:
    """A bare agent loop: enough to drive a model through a conversation."""
    by_name = {t.name: t for t in tools}
    messages = [Message.user(prompt)]
    replies: list[ModelReply] = []
    for _ in range(max_turns):
        reply = model.complete("You research carefully.", messages, tools)
        replies.append(reply)
        messages.append(reply.message)
        if not reply.message.tool_calls:
            break
        results = []
        for call in reply.message.tool_calls:
            if call.name not in by_name or call.parse_error:
                results.append(
                    ToolResult(call_id=call.id, name=call.name, content="bad call", is_error=True)
                )
            else:
                results.append(
                    ToolResult(
                        call_id=call.id,
                        name=call.name,
                        content=by_name[call.name].call(call.arguments),
                    )
                )
        messages.append(Message.tool(*results))
    return messages, replies


def test_research_run_takes_twenty_turns_and_cites_what_it_read() -> None:
    _messages, replies = run(Offline(), TOOLS)
    assert len(replies) >= 20
    final = replies[-1]
    assert final.stop_reason == "end_turn"
    assert final.message.content.startswith("[offline model]")
    names = [c.name for r in replies for c in r.message.tool_calls]
    assert {"search", "read_doc", "take_note"} <= set(names)
    read = [
        c.arguments["doc_id"] for r in replies for c in r.message.tool_calls if c.name == "read_doc"
    ]
    assert len(read) == len(set(read)) == 8  # eight rounds, never the same source twice
    for doc in read:
        assert f"[{doc}]" in final.message.content
    noted = [c.arguments for r in replies for c in r.message.tool_calls if c.name == "take_note"]
    assert [n["source"] for n in noted] == read
    assert all(n["text"] in DOCS[n["source"]][1] for n in noted)
    # Every call the model made fits the tool's schema.
    by_name = {t.name: t for t in TOOLS}
    for r in replies:
        for c in r.message.tool_calls:
            by_name[c.name].validate(c.arguments)


def test_same_conversation_same_replies_even_from_a_fresh_instance() -> None:
    messages, replies = run(Offline(seed=3), TOOLS)
    _again_messages, again = run(Offline(seed=3), TOOLS)
    assert again == replies
    # A fresh instance continuing mid-conversation (a new leg) replies as the first one did.
    cut = 9
    resumed = Offline(seed=3).complete("You research carefully.", messages[:cut], TOOLS)
    assert resumed == replies[(cut - 1) // 2]


def test_seed_changes_the_plan() -> None:
    _, plain = run(Offline(seed=0), TOOLS)
    _, seeded = run(Offline(seed=7), TOOLS)
    first_query = [r.message.tool_calls[0].arguments["query"] for r in (plain[0], seeded[0])]
    assert first_query[0] != first_query[1]


def test_usage_counts_words_in_and_out() -> None:
    model = Offline(script=["one two three"])
    reply = model.complete("sys words", [Message.user("a b c d")], [])
    assert reply.usage == Usage(input_tokens=6, output_tokens=3)
    _, replies = run(Offline(), TOOLS)
    inputs = [r.usage.input_tokens for r in replies]
    assert inputs == sorted(inputs) and inputs[0] < inputs[-1]  # grows with the conversation


def test_parallel_asks_for_several_calls_per_turn() -> None:
    _, replies = run(Offline(parallel=2, rounds=4), TOOLS)
    sizes = [len(r.message.tool_calls) for r in replies if r.message.tool_calls]
    assert max(sizes) == 2
    ids = [c.id for r in replies for c in r.message.tool_calls]
    assert len(ids) == len(set(ids))
    assert replies[-1].message.content.startswith("[offline model]")


def test_without_tools_it_answers_at_once_and_says_what_it_is() -> None:
    reply = Offline().complete("", [Message.user("What is the restart tax?")], [])
    assert reply.stop_reason == "end_turn"
    assert reply.message.content.startswith("[offline model]")
    assert "What is the restart tax?" in reply.message.content


def test_a_user_nudge_after_tool_work_gets_the_answer_now() -> None:
    messages, _ = run(Offline(), TOOLS, max_turns=4)
    messages.append(Message.user("Out of turns: answer now."))
    reply = Offline().complete("", messages, TOOLS)
    assert not reply.message.tool_calls
    assert "Findings:" in reply.message.content


def test_tool_errors_do_not_loop() -> None:
    @tool
    def read_doc(doc_id: str) -> str:
        """Always fails."""
        raise RuntimeError("disk gone")

    def failing_run() -> list[ModelReply]:
        model = Offline(rounds=3)
        messages = [Message.user(PROMPT)]
        replies = []
        for _ in range(50):
            reply = model.complete("", messages, [search, read_doc])
            replies.append(reply)
            messages.append(reply.message)
            if not reply.message.tool_calls:
                return replies
            messages.append(
                Message.tool(
                    *[
                        ToolResult(
                            call_id=c.id,
                            name=c.name,
                            content=search.call(c.arguments) if c.name == "search" else "failed",
                            is_error=c.name != "search",
                        )
                        for c in reply.message.tool_calls
                    ]
                )
            )
        raise AssertionError("the offline model never stopped")

    replies = failing_run()
    assert replies[-1].message.content.startswith("[offline model]")


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ('[{"doc_id": "a", "title": "A"}, {"path": "b.md"}]', ["a", "b.md"]),
        ('{"results": [{"id": 7}, "x"]}', ["7", "x"]),
        ("id: one\nsource = two\nid: one", ["one", "two"]),
        ('"just a string"', []),
    ],
)
def test_parse_hits_understands_common_shapes(text: str, ids: list[str]) -> None:
    assert [h.id for h in parse_hits(text)] == ids


def test_script_replays_by_position_in_the_conversation() -> None:
    bad = ToolCall(id="", name="search", parse_error="not JSON", raw_arguments="{nope")
    model = Offline(
        script=[
            ToolCall(id="", name="search", arguments={"query": "x"}),
            [bad, ToolCall(id="u1", name="no_such_tool")],
            ModelReply(
                message=Message.assistant("final"),
                usage=Usage(input_tokens=5),
                stop_reason="end_turn",
                model="ignored",
            ),
        ]
    )
    first = model.complete("", [Message.user("go")], [search])
    assert first.message.tool_calls[0].id == "offline-0-0"
    history = [
        Message.user("go"),
        first.message,
        Message.tool(ToolResult(call_id="offline-0-0", name="search", content="[]")),
    ]
    second = model.complete("", history, [search])
    assert [c.id for c in second.message.tool_calls] == ["offline-1-0", "u1"]
    assert second.message.tool_calls[0].raw_arguments == "{nope"
    history += [second.message]
    third = model.complete("", history, [search])
    assert third.message.content == "final"
    assert third.usage == Usage(input_tokens=5)
    # Same position, same reply: a replaying or resumed caller gets what the first one got.
    fresh = Offline(script=["a", "b", "final"])
    assert fresh.complete("", history, [search]).message == third.message
    with pytest.raises(ModelRequestError, match="script exhausted"):
        model.complete("", [*history, third.message, Message.user("more")], [])


def test_scripted_errors_are_raised_once_before_their_reply() -> None:
    model = Offline(script=[ModelThrottledError("slow down", retry_after=2), "answer"])
    with pytest.raises(ModelThrottledError) as caught:
        model.complete("", [Message.user("hi")], [])
    assert caught.value.retryable and caught.value.retry_after == 2
    assert model.complete("", [Message.user("hi")], []).message.content == "answer"


def test_repeat_last_keeps_calling_tools_forever() -> None:
    model = Offline(
        script=[ToolCall(id="", name="search", arguments={"query": "x"})], repeat_last=True
    )
    _messages, replies = run(model, [search], max_turns=30)
    assert len(replies) == 30
    assert all(r.message.tool_calls for r in replies)
    assert len({c.id for r in replies for c in r.message.tool_calls}) == 30


def test_script_must_not_end_with_an_error() -> None:
    with pytest.raises(ValueError, match="before the reply"):
        Offline(script=["a", ModelThrottledError("x")])


def test_model_from_env() -> None:
    bedrock = model_from_env(
        {
            "OUTLAST_BEDROCK_MODEL_ID": "amazon.nova-lite-v1:0",
            "AWS_REGION": "eu-central-1",
            "OPENAI_API_KEY": "sk",
        }
    )
    assert isinstance(bedrock, Bedrock)
    assert bedrock.model_id == "amazon.nova-lite-v1:0" and bedrock.region == "eu-central-1"

    openai = model_from_env(
        {
            "OPENAI_API_KEY": "sk",
            "OUTLAST_OPENAI_MODEL": "llama3",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        }
    )
    assert isinstance(openai, OpenAIChat)
    assert (openai.model, openai.base_url, openai.api_key) == (
        "llama3",
        "http://127.0.0.1:9/v1",
        "sk",
    )

    # Nothing configured and no default: a loud error naming the settings, never a silent
    # fallback to the offline test double.
    with pytest.raises(NoModelConfiguredError, match=r"OUTLAST_BEDROCK_MODEL_ID.*OPENAI_API_KEY"):
        model_from_env({})
    mine = Offline(rounds=2)
    assert model_from_env({}, default=mine) is mine
    assert all(isinstance(m, Model) for m in (bedrock, openai, mine))


def test_replies_round_trip_as_plain_values() -> None:
    _, replies = run(Offline(parallel=2, rounds=2), TOOLS)
    for reply in replies:
        assert ModelReply.model_validate(json.loads(json.dumps(reply.model_dump(mode="json")))) == (
            reply
        )
