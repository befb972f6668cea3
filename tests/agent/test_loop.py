"""The durable agent loop, run in-process on a real SQLite store and a directory cold tier."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from outlast import App, Context, RetryPolicy, RunView
from outlast.agent import (
    Agent,
    AgentResult,
    Message,
    Model,
    ModelReply,
    ModelRequestError,
    ModelServerError,
    ModelThrottledError,
    Tool,
    ToolCall,
    tool,
)
from outlast.agent.models.base import ModelError
from outlast.testing.offline_model import Offline, ScriptItem
from outlast.testing.replay import replay_context
from statestore import (
    BlobRef,
    EntryKind,
    EntryStatus,
    JournalEntry,
    RunStatus,
    open_store,
    serialize,
)

FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=False)

DOCS = {
    "journal": ("Journals", "A journal records each completed step of a durable run."),
    "replay": ("Replay", "Replay rebuilds the conversation without calling the model again."),
    "lease": ("Leases", "A lease fences writers of a durable run; its token only grows."),
    "lambda": ("Lambda", "Lambda stops a durable agent after fifteen minutes."),
    "tax": ("Restart tax", "Restarting an agent from zero re-spends every token."),
    "spot": ("Spot", "Spot capacity is reclaimed with two minutes of notice for agents."),
    "keys": ("Keys", "Idempotency keys make a repeated tool call of an agent harmless."),
    "tiers": ("Tiers", "Large values of a durable run live in the cold tier."),
    "retry": ("Retries", "Throttled model calls of an agent are retried with backoff."),
    "loop": ("Loop", "An agent loop calls the model, then the tools, then the model."),
}
PROMPT = "Research durable agents and write a cited report."


class Calls:
    """Counts what the tools and the model were asked to do, across threads."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def hit(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


def research_tools(calls: Calls) -> list[Tool]:
    @tool
    def search(query: str, limit: int = 5) -> list[dict[str, str]]:
        """Search the documents."""
        calls.hit("search")
        words = set(query.lower().split())
        ranked = sorted(DOCS, key=lambda d: (-len(words & set(DOCS[d][1].lower().split())), d))
        return [{"id": d, "title": DOCS[d][0]} for d in ranked[:limit]]

    @tool
    def read(doc_id: str) -> dict[str, str]:
        """Read a document."""
        calls.hit("read")
        return {"id": doc_id, "text": DOCS[doc_id][1]}

    @tool
    def note(text: str, source: str) -> str:
        """Note a finding."""
        calls.hit("note")
        return f"noted [{source}]"

    return [search, read, note]


class Recording:
    """A model that counts its calls and keeps the conversations it was shown."""

    def __init__(self, inner: Model, calls: Calls | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = calls or Calls()
        self.seen: list[list[Message]] = []

    def complete(self, system: str, messages: list[Message], tools: list[Tool]) -> ModelReply:
        self.calls.hit("model")
        self.seen.append(list(messages))
        return self.inner.complete(system, messages, tools)


class Refusing:
    """A model that must not be called: replays never call the model."""

    name = "refusing"

    def complete(self, system: str, messages: list[Message], tools: list[Tool]) -> ModelReply:
        raise AssertionError("the model was called during a replay")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    store = open_store(f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold")
    application = App("agent-test", store=store)
    yield application
    application.close()


def register(app: App, agent: Agent) -> str:
    def research(ctx: Context, prompt: str) -> AgentResult:
        return agent.run(ctx, prompt)

    app.durable("research")(research)
    return "research"


def run(app: App, agent: Agent, prompt: str = PROMPT, **drive: Any) -> tuple[str, RunView]:
    run_id = app.start(register(app, agent), prompt)
    return run_id, app.drive(run_id, **drive)


def result_of(view: RunView) -> AgentResult:
    assert view.status is RunStatus.SUCCEEDED, view.error
    return AgentResult.model_validate(view.result)


def steps(app: App, run_id: str, status: EntryStatus = EntryStatus.OK) -> list[JournalEntry]:
    return [e for e in app.journal(run_id) if e.kind is EntryKind.STEP and e.status is status]


def value(app: App, run_id: str, entry: JournalEntry) -> Any:
    return app.store.decode(run_id, entry.value, seq=entry.seq)


def meta_int(entry: JournalEntry, key: str) -> int:
    found = entry.meta[key]
    assert isinstance(found, int)
    return found


def replay(app: App, run_id: str, fn: Callable[[Context], Any]) -> Any:
    """Run ``fn`` over the run's finished journal in a fresh Context that holds no lease: any
    live step would have to commit, and a commit with token 0 is refused."""
    ctx = replay_context(app, run_id)
    out = fn(ctx)
    assert ctx.stats.steps_executed == 0
    assert ctx.stats.commits == 0
    return out


# ---------------------------------------------------------------------- a whole run


def test_research_run_journals_one_new_message_per_step(app: App) -> None:
    calls = Calls()
    model = Recording(Offline(), calls)
    agent = Agent(model, research_tools(calls), system="Be careful.", max_turns=40)
    run_id, view = run(app, agent)
    result = result_of(view)

    assert result.stop == "completed"
    assert result.turns >= 20
    assert result.answer.startswith("[offline model]")
    assert "[journal]" in result.answer or "[replay]" in result.answer
    assert calls.counts["model"] == result.turns

    entries = steps(app, run_id)
    models = [e for e in entries if e.name == "model"]
    tools = [e for e in entries if e.name.startswith("tool:")]
    assert len(models) == result.turns
    assert (
        len(tools) == result.turns - 1 == sum(calls.counts[t] for t in ("search", "read", "note"))
    )
    assert {e.name for e in tools} == {"tool:search", "tool:read", "tool:note"}

    # A model step holds the one assistant message it produced, a tool step one result.
    assistant = [m for m in result.messages if m.role == "assistant"]
    for entry, message in zip(models, assistant, strict=True):
        stored = value(app, run_id, entry)
        assert set(stored) <= {"message", "usage", "stop_reason", "model"}
        assert Message.model_validate(stored["message"]) == message
    results = [r for m in result.messages if m.role == "tool" for r in m.tool_results]
    for entry, tool_result in zip(tools, results, strict=True):
        assert value(app, run_id, entry) == {"content": tool_result.content}

    # Token usage is in each model entry's meta, and adds up to the result's usage.
    assert all(e.meta["model"] == "offline" for e in models)
    assert sum(meta_int(e, "input_tokens") for e in models) == result.usage.input_tokens
    assert sum(meta_int(e, "output_tokens") for e in models) == result.usage.output_tokens
    assert result.usage.input_tokens > 0


def test_replay_over_the_journal_calls_neither_the_model_nor_a_tool(app: App) -> None:
    calls = Calls()
    tools = research_tools(calls)
    agent = Agent(Recording(Offline(seed=5), calls), tools, max_turns=40)
    run_id, view = run(app, agent)
    first = result_of(view)
    before = Counter(calls.counts)

    replayer = Agent(Refusing(), tools, max_turns=40)
    again = replay(app, run_id, lambda ctx: replayer.run(ctx, PROMPT))

    assert again == first
    assert calls.counts == before  # no tool ran either


def test_a_run_spread_over_many_legs_calls_the_model_once_per_turn(app: App) -> None:
    calls = Calls()

    class Slow:
        name = "slow-offline"

        def __init__(self) -> None:
            self.inner = Offline()

        def complete(self, system: str, messages: list[Message], tools: list[Tool]) -> ModelReply:
            threading.Event().wait(0.03)
            return self.inner.complete(system, messages, tools)

    agent = Agent(Recording(Slow(), calls), research_tools(calls), max_turns=40)
    app.handoff_margin = 0.0
    run_id, view = run(app, agent, leg_seconds=0.2)
    result = result_of(view)

    assert view.counters.legs >= 2
    assert view.counters.handoffs >= 1
    assert (
        calls.counts["model"]
        == result.turns
        == len([e for e in steps(app, run_id) if e.name == "model"])
    )
    # The conversation later legs rebuilt is the one an uninterrupted run has.
    baseline = App("agent-test-baseline", store=app.store)
    _, uninterrupted = run(baseline, Agent(Offline(), research_tools(Calls()), max_turns=40))
    assert result == result_of(uninterrupted)


# ---------------------------------------------------------------------- tool calls


def test_parallel_tool_calls_run_concurrently_and_keep_their_order(app: App) -> None:
    together = threading.Barrier(3, timeout=10)

    @tool
    def slow(n: int) -> str:
        """Waits for its siblings: only calls running at the same time get through."""
        together.wait()
        return f"result {n}"

    script: list[ScriptItem] = [
        [ToolCall(id="", name="slow", arguments={"n": n}) for n in (3, 1, 2)],
        "done",
    ]
    model = Recording(Offline(script=script))
    run_id, view = run(app, Agent(model, [slow], max_concurrency=4))
    result = result_of(view)

    answer = result.messages[2]
    assert answer.role == "tool"
    assert [r.content for r in answer.tool_results] == ["result 3", "result 1", "result 2"]
    assert not any(r.is_error for r in answer.tool_results)
    asked = [c.id for c in result.messages[1].tool_calls]
    assert [r.call_id for r in answer.tool_results] == asked
    assert sorted(e.name for e in steps(app, run_id) if e.name != "model") == [
        "tool:slow[0]",
        "tool:slow[1]",
        "tool:slow[2]",
    ]
    assert model.seen[1][-1] == answer  # the model read the results in the order it asked


def test_parallel_calls_of_different_tools_and_a_bad_one_in_between(app: App) -> None:
    @tool
    def upper(text: str) -> str:
        """Upper-cases."""
        return text.upper()

    @tool
    def length(text: str) -> int:
        """Counts characters."""
        return len(text)

    script: list[ScriptItem] = [
        [
            ToolCall(id="", name="upper", arguments={"text": "abc"}),
            ToolCall(id="", name="nope", arguments={}),
            ToolCall(id="", name="length", arguments={"text": "abcd"}),
        ],
        "done",
    ]
    run_id, view = run(app, Agent(Offline(script=script), [upper, length]))
    results = result_of(view).messages[2].tool_results
    assert [(r.name, r.content, r.is_error) for r in results] == [
        ("upper", "ABC", False),
        ("nope", results[1].content, True),
        ("length", "4", False),
    ]
    assert sorted(e.name for e in steps(app, run_id) if e.name != "model") == [
        "tools[0]",
        "tools[1]",
    ]


def test_a_tool_that_declares_step_key_receives_the_steps_key(app: App) -> None:
    @tool
    def charge(amount: int, step_key: str) -> str:
        """Charges once per key."""
        return step_key

    assert "step_key" not in charge.parameters["properties"]
    script: list[ScriptItem] = [
        ToolCall(id="", name="charge", arguments={"amount": 5}),
        ToolCall(id="", name="charge", arguments={"amount": 5}),
        "done",
    ]
    run_id, view = run(app, Agent(Offline(script=script), [charge]))
    result = result_of(view)
    keys = [m.tool_results[0].content for m in result.messages if m.role == "tool"]
    entries = [e for e in steps(app, run_id) if e.name == "tool:charge"]
    assert keys == [f"{run_id}:{e.seq}:tool:charge" for e in entries]
    assert keys[0] != keys[1]


def test_a_large_tool_output_goes_to_the_cold_tier_and_replays(app: App) -> None:
    big = os.urandom(150_000).hex()  # incompressible, well above the 64 KB inline limit

    @tool
    def fetch(url: str) -> str:
        """Fetches a page."""
        return big

    script: list[ScriptItem] = [
        ToolCall(id="", name="fetch", arguments={"url": "https://example.test"}),
        "done",
    ]
    tools = [fetch]
    run_id, view = run(app, Agent(Offline(script=script), tools))
    result = result_of(view)
    (entry,) = [e for e in steps(app, run_id) if e.name == "tool:fetch"]
    assert isinstance(entry.value, BlobRef)
    model_entries = [e for e in steps(app, run_id) if e.name == "model"]
    assert all(isinstance(e.value, bytes) for e in model_entries)
    again = replay(app, run_id, lambda ctx: Agent(Refusing(), tools).run(ctx, PROMPT))
    assert (
        again.messages[2].tool_results[0].content
        == big
        == result.messages[2].tool_results[0].content
    )


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "error",
    [
        ModelThrottledError("slow down", status=429, code="ThrottlingException"),
        ModelServerError("bad gateway", status=502),
    ],
    ids=["throttled", "server-error"],
)
def test_transient_model_errors_are_retried_as_step_retries(app: App, error: ModelError) -> None:
    model = Recording(Offline(script=[error, "the answer"]))
    run_id, view = run(app, Agent(model, [], model_retry=FAST_RETRY))
    result = result_of(view)
    assert result.answer == "the answer"
    assert result.stop == "completed"
    assert model.calls.counts["model"] == 2
    retried = steps(app, run_id, EntryStatus.RETRY)
    assert [(e.name, e.attempt) for e in retried] == [("model", 1)]
    assert retried[0].error is not None and retried[0].error.type == type(error).__name__
    assert [(e.name, e.attempt) for e in steps(app, run_id)] == [("model", 2)]


def test_a_model_error_that_retrying_cannot_fix_fails_the_run_at_once(app: App) -> None:
    model = Recording(Offline(script=[ModelRequestError("no access to this model"), "x"]))
    run_id, view = run(app, Agent(model, [], model_retry=FAST_RETRY))
    assert view.status is RunStatus.FAILED
    assert view.error is not None and "no access to this model" in view.error.message
    assert model.calls.counts["model"] == 1
    assert [(e.name, e.status) for e in app.journal(run_id)] == [("model", EntryStatus.ERROR)]


def test_throttling_that_outlasts_the_retries_fails_the_run(app: App) -> None:
    script: list[ScriptItem] = [
        ModelThrottledError("slow"),
        ModelThrottledError("slower"),
        "never",
    ]
    retry = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=False)
    _, view = run(app, Agent(Offline(script=script), [], model_retry=retry))
    assert view.status is RunStatus.FAILED
    assert view.error is not None and "slower" in view.error.message


def _fed_back(app: App, call: ToolCall, tools: list[Tool]) -> tuple[str, Recording, str]:
    model = Recording(Offline(script=[call, "understood"]))
    run_id, view = run(app, Agent(model, tools))
    result = result_of(view)
    assert result.stop == "completed" and result.answer == "understood"
    (tool_message,) = [m for m in result.messages if m.role == "tool"]
    (outcome,) = tool_message.tool_results
    assert outcome.is_error
    assert model.seen[1][-1] == tool_message  # the model was shown the error
    return outcome.content, model, run_id


def test_a_malformed_tool_call_is_fed_back_to_the_model(app: App) -> None:
    calls = Calls()
    call = ToolCall(
        id="c1", name="search", parse_error="Expecting ',' delimiter", raw_arguments='{"query" "x"}'
    )
    content, _, run_id = _fed_back(app, call, research_tools(calls))
    assert "not a JSON object" in content and "Expecting ',' delimiter" in content
    assert calls.counts["search"] == 0
    assert [e.name for e in steps(app, run_id)] == ["model", "model"]


def test_arguments_that_do_not_fit_the_schema_are_fed_back(app: App) -> None:
    calls = Calls()
    call = ToolCall(id="c1", name="search", arguments={"limit": "many", "bogus": 1})
    content, _, _ = _fed_back(app, call, research_tools(calls))
    assert "query" in content and "limit" in content and "bogus" in content
    assert calls.counts["search"] == 0


def test_an_unknown_tool_is_fed_back_with_the_tools_there_are(app: App) -> None:
    call = ToolCall(id="c1", name="launch_rockets", arguments={"count": 3})
    content, _, _ = _fed_back(app, call, research_tools(Calls()))
    assert "launch_rockets" in content
    assert "note, read, search" in content


def test_a_tool_that_raises_is_fed_back_and_the_run_goes_on(app: App) -> None:
    @tool
    def flaky(path: str) -> str:
        """Reads a file."""
        raise OSError(f"disk gone while reading {path}")

    content, _, run_id = _fed_back(
        app, ToolCall(id="c1", name="flaky", arguments={"path": "/x"}), [flaky]
    )
    assert "OSError: disk gone while reading /x" in content
    (entry,) = [e for e in steps(app, run_id) if e.name == "tool:flaky"]
    assert entry.meta["tool_error"] == "OSError"


def test_reaching_max_turns_ends_the_run_with_a_clear_status(app: App) -> None:
    calls = Calls()
    forever = [ToolCall(id="", name="search", arguments={"query": "again"})]
    model = Recording(Offline(script=forever, repeat_last=True), calls)
    run_id, view = run(app, Agent(model, research_tools(calls), max_turns=5))
    result = result_of(view)
    assert result.stop == "max_turns"
    assert result.turns == 5
    assert calls.counts["model"] == 5
    assert calls.counts["search"] == 4  # the last reply's calls are not run
    assert result.messages[-1].role == "assistant"
    assert len([e for e in steps(app, run_id) if e.name == "model"]) == 5


def test_agent_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_turns"):
        Agent(Offline(), [], max_turns=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        Agent(Offline(), [], max_concurrency=0)


# ---------------------------------------------------------------------- cost per turn


def test_journal_bytes_per_turn_do_not_grow_with_the_history(app: App) -> None:
    @tool
    def fetch(page: int) -> str:
        """Returns about a kilobyte of text for a page."""
        return " ".join(f"word{(page * 7919 + i * 104729) % 100003}" for i in range(100))

    turns = 120
    script: list[ScriptItem] = [
        ToolCall(id=f"call-{n}", name="fetch", arguments={"page": n}) for n in range(turns)
    ]
    run_id, view = run(app, Agent(Offline(script=[*script, "done"]), [fetch], max_turns=turns + 1))
    assert result_of(view).turns == turns + 1

    entries = steps(app, run_id)
    models = [e for e in entries if e.name == "model"]
    fetches = [e for e in entries if e.name == "tool:fetch"]

    def turn_bytes(n: int) -> int:
        return len(serialize.dump(models[n])) + len(serialize.dump(fetches[n]))

    early, late = turn_bytes(10), turn_bytes(100)
    assert late <= early * 1.05 + 16, (early, late)
    # The conversation itself did grow: the model's input at turn 100 is much larger.
    assert meta_int(models[100], "input_tokens") > 5 * meta_int(models[10], "input_tokens")
