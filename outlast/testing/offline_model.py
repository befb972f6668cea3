"""A deterministic local model for tests, benchmarks and the offline demo. It needs no network.

It is a test double (it plays a model, scripted or by rules), so it lives in ``outlast.testing``
and nothing picks it by itself: callers that want it pass it, e.g.
``model_from_env(default=Offline())``.

Two modes:

- Rules (the default), built for a research agent. When tools named like ``search``, ``read`` and
  ``note`` are offered, it plans sub-queries from the user's words, searches each, reads the top
  unread hit of each search, notes the sentence that best matches the question, and once
  ``rounds`` searches have each found a new source (at most ``3 * rounds`` searches) writes a
  report that cites the sources it read: about ``3 * rounds + 1`` turns, 25 by default. With
  ``parallel=N`` it asks for N tool calls per turn. Search results it understands: see
  ``parse_hits``.
- Script: ``Offline(script=[...])`` replays fixed replies, malformed or unknown-tool calls
  included, and can raise model errors before a reply to exercise retries.

Either way the next reply is a function of the conversation alone, never of state kept between
calls, so a fresh process continuing a run gets the same replies an uninterrupted one would.
(The one exception: a scripted error is raised once per Offline instance.) Every answer starts
with ``[offline model]`` so nobody mistakes it for a real model's work. Usage counts
whitespace-separated words in and out, which is deterministic and grows with the conversation
the way real token counts do.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from outlast.agent.messages import Message, ModelReply, ToolCall, ToolResult, Usage
from outlast.agent.models.base import ModelError, ModelRequestError
from outlast.agent.tools import Tool

MARK = "[offline model]"
_SEARCHES_PER_ROUND = 3

ScriptItem = str | ToolCall | list[ToolCall] | Message | ModelReply | ModelError

_STOPWORD_TEXT = """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can cite cited citing could did do does doing down during each
    explain few for from further give had has have having he her here hers how i if in into is it
    its itself just me more most my no nor not now of off on once only or other our out over own
    please report research same she should so some source sources such summarize summary than that
    the their them then there these they this those through to too under until up use using very
    was we were what when where which while who whom why will with would write you your
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_HIT_LIST_KEYS = ("results", "hits", "documents", "docs", "items", "matches")
_ID_KEYS = ("id", "doc_id", "document_id", "source", "path", "url", "key", "name")
_TEXT_KEYS = ("text", "content", "body", "snippet", "summary")
_ID_IN_TEXT = re.compile(r"\b(?:id|doc_id|source)\s*[:=]\s*[\"']?([\w./:#-]+)", re.IGNORECASE)


def count_words(text: str) -> int:
    return len(text.split())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _keywords(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _words(text):
        if len(word) >= 3 and word not in _STOPWORDS:
            seen.setdefault(word)
    return list(seen)


@dataclass(frozen=True)
class Hit:
    id: str
    title: str = ""
    snippet: str = ""


def parse_hits(text: str) -> list[Hit]:
    """Search hits from a tool's text: a JSON list of objects with an ``id`` (or ``doc_id``,
    ``source``, ``path``, ``url``...), a JSON object holding such a list under ``results``/``hits``,
    or plain text lines with ``id: X``."""
    try:
        data = json.loads(text)
    except ValueError:
        return [Hit(id=m) for m in dict.fromkeys(_ID_IN_TEXT.findall(text))]
    if isinstance(data, dict):
        data = next((data[k] for k in _HIT_LIST_KEYS if isinstance(data.get(k), list)), [data])
    if not isinstance(data, list):
        return []
    hits: list[Hit] = []
    for item in data:
        if isinstance(item, str | int):
            hits.append(Hit(id=str(item)))
        elif isinstance(item, dict):
            ident = next((item[k] for k in _ID_KEYS if isinstance(item.get(k), str | int)), None)
            if ident is not None:
                snippet = next((item[k] for k in _TEXT_KEYS if isinstance(item.get(k), str)), "")
                hits.append(Hit(id=str(ident), title=str(item.get("title") or ""), snippet=snippet))
    return hits


def _document_text(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        return next((data[k] for k in _TEXT_KEYS if isinstance(data.get(k), str)), text)
    return text


def best_sentence(text: str, keywords: Sequence[str], limit: int = 240) -> str:
    """The sentence of ``text`` sharing the most keywords (the earliest on a tie), shortened."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    if not sentences:
        return "(empty document)"
    wanted = set(keywords)
    best = max(sentences, key=lambda s: (len(wanted & set(_words(s))), -sentences.index(s)))
    best = " ".join(best.split())
    if len(best) > limit:
        best = best[:limit].rsplit(" ", 1)[0] + " ..."
    return best


# Which argument of a tool gets which value, by the argument's name. Short names match exactly,
# longer ones as substrings ("doc_id" matches "doc").
_SLOTS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "search": [
        ("query", ("query", "q", "terms", "keyword", "question", "search", "text", "topic"))
    ],
    "read": [("doc", ("id", "doc", "source", "path", "url", "ref", "key", "name", "file"))],
    "note": [
        ("text", ("text", "note", "content", "body", "summary", "finding", "fact")),
        ("doc", ("source", "doc", "id", "citation", "ref", "url", "path")),
    ],
}


_RESULT_COUNTS = frozenset({"limit", "k", "top_k", "n", "count", "max_results", "num_results"})
_HITS_WANTED = 10


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or (len(pattern) > 2 and pattern in name)


def _types(schema: dict[str, Any]) -> set[str]:
    if "type" in schema:
        kind = schema["type"]
        return set(kind) if isinstance(kind, list) else {str(kind)}
    return {t for option in schema.get("anyOf", []) for t in _types(option)}


def fill_arguments(tool: Tool, role: str, values: dict[str, str]) -> dict[str, Any]:
    """Arguments for ``tool`` in ``role`` (search/read/note), read off its JSON schema."""
    properties: dict[str, Any] = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", []))
    primary = values[_SLOTS[role][0][0]]
    arguments: dict[str, Any] = {}
    used: set[str] = set()
    for name, schema in properties.items():
        kinds = _types(schema)
        slot = None
        if not kinds or "string" in kinds:
            slot = next(
                (
                    s
                    for s, patterns in _SLOTS[role]
                    if s not in used and any(_matches(name.lower(), p) for p in patterns)
                ),
                None,
            )
        if slot is not None:
            arguments[name] = values[slot]
            used.add(slot)
        elif role == "search" and kinds & {"integer"} and name.lower() in _RESULT_COUNTS:
            # More hits per search leave more unread sources to pick from in a small corpus.
            arguments[name] = _HITS_WANTED
        elif name in required:
            arguments[name] = _placeholder(kinds, primary)
    return arguments


def _placeholder(kinds: set[str], primary: str) -> Any:
    if "integer" in kinds:
        return 3
    if "number" in kinds:
        return 1.0
    if "boolean" in kinds:
        return False
    if "array" in kinds:
        return []
    if "object" in kinds:
        return {}
    return primary


def _find_tool(tools: Sequence[Tool], patterns: tuple[str, ...], taken: set[str]) -> Tool | None:
    for pattern in patterns:
        for t in tools:
            if t.name not in taken and pattern in t.name.lower():
                taken.add(t.name)
                return t
    return None


@dataclass
class _Research:
    """What the conversation so far has done, read back from its messages."""

    prompt: str
    queries: list[str] = field(default_factory=list)
    productive: int = 0
    hits: dict[str, Hit] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)
    reads_issued: set[str] = field(default_factory=set)
    read_texts: dict[str, str] = field(default_factory=dict)
    noted: set[str] = field(default_factory=set)
    tool_turns: int = 0
    nudged: bool = False


class Offline:
    """The deterministic offline model; see the module docstring."""

    def __init__(
        self,
        seed: int = 0,
        *,
        rounds: int = 8,
        parallel: int = 1,
        script: Sequence[ScriptItem] | None = None,
        repeat_last: bool = False,
        name: str = "offline",
    ) -> None:
        if rounds < 0 or parallel < 1:
            raise ValueError("rounds must be >= 0 and parallel >= 1")
        self.seed = seed
        self.rounds = rounds
        self.parallel = parallel
        self.repeat_last = repeat_last
        self.name = name
        self._turns = _script_turns(script) if script is not None else None
        self._raised: Counter[int] = Counter()

    def complete(self, system: str, messages: list[Message], tools: list[Tool]) -> ModelReply:
        if self._turns is not None:
            message, usage, stop = self._scripted(messages)
        else:
            message = self._research(messages, tools)
            usage, stop = None, None
        if usage is None:
            usage = Usage(
                input_tokens=_input_words(system, messages, tools),
                output_tokens=_message_words(message),
            )
        return ModelReply(
            message=message,
            usage=usage,
            stop_reason=stop or ("tool_use" if message.tool_calls else "end_turn"),
            model=self.name,
        )

    # -- script mode -------------------------------------------------------------------------

    def _scripted(self, messages: list[Message]) -> tuple[Message, Usage | None, str | None]:
        assert self._turns is not None
        # The position comes from the conversation, not from a counter, so a new process that
        # continues the run resumes the script where the journal left it.
        index = sum(1 for m in messages if m.role == "assistant")
        if index >= len(self._turns):
            if not (self.repeat_last and self._turns):
                raise ModelRequestError(
                    f"offline script exhausted: turn {index} asked, {len(self._turns)} scripted"
                )
            index_in_script = len(self._turns) - 1
        else:
            index_in_script = index
        errors, item = self._turns[index_in_script]
        if self._raised[index] < len(errors):
            error = errors[self._raised[index]]
            self._raised[index] += 1
            raise error
        return _scripted_message(item, index)

    # -- rules mode --------------------------------------------------------------------------

    def _research(self, messages: list[Message], tools: list[Tool]) -> Message:
        prompt = next((m.content for m in messages if m.role == "user"), None)
        if prompt is None:
            raise ModelRequestError("the conversation has no user message")
        taken: set[str] = set()
        search = _find_tool(tools, ("search", "find", "query", "lookup"), taken)
        read = _find_tool(tools, ("read", "fetch", "open"), taken)
        note = _find_tool(tools, ("note", "remember", "record", "save"), taken)
        state = self._replay(prompt, messages, search, read, note)
        if search is None or state.nudged:
            return Message.assistant(self._report(state, search is not None))

        pending_reads = [d for d in state.targets if d not in state.reads_issued]
        if read is not None and pending_reads:
            return self._calls(
                state, read, "read", [{"doc": d} for d in pending_reads[: self.parallel]]
            )
        noteworthy = list(state.read_texts) if read is not None else state.targets
        pending_notes = [d for d in noteworthy if d not in state.noted]
        if note is not None and pending_notes:
            keywords = _keywords(prompt)
            values = [
                {"doc": d, "text": best_sentence(self._text_of(state, d), keywords)}
                for d in pending_notes[: self.parallel]
            ]
            return self._calls(state, note, "note", values)
        # A search that only finds sources already in hand does not count as a round; the search
        # cap keeps a small corpus from making the model search forever.
        left = self.rounds - state.productive
        budget = self.rounds * _SEARCHES_PER_ROUND - len(state.queries)
        count = min(self.parallel, left, budget)
        queries = self._next_queries(state, count) if count > 0 else []
        if queries:
            return self._calls(state, search, "search", [{"query": q} for q in queries])
        return Message.assistant(self._report(state, True))

    def _replay(
        self,
        prompt: str,
        messages: list[Message],
        search: Tool | None,
        read: Tool | None,
        note: Tool | None,
    ) -> _Research:
        state = _Research(prompt=prompt)
        calls: dict[str, ToolCall] = {}
        results: dict[str, ToolResult] = {}
        order: list[str] = []
        for message in messages:
            for call in message.tool_calls:
                calls[call.id] = call
                order.append(call.id)
            for outcome in message.tool_results:
                results[outcome.call_id] = outcome
            if message.tool_calls:
                state.tool_turns += 1
        # A user message after tool work (say, "answer now") asks for the answer at once.
        state.nudged = state.tool_turns > 0 and messages[-1].role == "user"
        targeted: set[str] = set()
        for call_id in order:
            call = calls[call_id]
            result = results.get(call_id)
            ok = result is not None and not result.is_error
            if search is not None and call.name == search.name:
                state.queries.append(_first_string(call.arguments))
                if result is None or not ok:
                    continue
                fresh = 0
                for hit in parse_hits(result.content):
                    state.hits.setdefault(hit.id, hit)
                    if hit.id not in targeted and fresh < self.parallel:
                        targeted.add(hit.id)
                        state.targets.append(hit.id)
                        fresh += 1
                state.productive += fresh > 0
            elif read is not None and call.name == read.name:
                doc = _doc_of(call, state.hits)
                state.reads_issued.add(doc)
                if result is not None and ok:
                    state.read_texts[doc] = _document_text(result.content)
            elif note is not None and call.name == note.name:
                state.noted.add(_doc_of(call, state.hits))
        return state

    def _next_queries(self, state: _Research, count: int) -> list[str]:
        keywords = _keywords(state.prompt)
        planned = [" ".join(keywords[i : i + 2]) for i in range(0, len(keywords), 2)]
        planned += keywords
        if self.seed:
            random.Random(self.seed).shuffle(planned)
        # When the question's own words run out, follow the words the sources use most.
        asked = {w for q in state.queries for w in q.split()}
        frequent = Counter(w for t in state.read_texts.values() for w in _keywords(t) if len(w) > 3)
        anchor = keywords[0] if keywords else "overview"
        follow = [
            f"{anchor} {word}"
            for word, _ in sorted(frequent.items(), key=lambda kv: (-kv[1], kv[0]))
            if word not in asked and word not in keywords
        ]
        done = set(state.queries)
        fresh = [q for q in dict.fromkeys(planned + follow) if q and q not in done]
        return fresh[:count]

    def _calls(
        self, state: _Research, tool: Tool, role: str, values: list[dict[str, str]]
    ) -> Message:
        turn = state.tool_turns
        calls = [
            ToolCall(
                id=f"offline-{turn}-{k}", name=tool.name, arguments=fill_arguments(tool, role, v)
            )
            for k, v in enumerate(values)
        ]
        return Message.assistant("", calls)

    def _text_of(self, state: _Research, doc: str) -> str:
        if doc in state.read_texts:
            return state.read_texts[doc]
        hit = state.hits.get(doc)
        return hit.snippet if hit else ""

    def _report(self, state: _Research, had_search: bool) -> str:
        question = " ".join(state.prompt.split())
        if not had_search:
            return f"{MARK} I have no search tool, so I cannot research this. You asked: {question}"
        sources = list(state.read_texts) or state.targets
        if not sources:
            return f"{MARK} After {len(state.queries)} searches I found no sources for: {question}"
        keywords = _keywords(state.prompt)
        lines = [
            f"{MARK} Research report: {question}",
            "",
            f"I ran {len(state.queries)} searches, read {len(state.read_texts)} sources and "
            f"took {len(state.noted)} notes.",
            "",
            "Findings:",
        ]
        for n, doc in enumerate(sources, start=1):
            lines.append(f"{n}. {best_sentence(self._text_of(state, doc), keywords)} [{doc}]")
        lines += ["", "Sources:"]
        for doc in sources:
            title = state.hits[doc].title if doc in state.hits else ""
            lines.append(f"- [{doc}] {title}".rstrip())
        return "\n".join(lines)


def _first_string(arguments: dict[str, Any]) -> str:
    return next((v for v in arguments.values() if isinstance(v, str)), "")


def _doc_of(call: ToolCall, hits: dict[str, Hit]) -> str:
    known = [v for v in call.arguments.values() if isinstance(v, str) and v in hits]
    return known[0] if known else _first_string(call.arguments)


def _script_turns(script: Sequence[ScriptItem]) -> list[tuple[list[ModelError], ScriptItem]]:
    turns: list[tuple[list[ModelError], ScriptItem]] = []
    errors: list[ModelError] = []
    for item in script:
        if isinstance(item, ModelError):
            errors.append(item)
        else:
            turns.append((errors, item))
            errors = []
    if errors:
        raise ValueError("a scripted error must come before the reply it delays")
    return turns


def _scripted_message(item: ScriptItem, index: int) -> tuple[Message, Usage | None, str | None]:
    if isinstance(item, ModelReply):
        return item.message, item.usage, item.stop_reason
    if isinstance(item, Message):
        if item.role != "assistant":
            raise ValueError(f"scripted message {index} must be an assistant message")
        message = item
    elif isinstance(item, str):
        message = Message.assistant(item)
    elif isinstance(item, ToolCall):
        message = Message.assistant("", [item])
    elif isinstance(item, list):
        message = Message.assistant("", item)
    else:
        raise TypeError(f"scripted item {index} cannot be a reply: {item!r}")
    # Scripted calls may leave ids empty; real providers never repeat an id in a conversation.
    calls = [
        c if c.id else c.model_copy(update={"id": f"offline-{index}-{k}"})
        for k, c in enumerate(message.tool_calls)
    ]
    return message.model_copy(update={"tool_calls": calls}), None, None


def _message_words(message: Message) -> int:
    words = count_words(message.content)
    for call in message.tool_calls:
        words += 1 + count_words(call.raw_arguments or json.dumps(call.arguments))
    for result in message.tool_results:
        words += count_words(result.content)
    return words


def _input_words(system: str, messages: list[Message], tools: list[Tool]) -> int:
    words = count_words(system) + sum(_message_words(m) for m in messages)
    return words + sum(count_words(json.dumps(t.spec())) for t in tools)
