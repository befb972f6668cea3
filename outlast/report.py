"""What a run cost, and what restarting from zero at each interruption would have cost.

Everything comes from the run record and its journal: each entry says which leg committed it,
how long its step ran, and (for model calls) the tokens it used. A leg boundary that did not
follow a suspend (a sleep, a signal wait, a retry backoff) is an interruption: a hand-off before a
timeout, an eviction, or a kill. A runtime without a journal would have re-run everything before
each one; that is the restart tax this run did not pay.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from outlast.values import to_json_view
from statestore import (
    EntryKind,
    EntryStatus,
    ErrorInfo,
    JournalEntry,
    RunCounters,
    RunStatus,
    StateStore,
)


class StepSummary(BaseModel):
    name: str
    count: int
    retries: int
    seconds: float
    tokens: int


class LegSummary(BaseModel):
    leg: int
    entries: int
    first_seq: int
    last_seq: int
    step_seconds: float
    tokens: int
    after_interruption: bool


class RestartTax(BaseModel):
    interruptions: int
    tokens_saved: int
    seconds_saved: float
    tokens_spent: int
    seconds_spent: float


class RunReport(BaseModel):
    run_id: str
    function: str
    status: RunStatus
    error: ErrorInfo | None
    waiting_for: str | None
    counters: RunCounters
    entries: int
    entries_by_kind: dict[str, int]
    steps: list[StepSummary]
    legs: list[LegSummary]
    tokens: dict[str, int]
    restart_tax: RestartTax
    parent: str | None = None
    children: list[str] = []
    result: Any = None

    def render(self, console: Console) -> None:
        colour = {"succeeded": "green", "failed": "red", "cancelled": "red", "blocked": "red"}.get(
            self.status.value, "yellow"
        )
        console.print(
            f"[bold]{self.run_id}[/]  {self.function}  [{colour}]{self.status.value}[/]",
            highlight=False,
        )
        c = self.counters
        console.print(
            f"legs {c.legs}  steps {c.steps}  hand-offs {c.handoffs}  recoveries {c.recoveries}  "
            f"journal {self.entries} entries "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.entries_by_kind.items())),
            highlight=False,
        )
        if self.parent:
            console.print(f"parent run {self.parent}", highlight=False)
        if self.children:
            console.print(f"child runs {', '.join(self.children)}", highlight=False)
        if self.waiting_for:
            console.print(f"waiting for signal {self.waiting_for!r}")
        if self.error:
            # Escaped: an error message is data, and may hold brackets that look like markup.
            console.print(
                f"[red]{escape(self.error.type)}: {escape(self.error.message)}[/]", highlight=False
            )
        if self.status is RunStatus.BLOCKED:
            console.print(
                f"blocked: it takes no more legs; fix the cause, then `outlast runs retry "
                f"{self.run_id}`",
                highlight=False,
                markup=False,
            )
        steps = Table("step", "count", "retries", "seconds", "tokens", title="steps")
        for s in self.steps:
            steps.add_row(s.name, str(s.count), str(s.retries), f"{s.seconds:.3f}", str(s.tokens))
        console.print(steps)
        legs = Table(
            "leg", "entries", "seqs", "step s", "tokens", "after interruption", title="legs"
        )
        for leg in self.legs:
            legs.add_row(
                str(leg.leg),
                str(leg.entries),
                f"{leg.first_seq}-{leg.last_seq}",
                f"{leg.step_seconds:.3f}",
                str(leg.tokens),
                "yes" if leg.after_interruption else "",
            )
        console.print(legs)
        tax = self.restart_tax
        console.print(
            f"[bold]restart tax avoided[/]: {tax.interruptions} interruptions survived; "
            f"restarting from zero at each would have re-spent {tax.tokens_saved} tokens and "
            f"{tax.seconds_saved:.2f}s of step work (the run spent {tax.tokens_spent} tokens, "
            f"{tax.seconds_spent:.2f}s)",
            highlight=False,
        )


def _tokens(entry: JournalEntry) -> int:
    total = 0
    for key in ("input_tokens", "output_tokens"):
        value = entry.meta.get(key)
        if isinstance(value, int):
            total += value
    return total


def _suspends(entry: JournalEntry) -> bool:
    """Does a leg ending with this entry end by suspending (by design, not interrupted)?"""
    return (
        entry.kind is EntryKind.SLEEP
        or (entry.kind is EntryKind.CLOCK and entry.name.startswith("deadline:"))
        or entry.status is EntryStatus.RETRY
    )


def run_report(store: StateStore, run_id: str) -> RunReport:
    record = store.hot.get_run(run_id)
    journal = store.hot.read_journal(run_id)
    by_kind: dict[str, int] = defaultdict(int)
    steps: dict[str, StepSummary] = {}
    tokens = {"input": 0, "output": 0}
    per_leg: dict[int, list[JournalEntry]] = defaultdict(list)
    for entry in journal:
        by_kind[entry.kind.value] += 1
        per_leg[entry.leg].append(entry)
        for key in ("input", "output"):
            value = entry.meta.get(f"{key}_tokens")
            if isinstance(value, int):
                tokens[key] += value
        if entry.kind is EntryKind.STEP:
            base = entry.name.split("[", 1)[0]
            summary = steps.setdefault(
                base, StepSummary(name=base, count=0, retries=0, seconds=0.0, tokens=0)
            )
            summary.seconds += entry.duration_s
            summary.tokens += _tokens(entry)
            if entry.status is EntryStatus.RETRY:
                summary.retries += 1
            else:
                summary.count += 1

    legs: list[LegSummary] = []
    spent_seconds = 0.0
    spent_tokens = 0
    saved_seconds = 0.0
    saved_tokens = 0
    interruptions = 0
    previous: list[JournalEntry] | None = None
    for leg_no in sorted(per_leg):
        entries = per_leg[leg_no]
        interrupted = previous is not None and not _suspends(previous[-1])
        if interrupted:
            interruptions += 1
            saved_seconds += spent_seconds
            saved_tokens += spent_tokens
        leg_seconds = sum(e.duration_s for e in entries if e.kind is EntryKind.STEP)
        leg_tokens = sum(_tokens(e) for e in entries)
        legs.append(
            LegSummary(
                leg=leg_no,
                entries=len(entries),
                first_seq=entries[0].seq,
                last_seq=entries[-1].seq,
                step_seconds=round(leg_seconds, 6),
                tokens=leg_tokens,
                after_interruption=interrupted,
            )
        )
        spent_seconds += leg_seconds
        spent_tokens += leg_tokens
        previous = entries
    # Legs that died before committing anything leave no entries, but the counters saw them.
    interruptions = max(interruptions, record.counters.handoffs + record.counters.recoveries)
    result = to_json_view(store.run_result(record)) if record.result is not None else None
    for s in steps.values():
        s.seconds = round(s.seconds, 6)
    return RunReport(
        run_id=run_id,
        function=record.function,
        status=record.status,
        error=record.error,
        waiting_for=record.waiting_for,
        counters=record.counters,
        entries=len(journal),
        entries_by_kind=dict(by_kind),
        steps=sorted(steps.values(), key=lambda s: -s.seconds),
        legs=legs,
        tokens={**tokens, "total": tokens["input"] + tokens["output"]},
        parent=record.tags.get("parent"),
        children=[str(store.decode(run_id, e.value)) for e in journal if e.kind is EntryKind.CHILD],
        restart_tax=RestartTax(
            interruptions=interruptions,
            tokens_saved=saved_tokens,
            seconds_saved=round(saved_seconds, 6),
            tokens_spent=spent_tokens,
            seconds_spent=round(spent_seconds, 6),
        ),
        result=result,
    )
