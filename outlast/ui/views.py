"""What the console shows, read through ``statestore``'s and ``outlast``'s public names only.

Pages and the JSON API both build on these functions, so a page and its API answer always agree.
Nothing here writes to the store.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from outlast.agent.loop import MODEL_STEP, TOOL_STEP_PREFIX
from outlast.report import RunReport, run_report
from outlast.values import to_json_view
from statestore import (
    BlobRef,
    CorruptRun,
    CorruptStateError,
    EntryKind,
    EntryStatus,
    JournalEntry,
    RunRecord,
    RunStatus,
    StateStore,
    StateStoreError,
)

PAGE_SIZE = 50
# A filtered listing reads the newest runs in growing batches until it has a page; it stops at
# this many so one search cannot read an unbounded store. The page says when it stopped there.
JOURNAL_PAGE = 500
# Above this many entries the timeline draws buckets of steps instead of one bar per step: ten
# thousand absolutely positioned bars make a page that takes seconds to lay out.
AGGREGATE_OVER = 1_000
BUCKETS_PER_LANE = 120
# A value shown in a page is cut here; the API (and the "open" button) serve it whole.
VALUE_PREVIEW_CHARS = 20_000
# An exported page has no API to fetch the rest from, so it carries values nearly whole.
EXPORT_VALUE_CHARS = 1_000_000
MAX_PAGE = 10_000

_SINCE = re.compile(r"^([0-9]{1,6})([smhd])$")
_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RUN_ID_PART = re.compile(r"^[A-Za-z0-9_-]{0,64}$")


class BadFilterError(ValueError):
    """A query parameter the console cannot use; the message says what it accepts."""


@dataclass(frozen=True)
class RunFilter:
    status: RunStatus | None = None
    function: str | None = None
    q: str | None = None
    since: str | None = None
    page: int = 1

    @property
    def narrows(self) -> bool:
        return any((self.status, self.function, self.q, self.since))

    def since_delta(self) -> timedelta | None:
        if not self.since:
            return None
        match = _SINCE.match(self.since)
        assert match is not None  # checked by parse_filter
        return timedelta(seconds=int(match[1]) * _SINCE_UNITS[match[2]])

    def query(self, **change: Any) -> dict[str, str]:
        """The filter as query parameters (for links to other pages of the same listing)."""
        values: dict[str, Any] = {
            "status": self.status.value if self.status else "",
            "function": self.function or "",
            "q": self.q or "",
            "since": self.since or "",
            "page": str(self.page),
        }
        values.update({k: str(v) for k, v in change.items()})
        return {k: v for k, v in values.items() if v and not (k == "page" and v == "1")}


def searchable(text: str) -> bool:
    """Whether ``text`` can be the runs page's run id search."""
    return bool(text) and _RUN_ID_PART.match(text) is not None


def parse_filter(params: Mapping[str, str]) -> RunFilter:
    """Read the runs page's query parameters; raise ``BadFilterError`` naming the bad one."""
    status_text = (params.get("status") or "").strip()
    status = None
    if status_text:
        try:
            status = RunStatus(status_text)
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            raise BadFilterError(f"status {status_text!r} is not one of: {known}") from None
    function = (params.get("function") or "").strip() or None
    if function is not None and len(function) > 200:
        raise BadFilterError("function is at most 200 characters")
    q = (params.get("q") or "").strip() or None
    if q is not None and not _RUN_ID_PART.match(q):
        raise BadFilterError(
            f"run id search {q[:70]!r} can only hold letters, digits, '_' and '-' "
            "(run ids are ^[A-Za-z0-9_-]{1,64}$)"
        )
    since = (params.get("since") or "").strip() or None
    if since is not None and not _SINCE.match(since):
        raise BadFilterError(f"since {since[:40]!r} is not a duration such as 30s, 15m, 2h or 7d")
    page_text = (params.get("page") or "1").strip()
    if not page_text.isdigit() or not 1 <= int(page_text) <= MAX_PAGE:
        raise BadFilterError(f"page {page_text[:20]!r} is not a whole number from 1 to {MAX_PAGE}")
    return RunFilter(status=status, function=function, q=q, since=since, page=int(page_text))


def entry_tokens(entry: JournalEntry) -> int:
    # The same meta keys outlast.report counts: model calls record their usage there.
    total = 0
    for key in ("input_tokens", "output_tokens"):
        value = entry.meta.get(key)
        if isinstance(value, int):
            total += value
    return total


def when(moment: datetime) -> str:
    """A time as people read it (to the second, UTC); the page's title attribute keeps it whole."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def age(then: datetime, now: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass
class RunRow:
    run_id: str
    status: str
    function: str
    legs: int
    steps: int
    created_at: str
    updated_at: str
    age: str
    tokens: int | None
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunsPage:
    filter: RunFilter
    rows: list[RunRow]
    has_next: bool
    # Runs whose record cannot be read: (run id, why). Listed apart; they hide no other run.
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    key: str = ""  # what the live page compares (``listing_key``), from the same read


def _matches(record: RunRecord, flt: RunFilter, now: datetime) -> bool:
    if flt.status is not None and record.status is not flt.status:
        return False
    if flt.function is not None and flt.function.lower() not in record.function.lower():
        return False
    if flt.q is not None and flt.q.lower() not in record.run_id.lower():
        return False
    delta = flt.since_delta()
    return delta is None or record.created_at >= now - delta


@dataclass
class _Selection:
    chosen: list[RunRecord]
    has_next: bool
    corrupt: list[tuple[str, str]]


def _select(store: StateStore, flt: RunFilter, now: datetime) -> _Selection:
    """The records of one page of the listing, newest first, with the filter applied.

    The hot tier lists runs through a cursor (``iter_runs``), a batch at a time: page n of an
    unfiltered listing reads about n pages of records, and a filter reads on through older runs
    until the page is full or the store ends, holding one batch at a time, however large the
    store.
    """
    need = flt.page * PAGE_SIZE + 1
    matched: list[RunRecord] = []
    damaged: list[tuple[str, str]] = []
    batch = min(max(need, 100), 1000) if not flt.narrows else 1000
    for listed in store.hot.iter_runs(page=batch):
        if isinstance(listed, CorruptRun):
            damaged.append((listed.run_id, listed.error))
        elif _matches(listed, flt, now):
            matched.append(listed)
            if len(matched) >= need:
                break
    start = (flt.page - 1) * PAGE_SIZE
    return _Selection(
        chosen=matched[start : start + PAGE_SIZE],
        has_next=len(matched) > start + PAGE_SIZE,
        corrupt=damaged,
    )


def list_runs(store: StateStore, flt: RunFilter) -> RunsPage:
    """One page of runs, newest first, with the filter applied (see ``_select``)."""
    now = store.hot.now()
    picked = _select(store, flt, now)
    return RunsPage(
        filter=flt,
        rows=[_row(store, r, now) for r in picked.chosen],
        has_next=picked.has_next,
        corrupt=picked.corrupt,
        key=_key(picked),
    )


def listing_key(store: StateStore, flt: RunFilter) -> str:
    """What the live runs page compares: a digest of the page's runs and their versions.

    It reads records only (no journals), so watching a listing costs a fraction of rendering it.
    """
    return _key(_select(store, flt, store.hot.now()))


def _key(picked: _Selection) -> str:
    parts = [f"{r.run_id}:{r.version}:{r.status.value}:{r.next_seq}" for r in picked.chosen]
    parts += [f"next:{picked.has_next}", *(run_id for run_id, _ in picked.corrupt)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def _row(store: StateStore, record: RunRecord, now: datetime) -> RunRow:
    # Tokens live in the journal entries' meta; a page reads the journals of its own rows only.
    # One run's broken journal must not hide the others: its row says "?" (its page says why).
    tokens: int | None
    try:
        tokens = sum(entry_tokens(e) for e in store.hot.iter_journal(record.run_id))
    except CorruptStateError:
        tokens = None
    return RunRow(
        run_id=record.run_id,
        status=record.status.value,
        function=record.function,
        legs=record.counters.legs,
        steps=record.counters.steps,
        created_at=record.created_at.isoformat(),
        updated_at=record.updated_at.isoformat(),
        age=age(record.created_at, now),
        tokens=tokens,
        error=f"{record.error.type}: {record.error.message}" if record.error else None,
    )


# ---------------------------------------------------------------------- values


def json_text(value: Any, limit: int | None = VALUE_PREVIEW_CHARS) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if limit is not None and len(text) > limit:
        return text[:limit] + f"\n… ({len(text) - limit} more characters)"
    return text


@dataclass
class ShownValue:
    """A decoded value for a page, or why it could not be decoded."""

    text: str | None
    problem: str | None = None


def _show(read: Any, limit: int = VALUE_PREVIEW_CHARS) -> ShownValue:
    try:
        return ShownValue(json_text(to_json_view(read()), limit))
    except StateStoreError as exc:
        # A broken blob must not take the whole page down: say what is wrong where it would be.
        return ShownValue(None, f"{type(exc).__name__}: {exc}")


def value_size(entry: JournalEntry) -> int:
    if isinstance(entry.value, BlobRef):
        return entry.value.size
    return len(entry.value) if entry.value is not None else 0


def value_tier(entry: JournalEntry) -> str:
    if isinstance(entry.value, BlobRef):
        return "cold"
    return "hot" if entry.value is not None else ""


def entry_json(store: StateStore, run_id: str, seq: int) -> dict[str, Any] | None:
    """One entry with its decoded value (cold values are fetched here, on demand)."""
    entry = next(iter(store.hot.iter_journal(run_id, seq - 1)), None)
    if entry is None or entry.seq != seq:
        return None
    value = to_json_view(store.decode(run_id, entry.value, seq=seq, key=f"seq {seq}"))
    return {
        "seq": entry.seq,
        "kind": entry.kind.value,
        "name": entry.name,
        "status": entry.status.value,
        "attempt": entry.attempt,
        "leg": entry.leg,
        "started_at": entry.started_at.isoformat(),
        "ended_at": entry.ended_at.isoformat(),
        "duration_s": entry.duration_s,
        "size": value_size(entry),
        "tier": value_tier(entry),
        "meta": entry.meta,
        "error": entry.error.model_dump(mode="json") if entry.error else None,
        "value": value,
        **({"sent": model_input(store, run_id, seq)} if entry.name == MODEL_STEP else {}),
    }


def model_input(store: StateStore, run_id: str, seq: int) -> list[Any]:
    """The messages an agent loop's model call at ``seq`` was sent, rebuilt from the journal.

    The loop journals only what each step added (a model's reply, a tool's result), never the
    whole conversation; the conversation a call saw is the run's prompt followed by every reply
    and tool result committed before it, tool results of one turn in one message.
    """
    record = store.hot.get_run(run_id)
    prompt = to_json_view(store.run_input(record))
    messages: list[Any] = [{"role": "user", "content": prompt}]
    results: list[Any] = []
    for entry in store.hot.iter_journal(run_id, until=record.next_seq):
        if entry.seq >= seq:
            break
        if entry.status is not EntryStatus.OK:
            continue
        if entry.name == MODEL_STEP or entry.name.startswith(TOOL_STEP_PREFIX):
            value = to_json_view(store.decode(run_id, entry.value, seq=entry.seq))
        else:
            continue
        if entry.name == MODEL_STEP:
            if results:
                messages.append({"role": "tool", "tool_results": results})
                results = []
            if isinstance(value, dict) and "message" in value:
                messages.append(value["message"])
        else:
            results.append(value)
    if results:
        messages.append({"role": "tool", "tool_results": results})
    return messages


def entry_meta_json(entry: JournalEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "kind": entry.kind.value,
        "name": entry.name,
        "status": entry.status.value,
        "attempt": entry.attempt,
        "leg": entry.leg,
        "duration_s": entry.duration_s,
        "size": value_size(entry),
        "tier": value_tier(entry),
        "tokens": entry_tokens(entry),
    }


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def agent_summary(name: str, value: Any) -> str | None:
    """One line for an agent loop's step: a model call's stop reason, the tool calls it asked
    for with their arguments, and its text; a tool call's result."""
    if name == MODEL_STEP and isinstance(value, dict) and "stop_reason" in value:
        found = value.get("message")
        message: dict[str, Any] = found if isinstance(found, dict) else {}
        parts = [f"stop: {value['stop_reason']}"]
        calls = [
            f"{c.get('name')}({_clip(json.dumps(c.get('arguments'), ensure_ascii=False), 80)})"
            for c in message.get("tool_calls") or []
            if isinstance(c, dict)
        ]
        if calls:
            parts.append("calls " + ", ".join(calls))
        if message.get("content"):
            parts.append(_clip(str(message["content"]), 160))
        return " · ".join(parts)
    if name.startswith(TOOL_STEP_PREFIX):
        content = value.get("content", value) if isinstance(value, dict) else value
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        return "→ " + _clip(text, 160)
    return None


def _agent_summaries(store: StateStore, run_id: str, entries: list[JournalEntry]) -> dict[int, str]:
    out: dict[int, str] = {}
    for entry in entries:
        agentish = entry.name == MODEL_STEP or entry.name.startswith(TOOL_STEP_PREFIX)
        # Inline values only: a cold one costs a blob read, and the "open" button fetches it.
        if not agentish or not isinstance(entry.value, bytes) or entry.status is not EntryStatus.OK:
            continue
        try:
            value = to_json_view(store.decode(run_id, entry.value, seq=entry.seq))
        except StateStoreError:
            continue
        summary = agent_summary(entry.name, value)
        if summary:
            out[entry.seq] = summary
    return out


# ---------------------------------------------------------------------- timeline


@dataclass
class Bar:
    left: float  # percent of the time axis
    width: float
    css: str  # step, retry, error, wait (sleep, signal, clock)
    title: str
    seq: int  # the (first) entry it stands for: a click opens its journal row
    # Percent of the lane's height: a bucket is as tall as its share of the fullest bucket, so
    # bursts and lulls stay visible when 10,000 steps share one lane.
    height: float = 100.0

    @property
    def jpage(self) -> int:
        return self.seq // JOURNAL_PAGE + 1


@dataclass
class Lane:
    leg: int
    entries: int
    first_seq: int
    last_seq: int
    ended: str  # how the leg ended, as far as the journal and the record tell
    after_interruption: bool
    left: float
    width: float
    bars: list[Bar] = field(default_factory=list)


@dataclass
class Timeline:
    lanes: list[Lane]
    aggregated: bool
    span_s: float
    legs_counted: int  # the record's counter: legs that committed nothing are not lanes
    ticks: list[tuple[float, str]] = field(default_factory=list)  # (percent, time since start)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _ticks(span: float) -> list[tuple[float, str]]:
    return [(100.0 * i / 4, _duration(span * i / 4) if i else "0") for i in range(5)]


def _suspends(entry: JournalEntry) -> str | None:
    # The same rule outlast.report uses to tell a suspend from an interruption.
    if entry.kind is EntryKind.SLEEP:
        return "suspended (timer)"
    if entry.kind is EntryKind.CLOCK and entry.name.startswith("deadline:"):
        return "suspended (deadline)"
    if entry.status is EntryStatus.RETRY:
        return "suspended (retry backoff)"
    return None


_FINAL = {
    RunStatus.SUCCEEDED: "completed",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
    RunStatus.BLOCKED: "blocked",
    RunStatus.SUSPENDED: "suspended",
    RunStatus.RUNNING: "running",
    RunStatus.PENDING: "pending",
}


def _css(entry: JournalEntry) -> str:
    if entry.status is EntryStatus.RETRY:
        return "retry"
    if entry.status is EntryStatus.ERROR:
        return "error"
    if entry.kind in (EntryKind.SLEEP, EntryKind.SIGNAL, EntryKind.CHILD):
        return "wait"
    if entry.kind is not EntryKind.STEP:
        return "mark"
    return "step"


def build_timeline(
    journal: list[JournalEntry], record: RunRecord, report: RunReport, now: datetime
) -> Timeline:
    per_leg: dict[int, list[JournalEntry]] = defaultdict(list)
    for entry in journal:
        per_leg[entry.leg].append(entry)
    if not journal:
        return Timeline([], False, 0.0, record.counters.legs)
    t0 = min(e.started_at for e in journal)
    t1 = max(e.ended_at for e in journal)
    if record.status in (RunStatus.RUNNING, RunStatus.PENDING):
        t1 = max(t1, now)
    span = max((t1 - t0).total_seconds(), 1e-3)

    def pos(moment: datetime) -> float:
        return round(100.0 * (moment - t0).total_seconds() / span, 3)

    after = {leg.leg: leg.after_interruption for leg in report.legs}
    aggregated = len(journal) > AGGREGATE_OVER
    legs = sorted(per_leg)
    lanes: list[Lane] = []
    for i, leg_no in enumerate(legs):
        entries = per_leg[leg_no]
        if i + 1 < len(legs):
            following = per_leg[legs[i + 1]][0]
            ended = _suspends(entries[-1]) or (
                "suspended (signal)" if following.kind is EntryKind.SIGNAL else "interrupted"
            )
        else:
            ended = _FINAL[record.status]
        start = pos(min(e.started_at for e in entries))
        end = pos(max(e.ended_at for e in entries))
        lane = Lane(
            leg=leg_no,
            entries=len(entries),
            first_seq=entries[0].seq,
            last_seq=entries[-1].seq,
            ended=ended,
            after_interruption=after.get(leg_no, False),
            left=start,
            width=max(end - start, 0.3),
        )
        lane.bars = _buckets(entries, pos) if aggregated else [_bar(e, pos) for e in entries]
        lanes.append(lane)
    return Timeline(lanes, aggregated, span, record.counters.legs, _ticks(span))


def _bar(entry: JournalEntry, pos: Any) -> Bar:
    left = pos(entry.started_at)
    width = max(pos(entry.ended_at) - left, 0.15)
    extra = f" attempt {entry.attempt}" if entry.attempt > 1 else ""
    title = (
        f"#{entry.seq} {entry.kind.value} {entry.name} {entry.status.value}{extra} "
        f"{entry.duration_s * 1000:.1f} ms"
    )
    return Bar(left, width, _css(entry), title, entry.seq)


def _buckets(entries: Iterable[JournalEntry], pos: Any) -> list[Bar]:
    items = list(entries)
    lo = min(pos(e.started_at) for e in items)
    hi = max(pos(e.ended_at) for e in items)
    size = max((hi - lo) / BUCKETS_PER_LANE, 1e-6)
    buckets: dict[int, list[JournalEntry]] = defaultdict(list)
    for e in items:
        buckets[min(int((pos(e.started_at) - lo) / size), BUCKETS_PER_LANE - 1)].append(e)
    fullest = max(len(members) for members in buckets.values())
    bars = []
    for index, members in sorted(buckets.items()):
        retries = sum(1 for e in members if e.status is EntryStatus.RETRY)
        errors = sum(1 for e in members if e.status is EntryStatus.ERROR)
        css = "error" if errors else "retry" if retries else "step"
        title = (
            f"{len(members)} entries (#{members[0].seq}-#{members[-1].seq}), "
            f"{retries} retries, {errors} errors; click for the journal"
        )
        height = round(max(100.0 * len(members) / fullest, 20.0), 1)
        left, width = round(lo + index * size, 3), max(round(size, 3), 0.15)
        bars.append(Bar(left, width, css, title, members[0].seq, height))
    return bars


# ---------------------------------------------------------------------- a run

MAX_CHILDREN_SHOWN = 200


@dataclass
class Child:
    seq: int
    function: str
    run_id: str
    status: str  # the child's status now, or "deleted"


def _children(store: StateStore, run_id: str, journal: list[JournalEntry]) -> list[Child]:
    """Child runs this run started: a ``child`` entry's value is the child's run id."""
    out: list[Child] = []
    for entry in journal:
        if entry.kind is not EntryKind.CHILD or len(out) >= MAX_CHILDREN_SHOWN:
            continue
        try:
            child_id = str(store.decode(run_id, entry.value, seq=entry.seq))
            found = store.hot.find_run(child_id)
        except (StateStoreError, ValueError):
            continue
        status = found.status.value if found is not None else "deleted"
        out.append(Child(entry.seq, entry.name, child_id, status))
    return out


@dataclass
class RunPage:
    record: RunRecord
    report: RunReport
    input: ShownValue
    result: ShownValue | None
    timeline: Timeline
    entries: list[JournalEntry]  # the journal page shown in the table
    values: dict[int, ShownValue]  # seq -> value, filled only for a self-contained export
    jpage: int
    jpages: int
    live: bool
    now: datetime
    tokens: dict[int, int]
    agent: dict[int, str]  # seq -> one line, for model and tool calls of an agent loop
    children: list[Child]


def run_page(store: StateStore, run_id: str, jpage: int = 1, export: bool = False) -> RunPage:
    """Everything the run page shows. Raises ``RunNotFoundError`` for an unknown run."""
    record = store.hot.get_run(run_id)
    journal = store.hot.read_journal(run_id)
    # The restart-tax figures come from the very function `outlast runs show` prints.
    report = run_report(store, run_id)
    now = store.hot.now()
    jpages = max(1, -(-len(journal) // JOURNAL_PAGE))
    jpage = min(max(jpage, 1), jpages)
    shown = journal if export else journal[(jpage - 1) * JOURNAL_PAGE : jpage * JOURNAL_PAGE]
    values: dict[int, ShownValue] = {}
    if export:
        # One file to attach to a bug report: every value goes in, cold ones fetched now.
        for entry in shown:
            values[entry.seq] = _show(
                lambda e=entry: store.decode(run_id, e.value, seq=e.seq, key=f"seq {e.seq}"),
                EXPORT_VALUE_CHARS,
            )
    return RunPage(
        record=record,
        report=report,
        input=_show(lambda: store.run_input(record)),
        result=_show(lambda: store.run_result(record)) if record.result is not None else None,
        timeline=build_timeline(journal, record, report, now),
        entries=shown,
        values=values,
        jpage=jpage,
        jpages=jpages,
        live=record.status.takes_legs and not export,
        now=now,
        tokens={e.seq: entry_tokens(e) for e in shown},
        agent=_agent_summaries(store, run_id, shown),
        children=_children(store, run_id, journal),
    )


def run_json(store: StateStore, run_id: str) -> dict[str, Any]:
    record = store.hot.get_run(run_id)
    report = run_report(store, run_id)
    try:
        input_value: Any = to_json_view(store.run_input(record))
    except StateStoreError as exc:
        input_value = {"unreadable": str(exc)}
    return {
        "run_id": record.run_id,
        "function": record.function,
        "status": record.status.value,
        "input": input_value,
        "result": report.result,
        "error": record.error.model_dump(mode="json") if record.error else None,
        "wake_at": record.wake_at.isoformat() if record.wake_at else None,
        "waiting_for": record.waiting_for,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "next_seq": record.next_seq,
        "tags": record.tags,
        "report": report.model_dump(mode="json"),
    }


def run_key(record: RunRecord) -> str:
    """What the live run page compares: any commit, status change or signal moves one of these."""
    return f"{record.version}:{record.next_seq}:{record.status.value}"


def status_json(store: StateStore, run_id: str) -> dict[str, Any]:
    """What the live page polls or is sent: small, one record read, no journal."""
    record = store.hot.get_run(run_id)
    return {
        "run_id": record.run_id,
        "key": run_key(record),
        "status": record.status.value,
        "next_seq": record.next_seq,
        "version": record.version,
        "updated_at": record.updated_at.isoformat(),
        "waiting_for": record.waiting_for,
        "live": record.status.takes_legs,
    }
